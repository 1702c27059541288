package protocols

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/mailbeacon/mailbeacon/policy"
)

// limRequest sends one request from remote (ip:port) with optional headers
// ("Name: value").
func limRequest(h http.Handler, method, target, remote string, body io.Reader, headers ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, body)
	req.RemoteAddr = remote
	for _, hv := range headers {
		k, v, _ := strings.Cut(hv, ":")
		req.Header.Add(k, strings.TrimSpace(v))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// limited is h's count of requests refused for reason r.
func limited(t testing.TB, h *Handler, r limitReason) float64 {
	t.Helper()
	return counterValue(t, h.met.limited[r])
}

// unknownTokens is what is left of the unknown-address budget of client ip.
func unknownTokens(h *Handler, ip string) float64 {
	l := h.lim
	key := clientKey(netip.MustParseAddr(ip))
	sh := l.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.clients[key].unk.level(l.now(), l.unkRate, l.unkBurst)
}

func limitsFor(t testing.TB, o LimitOptions) LimitOptions {
	t.Helper()
	if err := o.Prepare(); err != nil {
		t.Fatal(err)
	}
	return o
}

func retryAfter(t testing.TB, rec *httptest.ResponseRecorder) int {
	t.Helper()
	n, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	if err != nil || n < 1 {
		t.Errorf("Retry-After %q: want a positive number of seconds", rec.Header().Get("Retry-After"))
	}
	return n
}

func TestLimitOptionsPrepare(t *testing.T) {
	if err := new(LimitOptions).Prepare(); err != nil {
		t.Errorf("zero options: %v", err)
	}
	def := DefaultLimitOptions()
	if err := def.Prepare(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(o *LimitOptions)
		key  string // "" for valid
	}{
		{"negative rate", func(o *LimitOptions) { o.RequestsPerSecond = -1 }, "limits.requests_per_second"},
		{"rate without burst", func(o *LimitOptions) { o.Burst = 0 }, "limits.burst"},
		{"negative unknown rate", func(o *LimitOptions) { o.UnknownPerMinute = -3 }, "limits.unknown_per_minute"},
		{"unknown without burst", func(o *LimitOptions) { o.UnknownBurst = 0 }, "limits.unknown_burst"},
		{"negative clients", func(o *LimitOptions) { o.MaxClients = -1 }, "limits.max_clients"},
		{"negative concurrency", func(o *LimitOptions) { o.MaxConcurrent = -1 }, "limits.max_concurrent"},
		{"negative body", func(o *LimitOptions) { o.MaxBodyBytes = -1 }, "limits.max_body_bytes"},
		{"negative connections", func(o *LimitOptions) { o.MaxConns = -1 }, "limits.max_connections"},
		{"negative /48 share", func(o *LimitOptions) { o.Clients48 = -1 }, "limits.clients_per_48"},
		{"negative ceiling", func(o *LimitOptions) { o.UnknownTotalPerSecond = -1 }, "limits.unknown_total_per_second"},
		{"ceiling off", func(o *LimitOptions) { o.UnknownTotalPerSecond, o.Clients48 = 0, 0 }, ""},
		{"bad header", func(o *LimitOptions) { o.ClientIPHeader = "X-Real-IP" }, "limits.client_ip_header"},
		{"bad proxy", func(o *LimitOptions) { o.TrustedProxies = []string{"10.0.0.0/8", "proxy.example.com"} }, "limits.trusted_proxies[1]"},
		{"bad cidr", func(o *LimitOptions) { o.TrustedProxies = []string{"10.0.0.0/33"} }, "limits.trusted_proxies[0]"},
		{"bad exempt", func(o *LimitOptions) { o.Exempt = []string{"192.0.2.10", "probe.example.net"} }, "limits.exempt[1]"},
		{"good exempt", func(o *LimitOptions) { o.Exempt = []string{"192.0.2.10", "2001:db8::/64", "::ffff:198.51.100.7"} }, ""},
		{"rates off", func(o *LimitOptions) { o.RequestsPerSecond, o.Burst, o.UnknownPerMinute, o.UnknownBurst = 0, 0, 0, 0 }, ""},
		{"good proxies", func(o *LimitOptions) {
			o.TrustedProxies = []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::ffff:198.51.100.0/120"}
		}, ""},
		{"forwarded header", func(o *LimitOptions) { o.ClientIPHeader = "forwarded" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultLimitOptions()
			tc.mod(&o)
			err := o.Prepare()
			switch {
			case tc.key == "" && err != nil:
				t.Errorf("Prepare: %v", err)
			case tc.key != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.key+":")):
				t.Errorf("Prepare = %v; want an error naming %s", err, tc.key)
			}
		})
	}
}

