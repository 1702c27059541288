package main

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// The cache-lifetime oracle against a real slapd, with short TTLs: ask an
// address, wait past negative_ttl, ask again. Under policy.privacy strict
// the second ask costs the directory as many searches for alice, carol
// (disabled) and nobody: none, all three still cached; also when a reload
// (the cache carried to the new configuration, as SIGHUP does) comes
// between the asks.
func TestTimingOracleCacheLifetimeSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	cfg := slapdConfig(t, srv, false)
	cfg.Policy.Privacy = "strict"
	cfg.Cache.TTL, cfg.Cache.NegativeTTL = 20*time.Second, 500*time.Millisecond
	cfg.Limits.RequestsPerSecond, cfg.Limits.UnknownPerMinute = 0, 0
	newApp := func() *app {
		a, err := build(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.source.Close)
		return a
	}
	addrs := []string{"alice@example.com", "carol@example.com", "nobody@example.com"}
	ask := func(a *app, addr string) int {
		t.Helper()
		before := srv.SearchCount()
		rec := httptest.NewRecorder()
		protocols.NewHandler(a.resolver, a.handlerOptions(nil)).ServeHTTP(rec, httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", addr, rec.Code, rec.Body)
		}
		return srv.SearchCount() - before
	}
	for _, reload := range []bool{false, true} {
		t.Run(map[bool]string{false: "as started", true: "across a reload"}[reload], func(t *testing.T) {
			a := newApp()
			first := map[string]int{}
			for _, addr := range addrs {
				first[addr] = ask(a, addr)
				if first[addr] < 1 {
					t.Fatalf("first ask of %s cost %d searches: the test cannot see the directory", addr, first[addr])
				}
			}
			if reload {
				b := newApp()
				kept, _ := carryCache(a, b)
				b.resolver.CarryAuthentication(a.resolver, true)
				a = b
				t.Logf("reload kept %d cached answers", kept)
			}
			wait := cfg.Cache.NegativeTTL + 500*time.Millisecond
			time.Sleep(wait)
			second := map[string]int{}
			for _, addr := range addrs {
				second[addr] = ask(a, addr)
			}
			t.Logf("searches, first ask %v; second ask, %s later (past negative_ttl %s): %v", first, wait, cfg.Cache.NegativeTTL, second)
			for _, addr := range addrs[1:] {
				if second[addr] != second[addrs[0]] {
					t.Errorf("strict: the second ask of %s cost %d directory searches, of %s %d: the cache lifetime tells them apart",
						addr, second[addr], addrs[0], second[addrs[0]])
				}
			}
		})
	}
}

// With autodiscover.require_auth, the distribution of refusal times, not
// only its mean, is the same for a wrong password of an enabled account (a
// real bind slapd refuses), a wrong password refused before (no bind: the
// per-account bound answers from memory), an unknown address and a
// disabled one (no bind either): 2,000 interleaved samples of each through
// the POX handler, whose 10th, 50th and 90th percentiles differ by less
// than 10%, as the issue asks. refusal_time is 50ms, far above slapd's
// bind and the noise of a loaded two-core machine, so the deliberate wait
// dominates; 16 logins at a time keep the test short.
func TestTimingOracleRefusalSlapd(t *testing.T) {
	const (
		samples     = 2000
		workers     = 16
		refusalTime = 50 * time.Millisecond
	)
	text := slapdConfigText(t, ldaptest.Slapd(t), slapdOptions{
		extra: "limits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n" +
			"autodiscover:\n  require_auth: true\n  auth_cache_ttl: 0s\n  refusal_time: " + refusalTime.String() + "\n",
	})
	a := buildText(t, text)
	// So that alice's new wrong passwords keep binding, her account is
	// never paused here: no configuration allows this.
	a.resolver.SetBindLockout(policy.LockoutConfig{Failures: math.MaxInt32, Pause: time.Nanosecond, RefusalTime: refusalTime})
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	cases := []struct{ name, addr string }{
		{"wrong password (bind)", "alice@example.com"},
		{"refused before (memory)", "bob@example.com"},
		{"unknown", "nobody@example.com"},
		{"disabled", "carol@example.com"},
	}
	var n atomic.Int64
	refuse := func(addr string) time.Duration {
		req := poxRequest(addr, poxOutlook)
		pw := "not-the-password"
		if addr == "alice@example.com" {
			pw += "-" + strconv.FormatInt(n.Add(1), 10)
		}
		req.SetBasicAuth(addr, pw)
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, req)
		d := time.Since(start)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("%s: %d", addr, rec.Code)
		}
		return d
	}
	// Warm up: connections, bob's refused password, caches.
	for range 5 {
		for _, c := range cases {
			refuse(c.addr)
		}
	}
	times := make([][]time.Duration, len(cases))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			mine := make([][]time.Duration, len(cases))
			for i := range samples / workers * len(cases) {
				k := (w + i) % len(cases) // each worker in turn, starting apart
				mine[k] = append(mine[k], refuse(cases[k].addr))
			}
			mu.Lock()
			defer mu.Unlock()
			for k := range cases {
				times[k] = append(times[k], mine[k]...)
			}
		})
	}
	wg.Wait()
	pcts := []float64{10, 50, 90}
	got := make([][]time.Duration, len(pcts)) // [percentile][case]
	var report strings.Builder
	for k, c := range cases {
		slices.Sort(times[k])
		fmt.Fprintf(&report, "\n  %-24s n=%d", c.name, len(times[k]))
		for j, p := range pcts {
			v := times[k][int(p/100*float64(len(times[k])-1))]
			got[j] = append(got[j], v)
			fmt.Fprintf(&report, "  p%.0f %7.3fms", p, float64(v.Microseconds())/1000)
		}
	}
	t.Logf("refusal times, %d interleaved samples per case, %d at a time, refusal_time %s:%s", samples, workers, refusalTime, report.String())
	for j, p := range pcts {
		lo, hi := slices.Min(got[j]), slices.Max(got[j])
		gap := float64(hi-lo) / float64(lo)
		t.Logf("p%.0f: largest gap %.1f%%", p, 100*gap)
		if gap >= 0.10 {
			t.Errorf("p%.0f differs by %.1f%% between cases (%v): the refusal's time tells them apart", p, 100*gap, got[j])
		}
	}
}
