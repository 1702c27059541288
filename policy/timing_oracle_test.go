package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
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

// Every kind of refusal is answered refusal_time after Authenticate began:
// a wrong password the directory takes 80ms to refuse, one refused from
// memory (repeated, paused), an unknown or a disabled address (cold or
// cached), no password. A directory slower than refusal_time shows, and is
// counted; a success is not delayed.
func TestTimingOracleRefusalDeadline(t *testing.T) {
	const refusal = 150 * time.Millisecond
	r, dir, clk, logs, m := lockoutResolver(t, LockoutConfig{Failures: 2, Pause: time.Hour, RefusalTime: refusal})
	var sleeps int
	r.sleep = func(_ context.Context, d time.Duration) { sleeps++; clk.Advance(d) }
	bind := 80 * time.Millisecond
	dir.onBind = func() { clk.Advance(bind) }
	ctx := context.Background()
	took := func(addr, pw string) time.Duration {
		t.Helper()
		start := clk.Now()
		if _, err := r.Authenticate(ctx, mustAddr(t, addr), pw); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("%s %q: %v, want a refusal", addr, pw, err)
		}
		return clk.Now().Sub(start)
	}
	for _, c := range []struct{ name, addr, pw string }{
		{"unknown, not cached", "nobody@example.com", "x"},
		{"disabled, not cached", "carol@example.com", "Secret123!"},
		{"wrong password (a bind)", "bob@example.com", "wrong1"},
		{"unknown, cached", "nobody@example.com", "y"},
		{"disabled, cached", "carol@example.com", "Secret123!"},
		{"wrong password, repeated (from memory)", "bob@example.com", "wrong1"},
		{"wrong password (a bind)", "bob@example.com", "wrong2"},
		{"wrong password, paused (from memory)", "bob@example.com", "wrong3"},
		{"no password", "bob@example.com", ""},
	} {
		if d := took(c.addr, c.pw); d != refusal {
			t.Errorf("%s: refused after %v, want %v", c.name, d, refusal)
		}
	}
	// The POX endpoint answers an address of a domain not served with the
	// same 401.
	start := clk.Now()
	if _, err := r.Authenticate(ctx, mustAddr(t, "alice@not-served.example"), "x"); !errors.Is(err, ErrUnknownDomain) {
		t.Fatalf("domain not served: %v", err)
	}
	if d := clk.Now().Sub(start); d != refusal {
		t.Errorf("domain not served: refused after %v, want %v", d, refusal)
	}
	if n := testutil.ToFloat64(m.authRefusalsLate); n != 0 {
		t.Errorf("%v late refusals counted, want 0", n)
	}
	// A directory slower than refusal_time: the refusal comes when it
	// answers, counted and logged once.
	bind = 2 * refusal
	for _, pw := range []string{"late1", "late2"} {
		r.SetBindLockout(LockoutConfig{Failures: 10, Pause: time.Hour, RefusalTime: refusal})
		if d := took("bob@example.com", pw); d != bind {
			t.Errorf("slow directory: refused after %v, want %v", d, bind)
		}
	}
	if n := testutil.ToFloat64(m.authRefusalsLate); n != 2 {
		t.Errorf("%v late refusals counted, want 2", n)
	}
	if n := logs.count("longer than autodiscover.refusal_time"); n != 1 {
		t.Errorf("late refusals logged %d times, want once", n)
	}
	before := sleeps
	if _, err := r.Authenticate(ctx, mustAddr(t, "bob@example.com"), "Secret123!"); err != nil {
		t.Fatal(err)
	}
	if sleeps != before {
		t.Error("a success waited")
	}
}

// 300 refusals of every kind at once, on the real clock, binds taking 2ms:
// none is answered before refusal_time, whatever the crowd.
func TestTimingOracleRefusalDeadlineTogether(t *testing.T) {
	const refusal = 60 * time.Millisecond
	r, dir, _, _, m := lockoutResolver(t, LockoutConfig{Failures: 10, Pause: time.Hour, RefusalTime: refusal})
	r.now, r.sleep = time.Now, sleepCtx
	dir.onBind = func() { time.Sleep(2 * time.Millisecond) }
	addrs := []string{"bob@example.com", "b.alias@example.com", "carol@example.com", "nobody@example.com", "other@example.com"}
	took := make([]time.Duration, 300)
	errs := make([]error, len(took))
	ldaptest.Together(len(took), func(i int) {
		start := time.Now()
		_, errs[i] = r.Authenticate(context.Background(), mustAddr(t, addrs[i%len(addrs)]), "wrong"+string(rune('a'+i%7)))
		took[i] = time.Since(start)
	})
	for i, d := range took {
		if !errors.Is(errs[i], ErrBadCredentials) {
			t.Fatalf("%s: %v", addrs[i%len(addrs)], errs[i])
		}
		if d < refusal {
			t.Errorf("%s refused after %v, before refusal_time %v", addrs[i%len(addrs)], d, refusal)
		}
	}
	t.Logf("%d refusals at once: slowest %v, late %v", len(took), slicesMax(took), testutil.ToFloat64(m.authRefusalsLate))
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// A reload's refusal_time applies to the bind memory it carries on.
func TestTimingOracleRefusalTimeReload(t *testing.T) {
	old, _, _, _, _ := lockoutResolver(t, LockoutConfig{Failures: 3, Pause: time.Hour, RefusalTime: 100 * time.Millisecond})
	r, _, clk, _, _ := lockoutResolver(t, LockoutConfig{Failures: 3, Pause: time.Hour, RefusalTime: 300 * time.Millisecond})
	r.CarryAuthentication(old, true)
	r.sleep = func(_ context.Context, d time.Duration) { clk.Advance(d) }
	start := clk.Now()
	if _, err := r.Authenticate(context.Background(), mustAddr(t, "nobody@example.com"), "x"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	if d := clk.Now().Sub(start); d != 300*time.Millisecond {
		t.Errorf("after the reload a refusal took %v, want the new refusal_time 300ms", d)
	}
}
