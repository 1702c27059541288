package ldapsource

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

// Sources record into the metrics they are handed: two registries do not
// conflict, a Source without metrics records nowhere, and nothing lands in
// the default registry.
func TestMetricsOwnRegistry(t *testing.T) {
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "ldap://" + l.Addr().String()
	l.Close()

	source := func(m *Metrics, urls ...string) *Source {
		t.Helper()
		s, err := New(Config{
			URLs: urls, BindDN: embedded.DemoBindDN, BindPassword: embedded.DemoPassword, BaseDN: embedded.DemoBaseDN,
			Filter:      "(&(objectClass=mailUser)(mail={email}))",
			DialTimeout: 2 * time.Second, RequestTimeout: 5 * time.Second, PoolSize: 2,
		}, []string{"uid"}, nil, m)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	mA, mB := NewMetrics(regA), NewMetrics(regB)
	a := source(mA, srv.URL)
	b := source(mB, dead, srv.URL) // fails over to the live URL
	none := source(nil, dead, srv.URL)
	for _, s := range []*Source{a, a, b, none} {
		if _, err := s.Lookup(context.Background(), Query{Email: "alice@example.com", Local: "alice", Domain: "example.com"}); err != nil {
			t.Fatal(err)
		}
	}

	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"A failovers", testutil.ToFloat64(mA.failovers), 0},
		{"B failovers", testutil.ToFloat64(mB.failovers), 1},
		{"B dial errors of the dead URL", testutil.ToFloat64(mB.dialErrors.WithLabelValues(dead)), 1},
		{"A dial errors of the live URL", testutil.ToFloat64(mA.dialErrors.WithLabelValues(srv.URL)), 0},
		{"A connections in use after the lookups", testutil.ToFloat64(mA.connectionsInUse), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	for reg, want := range map[*prometheus.Registry]uint64{regA: 2, regB: 1} {
		if got := searchCount(t, reg, "found"); got != want {
			t.Errorf("searches found = %d, want %d", got, want)
		}
	}

	for _, name := range []string{
		"mailbeacon_directory_bind_backoffs_total", "mailbeacon_directory_connections_in_use",
		"mailbeacon_directory_dial_errors_total", "mailbeacon_directory_failovers_total",
		"mailbeacon_directory_search_duration_seconds",
	} {
		inA, errA := testutil.GatherAndCount(regA, name)
		inDefault, errD := testutil.GatherAndCount(prometheus.DefaultGatherer, name)
		if errA != nil || errD != nil || inA == 0 || inDefault != 0 {
			t.Errorf("%s: %d series on the registry handed in, %d on the default one (%v, %v)", name, inA, inDefault, errA, errD)
		}
	}
}

// searchCount returns how many lookups reg's search histogram counted
// under result.
func searchCount(t *testing.T, reg prometheus.Gatherer, result string) uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "mailbeacon_directory_search_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}
