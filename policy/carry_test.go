package policy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// twoDomains is a configuration of example.com and example.org; imapHost
// changes example.org's IMAP host, as a reload might.
func twoDomains(t testing.TB, orgIMAPHost string, withNet bool) map[string]*Domain {
	t.Helper()
	cfgs := []DomainConfig{
		{Name: "example.com", Services: []ServiceConfig{{Type: "imap", Host: "mail.example.com"}}},
		{Name: "example.org", Services: []ServiceConfig{{Type: "imap", Host: orgIMAPHost}}},
	}
	if withNet {
		cfgs = append(cfgs, DomainConfig{Name: "example.net", Services: []ServiceConfig{{Type: "imap", Host: "mail.example.net"}}})
	}
	ds, err := NewDomains(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func carryDirectory() *fakeDirectory {
	active := map[string][]string{"uid": {"u"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured"}}
	return &fakeDirectory{entries: map[string]*ldapsource.Entry{
		"bob@example.com": entry(active),
		"bob@example.org": entry(active),
		"bob@example.net": entry(active),
	}}
}

func newCarryResolver(t testing.TB, dir Directory, domains map[string]*Domain) *Resolver {
	t.Helper()
	pol, err := New(Config{Login: "{uid}"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, pol, domains, DefaultCacheConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCarryCacheAcrossReload(t *testing.T) {
	ctx := context.Background()
	dir := carryDirectory()
	old := newCarryResolver(t, dir, twoDomains(t, "mail.example.org", true))
	for _, a := range []string{"bob@example.com", "nobody@example.com", "bob@example.org", "bob@example.net"} {
		if _, err := old.Resolve(ctx, mustAddr(t, a)); err != nil {
			t.Fatal(err)
		}
	}
	// The reload changes example.org's host and drops example.net.
	newDomains := twoDomains(t, "imap.example.org", false)
	fresh := newCarryResolver(t, dir, newDomains)
	if n := fresh.CarryCache(old, func(d string) bool { return d != "example.org" }); n != 2 {
		t.Errorf("carried %d entries, want 2 (bob and nobody of example.com)", n)
	}
	for _, tc := range []struct {
		addr     string
		searches int64 // directory searches the resolve causes
		host     string
	}{
		{"bob@example.com", 0, "mail.example.com"},    // carried
		{"nobody@example.com", 0, "mail.example.com"}, // carried negative answer
		{"bob@example.org", 1, "imap.example.org"},    // domain changed: asked again, new host
	} {
		t.Run(tc.addr, func(t *testing.T) {
			before := dir.searches.Load()
			a, err := fresh.Resolve(ctx, mustAddr(t, tc.addr))
			if err != nil {
				t.Fatal(err)
			}
			if got := dir.searches.Load() - before; got != tc.searches {
				t.Errorf("%d directory searches, want %d", got, tc.searches)
			}
			if a.Domain != newDomains[a.Address.Domain] {
				t.Errorf("account points at the old configuration's domain")
			}
			if a.Services[0].Host != tc.host {
				t.Errorf("host %s, want %s", a.Services[0].Host, tc.host)
			}
		})
	}
	if _, err := fresh.Resolve(ctx, mustAddr(t, "bob@example.net")); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("removed domain: %v, want ErrUnknownDomain", err)
	}
}

func TestForgetDomain(t *testing.T) {
	ctx := context.Background()
	dir := carryDirectory()
	r := newCarryResolver(t, dir, twoDomains(t, "mail.example.org", false))
	for _, a := range []string{"bob@example.com", "nobody@example.com", "bob@example.org"} {
		if _, err := r.Resolve(ctx, mustAddr(t, a)); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.ForgetDomain("example.com"); n != 2 {
		t.Errorf("ForgetDomain dropped %d entries, want 2", n)
	}
	for addr, want := range map[string]int64{"bob@example.com": 1, "bob@example.org": 0} {
		before := dir.searches.Load()
		if _, err := r.Resolve(ctx, mustAddr(t, addr)); err != nil {
			t.Fatal(err)
		}
		if got := dir.searches.Load() - before; got != want {
			t.Errorf("%s after ForgetDomain(example.com): %d searches, want %d", addr, got, want)
		}
	}
}

func TestResolveCountsCacheMetrics(t *testing.T) {
	cfg := CacheConfig{TTL: time.Minute, NegativeTTL: time.Minute, StaleFor: time.Hour, OnDirectoryError: "defaults"}
	r, dir, clk := newTestResolver(t, cfg)
	m := NewMetrics(prometheus.NewRegistry())
	r.metrics = m
	ctx := context.Background()
	steps := []struct {
		name  string
		addr  string
		setup func()
		want  map[string]float64 // change of each counter
	}{
		{"first lookup", "bob@example.com", nil, map[string]float64{"miss": 1}},
		{"cached", "bob@example.com", nil, map[string]float64{"hit": 1}},
		{"unknown", "nobody@example.com", nil, map[string]float64{"miss": 1}},
		{"unknown cached", "nobody@example.com", nil, map[string]float64{"negative": 1}},
		{"expired, directory down", "bob@example.com", func() {
			clk.Advance(2 * time.Minute)
			dir.set(func(f *fakeDirectory) { f.err = errors.New("down") })
		}, map[string]float64{"miss": 1, "stale": 1}},
		{"not cached, directory down", "new@example.com", nil, map[string]float64{"miss": 1, "defaults": 1}},
	}
	counters := map[string]prometheus.Counter{"hit": m.cacheHit, "negative": m.cacheNegative, "miss": m.cacheMiss, "stale": m.cacheStale, "defaults": m.directoryToDefaults}
	for _, st := range steps {
		if st.setup != nil {
			st.setup()
		}
		before := map[string]float64{}
		for k, c := range counters {
			before[k] = testutil.ToFloat64(c)
		}
		if _, err := r.Resolve(ctx, mustAddr(t, st.addr)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for k, c := range counters {
			if got := testutil.ToFloat64(c) - before[k]; got != st.want[k] {
				t.Errorf("%s: %s went up by %v, want %v", st.name, k, got, st.want[k])
			}
		}
	}
}
