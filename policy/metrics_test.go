package policy

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// Resolvers record into the metrics they are handed: two registries do
// not conflict, a Resolver without metrics records nowhere, and nothing
// lands in the default registry.
func TestMetricsOwnRegistry(t *testing.T) {
	dir := &fakeDirectory{entries: map[string]*ldapsource.Entry{
		"bob@example.com":   entry(map[string][]string{"uid": {"bob"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured"}}),
		"alice@example.com": entry(map[string][]string{"uid": {"alice"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured"}}),
	}}
	pol, err := New(Config{Login: "{uid}"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultCacheConfig()
	cfg.MaxEntries = 1 // the second address evicts the first
	resolver := func(m *Metrics) *Resolver {
		t.Helper()
		r, err := NewResolver(dir, pol, testDomains(t), cfg, nil, m)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	mA, mB := NewMetrics(regA), NewMetrics(regB)
	a, b, none := resolver(mA), resolver(mB), resolver(nil)
	for _, step := range []struct {
		r    *Resolver
		addr string
	}{{a, "bob@example.com"}, {a, "bob@example.com"}, {a, "alice@example.com"}, {b, "bob@example.com"}, {none, "bob@example.com"}} {
		if _, err := step.r.Resolve(context.Background(), mustAddr(t, step.addr)); err != nil {
			t.Fatal(err)
		}
	}
	// The directory fails with nothing cached: A answers with the defaults.
	dir.set(func(f *fakeDirectory) { f.err = errors.New("down") })
	if _, err := a.Resolve(context.Background(), mustAddr(t, "new@example.com")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"A misses", testutil.ToFloat64(mA.cacheMiss), 3},
		{"A hits", testutil.ToFloat64(mA.cacheHit), 1},
		{"A accounts evicted", testutil.ToFloat64(mA.cacheEvictedAccount), 1},
		{"A answers from defaults", testutil.ToFloat64(mA.directoryToDefaults), 1},
		{"A transient failures", testutil.ToFloat64(mA.directoryFailures.WithLabelValues("transient")), 1},
		{"B misses", testutil.ToFloat64(mB.cacheMiss), 1},
		{"B hits", testutil.ToFloat64(mB.cacheHit), 0},
		{"B accounts evicted", testutil.ToFloat64(mB.cacheEvictedAccount), 0},
		{"B answers from defaults", testutil.ToFloat64(mB.directoryToDefaults), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	for _, name := range []string{
		"mailbeacon_cache_evictions_total", "mailbeacon_cache_lookups_total",
		"mailbeacon_directory_failures_total", "mailbeacon_directory_unavailable_answers_total",
	} {
		inA, errA := testutil.GatherAndCount(regA, name)
		inDefault, errD := testutil.GatherAndCount(prometheus.DefaultGatherer, name)
		if errA != nil || errD != nil || inA == 0 || inDefault != 0 {
			t.Errorf("%s: %d series on the registry handed in, %d on the default one (%v, %v)", name, inA, inDefault, errA, errD)
		}
	}
}
