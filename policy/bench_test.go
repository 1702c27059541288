package policy

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
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
