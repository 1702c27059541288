package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// The cache-lifetime oracle against a real slapd, with short TTLs: ask an
// address, wait past negative_ttl, ask again. Under policy.privacy strict
// the second ask costs the directory as many searches for alice, carol
// (disabled) and nobody: none, all three still cached.
func TestTimingOracleCacheLifetimeSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	cfg := slapdConfig(t, srv, false)
	cfg.Policy.Privacy = "strict"
	cfg.Cache.TTL, cfg.Cache.NegativeTTL = 20*time.Second, 500*time.Millisecond
	cfg.Limits.RequestsPerSecond, cfg.Limits.UnknownPerMinute = 0, 0
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.source.Close()
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	addrs := []string{"alice@example.com", "carol@example.com", "nobody@example.com"}
	ask := func(addr string) int {
		t.Helper()
		before := srv.SearchCount()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", addr, rec.Code, rec.Body)
		}
		return srv.SearchCount() - before
	}
	// What reading cn=Monitor costs by itself.
	idle := srv.SearchCount()
	idle = srv.SearchCount() - idle
	first := map[string]int{}
	for _, addr := range addrs {
		first[addr] = ask(addr) - idle
		if first[addr] < 1 {
			t.Fatalf("first ask of %s cost %d searches: the test cannot see the directory", addr, first[addr])
		}
	}
	time.Sleep(cfg.Cache.NegativeTTL + 500*time.Millisecond)
	second := map[string]int{}
	for _, addr := range addrs {
		second[addr] = ask(addr) - idle
	}
	t.Logf("searches, first ask %v; second ask, %s later (past negative_ttl %s): %v",
		first, cfg.Cache.NegativeTTL+500*time.Millisecond, cfg.Cache.NegativeTTL, second)
	for _, addr := range addrs[1:] {
		if second[addr] != second[addrs[0]] {
			t.Errorf("strict: the second ask of %s cost %d directory searches, of %s %d: the cache lifetime tells them apart",
				addr, second[addr], addrs[0], second[addrs[0]])
		}
	}
}
