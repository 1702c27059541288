package boundcache

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newCache(t *testing.T, max int) *Cache[string, int] {
	t.Helper()
	c, err := New[string, int](Options{TTL: 10 * time.Minute, NegativeTTL: time.Minute, StaleFor: time.Hour, MaxEntries: max})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func keys(c *Cache[string, int]) []string {
	var out []string
	for _, k := range c.Snapshot(t0) {
		out = append(out, k.Key)
	}
	return out
}

func TestEviction(t *testing.T) {
	type op struct {
		key string
		neg bool
		get bool // Get instead of Put
	}
	tests := []struct {
		name string
		max  int
		ops  []op
		want []string // Snapshot order: negatives, then positives, LRU first
		// evictions reported to OnEvict
		evicted int
	}{
		{"under the bound nothing goes", 3, []op{{key: "a"}, {key: "b", neg: true}}, []string{"b", "a"}, 0},
		{"negatives go first", 3, []op{{key: "a"}, {key: "n1", neg: true}, {key: "b"}, {key: "c"}}, []string{"a", "b", "c"}, 1},
		{"oldest negative first", 3, []op{{key: "n1", neg: true}, {key: "n2", neg: true}, {key: "a"}, {key: "b"}}, []string{"n2", "a", "b"}, 1},
		{"then least recently used", 2, []op{{key: "a"}, {key: "b"}, {key: "a", get: true}, {key: "c"}}, []string{"a", "c"}, 1},
		{"a negative made positive moves", 2, []op{{key: "a", neg: true}, {key: "b"}, {key: "a"}, {key: "n", neg: true}}, []string{"b", "a"}, 1},
		{"a positive made negative moves", 2, []op{{key: "a"}, {key: "b"}, {key: "a", neg: true}, {key: "c"}}, []string{"b", "c"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t, tt.max)
			evicted := 0
			c.OnEvict = func(bool) { evicted++ }
			for i, o := range tt.ops {
				if o.get {
					c.Get(o.key, t0)
					continue
				}
				c.Put(o.key, i, o.neg, t0)
			}
			if got := keys(c); !slices.Equal(got, tt.want) {
				t.Errorf("entries %v, want %v", got, tt.want)
			}
			if c.Len() > tt.max {
				t.Errorf("Len %d over the bound %d", c.Len(), tt.max)
			}
			if evicted != tt.evicted {
				t.Errorf("OnEvict called %d times, want %d", evicted, tt.evicted)
			}
		})
	}
}

func TestFreshness(t *testing.T) {
	c := newCache(t, 10)
	c.Put("pos", 1, false, t0)
	c.Put("neg", 2, true, t0)
	tests := []struct {
		key       string
		at        time.Duration
		present   bool
		fresh     bool
		negative  bool
		wantValue int
	}{
		{"pos", 9 * time.Minute, true, true, false, 1},
		{"neg", 59 * time.Second, true, true, true, 2},
		{"neg", 2 * time.Minute, true, false, true, 2}, // stale, kept for an outage
		{"pos", 69 * time.Minute, true, false, false, 1},
		{"neg", 61 * time.Minute, false, false, false, 0}, // past stale_for: gone
		{"pos", 71 * time.Minute, false, false, false, 0},
	}
	for _, tt := range tests {
		now := t0.Add(tt.at)
		e, ok := c.Get(tt.key, now)
		if ok != tt.present || (ok && (e.Fresh(now) != tt.fresh || e.Negative != tt.negative || e.Value != tt.wantValue)) {
			t.Errorf("%s at +%v: got %+v present %v, want present %v fresh %v negative %v", tt.key, tt.at, e, ok, tt.present, tt.fresh, tt.negative)
		}
	}
	if c.Len() != 0 {
		t.Errorf("expired entries kept: Len %d", c.Len())
	}
}

// Expired entries at the cold end go on the next Put, without a sweep.
func TestPutDropsExpired(t *testing.T) {
	c := newCache(t, 100)
	for i := range 3 {
		c.Put(fmt.Sprint("old", i), i, true, t0)
	}
	c.Put("new", 1, true, t0.Add(2*time.Hour))
	if got := c.Len(); got != 1 {
		t.Errorf("Len %d after expired entries, want 1", got)
	}
	c.PutEntry("dead", Entry[int]{ExpiresAt: t0}, t0.Add(time.Second))
	if _, ok := c.Get("dead", t0); ok {
		t.Error("an expired entry was stored")
	}
}

func TestDeleteFunc(t *testing.T) {
	c := newCache(t, 10)
	for _, k := range []string{"a@x", "b@x", "c@y"} {
		c.Put(k, 1, k == "b@x", t0)
	}
	if n := c.DeleteFunc(func(k string) bool { return k[len(k)-1] == 'x' }); n != 2 {
		t.Errorf("deleted %d, want 2", n)
	}
	if got := keys(c); !slices.Equal(got, []string{"c@y"}) {
		t.Errorf("left %v", got)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{
		{TTL: time.Minute, NegativeTTL: time.Minute, MaxEntries: -1},
		{TTL: 0, NegativeTTL: time.Minute},
		{TTL: time.Minute, NegativeTTL: time.Minute, StaleFor: -1},
	} {
		if _, err := New[string, int](o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	c, err := New[string, int](Options{TTL: time.Minute, NegativeTTL: time.Minute})
	if err != nil || c.Options().MaxEntries != DefaultMaxEntries {
		t.Errorf("default bound: %v %+v", err, c.Options())
	}
}

// Hundreds of goroutines released at once never push the cache over its
// bound (run with -race).
func TestConcurrentBound(t *testing.T) {
	const max, workers, each = 50, 300, 40
	c := newCache(t, max)
	ldaptest.Together(workers, func(w int) {
		for i := range each {
			k := fmt.Sprintf("%d-%d", w, i)
			c.Put(k, i, i%2 == 0, t0)
			c.Get(k, t0)
			if n := c.Len(); n > max {
				t.Errorf("Len %d over %d", n, max)
				return
			}
		}
	})
	if n := c.Len(); n != max {
		t.Errorf("Len %d, want the bound %d", n, max)
	}
}

// With OneOrder, the least recently used entry goes whatever its kind,
// each keeps its kind, and OnEvict reports it.
func TestTimingOracleOneOrder(t *testing.T) {
	c, err := New[string, int](Options{TTL: 10 * time.Minute, NegativeTTL: 10 * time.Minute, MaxEntries: 2, OneOrder: true})
	if err != nil {
		t.Fatal(err)
	}
	var evicted []bool
	c.OnEvict = func(neg bool) { evicted = append(evicted, neg) }
	c.Put("known", 1, false, t0)
	c.Put("unknown", 0, true, t0)
	c.Put("flood1", 0, true, t0) // pushes out "known", the oldest
	if _, ok := c.Get("known", t0); ok {
		t.Error("the least recently used entry (positive) was kept; a negative one went instead")
	}
	e, ok := c.Get("unknown", t0)
	if !ok || !e.Negative {
		t.Fatalf("unknown: %+v %v, want a negative entry", e, ok)
	}
	c.Put("flood2", 0, true, t0) // pushes out "flood1": "unknown" was just used
	if _, ok := c.Get("unknown", t0); !ok {
		t.Error("the recently used negative entry was evicted")
	}
	if !slices.Equal(evicted, []bool{false, true}) {
		t.Errorf("OnEvict saw %v, want [false true]", evicted)
	}
	if snap := c.Snapshot(t0); len(snap) != 2 || !snap[0].Negative || !snap[1].Negative {
		t.Errorf("snapshot %+v: want two negative entries", snap)
	}
}
