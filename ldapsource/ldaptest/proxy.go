package ldaptest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy relays TCP to a test directory on 127.0.0.1, holding every chunk
// the directory sends back for a delay (0: none, see SetDelay) and counting
// the connections open at once: tests use it to make a directory slow and
// to check that the pool bounds its connections.
type Proxy struct {
	Addr string // host:port to connect to instead of the directory

	delay      atomic.Int64
	countAfter atomic.Int64
	accepted   atomic.Int64

	mu        sync.Mutex
	open, top int
}

// NewProxy starts a proxy to target (host:port); t.Cleanup stops it.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String()}
	var wg sync.WaitGroup
	var conns sync.Map
	stop := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		l.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			out, err := net.DialTimeout("tcp", target, 2*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			conns.Store(in, nil)
			conns.Store(out, nil)
			var once sync.Once
			counted := make(chan struct{})
			done := func() {
				once.Do(func() {
					in.Close()
					out.Close()
					<-counted
					p.mu.Lock()
					p.open--
					p.mu.Unlock()
				})
			}
			wg.Add(3)
			go func() {
				defer wg.Done()
				defer close(counted)
				if d := time.Duration(p.countAfter.Load()); d > 0 {
					select {
					case <-time.After(d):
					case <-stop:
					}
				}
				p.mu.Lock()
				p.open++
				p.top = max(p.top, p.open)
				p.mu.Unlock()
			}()
			go func() { defer wg.Done(); _, _ = io.Copy(out, in); done() }()
			go func() {
				defer wg.Done()
				defer done()
				buf := make([]byte, 32<<10)
				for {
					n, err := out.Read(buf)
					if n > 0 {
						if d := time.Duration(p.delay.Load()); d > 0 {
							select {
							case <-time.After(d):
							case <-stop:
								return
							}
						}
						if _, werr := in.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return p
}

// CountAfter makes the proxy count a connection only d after accepting it
// (and only if it is still open then), so that a connection the client
// closes just before dialing the next one does not count as open at once.
func (p *Proxy) CountAfter(d time.Duration) { p.countAfter.Store(int64(d)) }

// SetDelay sets how long each chunk from the directory is held.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Accepted returns how many connections the proxy has accepted: each is
// a connection attempt of the client, answered by the directory or not.
func (p *Proxy) Accepted() int { return int(p.accepted.Load()) }

// MaxOpen returns the most connections open at once since the last ResetMax.
func (p *Proxy) MaxOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.top
}

// ResetMax starts counting the most connections open at once anew.
func (p *Proxy) ResetMax() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.top = p.open
}
