package protocols

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Request bodies on routes that take none, and refusals that come before
// a body is read (issue 18, findings 5 and 7).

// bodiesServer serves a handler with the limits o on 127.0.0.1 with the
// server timeouts of the shipped configuration, and returns its address.
// The domain is the demo's with CalDAV and CardDAV.
func bodiesServer(t *testing.T, o LimitOptions) string {
	t.Helper()
	domains := demoDomains()
	domains[0].Services = append(domains[0].Services,
		policy.ServiceConfig{Type: "caldav", URL: "https://dav.example.com/cal/"},
		policy.ServiceConfig{Type: "carddav", URL: "https://dav.example.com/card/"})
	res, _ := newDemoResolver(t, domains)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const readTimeout = 10 * time.Second
	srv := &http.Server{
		Handler:           NewHandler(res, Options{Limits: limitsFor(t, o), ReadTimeout: readTimeout}),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: readTimeout, WriteTimeout: 15 * time.Second,
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// dialFrom opens a connection to addr from the local address src.
func dialFrom(t *testing.T, src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// slowGET sends a GET that declares a body of 1000 bytes and trickles it
// at a byte a second until the server hangs up or ctx ends. started is
// called once the headers are sent (or could not be), answer with what
// the server answered.
func slowGET(ctx context.Context, t *testing.T, src, addr, target string, started func(), answer func(status string)) {
	c, err := dialFrom(t, src, addr)
	if err != nil {
		started()
		answer("dial error")
		return
	}
	_, err = fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1000\r\n\r\n", target)
	started()
	if err != nil {
		c.Close()
		answer("write error")
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		status := "no answer"
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			status = resp.Status
			resp.Body.Close()
		}
		answer(status)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			c.Close()
			<-done
			return
		case <-tick.C:
			if _, err := c.Write([]byte("x")); err != nil {
				c.Close()
				<-done
				return // the server hung up
			}
		}
	}
}

// The slow-GET wave: 20 source addresses × 32 GETs of answers over 2 KiB
// (the style sheet, the setup page with an address, a profile), each
// declaring a body of 1000 bytes and trickling it at a byte a second,
// while another address asks for the style sheet and autoconfig. Before,
// a route that takes no body neither read nor refused one: the request
// took a shared slot, and net/http read the unread body before it sent
// more than 2 KiB of the answer, so the wave held all 512 shared slots
// for the read timeout (10 s) and the other client got 503.
func TestSlowBodyWaveOnGETRoutes(t *testing.T) {
	const sources, perSource = 20, 32
	addr := bodiesServer(t, DefaultLimitOptions())
	ctx, cancel := context.WithCancel(context.Background())
	var attackers sync.WaitGroup
	t.Cleanup(func() { cancel(); attackers.Wait() })

	var mu sync.Mutex
	attack := map[string]int{} // the attackers' answers
	var sent sync.WaitGroup
	targets := []string{"/setup.css", "/?emailaddress=bob@example.com", "/mobileconfig?emailaddress=bob@example.com"}
	for s := range sources {
		src := fmt.Sprintf("127.0.0.%d", 2+s)
		for i := range perSource {
			sent.Add(1)
			attackers.Add(1)
			go func() {
				defer attackers.Done()
				var once sync.Once
				for ctx.Err() == nil {
					slowGET(ctx, t, src, addr, targets[i%len(targets)], func() { once.Do(sent.Done) }, func(status string) {
						mu.Lock()
						attack[status]++
						mu.Unlock()
					})
					// Hung up on: the attacker comes back a second later.
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			}()
		}
	}
	sent.Wait()
	time.Sleep(500 * time.Millisecond) // the server has read every request's headers

	client := &http.Client{Timeout: 5 * time.Second}
	probes := map[string]int{}
	var worst time.Duration
	end := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		target := "/setup.css"
		if i%2 == 1 {
			target = "/mail/config-v1.1.xml?emailaddress=bob@example.com"
		}
		start := time.Now()
		resp, err := client.Get("http://" + addr + target)
		took := time.Since(start)
		worst = max(worst, took)
		if err != nil {
			probes["error"]++
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			probes[resp.Status]++
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	t.Logf("%d×%d slow GETs, answers so far: %v", sources, perSource, attack)
	mu.Unlock()
	t.Logf("probes from 127.0.0.1 meanwhile: %v (slowest %v)", probes, worst)
	for status, n := range probes {
		if status != "200 OK" {
			t.Errorf("%d probes from another address got %s while the wave was on; want every one 200", n, status)
		}
	}
}

// exchangeUnsent sends request and reads the answer, leaving whatever body
// the request declares unsent. It returns the answer, how long it took and
// whether the server then closed the connection.
func exchangeUnsent(t *testing.T, c net.Conn, request string) (resp *http.Response, took time.Duration, closed bool) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	start := time.Now()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	took = time.Since(start)
	if err != nil {
		t.Fatalf("no answer after %v: %v", took, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// The body is never sent: the server must hang up, not wait for it.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = io.Copy(io.Discard, br)
	return resp, took, err == nil
}

// Every refusal that comes before a request's body is read answers at once
// with Connection: close and ends the connection. Before, net/http read
// the unread body before it wrote the answer (405, 429, 404) — up to the
// read timeout of a sender that stalls — and kept the connection; only
// the 413 of a declared length over the bound was at once.
func TestEarlyRefusalAtOnce(t *testing.T) {
	const get = "GET /setup.css HTTP/1.1\r\nHost: example.com\r\n"
	const pox = "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.example.com\r\n"
	// spendRequest makes the client's one request of its bucket.
	spendRequest := func(t *testing.T, src, addr string) {
		c, err := dialFrom(t, src, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		resp, _, _ := exchangeUnsent(t, c, get+"Connection: close\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("the client's first request: %s", resp.Status)
		}
	}
	// holdSlot takes the client's one concurrency slot with a POST whose
	// body stalls (it is read within the body deadline, 5 s).
	holdSlot := func(t *testing.T, src, addr string) {
		c, err := dialFrom(t, src, addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, pox+"Content-Length: 500\r\n\r\n<?xml"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // its headers are in
	}
	for _, tc := range []struct {
		name    string
		limits  func(*LimitOptions)
		prep    func(t *testing.T, src, addr string)
		request string
		status  string
	}{
		{"method_with_body", nil, nil, "PUT /mobileconfig HTTP/1.1\r\nHost: example.com\r\nContent-Length: 500\r\n\r\n", "405"},
		{"method_chunked", nil, nil, "POST /mail/config-v1.1.xml HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n1f4\r\nab", "405"},
		{"no_route_with_body", nil, nil, "POST /no/such/path HTTP/1.1\r\nHost: example.com\r\nContent-Length: 500\r\n\r\n", "404"},
		{"get_with_body", nil, nil, get + "Content-Length: 1000\r\n\r\n", "413"},
		{"get_with_body_expect_continue", nil, nil, get + "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n", "413"},
		{"get_chunked_with_data", nil, nil, get + "Transfer-Encoding: chunked\r\n\r\n3e8\r\nx", "413"},
		{"setup_page_with_body", nil, nil, "GET /?emailaddress=bob@example.com HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\n\r\n", "413"},
		{"healthz_with_body", nil, nil, "GET /healthz HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100\r\n\r\n", "413"},
		{"over_the_bound", nil, nil, pox + "Content-Length: 20000\r\n\r\n", "413"},
		{"request_rate", func(o *LimitOptions) { o.RequestsPerSecond, o.Burst = 0.001, 1 }, spendRequest,
			pox + "Content-Length: 500\r\n\r\n", "429"},
		{"client_concurrency", func(o *LimitOptions) { o.MaxPerClient = 1 }, holdSlot,
			pox + "Content-Length: 500\r\n\r\n", "429"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultLimitOptions()
			if tc.limits != nil {
				tc.limits(&o)
			}
			addr := bodiesServer(t, o)
			const src = "127.0.0.3"
			if tc.prep != nil {
				tc.prep(t, src, addr)
			}
			c, err := dialFrom(t, src, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			resp, took, closed := exchangeUnsent(t, c, tc.request)
			t.Logf("%s after %v, Connection: close %v, closed: %v", resp.Status, took, resp.Close, closed)
			if !strings.HasPrefix(resp.Status, tc.status) {
				t.Errorf("answer %s; want %s", resp.Status, tc.status)
			}
			// At once: well within the body deadline (5 s) and the read
			// timeout (10 s) that the answer waited for before.
			if took > time.Second {
				t.Errorf("answer after %v; want it at once, before the body", took)
			}
			if !resp.Close { // ReadResponse takes "Connection: close" out of the header into Close
				t.Errorf("no Connection: close")
			}
			if !closed {
				t.Errorf("the server kept the connection open after the %s", resp.Status)
			}
		})
	}
}

// Requests without a body keep working on every route, on one keep-alive
// connection: no length, Content-Length: 0, an empty chunked body, HEAD;
// a PROPFIND with its XML body is read (within the body deadline) and
// answered with the redirect; a bodyless refusal keeps the connection.
func TestEarlyRefusalSparesBodylessRequests(t *testing.T) {
	addr := bodiesServer(t, DefaultLimitOptions())
	c, err := dialFrom(t, "127.0.0.1", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	const propfind = `<?xml version="1.0"?><propfind xmlns="DAV:"><prop><current-user-principal/></prop></propfind>`
	for _, tc := range []struct {
		name, request string
		status        int
	}{
		{"plain", "GET /setup.css HTTP/1.1\r\nHost: example.com\r\n\r\n", 200},
		{"content_length_0", "GET /setup.css HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n", 200},
		{"empty_chunked", "GET /setup.css HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 200},
		{"autoconfig_length_0", "GET /mail/config-v1.1.xml?emailaddress=bob@example.com HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n", 200},
		{"profile_empty_chunked", "GET /mobileconfig?emailaddress=bob@example.com HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 200},
		{"head", "HEAD /setup.css HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n", 200},
		{"pox_post", fmt.Sprintf("POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.example.com\r\nContent-Length: %d\r\n\r\n%s", len(adXML("bob@example.com")), adXML("bob@example.com")), 200},
		{"propfind_with_body", fmt.Sprintf("PROPFIND /.well-known/caldav HTTP/1.1\r\nHost: example.com\r\nDepth: 0\r\nContent-Length: %d\r\n\r\n%s", len(propfind), propfind), 301},
		{"propfind_chunked", fmt.Sprintf("PROPFIND /.well-known/carddav HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(propfind), propfind), 301},
		{"method_without_body", "DELETE /mobileconfig HTTP/1.1\r\nHost: example.com\r\n\r\n", 405},
		{"no_route_without_body", "GET /no/such/path HTTP/1.1\r\nHost: example.com\r\n\r\n", 404},
		{"after_all", "GET /setup.css HTTP/1.1\r\nHost: example.com\r\n\r\n", 200},
	} {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, tc.request); err != nil {
			t.Fatalf("%s: %v (the connection was closed by an earlier answer)", tc.name, err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(tc.request)[0]})
		if err != nil {
			t.Fatalf("%s: no answer on the kept-alive connection: %v", tc.name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Logf("%s: %s", tc.name, resp.Status)
		if resp.StatusCode != tc.status || resp.Close {
			t.Errorf("%s: %s, close %v; want %d on a kept-alive connection", tc.name, resp.Status, resp.Close, tc.status)
		}
	}
}

// Through Go's own client: over HTTP/1.1 a GET with a body, even one of
// 1 MiB the client is still sending, gets the 413 (not a reset
// connection); over HTTP/2 the refusals reset only their stream, and the
// connection goes on serving the client's other requests (a
// Connection: close there would end every stream of the connection).
func TestEarlyRefusalThroughGoClient(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h1 := httptest.NewServer(NewHandler(res, Options{}))
	t.Cleanup(h1.Close)
	h2 := httptest.NewUnstartedServer(NewHandler(res, Options{}))
	h2.EnableHTTP2 = true
	h2.StartTLS()
	t.Cleanup(h2.Close)
	for _, tc := range []struct {
		name         string
		srv          *httptest.Server
		method, path string
		body         string
		status       int
	}{
		{"h1_get_small_body", h1, "GET", "/setup.css", "hello", 413},
		{"h1_get_1MiB_body", h1, "GET", "/setup.css", strings.Repeat("x", 1<<20), 413},
		{"h1_get", h1, "GET", "/setup.css", "", 200},
		{"h2_get", h2, "GET", "/setup.css", "", 200},
		{"h2_get_with_body", h2, "GET", "/setup.css", "hello", 413},
		{"h2_put_with_body", h2, "PUT", "/mobileconfig", "hello", 405},
		{"h2_get_1MiB_body", h2, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", strings.Repeat("x", 1<<20), 413},
		{"h2_get_after", h2, "GET", "/setup.css", "", 200},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), tc.method, tc.srv.URL+tc.path, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := tc.srv.Client().Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Logf("%s: %s %s, Connection: close %v, connection reused %v", tc.name, resp.Proto, resp.Status, resp.Close, reused)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %s; want %d", tc.name, resp.Status, tc.status)
		}
		if resp.ProtoMajor == 2 && (resp.Close || tc.name != "h2_get" && !reused) {
			t.Errorf("%s: the HTTP/2 connection was not kept (close %v, reused %v)", tc.name, resp.Close, reused)
		}
	}
}
