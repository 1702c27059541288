package main

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// /readyz fails while the directory is down and recovers after; /healthz
// stays up throughout, and /metrics counts the directory's searches.
func TestReadyzFollowsDirectorySlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	a, err := build(slapdConfig(t, srv, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.source.Close()
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	ops := h.Operations() // operations.listen's handler
	probe := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		if strings.HasPrefix(path, "/mail/") {
			h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		} else {
			ops.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		}
		return rec.Code, rec.Body.String()
	}
	// A lookup first, so that the pool holds a connection that the
	// restart below kills.
	probe("/mail/config-v1.1.xml?emailaddress=bob@example.com")
	for _, step := range []struct {
		name   string
		action func()
		readyz int
		// within is how long /readyz may take to say so: a directory
		// that refused connections is asked again once its breaker's
		// probe finds it, within a cool-down (2 s).
		within time.Duration
	}{
		{"up", func() {}, 200, 0},
		{"down", srv.Stop, 503, 0},
		{"still down", func() {}, 503, 0},
		{"back", srv.Start, 200, 5 * time.Second},
		// The pooled connection dies with the restart: the probe must
		// not fail once for that.
		{"restarted between probes", func() { srv.Stop(); srv.Start() }, 200, 0},
	} {
		step.action()
		start := time.Now()
		code, body := probe("/readyz")
		for code != step.readyz && time.Since(start) < step.within {
			time.Sleep(20 * time.Millisecond)
			code, body = probe("/readyz")
		}
		if code != step.readyz {
			t.Errorf("%s: /readyz %d %q, want %d", step.name, code, body, step.readyz)
		}
		t.Logf("%s: /readyz %d after %v", step.name, code, time.Since(start).Round(time.Millisecond))
		if code, _ := probe("/healthz"); code != 200 {
			t.Errorf("%s: /healthz %d", step.name, code)
		}
	}
	code, body := probe("/metrics")
	for _, want := range []string{
		`mailbeacon_directory_search_duration_seconds_count{result="found"}`,
		"mailbeacon_directory_connections_in_use",
		`mailbeacon_directory_dial_errors_total{url="` + srv.URL + `"}`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}
}
