package protocols

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// opsHandler is the demo handler with operations options o, logging JSON
// into the returned buffer.
func opsHandler(t testing.TB, o OperationsOptions, ready func(context.Context) error) (*Handler, *lockedBuffer) {
	t.Helper()
	res, _ := newDemoResolver(t, demoDomains())
	if err := o.Prepare(); err != nil {
		t.Fatal(err)
	}
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return NewHandler(res, Options{Log: log, Operations: o, Ready: ready}), &buf
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the log records with msg "request".
func (l *lockedBuffer) requests(t testing.TB) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["msg"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

func TestHealthAndReadiness(t *testing.T) {
	down := errors.New("ldap://10.0.0.1: connection refused; bind as cn=secret")
	hang := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	for _, tc := range []struct {
		name   string
		path   string
		ready  func(context.Context) error
		status int
		body   string
	}{
		{"healthz", "/healthz", func(context.Context) error { return down }, 200, "ok\n"},
		{"ready", "/readyz", func(context.Context) error { return nil }, 200, "ready\n"},
		{"no directory check", "/readyz", nil, 200, "ready\n"},
		{"directory down", "/readyz", func(context.Context) error { return down }, 503, "not ready: directory unreachable\n"},
		{"directory hangs past the timeout", "/readyz", hang, 503, "not ready: directory unreachable\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := opsHandler(t, OperationsOptions{ReadyTimeout: 50 * time.Millisecond}, tc.ready)
			rec := get(t, h, "GET", "", tc.path)
			if rec.Code != tc.status || rec.Body.String() != tc.body {
				t.Errorf("%s: %d %q, want %d %q", tc.path, rec.Code, rec.Body.String(), tc.status, tc.body)
			}
		})
	}
}

// Readiness follows the directory: down, then up again.
func TestReadinessRecovers(t *testing.T) {
	var mu sync.Mutex
	var err error
	h, logs := opsHandler(t, OperationsOptions{}, func(context.Context) error { mu.Lock(); defer mu.Unlock(); return err })
	for i, step := range []struct {
		err    error
		status int
	}{{nil, 200}, {errors.New("down"), 503}, {errors.New("down"), 503}, {nil, 200}} {
		mu.Lock()
		err = step.err
		mu.Unlock()
		if rec := get(t, h, "GET", "", "/readyz"); rec.Code != step.status {
			t.Errorf("step %d: %d, want %d", i, rec.Code, step.status)
		}
	}
	// One warning when it went down, one line when it came back.
	logs.mu.Lock()
	text := logs.b.String()
	logs.mu.Unlock()
	if n := strings.Count(text, "not ready: directory check failed"); n != 1 {
		t.Errorf("%d 'not ready' log lines, want 1:\n%s", n, text)
	}
	if !strings.Contains(text, "ready again") {
		t.Errorf("no recovery line:\n%s", text)
	}
}

// /readyz/serving is ready while the handler answers every address
// without the directory (cache.on_directory_error: defaults), and asks
// the directory nothing then; otherwise it is /readyz. /readyz keeps its
// strict meaning either way.
func TestServingReadiness(t *testing.T) {
	down := errors.New("ldap://10.0.0.1: connection refused")
	for _, tc := range []struct {
		name            string
		withoutDir      bool
		dirErr          error
		readyz, serving int
		servingAsks     bool // /readyz/serving calls Ready
	}{
		{"defaults, directory up", true, nil, 200, 200, false},
		{"defaults, directory down", true, down, 503, 200, false},
		{"fail, directory up", false, nil, 200, 200, true},
		{"fail, directory down", false, down, 503, 503, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int64
			ready := func(context.Context) error { asked.Add(1); return tc.dirErr }
			res, _ := newDemoResolver(t, demoDomains())
			o := DefaultOperationsOptions()
			o.Listen = ""
			h := NewHandler(res, Options{Log: slog.New(slog.DiscardHandler), Operations: o, Ready: ready, AnswersWithoutDirectory: tc.withoutDir})
			// Both where operations.listen puts them and on the main
			// listener (operations.listen: "").
			for _, srv := range []http.Handler{h.Operations(), h} {
				if rec := get(t, srv, "GET", "", "/readyz"); rec.Code != tc.readyz {
					t.Errorf("/readyz: %d %q, want %d", rec.Code, rec.Body.String(), tc.readyz)
				}
				before := asked.Load()
				rec := get(t, srv, "GET", "", "/readyz/serving")
				if rec.Code != tc.serving {
					t.Errorf("/readyz/serving: %d %q, want %d", rec.Code, rec.Body.String(), tc.serving)
				}
				if got := asked.Load() > before; got != tc.servingAsks {
					t.Errorf("/readyz/serving asked the directory: %v, want %v", got, tc.servingAsks)
				}
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   OperationsOptions
		status int
	}{
		{"on", OperationsOptions{Metrics: true}, 200},
		{"off", OperationsOptions{Metrics: false}, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := opsHandler(t, tc.opts, nil)
			get(t, h, "GET", "", "/mail/config-v1.1.xml?emailaddress=bob@example.com")
			rec := get(t, h, "GET", "", "/metrics")
			if rec.Code != tc.status {
				t.Fatalf("/metrics: %d, want %d", rec.Code, tc.status)
			}
			if tc.status == 200 {
				for _, want := range []string{
					`mailbeacon_http_requests_total{format="autoconfig",outcome="ok"}`,
					`mailbeacon_http_request_duration_seconds_bucket{format="autoconfig"`,
				} {
					if !strings.Contains(rec.Body.String(), want) {
						t.Errorf("/metrics lacks %s", want)
					}
				}
			}
		})
	}
}

// With operations.listen the public router serves none of the operations
// routes; Operations serves them, and profiles.
func TestOperationsOnOwnListener(t *testing.T) {
	o := OperationsOptions{Listen: "127.0.0.1:9090", Metrics: true}
	h, _ := opsHandler(t, o, nil)
	ops := h.Operations()
	get(t, h, "GET", "", "/mail/config-v1.1.xml?emailaddress=bob@example.com")
	if rec := get(t, ops, "GET", "", "/metrics"); !strings.Contains(rec.Body.String(), `mailbeacon_http_requests_total{format="autoconfig",outcome="ok"} 1`) {
		t.Errorf("operations /metrics does not count the public handler's requests:\n%s", rec.Body)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
		if rec := get(t, h, "GET", "", p); rec.Code != 404 {
			t.Errorf("public %s: %d, want 404", p, rec.Code)
		}
		if rec := get(t, ops, "GET", "", p); rec.Code != 200 {
			t.Errorf("operations %s: %d, want 200", p, rec.Code)
		}
	}
	if rec := get(t, ops, "GET", "", "/mail/config-v1.1.xml"); rec.Code != 404 {
		t.Errorf("operations listener serves client routes: %d", rec.Code)
	}
}

func TestOperationsPrepare(t *testing.T) {
	for _, tc := range []struct {
		name   string
		o      OperationsOptions
		errHas string
	}{
		{"defaults", DefaultOperationsOptions(), ""},
		{"zero timeout takes the default", OperationsOptions{}, ""},
		{"negative timeout", OperationsOptions{ReadyTimeout: -time.Second}, "operations.ready_timeout"},
		{"long timeout", OperationsOptions{ReadyTimeout: time.Hour}, "operations.ready_timeout"},
		{"bad listen", OperationsOptions{Listen: "9090"}, "operations.listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Prepare()
			if (err != nil) != (tc.errHas != "") || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("Prepare = %v, want error containing %q", err, tc.errHas)
			}
		})
	}
}

