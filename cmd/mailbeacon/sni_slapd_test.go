package main

// Every directory question from outside costs the asking client's
// unknown-address budget: the server names of TLS handshakes (ACME on,
// hosted domains from a real slapd), Host headers, and HTTP lookups,
// with limits.exempt for probes. The directory's work is counted in
// slapd's cn=Monitor.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// randomLabel is a DNS label no directory holds.
func randomLabel() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "r" + hex.EncodeToString(b)
}

// sniFlood makes n TLS handshakes with random autoconfig.<random>.example
// server names to addr from the local address src, workers at a time, all
// starting together, and returns how many succeeded.
func sniFlood(t *testing.T, addr, src string, n, workers int) int {
	t.Helper()
	var next, ok atomic.Int64
	ldaptest.Together(workers, func(int) {
		d := &tls.Dialer{
			NetDialer: &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}},
			Config:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // no certificate is expected at all
		}
		for next.Add(1) <= int64(n) {
			d.Config.ServerName = "autoconfig." + randomLabel() + ".example"
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := d.DialContext(ctx, "tcp", addr)
			cancel()
			if err == nil {
				ok.Add(1)
				conn.Close()
			}
		}
	})
	return int(ok.Load())
}

// acmeHostedConfig writes a configuration file serving srv's directory
// domains (ldaptest.HostedLDIF) over TLS with ACME on, against a CA
// nobody answers: a handshake's server name reaches the budget and the
// directory, never a CA. limits are lines under limits:, server extra
// lines under server:. It returns the file's path.
func acmeHostedConfig(t *testing.T, srv *ldaptest.Server, limits, server string) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, hostedConfigText(t, srv, time.Minute, time.Minute)+"limits:\n"+limits+fmt.Sprintf(`server:
  listen: 127.0.0.1:0
%s  acme:
    enabled: true
    directory_url: https://127.0.0.1:%d/dir
    cache_dir: %q
`, server, freePort(t), filepath.Join(dir, "acme")))
	return file
}

// refill is how many tokens a bucket of perMinute regains in d.
func refill(perMinute int, d time.Duration) int {
	return int(float64(perMinute) * d.Minutes())
}

// 10,000 TLS handshakes from one address, each with a random SNI name of
// a domain the configuration lacks, cost the directory at most
// limits.unknown_burst searches plus what the budget regains meanwhile;
// a reload does not give the budget back; another address has its own;
// an exempt one has none. Refusals are counted and logged once.
func TestSNIBudgetSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	const (
		burst     = 20
		perMinute = 60
		flood     = 10_000
		workers   = 200
	)
	// The ACME CA is never reached: no name of the flood gets that far.
	cfgFile := acmeHostedConfig(t, srv, fmt.Sprintf(`
  unknown_per_minute: %d
  unknown_burst: %d
  exempt: [127.0.0.3/32]
`, perMinute, burst), "")
	s := startServe(t, []string{"--config", cfgFile}, "operations.listen")
	addr := strings.TrimPrefix(s.addrs["server.listen"], "https://")
	// SearchCount counts from slapd's start: the test counts differences.
	before := srv.SearchCount()
	delta := func() int {
		n := srv.SearchCount()
		d := n - before
		before = n
		return d
	}

	start := time.Now()
	if n := sniFlood(t, addr, "127.0.0.1", flood, workers); n != 0 {
		t.Errorf("%d handshakes with random names succeeded", n)
	}
	elapsed := time.Since(start)
	searches := delta()
	bound := burst + refill(perMinute, elapsed)
	t.Logf("127.0.0.1: %d handshakes in %v (%.0f/s): %d directory searches, bound %d (burst %d + refill %d)",
		flood, elapsed.Round(time.Millisecond), flood/elapsed.Seconds(), searches, bound, burst, bound-burst)
	if searches > bound {
		t.Errorf("%d handshakes from one address made %d directory searches, more than the budget's %d", flood, searches, bound)
	}
	// On a loaded machine a few handshakes may give up before the
	// server asks: half the burst still shows the budget was spent.
	if searches < burst/2 {
		t.Errorf("only %d searches: the budget of %d was not spent, the test proves nothing", searches, burst)
	}

	_, body := scrape(t, s.addrs["operations.listen"])
	if v := sample(body, `mailbeacon_tls_sni_refused_total{reason="budget"}`); v < float64(flood-bound) {
		t.Errorf("refusals for the budget counted %v, want at least %d", v, flood-bound)
	}
	const logLine = "TLS handshakes refused: the client's unknown-address budget is spent"
	// Once a minute per client: a flood slowed past a minute by a loaded
	// machine is logged once more per minute it lasted.
	if n, most := strings.Count(s.stderr.String(), logLine), 1+int(elapsed/time.Minute); n < 1 || n > most {
		t.Errorf("the refusals were logged %d times in %v, want once a minute for the client (1 to %d)", n, elapsed.Round(time.Second), most)
	}
	for line := range strings.Lines(s.stderr.String()) {
		if strings.Contains(line, logLine) {
			t.Logf("logged: %s", strings.TrimSpace(line))
			if !strings.Contains(line, "level=WARN") || !strings.Contains(line, "client=127.0.0.1") {
				t.Errorf("the refusal is not a warning naming the client: %s", line)
			}
		}
	}

	// A reload keeps what the client spent.
	s.hup()
	s.waitLog("configuration reloaded", 1)
	delta() // what the reload asked
	if n := sniFlood(t, addr, "127.0.0.1", 1000, workers); n != 0 {
		t.Errorf("%d handshakes with random names succeeded after the reload", n)
	}
	total := time.Since(start)
	searches += delta()
	bound = burst + refill(perMinute, total)
	t.Logf("127.0.0.1 after SIGHUP: %d searches in all over %v, bound %d", searches, total.Round(time.Millisecond), bound)
	if searches > bound {
		t.Errorf("after a reload, 127.0.0.1 made %d searches in all, more than its budget's %d: the reload gave it a new budget", searches, bound)
	}

	// Another address has a budget of its own.
	start2 := time.Now()
	if n := sniFlood(t, addr, "127.0.0.2", 1000, workers); n != 0 {
		t.Errorf("%d handshakes from 127.0.0.2 succeeded", n)
	}
	other := delta()
	bound2 := burst + refill(perMinute, time.Since(start2))
	t.Logf("127.0.0.2: %d searches, bound %d", other, bound2)
	// Sharing 127.0.0.1's spent budget it would get about none.
	if other < burst/2 || other > bound2 {
		t.Errorf("127.0.0.2 made %d searches, want its own budget: between %d and %d", other, burst/2, bound2)
	}

	// An exempt address is asked about every time: the trade-off the
	// README states.
	if n := sniFlood(t, addr, "127.0.0.3", 100, 20); n != 0 {
		t.Errorf("%d handshakes from 127.0.0.3 succeeded", n)
	}
	if exempt := delta(); exempt != 100 {
		t.Errorf("100 handshakes from an exempt address made %d searches, want 100 (never refused)", exempt)
	}
}

