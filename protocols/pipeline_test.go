package protocols

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// The findings of issue 10, each attacked from outside the handler.

// countingResolver counts the lookups that reach the resolver and holds
// each for a moment, so that a burst's requests are all in flight at once.
type countingResolver struct {
	Resolver
	hold    time.Duration
	lookups atomic.Int64
}

func (c *countingResolver) Resolve(ctx context.Context, addr policy.Address) (*policy.Account, error) {
	c.lookups.Add(1)
	time.Sleep(c.hold)
	return c.Resolver.Resolve(ctx, addr)
}

// Finding 1: hundreds of distinct unknown addresses sent at once from one
// client get no more than unknown_burst lookups through, on every
// endpoint that looks addresses up.
func TestUnknownBudgetHoldsUnderConcurrency(t *testing.T) {
	const burst, n = 20, 300
	res, _ := newDemoResolver(t, demoDomains())
	cr := &countingResolver{Resolver: res, hold: 50 * time.Millisecond}
	h := NewHandler(cr, Options{Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: burst})})
	start := make(chan struct{})
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := fmt.Sprintf("guess%d@example.com", i)
			var req *http.Request
			switch i % 3 {
			case 0:
				req = httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil)
			case 1:
				req = httptest.NewRequest("POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml", strings.NewReader(adXML(addr)))
			default:
				req = httptest.NewRequest("GET", "/autodiscover/autodiscover.json/v1.0/"+addr+"?Protocol=ActiveSync", nil)
			}
			req.RemoteAddr = "192.0.2.66:4000"
			<-start
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case 200:
				ok.Add(1)
			case 429:
				refused.Add(1)
			default:
				t.Errorf("%s: %d %s", addr, rec.Code, rec.Body)
			}
		}()
	}
	close(start)
	wg.Wait()
	t.Logf("%d unknown addresses at once: %d answered, %d refused, %d lookups", n, ok.Load(), refused.Load(), cr.lookups.Load())
	if got := cr.lookups.Load(); got > burst {
		t.Errorf("%d lookups reached the resolver; want at most unknown_burst = %d", got, burst)
	}
	if ok.Load() > burst || ok.Load()+refused.Load() != n {
		t.Errorf("%d answered, %d refused; want at most %d answered", ok.Load(), refused.Load(), burst)
	}
}

// slowPOST opens a connection and sends an Autodiscover POST's headers
// and 10 bytes of its body, then stalls until the test ends.
func slowPOST(t *testing.T, addr, client string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	body := adXML("bob@example.com")
	fmt.Fprintf(c, "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: %s\r\nContent-Length: %d\r\n\r\n%s", client, len(body), body[:10])
	return c
}

// Finding 2: many slow bodies from two clients, each within its own
// request burst, do not make a third client wait or fail.
func TestSlowSendersDoNotStarveOthers(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	o := DefaultLimitOptions()
	o.MaxConcurrent = 40
	o.TrustedProxies = []string{"127.0.0.1"} // the test's clients come through "a proxy"
	srv := httptest.NewServer(NewHandler(res, Options{Limits: limitsFor(t, o)}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for i := range 60 {
		slowPOST(t, addr, fmt.Sprintf("198.51.100.%d", 1+i%2))
	}
	time.Sleep(300 * time.Millisecond) // the server has them all
	c := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/mail/config-v1.1.xml?emailaddress=bob@example.com", "/healthz"} {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.5")
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Logf("%s from a third client: %d in %v", path, resp.StatusCode, time.Since(start))
		if resp.StatusCode != 200 {
			t.Errorf("%s from a third client while 60 slow bodies are open: %d", path, resp.StatusCode)
		}
	}
}

// rawExchange sends a raw request and returns the status line and the
// headers of the answer, and how long it took.
func rawExchange(t *testing.T, addr, request string) (status string, header http.Header, took time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "no answer: " + err.Error(), nil, time.Since(start)
	}
	resp.Body.Close()
	return resp.Status, resp.Header, time.Since(start)
}