func TestClientIP(t *testing.T) {
	xff := limitsFor(t, LimitOptions{TrustedProxies: []string{"10.0.0.0/8", "2001:db8:ffff::/48"}})
	fwd := limitsFor(t, LimitOptions{TrustedProxies: []string{"10.0.0.0/8"}, ClientIPHeader: "Forwarded"})
	none := limitsFor(t, LimitOptions{})
	for _, tc := range []struct {
		name    string
		opts    LimitOptions
		remote  string
		headers []string
		want    string
	}{
		{"direct", xff, "192.0.2.1:4000", nil, "192.0.2.1"},
		{"direct v6", xff, "[2001:db8::1]:4000", nil, "2001:db8::1"},
		{"v4-mapped peer", xff, "[::ffff:192.0.2.1]:4000", nil, "192.0.2.1"},
		{"untrusted peer's header ignored", xff, "192.0.2.1:4000", []string{"X-Forwarded-For: 198.51.100.9"}, "192.0.2.1"},
		{"no trusted proxies: header ignored", none, "10.0.0.1:4000", []string{"X-Forwarded-For: 198.51.100.9"}, "10.0.0.1"},
		{"trusted proxy", xff, "10.0.0.1:4000", []string{"X-Forwarded-For: 198.51.100.9"}, "198.51.100.9"},
		{"client-supplied entries left of the real one", xff, "10.0.0.1:4000",
			[]string{"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 198.51.100.9"}, "198.51.100.9"},
		{"chain of trusted proxies", xff, "10.0.0.1:4000",
			[]string{"X-Forwarded-For: 198.51.100.9, 10.1.1.1, 10.2.2.2"}, "198.51.100.9"},
		{"several header lines", xff, "10.0.0.1:4000",
			[]string{"X-Forwarded-For: 6.6.6.6", "X-Forwarded-For: 198.51.100.9, 10.9.9.9"}, "198.51.100.9"},
		{"forged trusted address left of real client", xff, "10.0.0.1:4000",
			[]string{"X-Forwarded-For: 10.5.5.5, 198.51.100.9"}, "198.51.100.9"},
		{"v6 client with port", xff, "10.0.0.1:4000", []string{"X-Forwarded-For: [2001:db8:1::5]:1234"}, "2001:db8:1::5"},
		{"v4 client with port", xff, "10.0.0.1:4000", []string{"X-Forwarded-For: 198.51.100.9:5555"}, "198.51.100.9"},
		{"garbage stops at last trusted hop", xff, "10.0.0.1:4000",
			[]string{"X-Forwarded-For: 198.51.100.9, <script>, 10.2.2.2"}, "10.2.2.2"},
		{"all trusted: left-most", xff, "10.0.0.1:4000", []string{"X-Forwarded-For: 10.3.3.3, 10.2.2.2"}, "10.3.3.3"},
		{"empty header", xff, "10.0.0.1:4000", []string{"X-Forwarded-For: "}, "10.0.0.1"},
		{"no header from trusted proxy", xff, "10.0.0.1:4000", nil, "10.0.0.1"},
		{"Forwarded ignored when X-Forwarded-For configured", xff, "10.0.0.1:4000",
			[]string{"Forwarded: for=198.51.100.9"}, "10.0.0.1"},
		{"X-Forwarded-For ignored when Forwarded configured", fwd, "10.0.0.1:4000",
			[]string{"X-Forwarded-For: 198.51.100.9"}, "10.0.0.1"},
		{"Forwarded", fwd, "10.0.0.1:4000", []string{"Forwarded: for=198.51.100.9;proto=https;by=10.0.0.1"}, "198.51.100.9"},
		{"Forwarded quoted v6 with port", fwd, "10.0.0.1:4000",
			[]string{`Forwarded: for=1.1.1.1, for="[2001:db8:cafe::17]:4711"`}, "2001:db8:cafe::17"},
		{"Forwarded case and spaces", fwd, "10.0.0.1:4000", []string{"Forwarded: proto=https; For=198.51.100.9"}, "198.51.100.9"},
		{"Forwarded unknown", fwd, "10.0.0.1:4000", []string{"Forwarded: for=unknown"}, "10.0.0.1"},
		{"Forwarded obfuscated", fwd, "10.0.0.1:4000", []string{"Forwarded: for=_hidden, for=10.7.7.7"}, "10.7.7.7"},
		{"Forwarded element without for", fwd, "10.0.0.1:4000",
			[]string{"Forwarded: for=198.51.100.9, proto=https"}, "198.51.100.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &limiter{opts: tc.opts}
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tc.remote
			for _, hv := range tc.headers {
				k, v, _ := strings.Cut(hv, ":")
				req.Header.Add(k, strings.TrimSpace(v))
			}
			ip, ok := l.clientIP(req)
			if !ok || ip.String() != tc.want {
				t.Errorf("clientIP = %v, %v; want %s", ip, ok, tc.want)
			}
		})
	}
	// A peer that is no IP address at all (a Unix socket).
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "@"
	if _, ok := (&limiter{}).clientIP(req); ok {
		t.Errorf("clientIP of a unix peer is an address")
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":              "192.0.2.1",
		"::ffff:192.0.2.1":       "192.0.2.1",
		"2001:db8:1:2:3:4:5:6":   "2001:db8:1:2::",
		"2001:db8:1:2:ffff::1":   "2001:db8:1:2::",
		"2001:db8:1:3::1":        "2001:db8:1:3::",
		"fe80::1%eth0":           "fe80::",
		"::1":                    "::",
		"2001:db8:aaaa:bbbb::99": "2001:db8:aaaa:bbbb::",
	} {
		if got := clientKey(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("clientKey(%s) = %s; want %s", in, got, want)
		}
	}
}

