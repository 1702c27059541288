package protocols

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// xffServer serves h on loopback, which o trusts as a proxy: requests
// name their client in X-Forwarded-For, the path a real proxy takes.
func xffServer(t *testing.T, h http.Handler) (ask func(client, target string) (int, error)) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return func(client, target string) (int, error) {
		req, err := http.NewRequest("GET", srv.URL+target, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("X-Forwarded-For", client)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
}

// together runs f(i) for i in [0, n) on workers goroutines released at
// once.
func together(n, workers int, f func(i int)) {
	var wg sync.WaitGroup
	var next atomic.Int64
	start := make(chan struct{})
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	close(start)
	wg.Wait()
}

// 600 sources in 600 /64s of one /48, behind a trusted proxy, each ask
// for unknown addresses: together they get the /48's budget,
// clients_per_48 × unknown_burst, not 600 budgets. Before, each /64 was a
// client of its own with a fresh budget (the 3.9 M lookups a
// minute from one /48). TLS handshakes (ReserveLookup) pay from it too.
func TestAggregateBudget48Spread(t *testing.T) {
	res, dir := newDemoResolver(t, demoDomains())
	o := limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 3, Clients48: 8, TrustedProxies: []string{"127.0.0.1"}})
	h := NewHandler(res, Options{Limits: o})
	ask := xffServer(t, h)
	const sources, each = 600, 3
	aggregate := int64(o.UnknownBurst * o.Clients48)
	before := dir.searches.Load()
	var ok, limited, other atomic.Int64
	together(sources*each, 64, func(i int) {
		src := fmt.Sprintf("2001:db8:77:%x::%x", i%sources, 1+i/sources)
		code, err := ask(src, fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=guess%d@example.com", i))
		switch {
		case err != nil:
			t.Error(err)
		case code == 200:
			ok.Add(1)
		case code == 429:
			limited.Add(1)
		default:
			other.Add(1)
		}
	})
	searches := dir.searches.Load() - before
	t.Logf("%d /64s of one /48 × %d unknown lookups: %d answered, %d refused 429, %d directory searches (aggregate budget %d)",
		sources, each, ok.Load(), limited.Load(), searches, aggregate)
	if searches > aggregate || ok.Load() > aggregate {
		t.Errorf("one /48 made %d directory searches (%d answers); want at most its budget of %d", searches, ok.Load(), aggregate)
	}
	if other.Load() > 0 {
		t.Errorf("%d answers neither 200 nor 429", other.Load())
	}
	// The TLS handshake's question pays from the same /48.
	if _, allowed := h.ReserveLookup(netip.MustParseAddr("2001:db8:77:ffff::1")); allowed {
		t.Error("a handshake from a fresh /64 of the spent /48 may ask the directory")
	}
	// Another /48 keeps its own.
	for i := range 3 {
		if code, err := ask("2001:db8:78::1", fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=other%d@example.com", i)); err != nil || code != 200 {
			t.Errorf("a client of another /48: %d %v", code, err)
		}
	}
}

