package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Issue 18, findings 5 and 7, against serve --demo: GETs that declare a
// body and trickle it leave other clients answered, and a refusal before
// the body comes at once, before and after a reload.

// trickleGETs opens n connections from src, each sending a GET of target
// that declares a body of 1000 bytes and trickles it at a byte a second
// until the server hangs up or the test ends. It returns once every
// request's headers are sent.
func trickleGETs(t *testing.T, src, addr, target string, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1000\r\n\r\n", target); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
				}
			}
		}()
	}
}

// unsentBody sends request, whose declared body never follows, and
// returns the answer's status, whether it said Connection: close and how
// long it took.
func unsentBody(t *testing.T, addr, request string) (status string, closed bool, took time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "no answer: " + err.Error(), false, time.Since(start)
	}
	resp.Body.Close()
	return resp.Status, resp.Close, time.Since(start)
}

// The wave (4 addresses × 32, against max_concurrent lowered to 64) and
// two refusals, at start and after a SIGHUP. Before, the wave held every
// shared slot for the read timeout (probes got 503), the 405 and the
// style sheet came after 10 s.
func TestSlowBodyWaveFullStack(t *testing.T) {
	s := startServe(t, []string{"--demo", "--config", demoServeConfig(t, "limits:\n  max_concurrent: 64\n")}, "operations.listen")
	base := s.addrs["server.listen"]
	addr := strings.TrimPrefix(base, "http://")
	client := &http.Client{Timeout: 5 * time.Second}
	for round, when := range []string{"at start", "after a reload"} {
		if round > 0 {
			s.hup()
			s.waitLog("configuration reloaded", round)
		}
		// 4 addresses × 32 slow GETs: twice the shared slots.
		for i := range 4 {
			trickleGETs(t, fmt.Sprintf("127.0.%d.%d", 10+round, 2+i), addr, "/setup.css", 32)
		}
		time.Sleep(300 * time.Millisecond)
		probes := map[int]int{}
		for i := range 20 {
			path := "/setup.css"
			if i%2 == 1 {
				path = "/mail/config-v1.1.xml?emailaddress=alice@example.com"
			}
			code, _ := get(t, client, base+path, "")
			probes[code]++
		}
		t.Logf("%s: probes while 128 slow GETs are open: %v", when, probes)
		if probes[200] != 20 {
			t.Errorf("%s: probes from another address while 128 slow GETs are open: %v; want 20 × 200", when, probes)
		}
		for _, tc := range []struct{ request, status string }{
			{"PUT /mobileconfig HTTP/1.1\r\nHost: example.com\r\nContent-Length: 500\r\n\r\n", "405"},
			{"GET /setup.css HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1000\r\n\r\n", "413"},
		} {
			status, closed, took := unsentBody(t, addr, tc.request)
			line, _, _ := strings.Cut(tc.request, "\r\n")
			t.Logf("%s: %s, %s after %v, Connection: close %v", when, line, status, took, closed)
			if !strings.HasPrefix(status, tc.status) || !closed || took > time.Second {
				t.Errorf("%s: %s with its body unsent: %s after %v, close %v; want %s at once with Connection: close", when, line, status, took, closed, tc.status)
			}
		}
	}
}
