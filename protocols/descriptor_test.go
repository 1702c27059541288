package protocols

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// descriptorChildEnv makes the test binary, run again as a child, serve
// under a lowered descriptor limit (TestDescriptorExhaustionServer).
const descriptorChildEnv = "MAILBEACON_DESCRIPTOR_CHILD"

// descriptorChildLimit is the child's RLIMIT_NOFILE: the 20,000
// descriptors scaled down, so that 20 addresses exhaust it with a few
// hundred connections.
const descriptorChildLimit = 256

// TestDescriptorExhaustionServer is no test of its own: run as a child
// by TestDescriptorExhaustion, it lowers its descriptor limit, serves the
// demo on 127.0.0.1 as serve does (the bound derived from the limit, the
// listener and ConnState of one ConnLimiter) and prints its address,
// until its stdin closes.
func TestDescriptorExhaustionServer(t *testing.T) {
	if os.Getenv(descriptorChildEnv) == "" {
		return
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	rl.Cur = descriptorChildLimit
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	res, _ := newDemoResolver(t, demoDomains())
	o := limitsFor(t, DefaultLimitOptions())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The reserve of serve (256 + 2 × pool_size) would leave half of 256:
	// the test binary needs far fewer, so it leaves 96.
	cl := NewConnLimiter(o, MaxConnections(o, 96))
	srv := &http.Server{Handler: NewHandler(res, Options{Limits: o}), ConnState: cl.ConnState,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go srv.Serve(cl.Listener(ln)) //nolint:errcheck // ends with Close
	all, perClient, _ := cl.Bounds()
	fmt.Printf("ADDR %s %d %d\n", ln.Addr(), all, perClient)
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Close()
}

// startDescriptorChild runs TestDescriptorExhaustionServer in a child
// process and returns its address, bound, per-client share and pid.
func startDescriptorChild(t *testing.T) (addr string, bound, perClient, pid int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDescriptorExhaustionServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), descriptorChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "ADDR" {
		t.Fatalf("child said %q", line)
	}
	bound, _ = strconv.Atoi(f[2])
	perClient, _ = strconv.Atoi(f[3])
	return f[1], bound, perClient, cmd.Process.Pid
}

// openDescriptors counts the descriptors process pid holds.
func openDescriptors(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// The attack, scaled down: 20 source addresses each open
// connections up to and past every bound, as keep-alive connections idle
// after one request, or stuck in the middle of their request header.
// Another address must be answered within 100 ms, also while the
// attackers reconnect as fast as they can. Before the global
// bound, the 20 × 16 connections took all 256 descriptors of the
// server: accept failed (EMFILE) and the other address waited for a
// connection to end (the idle timeout, or read_header_timeout).
func TestDescriptorExhaustion(t *testing.T) {
	for _, mode := range []string{"idle_keepalive", "slow_header"} {
		t.Run(mode, func(t *testing.T) {
			addr, bound, perClient, pid := startDescriptorChild(t)
			const sources, perSource = 20, 16
			if sources*perSource <= descriptorChildLimit {
				t.Fatal("the attack would not reach the descriptor limit")
			}
			var (
				mu                  sync.Mutex
				held                []net.Conn
				answered, refused   int
				wg                  sync.WaitGroup
				start               = make(chan struct{})
				request             = "GET /setup.css HTTP/1.1\r\nHost: example.com\r\n\r\n"
				partial             = "GET /setup.css HTTP/1.1\r\nHost: example.com\r\n"
				attackerDialTimeout = 5 * time.Second
			)
			for s := range sources {
				src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s))}
				for range perSource {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						d := net.Dialer{LocalAddr: src, Timeout: attackerDialTimeout}
						c, err := d.Dial("tcp", addr)
						if err != nil {
							mu.Lock()
							refused++
							mu.Unlock()
							return
						}
						mu.Lock()
						held = append(held, c)
						mu.Unlock()
						if mode == "slow_header" {
							_, _ = io.WriteString(c, partial)
							return
						}
						_ = c.SetDeadline(time.Now().Add(2 * time.Second))
						_, _ = io.WriteString(c, request)
						resp, err := http.ReadResponse(bufio.NewReader(c), nil)
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							refused++
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						answered++
						_ = c.SetDeadline(time.Time{})
					}()
				}
			}
			t.Cleanup(func() {
				for _, c := range held {
					c.Close()
				}
			})
			close(start)
			wg.Wait()
			// Let the server take in what it accepted.
			time.Sleep(200 * time.Millisecond)
			t.Logf("%s: %d connections from %d addresses (bound %d, %d per client): %d answered, %d closed; the server holds %d descriptors of %d",
				mode, sources*perSource, sources, bound, perClient, answered, refused, openDescriptors(pid), descriptorChildLimit)

			var took []time.Duration
			for i := range 10 {
				t0 := time.Now()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("probe %d: %v", i, err)
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, request)
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					c.Close()
					t.Fatalf("probe %d from 127.0.0.1: no answer after %v: %v", i, time.Since(t0).Round(time.Millisecond), err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				took = append(took, time.Since(t0))
				if resp.StatusCode != 200 {
					t.Errorf("probe %d: %s", i, resp.Status)
				}
				c.Close()
			}
			if mode == "idle_keepalive" {
				// Churn: the attackers reconnect as fast as they can, each
				// new connection closing one that waits, while another
				// address asks on.
				stop := make(chan struct{})
				var churned atomic.Int64
				var cw sync.WaitGroup
				for s := range sources {
					cw.Add(1)
					go func() {
						defer cw.Done()
						d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+s))}, Timeout: time.Second}
						for {
							select {
							case <-stop:
								return
							default:
							}
							c, err := d.Dial("tcp", addr)
							if err != nil {
								continue
							}
							_ = c.SetDeadline(time.Now().Add(time.Second))
							_, _ = io.WriteString(c, request)
							if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
								_, _ = io.Copy(io.Discard, resp.Body)
								resp.Body.Close()
							}
							churned.Add(1)
							mu.Lock()
							held = append(held, c)
							mu.Unlock()
						}
					}()
				}
				time.Sleep(100 * time.Millisecond)
				var lost int
				for range 20 {
					t0 := time.Now()
					d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Timeout: 5 * time.Second}
					c, err := d.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					_, _ = io.WriteString(c, request)
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						lost++
					} else {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						took = append(took, time.Since(t0))
					}
					c.Close()
				}
				close(stop)
				cw.Wait()
				t.Logf("churn: %d attacker connections made meanwhile; 20 more probes: %d closed before their answer", churned.Load(), lost)
				if lost > 0 {
					t.Errorf("%d of 20 probes lost to the attackers' churn", lost)
				}
			}
			slices.Sort(took)
			t.Logf("%s: another address answered in median %v, max %v (%d probes, each on a new connection)",
				mode, took[len(took)/2].Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), len(took))
			if worst := took[len(took)-1]; worst > 100*time.Millisecond {
				t.Errorf("another address waited %v for its answer; want within 100 ms", worst)
			}
			if n := openDescriptors(pid); n > descriptorChildLimit {
				t.Errorf("server holds %d descriptors", n)
			}
		})
	}
}
