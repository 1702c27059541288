package policy

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// BenchmarkResolveMiss is the resolve path of an address nobody asked for
// before: cache miss, one (in-memory) directory search, the policy
// decision, the negative cache entry, the defaults. BenchmarkResolveCached
// (resolver_test.go) is the cached path.
func BenchmarkResolveMiss(b *testing.B) {
	r, dir, _ := newTestResolver(b, DefaultCacheConfig())
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a := Address{Local: "miss" + strconv.FormatInt(n.Add(1), 10), Domain: "example.com"}
			acct, err := r.Resolve(ctx, a)
			if err != nil || acct.Known {
				b.Fatal(acct, err)
			}
		}
	})
	if got := dir.searches.Load(); got != n.Load() {
		b.Errorf("%d searches for %d distinct addresses", got, n.Load())
	}
}

func BenchmarkParseAddress(b *testing.B) {
	for _, s := range []string{"bob@example.com", "Bob.Builder@Mail.Example.COM", "jörg@bücher.example"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseAddress(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// anyDomain finds an active iRedMail-style entry for every domain name.
type anyDomain struct{}

func (anyDomain) Lookup(_ context.Context, name string) (*ldapsource.Entry, error) {
	return domainEntry("domainName="+name+",o=domains,dc=example,dc=com", map[string][]string{
		"domainName": {name}, "accountStatus": {"active"}, "cn": {"Customer " + name}, "mtaTransport": {"dovecot"}}), nil
}

// BenchmarkDomainSourceMiss is one new directory domain: the template
// applied to its entry and the domain cached. It reports the heap each
// cached domain takes (bytes/domain).
func BenchmarkDomainSourceMiss(b *testing.B) {
	ds, err := NewDomainSource(anyDomain{}, iredmailTemplate(b), DefaultCacheConfig(), nil)
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, b.N)
	for i := range names {
		names[i] = fmt.Sprintf("d%d.example", i)
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	for i := range b.N {
		if _, err := ds.Domain(context.Background(), names[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	runtime.KeepAlive(ds)
	b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/float64(b.N), "bytes/domain")
}