func TestRequestsCountedByFormatAndOutcome(t *testing.T) {
	h, _ := opsHandler(t, OperationsOptions{}, nil)
	for _, tc := range []struct {
		method, target  string
		format, outcome string
	}{
		{"GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", "autoconfig", "ok"},
		{"GET", "/mail/config-v1.1.xml?emailaddress=bob@unknown.org", "autoconfig", "not_found"},
		{"GET", "/mail/config-v1.1.xml?emailaddress=nonsense", "autoconfig", "bad_request"},
		{"POST", "/mail/config-v1.1.xml", "autoconfig", "bad_request"}, // 405
		{"GET", "/Autodiscover/Autodiscover.xml", "autodiscover", "ok"},
		{"GET", "/.well-known/carddav", "dav_redirect", "not_found"},
		{"GET", "/healthz", "operations", "ok"},
		{"GET", "/no/such/path", "other", "not_found"},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			c := h.met.requests.WithLabelValues(tc.format, tc.outcome)
			before := testutil.ToFloat64(c)
			get(t, h, tc.method, "localhost", tc.target)
			if got := testutil.ToFloat64(c) - before; got != 1 {
				t.Errorf("%s/%s counted %v times, want 1", tc.format, tc.outcome, got)
			}
		})
	}
}

// The route table names each request once, for metrics, limits and the
// access log.
func TestRouteNames(t *testing.T) {
	h, _ := opsHandler(t, OperationsOptions{}, nil)
	for path, want := range map[string]string{
		"/mail/config-v1.1.xml":                          "autoconfig",
		"/.well-known/autoconfig/mail/config-v1.1.xml":   "autoconfig",
		"/autodiscover/autodiscover.xml":                 "autodiscover",
		"/AutoDiscover/AutoDiscover.XML":                 "autodiscover",
		"/autodiscover/autodiscover.json":                "autodiscover_json",
		"/autodiscover/autodiscover.json/v1.0/a@b.c":     "autodiscover_json",
		"/mobileconfig":                                  "apple_profile",
		"/":                                              "setup_page",
		"/.well-known/caldav":                            "dav_redirect",
		"/healthz":                                       "operations",
		"/livez":                                         "other",
		"/mail/config-v1.1.xml/":                         "other",
		"/autodiscover/autodiscover.json/v1.0/a@b.c/x/y": "other",
		"/autodiscover/autodiscover.xmm":                 "other",
	} {
		if got := h.find(httptest.NewRequest("GET", path, nil), new(mux.RouteMatch)).name; got != want {
			t.Errorf("route of %q = %s, want %s", path, got, want)
		}
	}
}

