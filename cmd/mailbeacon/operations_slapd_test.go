package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
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

// The readiness probe of deploy/kubernetes, /readyz/serving, against a
// real directory that goes down: under cache.on_directory_error: defaults
// the server keeps answering (bob from the cache, an address never asked
// with the domain's defaults) and stays ready, and the probe sends the
// directory nothing; under "fail" an address not cached gets 503, and the
// probe follows the directory like /readyz.
func TestReadyzServingDirectoryOutageSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	for _, mode := range []string{"defaults", "fail"} {
		t.Run(mode, func(t *testing.T) {
			cfg := slapdConfig(t, srv, false)
			cfg.Cache.OnDirectoryError = mode
			a, err := build(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.source.Close()
			h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
			ops := h.Operations()
			probe := func(hh http.Handler, path string) int {
				rec := httptest.NewRecorder()
				hh.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
				return rec.Code
			}
			bob := "/mail/config-v1.1.xml?emailaddress=bob@example.com"
			if code := probe(h, bob); code != 200 {
				t.Fatalf("bob with the directory up: %d", code)
			}
			before := srv.SearchCount()
			for range 20 {
				if code := probe(ops, "/readyz/serving"); code != 200 {
					t.Fatalf("/readyz/serving with the directory up: %d", code)
				}
			}
			searches := srv.SearchCount() - before
			t.Logf("%s: 20 probes of /readyz/serving sent %d searches", mode, searches)
			if (searches == 0) != (mode == "defaults") {
				t.Errorf("%s: 20 probes of /readyz/serving sent %d searches to the directory", mode, searches)
			}

			srv.Stop()
			wantServing, wantNew := 200, 200
			if mode == "fail" {
				wantServing, wantNew = 503, 503
			}
			if code := probe(ops, "/readyz"); code != 503 {
				t.Errorf("/readyz with the directory down: %d, want 503", code)
			}
			if code := probe(ops, "/readyz/serving"); code != wantServing {
				t.Errorf("/readyz/serving with the directory down: %d, want %d", code, wantServing)
			}
			if code := probe(h, bob); code != 200 {
				t.Errorf("bob (cached) with the directory down: %d, want 200", code)
			}
			if code := probe(h, "/mail/config-v1.1.xml?emailaddress=never.asked@example.com"); code != wantNew {
				t.Errorf("an address not cached with the directory down: %d, want %d", code, wantNew)
			}
			srv.Start()
		})
	}
}

// TestReadyzServingServeSlapd: `serve` during a directory outage, probed
// as the kubelet would while 200 lookups arrive at once: every lookup is
// answered and every /readyz/serving probe says ready (/readyz does not).
// A SIGHUP to cache.on_directory_error: fail turns the probe unready, and
// one back to defaults ready again.
func TestReadyzServingServeSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	file := filepath.Join(t.TempDir(), "config.yaml")
	limits := `
limits:
  max_per_client: 0
  unknown_per_minute: 0
  requests_per_second: 10000
  burst: 10000
`
	writeFile(t, file, slapdConfigText(t, srv, slapdOptions{extra: limits}))
	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"}, "operations.listen")
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	base, ops := s.addrs["server.listen"], s.addrs["operations.listen"]
	if code, body := get(t, c, base+"/mail/config-v1.1.xml?emailaddress=bob@example.com", ""); code != 200 {
		t.Fatalf("bob: %d %s", code, body)
	}

	srv.Stop()
	t.Cleanup(srv.Start)
	if code, _ := get(t, c, ops+"/readyz", ""); code != 503 {
		t.Errorf("/readyz with the directory down: %d, want 503", code)
	}
	const n = 200
	codes := make([]int, n)
	ldaptest.Together(n, func(i int) {
		url := base + "/mail/config-v1.1.xml?emailaddress=" + []string{"bob", fmt.Sprintf("new%d", i)}[i%2] + "@example.com"
		if i%4 == 3 {
			url = ops + "/readyz/serving"
		}
		resp, err := c.Get(url)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes[i] = resp.StatusCode
	})
	bad := 0
	for i, code := range codes {
		if code != 200 {
			bad++
			if bad <= 5 {
				t.Errorf("request %d during the outage: %d, want 200", i, code)
			}
		}
	}
	t.Logf("%d requests at once during the outage (a quarter of them /readyz/serving): %d not 200", n, bad)

	for i, step := range []struct {
		mode    string
		serving int
	}{{"fail", 503}, {"defaults", 200}} {
		writeFile(t, file, slapdConfigText(t, srv, slapdOptions{extra: limits + "cache:\n  on_directory_error: " + step.mode + "\n"}))
		s.hup()
		s.waitLog("configuration reloaded", i+1)
		if code, body := get(t, c, ops+"/readyz/serving", ""); code != step.serving {
			t.Errorf("after a reload to on_directory_error: %s: /readyz/serving %d %q, want %d", step.mode, code, body, step.serving)
		}
	}
}

// TestReadyzServingDomainSourceSlapd: with the domains themselves in the
// directory (domain_source), a domain not cached cannot be answered while
// the directory is down, so /readyz/serving follows the directory.
func TestReadyzServingDomainSourceSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	a := buildText(t, hostedConfigText(t, srv, time.Minute, time.Minute))
	defer a.source.Close()
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	ops := h.Operations()
	probe := func(hh http.Handler, path string) int {
		rec := httptest.NewRecorder()
		hh.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code
	}
	if code := probe(ops, "/readyz/serving"); code != 200 {
		t.Errorf("/readyz/serving with the directory up: %d", code)
	}
	srv.Stop()
	t.Cleanup(srv.Start)
	if code := probe(h, "/mail/config-v1.1.xml?emailaddress=hanna@hosted.example"); code != 503 {
		t.Errorf("a directory domain not cached, directory down: %d, want 503", code)
	}
	if code := probe(ops, "/readyz/serving"); code != 503 {
		t.Errorf("/readyz/serving with directory domains and the directory down: %d, want 503", code)
	}
}