// Many IPv4 clients behind a trusted proxy, each with a budget of its
// own, together make at most unknown_total_per_second unknown lookups a
// second (a second's worth at once). Exempt clients are not held back by
// it. Before, nothing bounded the sum.
func TestAggregateUnknownCeiling(t *testing.T) {
	res, dir := newDemoResolver(t, demoDomains())
	o := limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 3, UnknownTotalPerSecond: 20,
		TrustedProxies: []string{"127.0.0.1"}, Exempt: []string{"192.0.2.200"}})
	ask := xffServer(t, NewHandler(res, Options{Limits: o}))
	// Known addresses give their token back: a hundred cost nothing.
	for i := range 100 {
		if code, err := ask(fmt.Sprintf("10.200.0.%d", i), "/mail/config-v1.1.xml?emailaddress=alice@example.com"); err != nil || code != 200 {
			t.Fatalf("known address: %d %v", code, err)
		}
	}
	const clients = 1000
	before := dir.searches.Load()
	t0 := time.Now()
	var ok atomic.Int64
	together(clients, 64, func(i int) {
		code, err := ask(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=scan%d@example.com", i))
		if err != nil {
			t.Error(err)
		}
		if code == 200 {
			ok.Add(1)
		}
	})
	elapsed := time.Since(t0)
	searches := dir.searches.Load() - before
	allowed := int64(o.UnknownTotalPerSecond*(1+elapsed.Seconds())) + 1
	t.Logf("%d IPv4 clients, one unknown lookup each, in %v: %d answered, %d directory searches (ceiling %v a second: at most %d)",
		clients, elapsed.Round(time.Millisecond), ok.Load(), searches, o.UnknownTotalPerSecond, allowed)
	if searches > allowed {
		t.Errorf("%d directory searches in %v; want at most %d", searches, elapsed, allowed)
	}
	if ok.Load() < int64(o.UnknownTotalPerSecond) {
		t.Errorf("%d unknown lookups answered; want the ceiling's %v at once (did known ones keep tokens?)", ok.Load(), o.UnknownTotalPerSecond)
	}
	// The ceiling is spent: an exempt monitoring probe still gets through.
	for i := range 5 {
		if code, err := ask("192.0.2.200", fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=probe%d@example.com", i)); err != nil || code != 200 {
			t.Errorf("exempt client's lookup %d: %d %v", i, code, err)
		}
	}
}

// The /48 has a share of the connections too: 600 /64s of one /48
// (synthetic peers on the listener's code path) hold at most its share,
// a client at most its own, and a /64 of another /48 still gets in.
func TestAggregateConnections48(t *testing.T) {
	o := limitsFor(t, DefaultLimitOptions())
	cl := NewConnLimiter(o, 1600)
	all, perClient, perSite := cl.Bounds()
	if perClient != 100 || perSite != 400 {
		t.Fatalf("bounds %d: %d per client, %d per /48; want 100 (1/16) and 400 (1/4)", all, perClient, perSite)
	}
	admitted := 0
	for i := range 600 {
		if c := cl.admit(fakePeer(fmt.Sprintf("[2001:db8:99:%x::1]:443", i))); c != nil {
			admitted++
		}
	}
	for range 200 {
		if c := cl.admit(fakePeer("[2001:db8:98::1]:443")); c != nil {
			admitted++
		}
	}
	t.Logf("600 /64s of one /48 and 200 connections of one /64 of another: %d admitted of bound %d", admitted, all)
	if want := perSite + perClient; admitted != want {
		t.Errorf("%d admitted; want %d (the /48's share and one client's)", admitted, want)
	}
	if cl.admit(fakePeer("192.0.2.1:443")) == nil {
		t.Error("an IPv4 client was refused")
	}
}

// Near the bound, the connection waiting longest for a request makes
// room; one serving a request never does, and with all of them serving
// one a new connection is refused.
func TestDescriptorEvictsLongestWaiting(t *testing.T) {
	cl := NewConnLimiter(limitsFor(t, LimitOptions{}), 3)
	a, b, c := cl.admit(fakePeer("192.0.2.1:1")), cl.admit(fakePeer("192.0.2.2:1")), cl.admit(fakePeer("192.0.2.3:1"))
	for _, x := range []*limitedConn{a, b, c} {
		cl.ConnState(x, http.StateNew)
	}
	cl.ConnState(a, http.StateActive)
	cl.ConnState(b, http.StateActive)
	cl.ConnState(b, http.StateIdle) // b waits since now; c since before
	d := cl.admit(fakePeer("192.0.2.4:1"))
	if d == nil || !c.released || b.released || a.released {
		t.Fatalf("a new connection at the bound: admitted %v; want c (waiting longest) closed, released a=%v b=%v c=%v", d != nil, a.released, b.released, c.released)
	}
	cl.ConnState(d, http.StateActive)
	cl.ConnState(b, http.StateActive)
	if cl.admit(fakePeer("192.0.2.5:1")) != nil {
		t.Error("a connection serving a request was closed to make room")
	}
	if n := cl.Open(); n != 3 {
		t.Errorf("%d open; want 3", n)
	}
	a.Close()
	if cl.admit(fakePeer("192.0.2.5:1")) == nil {
		t.Error("a closed connection did not give its place back")
	}
}