func TestBucket(t *testing.T) {
	const rate, burst = 1e-9, 3.0 // one token a second
	var b bucket
	sec := int64(time.Second)
	steps := []struct {
		at   int64
		ok   bool
		wait time.Duration
	}{
		{1, true, 0}, {1, true, 0}, {1, true, 0}, // the burst
		{1, false, time.Second},             // empty
		{1 + sec/2, false, time.Second / 2}, // half a token back
		{1 + sec, true, 0},                  // one token back
		{1 + sec, false, time.Second},
		{1 + 100*sec, true, 0}, {1 + 100*sec, true, 0}, {1 + 100*sec, true, 0}, // full again, not more
		{1 + 100*sec, false, time.Second},
	}
	for i, st := range steps {
		ok, wait := b.take(st.at, rate, burst)
		if ok != st.ok || (!ok && (wait < st.wait-time.Millisecond || wait > st.wait+time.Millisecond)) {
			t.Errorf("step %d at %d: take = %v, %v; want %v, %v", i, st.at, ok, wait, st.ok, st.wait)
		}
	}
}

func TestRequestRateLimit(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{RequestsPerSecond: 0.001, Burst: 5, TrustedProxies: []string{"10.0.0.1"}})})
	before := limited(t, h, limitRequests)
	target := "/mail/config-v1.1.xml?emailaddress=bob@example.com"
	for i := range 5 {
		if rec := limRequest(h, "GET", target, "192.0.2.1:1000", nil); rec.Code != 200 {
			t.Fatalf("request %d within the burst: %d", i, rec.Code)
		}
	}
	for _, tc := range []struct {
		name, remote string
		headers      []string
		want         int
	}{
		{"over the burst", "192.0.2.1:1001", nil, 429},
		{"same client, other port", "192.0.2.1:2002", nil, 429},
		{"any path", "192.0.2.1:2002", nil, 429},
		{"other client", "192.0.2.2:1000", nil, 200},
		{"limited client behind the trusted proxy", "10.0.0.1:1000", []string{"X-Forwarded-For: 192.0.2.1"}, 429},
		{"other client behind the trusted proxy", "10.0.0.1:1000", []string{"X-Forwarded-For: 192.0.2.3"}, 200},
		{"header from an untrusted peer does not help", "192.0.2.1:3000", []string{"X-Forwarded-For: 192.0.2.9"}, 429},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := limRequest(h, "GET", target, tc.remote, nil, tc.headers...)
			if rec.Code != tc.want {
				t.Fatalf("status %d; want %d: %s", rec.Code, tc.want, rec.Body)
			}
			if tc.want == 429 {
				if n := retryAfter(t, rec); n < 500 {
					t.Errorf("Retry-After %d; want about 1000 s at 0.001 requests/s", n)
				}
				if strings.Contains(rec.Body.String(), "bob") {
					t.Errorf("429 body echoes the request: %s", rec.Body)
				}
			}
		})
	}
	if got := limited(t, h, limitRequests) - before; got != 5 {
		t.Errorf("mailbeacon_rate_limited_requests_total{reason=requests} rose by %v; want 5", got)
	}
}

