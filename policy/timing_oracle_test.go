package policy

import (
	"context"
	"testing"
	"time"
)

// Timing oracles through the cache: whether the second ask of an address
// costs a directory search must not depend, under policy.privacy strict,
// on whether the address exists.

// newPrivacyTestResolver is newTestResolver under the given policy.privacy.
func newPrivacyTestResolver(t *testing.T, privacy string, cfg CacheConfig) (*Resolver, *fakeDirectory, *clock) {
	t.Helper()
	_, dir, clk := newTestResolver(t, cfg)
	pol, err := New(Config{Login: "{uid}", Privacy: privacy})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, pol, testDomains(t), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.now = clk.Now
	return r, dir, clk
}

// searchesFor returns how many directory searches resolving addr costs.
func searchesFor(t *testing.T, r *Resolver, dir *fakeDirectory, addr string) int64 {
	t.Helper()
	before := dir.searches.Load()
	if _, err := r.Resolve(context.Background(), mustAddr(t, addr)); err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	return dir.searches.Load() - before
}

// The probe: ask, wait past negative_ttl, ask again. Under strict,
// a known (bob), a disabled (carol) and an unknown address cost the same
// on the second ask, at every wait.
func TestTimingOracleStrictCacheLifetime(t *testing.T) {
	addrs := []string{"bob@example.com", "carol@example.com", "nobody@example.com"}
	cfg := DefaultCacheConfig() // ttl 10m, negative_ttl 1m
	for _, privacy := range []string{PrivacyStrict, PrivacyStandard} {
		t.Run(privacy, func(t *testing.T) {
			r, dir, clk := newPrivacyTestResolver(t, privacy, cfg)
			for _, a := range addrs {
				if n := searchesFor(t, r, dir, a); n != 1 {
					t.Fatalf("first ask of %s: %d searches, want 1", a, n)
				}
			}
			for _, wait := range []time.Duration{65 * time.Second, 5 * time.Minute, cfg.TTL - 6*time.Minute + time.Second} {
				clk.Advance(wait)
				got := map[string]int64{}
				for _, a := range addrs {
					got[a] = searchesFor(t, r, dir, a)
				}
				t.Logf("%s: after %s more: searches %v", privacy, wait, got)
				if privacy == PrivacyStandard {
					continue // the oracle README "What an answer reveals" names
				}
				for _, a := range addrs[1:] {
					if got[a] != got[addrs[0]] {
						t.Errorf("strict, second ask %s later: %s cost %d searches, %s %d: the cache lifetime tells them apart",
							wait, a, got[a], addrs[0], got[addrs[0]])
					}
				}
			}
		})
	}
}

// A flood of unknown addresses fills the cache. Evicting unknown entries
// first would keep a known address cached and drop an unknown one asked
// at the same moment: under strict the order of use alone decides.
func TestTimingOracleStrictEviction(t *testing.T) {
	cfg := DefaultCacheConfig()
	cfg.MaxEntries = 4
	for _, first := range []string{"bob@example.com", "nobody@example.com"} {
		second := map[string]string{"bob@example.com": "nobody@example.com", "nobody@example.com": "bob@example.com"}[first]
		t.Run(first+" first", func(t *testing.T) {
			r, dir, clk := newPrivacyTestResolver(t, PrivacyStrict, cfg)
			searchesFor(t, r, dir, first)
			clk.Advance(time.Second)
			searchesFor(t, r, dir, second)
			// Three more addresses push out one entry.
			for _, a := range []string{"flood1@example.com", "flood2@example.com", "flood3@example.com"} {
				clk.Advance(time.Second)
				searchesFor(t, r, dir, a)
			}
			if n := searchesFor(t, r, dir, second); n != 0 {
				t.Errorf("%s, asked after %s, was evicted first (%d searches)", second, first, n)
			}
			if n := searchesFor(t, r, dir, first); n != 1 {
				t.Errorf("%s, the least recently used, was kept (%d searches): eviction sorts by kind", first, n)
			}
		})
	}
}