// A name found not served is refused again without a search or a token.
func TestSNIRefusedNameCachedSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	cfgFile := acmeHostedConfig(t, srv, "  unknown_per_minute: 1\n  unknown_burst: 3\n", "")
	s := startServe(t, []string{"--config", cfgFile})
	addr := strings.TrimPrefix(s.addrs["server.listen"], "https://")
	before := srv.SearchCount()
	handshake := func(name string) {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true}) //nolint:gosec // none expected
		if err == nil {
			conn.Close()
			t.Fatalf("handshake for %s succeeded", name)
		}
	}
	name := "autoconfig." + randomLabel() + ".example"
	for range 50 {
		handshake(name)
	}
	if n := srv.SearchCount() - before; n != 1 {
		t.Errorf("50 handshakes for one unserved name made %d searches, want 1", n)
	}
	// ... and it cost one token: two of the budget's three are left.
	handshake("autoconfig." + randomLabel() + ".example")
	handshake("autoconfig." + randomLabel() + ".example")
	handshake("autoconfig." + randomLabel() + ".example")
	if n := srv.SearchCount() - before; n != 3 {
		t.Errorf("the name and three new ones after it made %d searches in all, want 3 (the budget)", n)
	}
}

// A Host autoconfig.<random> costs one directory search, not one for
// <random> and another for autoconfig.<random>.
func TestSNIHostHeaderOneSearchPerNameSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	h := hostedHandler(t, srv, time.Minute, time.Minute)
	const n = 20 // within the default budget of 60
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = "autoconfig." + randomLabel() + ".example"
	}
	before := srv.SearchCount()
	ask := func() {
		t.Helper()
		for _, host := range hosts {
			req := httptest.NewRequest("GET", "/mail/config-v1.1.xml", nil)
			req.Host = host
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusNotFound {
				t.Fatalf("%s: %d, want 404", host, rec.Code)
			}
		}
	}
	ask()
	after := srv.SearchCount()
	if got := after - before; got != n {
		t.Errorf("%d Host names autoconfig.<random> made %d directory searches, want %d", n, got, n)
	}
	ask() // cached as not served
	if got := srv.SearchCount() - after; got != 0 {
		t.Errorf("the same %d names again made %d searches, want 0", n, got)
	}
	// A served domain's name still answers.
	req := httptest.NewRequest("GET", "/mail/config-v1.1.xml", nil)
	req.Host = "autoconfig.hosted.example"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("autoconfig.hosted.example: %d, want 200", rec.Code)
	}
}

// A monitoring probe in limits.exempt asking for an unknown address is
// never refused once the budget any other client has would be spent.
func TestSNIExemptProbeSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgFile, slapdConfigText(t, srv, slapdOptions{extra: `
limits:
  unknown_per_minute: 1
  unknown_burst: 5
  exempt: [127.0.0.2/32]
`}))
	s := startServe(t, []string{"--listen", "127.0.0.1:0", "--config", cfgFile})
	base := s.addrs["server.listen"]
	client := func(src string) *http.Client {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
	}
	refused := func(src string) int {
		c := client(src)
		n := 0
		for i := range 30 {
			code, _ := get(t, c, fmt.Sprintf("%s/mail/config-v1.1.xml?emailaddress=probe%d-%s@example.com", base, i, randomLabel()), "")
			if code == http.StatusTooManyRequests {
				n++
			} else if code != http.StatusOK {
				t.Fatalf("%s: %d", src, code)
			}
		}
		return n
	}
	var wg sync.WaitGroup
	var other, probe int
	wg.Go(func() { other = refused("127.0.0.1") })
	wg.Go(func() { probe = refused("127.0.0.2") })
	wg.Wait()
	if other < 20 {
		t.Errorf("127.0.0.1 was refused %d of 30 unknown lookups, want at least 20 (budget 5)", other)
	}
	if probe != 0 {
		t.Errorf("the exempt 127.0.0.2 was refused %d of 30 unknown lookups, want none", probe)
	}
}