// A request on a kept-alive connection takes it out of the waiting queue
// and puts it back (ConnState Active, then Idle) without allocating, and
// the queue stays in the order the connections last went idle.
func TestDescriptorQueueRequestCycle(t *testing.T) {
	cl := NewConnLimiter(limitsFor(t, LimitOptions{}), 4)
	conns := make([]*limitedConn, 4)
	for i := range conns {
		conns[i] = cl.admit(fakePeer(fmt.Sprintf("192.0.2.%d:1", i+1)))
		cl.ConnState(conns[i], http.StateNew)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, i := range []int{2, 0, 3, 1} { // idle from now on: 2, 0, 3, 1
			cl.ConnState(conns[i], http.StateActive)
			cl.ConnState(conns[i], http.StateIdle)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 4 requests; want 0", allocs)
	}
	for n, want := range []int{2, 0, 3} {
		if cl.admit(fakePeer(fmt.Sprintf("198.51.100.%d:1", n+1))) == nil || !conns[want].released {
			t.Fatalf("at the bound: connection %d (waiting longest) not closed", want)
		}
	}
	if conns[1].released {
		t.Error("the connection that went idle last was closed before its turn")
	}
}

// The bound derived from the descriptor limit leaves the reserve.
func TestDescriptorBoundDerived(t *testing.T) {
	if got := MaxConnections(LimitOptions{MaxConns: 300}, 96); got != 300 {
		t.Errorf("configured 300: %d", got)
	}
	limit := descriptorLimit()
	if limit <= 0 {
		t.Fatal("RLIMIT_NOFILE unreadable")
	}
	want := min(maxDerivedConns, max(limit/2, limit-96))
	if got := MaxConnections(LimitOptions{}, 96); got != want {
		t.Errorf("derived from %d descriptors less 96: %d; want %d", limit, got, want)
	}
	t.Logf("RLIMIT_NOFILE %d: max_connections %d", limit, want)
}

// fakePeer is a connection from addr.
func fakePeer(addr string) net.Conn {
	a, b := net.Pipe()
	b.Close()
	return peerConn{a, addr}
}

type peerConn struct {
	net.Conn
	addr string
}

func (p peerConn) RemoteAddr() net.Addr { return fakeAddr(p.addr) }

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// A reload with changed limits carries what a /48 and the ceiling have
// spent, as it does a client's: a SIGHUP is no fresh budget for a /48.
func TestAggregateBudgetSurvivesReload(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	o := LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 2, Clients48: 2, UnknownTotalPerSecond: 0.001}
	h := NewHandler(res, Options{Limits: limitsFor(t, o)})
	spend := func(h *Handler, peer string) bool {
		settle, ok := h.ReserveLookup(netip.MustParseAddr(peer))
		if ok {
			settle(false)
		}
		return ok
	}
	// The ceiling's burst is 1: the first lookup spends it.
	if !spend(h, "2001:db8:5:1::1") {
		t.Fatal("first lookup refused")
	}
	if spend(h, "192.0.2.1") {
		t.Fatal("the spent ceiling let a lookup through")
	}
	o.UnknownTotalPerSecond, o.MaxBodyBytes = 1000, 1000 // a changed section: the state is carried
	h2 := NewHandler(res, Options{Limits: limitsFor(t, o), Previous: h})
	for i := range 3 {
		spend(h2, fmt.Sprintf("2001:db8:5:%x::1", 2+i))
	}
	n := 0
	for i := range 100 {
		if spend(h2, fmt.Sprintf("2001:db8:5:%x::1", 100+i)) {
			n++
		}
	}
	if n > 0 {
		t.Errorf("after a reload, %d fresh /64s of a /48 that had spent 1 of its 4 got more than its remaining 3", n)
	}
}
