package protocols

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Benchmarks of the hot paths: cached answers through the whole handler
// (with the default limits, as served), the limits alone, and the
// renderers. bench/run.sh measures the same over real HTTP against nginx.

// benchLimits are the defaults with a request rate no benchmark reaches:
// the limiter still does all its work on every request.
func benchLimits(b *testing.B) LimitOptions {
	o := DefaultLimitOptions()
	o.RequestsPerSecond, o.Burst = 1e9, 1e9
	return limitsFor(b, o)
}

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func benchServe(b *testing.B, h http.Handler, newReq func() *http.Request) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &nopWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, newReq())
		}
	})
}

func BenchmarkAutoconfigCached(b *testing.B) {
	res, _ := newDemoResolver(b, demoDomains())
	h := NewHandler(res, Options{Limits: benchLimits(b)})
	if rec := get(b, h, "GET", "", "/mail/config-v1.1.xml?emailaddress=bob@example.com"); rec.Code != 200 {
		b.Fatal(rec.Code)
	}
	benchServe(b, h, func() *http.Request {
		r := httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", nil)
		return r
	})
}

func BenchmarkAutodiscoverCached(b *testing.B) {
	res, _ := newDemoResolver(b, demoDomains())
	h := NewHandler(res, Options{Limits: benchLimits(b)})
	body := adXML("bob@example.com")
	benchServe(b, h, func() *http.Request {
		return httptest.NewRequest("POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml", strings.NewReader(body))
	})
}

func BenchmarkAutodiscoverJSONCached(b *testing.B) {
	res, _ := newDemoResolver(b, demoDomains())
	h := NewHandler(res, Options{Limits: benchLimits(b)})
	benchServe(b, h, func() *http.Request {
		return httptest.NewRequest("GET", "/autodiscover/autodiscover.json/v1.0/bob@example.com?Protocol=ActiveSync", nil)
	})
}

// BenchmarkLimit is the pipeline around a handler that does next to
// nothing (the stylesheet), limits off and at their defaults: client
// address, request bucket, concurrency slots. Clients are spread over
// 4096 addresses.
func BenchmarkLimit(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts LimitOptions
	}{
		{"off", LimitOptions{}},
		{"defaults", benchLimits(b)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			res, _ := newDemoResolver(b, demoDomains())
			h := NewHandler(res, Options{Limits: tc.opts})
			reqs := make([]*http.Request, 4096)
			for i := range reqs {
				reqs[i] = httptest.NewRequest("HEAD", "/setup.css", nil)
				reqs[i].RemoteAddr = fmt.Sprintf("198.51.%d.%d:4000", i>>8, i&255)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &nopWriter{h: http.Header{}}
				i := 0
				for pb.Next() {
					h.ServeHTTP(w, reqs[i&4095])
					i++
				}
			})
		})
	}
}

// The render benchmarks render as the handler does for an account not
// rendered before (a directory miss): with the handler's pooled encoder,
// the bytes copied into its table.
func BenchmarkRenderAutoconfig(b *testing.B) { benchmarkRender(b, formatAutoconfig) }

func BenchmarkRenderOutlook(b *testing.B) { benchmarkRender(b, formatOutlook) }

func benchmarkRender(b *testing.B, f renderFormat) {
	res, _ := newDemoResolver(b, demoDomains())
	acct, err := res.Resolve(b.Context(), mustAddress(b, "alice@example.com"))
	if err != nil {
		b.Fatal(err)
	}
	rc := newRenderCache()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rc.encode(documents[f](acct), rc.keep); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePOXRequest(b *testing.B) {
	body := []byte(adXML("bob@example.com"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parsePOXRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}

func mustAddress(t testing.TB, s string) policy.Address {
	t.Helper()
	a, err := policy.ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// BenchmarkPipeline is the handler's own cost per cached request, the
// request parsed once: what net/http does is left out. With the access
// log written as text to nowhere, as a server with access_log on does.
func BenchmarkPipeline(b *testing.B) {
	res, _ := newDemoResolver(b, demoDomains())
	for _, tc := range []struct {
		name   string
		log    bool
		method string
		target string
		body   string
	}{
		{"autoconfig", false, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", ""},
		{"autoconfig_log", true, "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", ""},
		{"autodiscover_log", true, "POST", "/autodiscover/autodiscover.xml", adXML("bob@example.com")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			opts := Options{Limits: benchLimits(b), Operations: OperationsOptions{AccessLog: tc.log}}
			if tc.log {
				opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			}
			h := NewHandler(res, opts)
			body := strings.NewReader(tc.body)
			req := httptest.NewRequest(tc.method, tc.target, body)
			w := &nopWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				body.Reset(tc.body)
				h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkConnState is what the connection bound costs a request on a
// kept-alive connection: ConnState Active, then Idle, among 64
// connections.
func BenchmarkConnState(b *testing.B) {
	cl := NewConnLimiter(limitsFor(b, LimitOptions{}), 1024)
	conns := make([]*limitedConn, 64)
	for i := range conns {
		conns[i] = cl.admit(fakePeer(fmt.Sprintf("192.0.2.%d:1", i+1)))
		cl.ConnState(conns[i], http.StateNew)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := conns[i&63]
		cl.ConnState(c, http.StateActive)
		cl.ConnState(c, http.StateIdle)
		i++
	}
}