// adXML is a POX request body for addr.
func adXML(addr string) string {
	return `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>` +
		addr + `</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
}

// The unknown-address budget, through every endpoint that looks an address
// up: once a client has spent it, its lookups are refused before they
// reach the directory, and other clients are not affected.
func TestUnknownAddressBudget(t *testing.T) {
	lookups := []struct {
		name   string
		method string
		target func(addr string) string
		body   func(addr string) string
	}{
		{"autoconfig", "GET", func(a string) string { return "/mail/config-v1.1.xml?emailaddress=" + a }, nil},
		{"autodiscover pox", "POST", func(string) string { return "https://autodiscover.example.com/autodiscover/autodiscover.xml" }, adXML},
		{"autodiscover json", "GET", func(a string) string { return "/autodiscover/autodiscover.json/v1.0/" + a + "?Protocol=ActiveSync" }, nil},
		{"mobileconfig", "GET", func(a string) string { return "/mobileconfig?emailaddress=" + a }, nil},
		{"setup page", "GET", func(a string) string { return "/?emailaddress=" + a }, nil},
	}
	send := func(h *Handler, l int, addr, remote string) *httptest.ResponseRecorder {
		lk := lookups[l]
		var body io.Reader
		if lk.body != nil {
			body = strings.NewReader(lk.body(addr))
		}
		return limRequest(h, lk.method, lk.target(addr), remote, body)
	}
	for i, lk := range lookups {
		for _, cached := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/cached_%v", lk.name, cached), func(t *testing.T) {
				testUnknownAddressBudget(t, cached, func(h *Handler, addr, remote string) *httptest.ResponseRecorder {
					return send(h, i, addr, remote)
				})
			})
		}
	}
	t.Run("ipv6 /64 shares one budget", func(t *testing.T) {
		res, _ := newDemoResolver(t, demoDomains())
		h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 2})})
		for n, remote := range []string{"[2001:db8:0:1::1]:1", "[2001:db8:0:1::2]:1", "[2001:db8:0:1:ffff::3]:1"} {
			rec := send(h, 0, fmt.Sprintf("x%d@example.com", n), remote)
			if want := map[bool]int{true: 200, false: 429}[n < 2]; rec.Code != want {
				t.Errorf("%s: %d; want %d", remote, rec.Code, want)
			}
		}
	})
	t.Run("a served domain gives the token back", func(t *testing.T) {
		res, _ := newDemoResolver(t, demoDomains())
		h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 1})})
		for range 5 {
			if rec := limRequest(h, "GET", "/mail/config-v1.1.xml", "192.0.2.9:1", nil); rec.Code != 200 {
				t.Fatalf("autoconfig without an address: %d", rec.Code)
			}
		}
		if rec := send(h, 0, "x@example.com", "192.0.2.9:1"); rec.Code != 200 {
			t.Fatalf("unknown address within the budget: %d", rec.Code)
		}
		// The domain lookup is directory work too: refused once the
		// budget is spent.
		if rec := limRequest(h, "GET", "/mail/config-v1.1.xml", "192.0.2.9:1", nil); rec.Code != 429 {
			t.Errorf("domain lookup with the budget spent: %d", rec.Code)
		}
	})
}

// testUnknownAddressBudget is TestUnknownAddressBudget through one
// endpoint (send), with a resolver that answers known addresses from its
// cache apart (cached, as policy.Resolver does) or not.
func testUnknownAddressBudget(t *testing.T, cached bool, send func(h *Handler, addr, remote string) *httptest.ResponseRecorder) {
	fake, dir := newDemoResolver(t, demoDomains())
	var res Resolver = fake
	if cached {
		res = cachedFake{fake}
	}
	h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 3})})
	before := limited(t, h, limitUnknown)
	scanner := "192.0.2.66:5000"
	// Known addresses cost nothing.
	for range 5 {
		if rec := send(h, "alice@example.com", scanner); rec.Code != 200 {
			t.Fatalf("alice: %d %s", rec.Code, rec.Body)
		}
	}
	for n := range 3 {
		if rec := send(h, fmt.Sprintf("guess%d@example.com", n), scanner); rec.Code != 200 {
			t.Fatalf("unknown address %d within the budget: %d %s", n, rec.Code, rec.Body)
		}
	}
	searches := dir.searches.Load()
	for n := range 3 {
		rec := send(h, fmt.Sprintf("more%d@example.com", n), scanner)
		if rec.Code != 429 {
			t.Fatalf("unknown address over the budget: %d %s", rec.Code, rec.Body)
		}
		retryAfter(t, rec)
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("429 Content-Type %q: the handler's answer leaked through", ct)
		}
		if strings.Contains(rec.Body.String(), "more") || strings.Contains(rec.Body.String(), "example.com") {
			t.Errorf("429 body carries the handler's answer: %s", rec.Body)
		}
	}
	// While refused, even a known address is not looked up for
	// this client, nor answered from the cache: a spent budget
	// tells nothing of which addresses exist...
	for _, known := range []string{"bob@example.com", "alice@example.com"} {
		if rec := send(h, known, scanner); rec.Code != 429 {
			t.Errorf("known address %s from a refused client: %d", known, rec.Code)
		}
	}
	if got := dir.searches.Load(); got != searches {
		t.Errorf("%d directory searches for refused lookups; want none", got-searches)
	}
	// ...but another client is served, and from the same network
	// only the same IPv6 /64 shares the budget.
	for _, other := range []string{"192.0.2.67:5000", "[2001:db8:0:2::1]:5000"} {
		if rec := send(h, "nobody@example.com", other); rec.Code != 200 {
			t.Errorf("other client %s: %d", other, rec.Code)
		}
	}
	if got := limited(t, h, limitUnknown) - before; got != 5 {
		t.Errorf("mailbeacon_rate_limited_requests_total{reason=unknown_addresses} rose by %v; want 5", got)
	}
}

// cachedFake answers the known addresses it was asked before without
// Resolve, as policy.Resolver's ResolveCached does from its cache.
type cachedFake struct{ *fakeResolver }

func (r cachedFake) ResolveCached(addr policy.Address) (*policy.Account, bool) {
	r.mu.Lock()
	seen := r.seen[addr.String()]
	r.mu.Unlock()
	d, ok := r.domains[addr.Domain]
	if !seen || !ok || r.fail.Load() {
		return nil, false
	}
	a := r.account(d, addr)
	return a, a != nil
}

// With policy.unknown: reject, the 404 answers count as unknown too.
func TestUnknownBudgetRejectPolicy(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	res.reject = true
	h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 2})})
	for n, want := range []int{404, 404, 429} {
		rec := limRequest(h, "GET", fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=n%d@example.com", n), "192.0.2.5:1", nil)
		if rec.Code != want {
			t.Errorf("lookup %d: %d; want %d", n, rec.Code, want)
		}
	}
}

// gatedResolver blocks lookups of "slow@example.com" until released.
type gatedResolver struct {
	Resolver
	entered chan struct{}
	release chan struct{}
}

func (g *gatedResolver) Resolve(ctx context.Context, addr policy.Address) (*policy.Account, error) {
	if addr.Local == "slow" {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Resolver.Resolve(ctx, addr)
}

func TestMaxConcurrent(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	g := &gatedResolver{Resolver: res, entered: make(chan struct{}), release: make(chan struct{})}
	h := NewHandler(g, Options{Limits: limitsFor(t, LimitOptions{MaxConcurrent: 2})})
	before := limited(t, h, limitConcurrency)
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for n := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := limRequest(h, "GET", "/mail/config-v1.1.xml?emailaddress=slow@example.com", fmt.Sprintf("192.0.2.%d:1", n+1), nil)
			codes <- rec.Code
		}()
		<-g.entered
	}
	// Two requests are in progress: a third is refused at once, health
	// checks still get through to the router.
	rec := limRequest(h, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", "192.0.2.3:1", nil)
	if rec.Code != 503 {
		t.Errorf("third concurrent request: %d; want 503", rec.Code)
	}
	retryAfter(t, rec)
	if rec := limRequest(h, "GET", "/healthz", "192.0.2.3:1", nil); rec.Code == 503 {
		t.Errorf("/healthz refused for concurrency")
	}
	close(g.release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("blocked request finished with %d", c)
		}
	}
	if rec := limRequest(h, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", "192.0.2.3:1", nil); rec.Code != 200 {
		t.Errorf("after the others finished: %d", rec.Code)
	}
	if got := limited(t, h, limitConcurrency) - before; got != 1 {
		t.Errorf("concurrency refusals counted %v; want 1", got)
	}
}

// chunked hides the length of a body, as Transfer-Encoding: chunked does.
type chunked struct{ io.Reader }

func TestMaxBodyBytes(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{MaxBodyBytes: 1000})})
	padded := adXML("bob@example.com")
	pad := strings.Repeat(" ", 2000)
	for _, tc := range []struct {
		name string
		body io.Reader
		want int
	}{
		{"small", strings.NewReader(padded), 200},
		{"declared too large", strings.NewReader(padded + pad), 413},
		{"chunked too large", chunked{strings.NewReader(padded + pad)}, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := limRequest(h, "POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml", "192.0.2.1:1", tc.body)
			if rec.Code != tc.want {
				t.Errorf("status %d; want %d: %.200s", rec.Code, tc.want, rec.Body)
			}
		})
	}
	// Zero options still bound bodies, at 64 KiB.
	h = NewHandler(res, Options{})
	rec := limRequest(h, "POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml", "192.0.2.1:1", strings.NewReader(strings.Repeat("x", 65<<10)))
	if rec.Code != 413 {
		t.Errorf("65 KiB body with default options: %d", rec.Code)
	}
}

// A scanner with many source addresses cannot grow the client table past
// limits.max_clients.
func TestLimiterTableBounded(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	opts := limitsFor(t, LimitOptions{RequestsPerSecond: 1, Burst: 1, UnknownPerMinute: 1, UnknownBurst: 1, MaxClients: 640})
	h := NewHandler(res, Options{Limits: opts})
	for n := range 20000 {
		remote := fmt.Sprintf("198.%d.%d.%d:1", n>>16&255, n>>8&255, n&255)
		if rec := limRequest(h, "GET", "/setup.css", remote, nil); rec.Code != 200 {
			t.Fatalf("new client %s: %d", remote, rec.Code)
		}
	}
	if n := h.lim.clients(); n > 640 || n < 320 {
		t.Errorf("%d clients remembered after 20000 sources; want at most 640 (and the table in use)", n)
	}
}

func TestMakeRoomPrefersIdleClients(t *testing.T) {
	l := &limiter{reqRate: 1e-9, reqBurst: 2, unkRate: 1e-9, unkBurst: 2, perShard: 4}
	sh := &l.shards[0]
	sh.clients = map[netip.Addr]clientState{}
	now := int64(100 * time.Second)
	busy := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, i}) }
	for i := range byte(2) {
		sh.clients[busy(i)] = clientState{req: bucket{tokens: 0, last: now}}
	}
	for i := range byte(2) {
		sh.clients[busy(100+i)] = clientState{req: bucket{tokens: 0, last: now - int64(time.Hour)}} // refilled long ago
	}
	l.makeRoom(sh, now)
	for i := range byte(2) {
		if _, ok := sh.clients[busy(i)]; !ok {
			t.Errorf("busy client %d forgotten while idle ones were there", i)
		}
		if _, ok := sh.clients[busy(100+i)]; ok {
			t.Errorf("idle client %d kept", i)
		}
	}
	// Full of busy clients: one arbitrary client goes.
	sh.clients[busy(2)] = clientState{req: bucket{last: now}}
	sh.clients[busy(3)] = clientState{req: bucket{last: now}}
	l.makeRoom(sh, now+1)
	if len(sh.clients) != 3 {
		t.Errorf("%d clients after making room in a full shard; want 3", len(sh.clients))
	}
}

// A handler that replaces another (a reload) keeps the clients' state
// when the limits are the same, and starts afresh when they changed.
func TestPreviousHandlerKeepsBudgets(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	o := limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 1})
	old := NewHandler(res, Options{Limits: o})
	limRequest(old, "GET", "/mail/config-v1.1.xml?emailaddress=x1@example.com", "192.0.2.3:1", nil)
	same := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 1}), Previous: old})
	if rec := limRequest(same, "GET", "/mail/config-v1.1.xml?emailaddress=x2@example.com", "192.0.2.3:1", nil); rec.Code != 429 {
		t.Errorf("same limits after a reload: %d, want the spent budget's 429", rec.Code)
	}
	changed := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 2}), Previous: same})
	if rec := limRequest(changed, "GET", "/mail/config-v1.1.xml?emailaddress=x3@example.com", "192.0.2.3:1", nil); rec.Code != 200 {
		t.Errorf("changed limits after a reload: %d, want the token the raised burst adds", rec.Code)
	}
	if same.cache == old.cache {
		t.Error("the render cache carried over a reload")
	}
}

// The budget's give-back as an oracle: a client that has spent its
// unknown-address budget but one token asks a candidate, then an address
// nobody has. By default a known candidate gives its token back, so the
// second lookup is answered exactly when the candidate exists. With
// KeepKnownTokens (policy.privacy strict) it is refused either way.
func TestKeepKnownTokensClosesTheBudgetOracle(t *testing.T) {
	probe := func(t *testing.T, keep bool, candidate string) int {
		res, _ := newDemoResolver(t, demoDomains())
		h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 3, KeepKnownTokens: keep})})
		const scanner = "192.0.2.77:4000"
		ask := func(addr string) int {
			return limRequest(h, "GET", "/mail/config-v1.1.xml?emailaddress="+addr, scanner, nil).Code
		}
		for n := range 2 {
			if code := ask(fmt.Sprintf("spent%d@example.com", n)); code != 200 {
				t.Fatalf("spending the budget: %d", code)
			}
		}
		if code := ask(candidate); code != 200 {
			t.Fatalf("candidate %s: %d", candidate, code)
		}
		return ask("nobody-at-all@example.com")
	}
	for _, tc := range []struct {
		keep                bool
		wantKnown, wantNone int
	}{
		{false, 200, 429}, // the oracle, as documented for standard privacy
		{true, 429, 429},
	} {
		known, unknown := probe(t, tc.keep, "alice@example.com"), probe(t, tc.keep, "guess@example.com")
		if known != tc.wantKnown || unknown != tc.wantNone {
			t.Errorf("KeepKnownTokens %v: after a known candidate %d, after an unknown one %d; want %d and %d",
				tc.keep, known, unknown, tc.wantKnown, tc.wantNone)
		}
	}
}

// ReserveLookup charges a TLS peer's unknown-address budget as requests
// are charged: no token left, no question; a served name gives its token
// back; an exempt peer spends nothing; an IPv6 peer is its /64.
func TestSNIReserveLookup(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(res, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 2, Exempt: []string{"192.0.2.99"}})})
	take := func(peer string) func(bool) {
		t.Helper()
		settle, ok := h.ReserveLookup(netip.MustParseAddr(peer))
		if !ok {
			return nil
		}
		return settle
	}
	a := take("192.0.2.1")
	if a == nil {
		t.Fatal("first question refused")
	}
	a(true) // served: given back
	for i := range 2 {
		s := take("192.0.2.1")
		if s == nil {
			t.Fatalf("question %d refused with tokens left", i+2)
		}
		s(false)
	}
	if take("192.0.2.1") != nil {
		t.Error("a question was let through with the budget spent")
	}
	if take("::ffff:192.0.2.1") != nil {
		t.Error("the IPv4-mapped form of the same peer got a budget of its own")
	}
	if take("192.0.2.2") == nil {
		t.Error("another peer was refused")
	}
	for range 2 {
		take("2001:db8:1:2::1")(false)
	}
	if take("2001:db8:1:2::ffff") != nil {
		t.Error("another address of the same IPv6 /64 got a budget of its own")
	}
	for range 10 {
		s := take("192.0.2.99")
		if s == nil {
			t.Fatal("an exempt peer was refused")
		}
		s(false)
	}
}