// The access log names the domain of the asked address, never the address
// unless operations.log_addresses is on, and no query string.
func TestAccessLog(t *testing.T) {
	pox := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	for _, tc := range []struct {
		name      string
		method    string
		target    string
		body      string
		addresses bool
		want      map[string]any // fields the line must have; nil value: must be absent
	}{
		{"autoconfig", "GET", "/mail/config-v1.1.xml?emailaddress=bob%40example.com", "", false,
			map[string]any{"path": "/mail/config-v1.1.xml", "status": float64(200), "domain": "example.com", "format": "autoconfig", "client": "192.0.2.1", "address": nil}},
		{"autoconfig with addresses", "GET", "/mail/config-v1.1.xml?emailaddress=bob%40example.com", "", true,
			map[string]any{"domain": "example.com", "address": "bob@example.com"}},
		{"pox body", "POST", "/autodiscover/autodiscover.xml", pox, false,
			map[string]any{"domain": "example.com", "format": "autodiscover", "address": nil}},
		{"v2 path", "GET", "/autodiscover/autodiscover.json/v1.0/carol@example.com?Protocol=ActiveSync", "", false,
			map[string]any{"path": "/autodiscover/autodiscover.json/v1.0/{address}", "domain": "example.com", "address": nil}},
		{"invalid address", "GET", "/mail/config-v1.1.xml?emailaddress=x", "", false,
			map[string]any{"status": float64(400), "domain": nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := opsHandler(t, OperationsOptions{AccessLog: true, LogAddresses: tc.addresses}, nil)
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			req.RemoteAddr = "192.0.2.1:4711"
			req.Host = "localhost" // not the redirect probe
			h.ServeHTTP(httptest.NewRecorder(), req)
			lines := logs.requests(t)
			if len(lines) != 1 {
				t.Fatalf("%d request lines, want 1", len(lines))
			}
			for k, v := range tc.want {
				if got, ok := lines[0][k]; v == nil && ok {
					t.Errorf("%s = %v, want none", k, got)
				} else if v != nil && got != v {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			line, _ := json.Marshal(lines[0])
			if !tc.addresses && (strings.Contains(string(line), "bob@") || strings.Contains(string(line), "alice@") || strings.Contains(string(line), "carol@")) {
				t.Errorf("address logged: %s", line)
			}
		})
	}
}

// The logged client is the one the limits see: behind a trusted proxy,
// the address it forwarded.
func TestAccessLogClientAddr(t *testing.T) {
	res, _ := newDemoResolver(t, demoDomains())
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := NewHandler(res, Options{Log: log, Operations: OperationsOptions{AccessLog: true},
		Limits: limitsFor(t, LimitOptions{TrustedProxies: []string{"10.0.0.1"}})})
	req := httptest.NewRequest("GET", "/healthz", nil)
	req.RemoteAddr = "10.0.0.1:4711"
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if l := buf.requests(t); len(l) != 1 || l[0]["client"] != "198.51.100.7" || l[0]["level"] != "DEBUG" {
		t.Errorf("log %v, want the forwarded client at debug level", l)
	}
}
