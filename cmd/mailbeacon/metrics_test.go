package main

import (
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check/checktest"
)

// servedFamilies are the metric families /metrics lists from the start
// (the README names them). mailbeacon_directory_failures_total appears
// with the first directory failure only.
var servedFamilies = []string{
	"mailbeacon_auth_paused_accounts",
	"mailbeacon_auth_refusals_late_total",
	"mailbeacon_auth_refused_without_bind_total",
	"mailbeacon_cache_evictions_total",
	"mailbeacon_cache_lookups_total",
	"mailbeacon_config_reloads_total",
	"mailbeacon_directory_bind_backoffs_total",
	"mailbeacon_directory_breaker_open",
	"mailbeacon_directory_connections_in_use",
	"mailbeacon_directory_dial_errors_total",
	"mailbeacon_directory_failovers_total",
	"mailbeacon_directory_search_duration_seconds",
	"mailbeacon_directory_service_account_locked",
	"mailbeacon_directory_service_credentials_refused",
	"mailbeacon_directory_unavailable_answers_total",
	"mailbeacon_http_request_duration_seconds",
	"mailbeacon_http_requests_total",
	"mailbeacon_rate_limited_requests_total",
	"mailbeacon_tls_certificate_not_after_timestamp_seconds",
}

var typeLineRE = regexp.MustCompile(`(?m)^# TYPE (mailbeacon_\S+) `)

// scrape returns the sorted mailbeacon_ families of /metrics and its text.
func scrape(t *testing.T, ops string) ([]string, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	code, body := get(t, c, ops+"/metrics", "")
	if code != 200 {
		t.Fatalf("/metrics: %d %.300s", code, body)
	}
	var names []string
	for _, m := range typeLineRE.FindAllStringSubmatch(body, -1) {
		names = append(names, m[1])
	}
	slices.Sort(names)
	return names, body
}

// sample returns the value of the series named exactly series (name and
// labels as /metrics prints them), or -1.
func sample(body, series string) float64 {
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// The directory, cache, TLS and request metrics are registered once on
// the registry /metrics serves: a reload builds a new Source and Resolver
// that record into the same ones (registering twice would fail the
// reload), and nothing of mailbeacon lands in the default registry.
func TestMetricsRegisteredOnceAcrossReloads(t *testing.T) {
	dir := t.TempDir()
	ca := checktest.NewCA(t)
	certFile, keyFile := ca.WriteFiles(t, dir, time.Now().Add(90*24*time.Hour), certNames...)
	cfgFile := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgFile, tlsServeConfig(certFile, keyFile, "993"))
	s := startServe(t, []string{"--demo", "--config", cfgFile}, "server.http_listen", "operations.listen")
	ops := s.addrs["operations.listen"]
	plain := &http.Client{Timeout: 5 * time.Second}
	lookup := func(addr string) {
		t.Helper()
		if code, body := get(t, plain, s.addrs["server.http_listen"]+"/mail/config-v1.1.xml?emailaddress="+addr, ""); code != 200 {
			t.Fatalf("%s: %d %.300s", addr, code, body)
		}
	}
	const (
		misses   = `mailbeacon_cache_lookups_total{result="miss"}`
		found    = `mailbeacon_directory_search_duration_seconds_count{result="found"}`
		reloads  = `mailbeacon_config_reloads_total{result="ok"}`
		notAfter = `mailbeacon_tls_certificate_not_after_timestamp_seconds`
	)

	lookup("alice@example.com")
	names, body := scrape(t, ops)
	if !slices.Equal(names, servedFamilies) {
		t.Errorf("/metrics at start lists\n%v\nwant\n%v", names, servedFamilies)
	}
	missesBefore, foundBefore := sample(body, misses), sample(body, found)
	if missesBefore < 1 || foundBefore < 1 {
		t.Errorf("a lookup was not counted: misses %v, searches found %v", missesBefore, foundBefore)
	}
	if v := sample(body, notAfter); v < float64(time.Now().Unix()) {
		t.Errorf("%s = %v, want the certificate's expiry", notAfter, v)
	}

	for i := 1; i <= 2; i++ {
		s.hup()
		s.waitLog("configuration reloaded", i)
	}
	lookup("bob@example.com") // a miss: bob was never asked
	names, body = scrape(t, ops)
	if !slices.Equal(names, servedFamilies) {
		t.Errorf("/metrics after reloads lists\n%v\nwant\n%v", names, servedFamilies)
	}
	if got := sample(body, reloads); got != 2 {
		t.Errorf("%s = %v, want 2", reloads, got)
	}
	// The reloaded Resolver and Source count into the served metrics.
	if got := sample(body, misses); got != missesBefore+1 {
		t.Errorf("%s = %v after a reload and a new address, want %v", misses, got, missesBefore+1)
	}
	if got := sample(body, found); got != foundBefore+1 {
		t.Errorf("%s = %v after a reload and a new address, want %v", found, got, foundBefore+1)
	}

	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "mailbeacon_") {
			t.Errorf("the default registry holds %s", f.GetName())
		}
	}
}
