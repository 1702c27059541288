package main

import (
	"net/http/httptest"
	"strings"
	"testing"

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
	}{
		{"up", func() {}, 200},
		{"down", srv.Stop, 503},
		{"still down", func() {}, 503},
		{"back", srv.Start, 200},
		// The pooled connection dies with the restart: the probe must
		// not fail once for that.
		{"restarted between probes", func() { srv.Stop(); srv.Start() }, 200},
	} {
		step.action()
		if code, body := probe("/readyz"); code != step.readyz {
			t.Errorf("%s: /readyz %d %q, want %d", step.name, code, body, step.readyz)
		}
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
