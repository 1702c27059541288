package protocols

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Holes found by attacking the pipeline from outside, one test each.

// A body the limits refuse (408 after the body deadline, 413 over the
// bound, declared or chunked) ends the connection with the answer. Before,
// net/http went on to drain the rest of the body, after readBody had
// cleared the read deadline: a sender that stalled kept its connection
// and goroutine for good, however many it opened, with no slot counted.
func TestRefusedBodyEndsConnection(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	o := DefaultLimitOptions()
	o.BodyTimeout = 200 * time.Millisecond
	srv := httptest.NewUnstartedServer(NewHandler(res, Options{Limits: limitsFor(t, o), ReadTimeout: time.Minute}))
	// Far beyond the client's own 10 s: a connection that waits for the
	// server's read timeout is never closed in time.
	srv.Config.ReadTimeout = time.Minute
	srv.Start()
	t.Cleanup(srv.Close)
	const head = "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.example.com\r\n"
	for _, tc := range []struct {
		name, request, status string
	}{
		{"stalled_body", head + "Content-Length: 92\r\n\r\n<?xml vers", "408"},
		{"chunked_over_bound", head + "Transfer-Encoding: chunked\r\n\r\n4000\r\n" + strings.Repeat("a", 16<<10) + "\r\n10\r\n" + strings.Repeat("b", 16), "413"},
		{"declared_over_bound", head + "Content-Length: 20000\r\n\r\n", "413"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !strings.HasPrefix(resp.Status, tc.status) {
				t.Errorf("answer %s; want %s", resp.Status, tc.status)
			}
			// The sender never sends the rest: the server must hang up.
			if n, err := io.Copy(io.Discard, br); err != nil {
				t.Errorf("connection still open after the %s answer (%d more bytes): %v", resp.Status, n, err)
			}
		})
	}
}

// A reload with changed limits carries what each client has spent. Before,
// any change (even max_body_bytes alone) gave every client a fresh
// budget: on the demo a scanner that had spent its 60 unknown lookups got
// 60 more, and an operator who lowered unknown_burst to 10 under attack
// handed each scanner 10 new ones.
func TestReloadWithChangedLimitsCarriesSpending(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	base := LimitOptions{UnknownPerMinute: 0.001, UnknownBurst: 3}
	for _, tc := range []struct {
		name  string
		spend int // unknown lookups before the reload
		after func(*LimitOptions)
		want  []int // the answers to unknown lookups after it
	}{
		{"body_bound_changed", 3, func(o *LimitOptions) { o.MaxBodyBytes = 1 << 20 }, []int{429}},
		{"burst_lowered", 2, func(o *LimitOptions) { o.UnknownBurst = 2 }, []int{429}},
		{"burst_raised", 3, func(o *LimitOptions) { o.UnknownBurst = 5 }, []int{200, 200, 429}},
		{"unspent", 0, func(o *LimitOptions) { o.UnknownBurst = 2 }, []int{200, 200, 429}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			ask := func(h *Handler) int {
				n++
				return limRequest(h, "GET", fmt.Sprintf("/mail/config-v1.1.xml?emailaddress=guess%d@example.com", n), "192.0.2.9:1", nil).Code
			}
			old := NewHandler(res, Options{Limits: limitsFor(t, base)})
			for range tc.spend {
				if code := ask(old); code != 200 {
					t.Fatalf("within the budget: %d", code)
				}
			}
			o := base
			tc.after(&o)
			h := NewHandler(res, Options{Limits: limitsFor(t, o), Previous: old})
			for i, want := range tc.want {
				if code := ask(h); code != want {
					t.Errorf("lookup %d after the reload: %d, want %d", i+1, code, want)
				}
			}
		})
	}
}

// versionedDomains hands out a new version of a domain on every call, as
// a directory domain source does each time its cache entry is refreshed.
type versionedDomains struct{ *fakeResolver }

func (r versionedDomains) Domain(ctx context.Context, name string) (*policy.Domain, error) {
	d, err := r.fakeResolver.Domain(ctx, name)
	if err != nil {
		return nil, err
	}
	v := *d
	return &v, nil
}

// The placeholder accounts of autoconfig by Host (one per *Domain) are
// bounded like the rendered answers. Before, the table kept one per
// domain version for good: 3×4096 requests for one domain whose versions
// change left 12288 entries, each pinning an old Domain.
func TestPlaceholdersBounded(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	h := NewHandler(versionedDomains{res}, Options{})
	for i := range 3 * maxRendered {
		req := httptest.NewRequest("GET", "/mail/config-v1.1.xml", nil)
		req.Host = "autoconfig.example.com"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	n := 0
	h.cache.placeholders.m.Range(func(any, any) bool { n++; return true })
	if n > maxRendered {
		t.Errorf("%d placeholder accounts kept after %d domain versions; want at most %d", n, 3*maxRendered, maxRendered)
	}
}

// One client address cannot hold every connection the process may open.
// Before, nothing bounded connections: on the demo with 256 file
// descriptors, one address held 242 idle keep-alive connections (each
// after one request) and every other client's connection timed out.
func TestConnectionsPerClientBounded(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	o := limitsFor(t, LimitOptions{MaxConnsPerClient: 4})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := NewConnLimiter(o, 1024)
	srv := &http.Server{Handler: NewHandler(res, Options{Limits: o}), ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute, ConnState: cl.ConnState}
	go srv.Serve(cl.Listener(ln)) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	// ask sends a keep-alive request from src on a new connection and
	// returns the connection and the answer's status, or the error.
	ask := func(src string) (net.Conn, string, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /setup.css HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
			return c, "", err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return c, "", err
		}
		resp.Body.Close()
		return c, resp.Status, nil
	}
	var held []net.Conn
	for i := range 4 {
		c, status, err := ask("127.0.0.1")
		if err != nil || status != "200 OK" {
			t.Fatalf("connection %d within the bound: %q %v", i+1, status, err)
		}
		held = append(held, c)
	}
	if _, status, err := ask("127.0.0.1"); err == nil {
		t.Errorf("a fifth connection of a client holding four idle ones: %s; want it closed", status)
	}
	if _, status, err := ask("127.0.0.2"); err != nil || status != "200 OK" {
		t.Errorf("another client meanwhile: %q %v", status, err)
	}
	// A connection closed gives its place back.
	held[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, status, err := ask("127.0.0.1")
		if err == nil && status == "200 OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after one of the four closed: %q %v", status, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