// Finding 3: a declared body over the endpoint's bound is refused before
// anything is read, not after the read timeout.
func TestDeclaredBodyTooLargeAtOnce(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	srv := httptest.NewUnstartedServer(NewHandler(res, Options{}))
	// Far beyond rawExchange's own 10 s: an answer that waits for the
	// body (or the read timeout) never comes.
	srv.Config.ReadTimeout = time.Minute
	srv.Start()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, cl := range []int{20000, 70000} {
		status, _, took := rawExchange(t, addr, fmt.Sprintf("POST /Autodiscover/Autodiscover.xml HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n", cl))
		t.Logf("Content-Length %d, no body: %s after %v", cl, status, took)
		if !strings.HasPrefix(status, "413") {
			t.Errorf("Content-Length %d, no body: %s after %v; want 413 before the body", cl, status, took)
		}
	}
}

// Finding 5: lookups the budget refuses are no directory trouble: nothing
// at warn or above.
func TestRefusedLookupsAreNotOutages(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := NewHandler(res, Options{Log: log, Limits: limitsFor(t, LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 2})})
	for i := range 10 {
		for _, req := range []*http.Request{
			httptest.NewRequest("POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml", strings.NewReader(adXML(fmt.Sprintf("a%d@example.com", i)))),
			httptest.NewRequest("GET", fmt.Sprintf("/autodiscover/autodiscover.json/v1.0/j%d@example.com?Protocol=ActiveSync", i), nil),
			httptest.NewRequest("GET", fmt.Sprintf("/?emailaddress=s%d@example.com", i), nil),
			httptest.NewRequest("GET", fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=c%d@example.com", i), nil),
		} {
			req.RemoteAddr = "192.0.2.77:1"
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, line := range strings.Split(strings.TrimSpace(logs.b.String()), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			t.Errorf("refused lookup logged as trouble: %s", line)
		}
	}
	if !bytes.Contains(logs.b.Bytes(), []byte("lookup refused")) {
		t.Errorf("refused lookups not logged at debug")
	}
}

// Finding 7: an absolute-form or CONNECT request line never produces a
// Location naming another host.
func TestAbsoluteFormNoForeignRedirect(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	srv := httptest.NewServer(NewHandler(res, Options{}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, req := range []string{
		"GET http://evil.example//mail/../x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
		"GET http://evil.example/mail/./config-v1.1.xml HTTP/1.1\r\nHost: evil.example\r\n\r\n",
		"GET http://evil.example//autodiscover/autodiscover.xml HTTP/1.1\r\nHost: evil.example\r\n\r\n",
		"GET //evil.example/../mobileconfig HTTP/1.1\r\nHost: autoconfig.example.com\r\n\r\n",
		"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
		"GET https://evil.example/.well-known/caldav HTTP/1.1\r\nHost: evil.example\r\n\r\n",
	} {
		status, hdr, _ := rawExchange(t, addr, req)
		line, _, _ := strings.Cut(req, "\r\n")
		t.Logf("%s: %s", line, status)
		if loc := hdr.Get("Location"); loc != "" && !strings.Contains(loc, "example.com") {
			t.Errorf("%s: %s Location %q", line, status, loc)
		}
		if strings.HasPrefix(status, "5") {
			t.Errorf("%s: %s", line, status)
		}
	}
}

// A client's own concurrency slots: beyond them its requests are refused
// at once, other clients are served, and the slots come back.
func TestMaxPerClient(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	g := &gatedResolver{Resolver: res, entered: make(chan struct{}), release: make(chan struct{})}
	h := NewHandler(g, Options{Limits: limitsFor(t, LimitOptions{MaxPerClient: 2})})
	before := limited(t, h, limitClientConcurrency)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rec := limRequest(h, "GET", "/mail/config-v1.1.xml?emailaddress=slow@example.com", "192.0.2.1:1", nil); rec.Code != 200 {
				t.Errorf("blocked request: %d", rec.Code)
			}
		}()
		<-g.entered
	}
	if rec := limRequest(h, "GET", "/setup.css", "192.0.2.1:2", nil); rec.Code != 429 {
		t.Errorf("third request of a client with two in progress: %d, want 429", rec.Code)
	}
	if rec := limRequest(h, "GET", "/healthz", "192.0.2.1:2", nil); rec.Code != 200 {
		t.Errorf("health check from that client: %d", rec.Code)
	}
	if rec := limRequest(h, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", "192.0.2.2:1", nil); rec.Code != 200 {
		t.Errorf("another client: %d", rec.Code)
	}
	close(g.release)
	wg.Wait()
	if rec := limRequest(h, "GET", "/setup.css", "192.0.2.1:2", nil); rec.Code != 200 {
		t.Errorf("after the others finished: %d", rec.Code)
	}
	if got := limited(t, h, limitClientConcurrency) - before; got != 1 {
		t.Errorf("client_concurrency refusals counted %v; want 1", got)
	}
}

// Directory errors, as an outage and as a misconfiguration, in the
// answer of each format: never the error's text, and a status that says
// which it is. An outage logs nothing per request at warn (policy logs it
// once per change of state); an unexpected error is logged at error.
func TestDirectoryErrorsPerFormat(t *testing.T) {
	outage := fmt.Errorf("%w: %w", policy.ErrDirectoryUnavailable, errDirectoryDown)
	misconfigured := testError("ldap: invalid filter (secret detail)")
	for _, tc := range []struct {
		name           string
		domErr, resErr error
		method, target string
		body           string
		status         int
		has            string
		logLevel       string
	}{
		{"autoconfig outage", nil, outage, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", "", 503, "directory unavailable", ""},
		{"autoconfig by host, domain outage", outage, nil, "GET", "/mail/config-v1.1.xml", "", 503, "directory unavailable", ""},
		{"autoconfig misconfigured", nil, misconfigured, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", "", 500, "internal error", "ERROR"},
		{"pox outage", nil, outage, "POST", "/autodiscover/autodiscover.xml", adXML("bob@example.com"), 200, "<ErrorCode>603</ErrorCode>", ""},
		{"pox misconfigured", nil, misconfigured, "POST", "/autodiscover/autodiscover.xml", adXML("bob@example.com"), 200, "<ErrorCode>603</ErrorCode>", "ERROR"},
		{"v2 domain outage", outage, nil, "GET", "/autodiscover/autodiscover.json/v1.0/bob@example.com?Protocol=AutodiscoverV1", "", 503, `"ErrorCode":"ServerBusy"`, ""},
		{"v2 misconfigured", nil, misconfigured, "GET", "/autodiscover/autodiscover.json/v1.0/bob@example.com?Protocol=ActiveSync", "", 500, `"ErrorCode":"InternalServerError"`, "ERROR"},
		{"profile outage", nil, outage, "GET", "/mobileconfig?emailaddress=bob@example.com", "", 503, "directory unavailable", ""},
		{"setup page outage", nil, outage, "GET", "/?emailaddress=bob@example.com", "", 503, "cannot be looked up right now", ""},
		{"setup page heading, domain outage", outage, nil, "GET", "/", "", 200, "<form", ""},
		{"caldav, domain outage", outage, nil, "GET", "/.well-known/caldav", "", 503, "directory unavailable", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := newDemoResolver(t, demoDomains())
			res.domErr, res.broken = tc.domErr, tc.resErr
			var logs lockedBuffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			h := NewHandler(res, Options{Log: log})
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			req.Host = "example.com"
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.has) {
				t.Errorf("%d %.300s; want %d with %q", rec.Code, rec.Body, tc.status, tc.has)
			}
			if strings.Contains(rec.Body.String(), "secret") || strings.Contains(rec.Body.String(), string(errDirectoryDown)) {
				t.Errorf("the error's text reached the client: %s", rec.Body)
			}
			logs.mu.Lock()
			logged := logs.b.String()
			logs.mu.Unlock()
			if tc.logLevel != "" && !strings.Contains(logged, `"level":"`+tc.logLevel+`"`) || tc.logLevel == "" && logged != "" {
				t.Errorf("log %q; want a %s record", logged, tc.logLevel)
			}
		})
	}
}
