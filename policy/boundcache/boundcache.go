// Package boundcache is a cache of directory answers bounded in entries:
// positive answers live for a TTL, negative ones ("no such thing") for a
// shorter one, and either may be served stale for a while past it when
// the directory fails. When full, negative entries go first (an attacker
// makes those by the million, and they are cheap to ask again), then the
// least recently used positive ones; or, with Options.OneOrder, the least
// recently used entry of either kind, so that which entries survive a
// flood does not tell the kinds apart.
//
// The resolver's account cache and the directory domain source's domain
// cache both use it, so both stay bounded whatever arrives.
package boundcache

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// DefaultMaxEntries bounds a cache whose options give no bound. At about
// 200 bytes per negative entry (bench/unknownflood) and 1 KB per account
// (bench/cachemem), it keeps the resolver's cache near 100 MB at worst.
const DefaultMaxEntries = 100_000

// Options are the cache settings.
type Options struct {
	TTL         time.Duration // how long a positive entry is fresh
	NegativeTTL time.Duration // how long a negative entry is fresh
	// StaleFor is how long past its freshness an entry is kept, to be
	// served while the directory fails. 0: dropped once it is not fresh.
	StaleFor time.Duration
	// MaxEntries bounds the number of entries; 0 means DefaultMaxEntries.
	MaxEntries int
	// OneOrder evicts the least recently used entry whatever its kind,
	// instead of negative entries first.
	OneOrder bool
}

// Entry is a cached value with its freshness.
type Entry[V any] struct {
	Value      V
	Negative   bool
	FreshUntil time.Time
	// ExpiresAt is FreshUntil plus StaleFor: the entry is gone after it.
	ExpiresAt time.Time
}

// Fresh reports whether the entry may be served without asking again.
func (e Entry[V]) Fresh(now time.Time) bool { return now.Before(e.FreshUntil) }

// item is what the lists hold: times as Unix nanoseconds, 16 bytes
// instead of 48 per entry.
type item[V any] struct {
	v       V
	fresh   int64
	expires int64
	neg     bool // a negative entry kept in the positive list (OneOrder)
}

func (it item[V]) entry(neg bool) Entry[V] {
	return Entry[V]{Value: it.v, Negative: neg || it.neg, FreshUntil: time.Unix(0, it.fresh), ExpiresAt: time.Unix(0, it.expires)}
}

// Cache is safe for concurrent use.
type Cache[K comparable, V any] struct {
	opts Options
	// OnEvict, if set before use, is called (under the cache's lock; keep
	// it short, e.g. a metric) for each entry pushed out by the bound.
	OnEvict func(negative bool)

	mu  sync.Mutex
	pos *simplelru.LRU[K, item[V]]
	neg *simplelru.LRU[K, item[V]]
}

// New validates o and returns an empty cache.
func New[K comparable, V any](o Options) (*Cache[K, V], error) {
	if o.MaxEntries == 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	switch {
	case o.MaxEntries < 1:
		return nil, fmt.Errorf("max_entries: %d: must be positive", o.MaxEntries)
	case o.TTL <= 0 || o.NegativeTTL <= 0:
		return nil, fmt.Errorf("ttl and negative_ttl must be positive")
	case o.StaleFor < 0:
		return nil, fmt.Errorf("stale_for must not be negative")
	}
	// Each list may in principle hold everything, and one more: trim
	// keeps the sum to MaxEntries and does every eviction itself.
	pos, err := simplelru.NewLRU[K, item[V]](o.MaxEntries+1, nil)
	if err != nil {
		return nil, err
	}
	neg, err := simplelru.NewLRU[K, item[V]](o.MaxEntries+1, nil)
	if err != nil {
		return nil, err
	}
	return &Cache[K, V]{opts: o, pos: pos, neg: neg}, nil
}

// Options returns the settings the cache was made with, defaults filled in.
func (c *Cache[K, V]) Options() Options { return c.opts }

// Get returns the entry for key, fresh or stale, and marks it recently
// used. An entry past ExpiresAt is dropped and not returned.
func (c *Cache[K, V]) Get(key K, now time.Time) (Entry[V], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range []*simplelru.LRU[K, item[V]]{c.pos, c.neg} {
		it, ok := l.Get(key)
		if !ok {
			continue
		}
		if now.UnixNano() >= it.expires {
			l.Remove(key)
			return Entry[V]{}, false
		}
		return it.entry(l == c.neg), true
	}
	return Entry[V]{}, false
}

// Put stores v under key, fresh for the TTL (negative: NegativeTTL) from
// now, and returns the stored entry.
func (c *Cache[K, V]) Put(key K, v V, negative bool, now time.Time) Entry[V] {
	ttl := c.opts.TTL
	if negative {
		ttl = c.opts.NegativeTTL
	}
	fresh := now.Add(ttl)
	e := Entry[V]{Value: v, Negative: negative, FreshUntil: fresh, ExpiresAt: fresh.Add(c.opts.StaleFor)}
	c.PutEntry(key, e, now)
	return e
}

// PutEntry stores e as it is (carrying entries from another cache keeps
// their times). An entry already expired at now is not stored.
func (c *Cache[K, V]) PutEntry(key K, e Entry[V], now time.Time) {
	if !now.Before(e.ExpiresAt) {
		return
	}
	it := item[V]{v: e.Value, fresh: e.FreshUntil.UnixNano(), expires: e.ExpiresAt.UnixNano()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.opts.OneOrder {
		// One list, one order of use: the flag says the kind.
		it.neg = e.Negative
		c.pos.Add(key, it)
	} else if e.Negative {
		c.pos.Remove(key)
		c.neg.Add(key, it)
	} else {
		c.neg.Remove(key)
		c.pos.Add(key, it)
	}
	c.trim(now)
}

// trim drops expired entries at the cold end of each list (cheap, and it
// gives memory back after a burst), then evicts to the bound: negative
// entries first, oldest first, then the least recently used positive ones.
// c.mu is held.
func (c *Cache[K, V]) trim(now time.Time) {
	n := now.UnixNano()
	for _, l := range []*simplelru.LRU[K, item[V]]{c.neg, c.pos} {
		// A few per call: a Put never pays for a whole sweep.
		for range 4 {
			_, it, ok := l.GetOldest()
			if !ok || n < it.expires {
				break
			}
			l.RemoveOldest()
		}
	}
	for c.pos.Len()+c.neg.Len() > c.opts.MaxEntries {
		neg := c.neg.Len() > 0
		if neg {
			c.neg.RemoveOldest()
		} else {
			_, it, _ := c.pos.RemoveOldest()
			neg = it.neg
		}
		if c.OnEvict != nil {
			c.OnEvict(neg)
		}
	}
}

// Delete drops key.
func (c *Cache[K, V]) Delete(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pos.Remove(key)
	c.neg.Remove(key)
}

// DeleteFunc drops every entry whose key f accepts and returns how many.
func (c *Cache[K, V]) DeleteFunc(f func(K) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range []*simplelru.LRU[K, item[V]]{c.pos, c.neg} {
		for _, k := range l.Keys() {
			if f(k) {
				l.Remove(k)
				n++
			}
		}
	}
	return n
}

// Len returns the number of entries, expired ones not yet dropped included.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos.Len() + c.neg.Len()
}

// Keyed is an entry with its key.
type Keyed[K comparable, V any] struct {
	Key K
	Entry[V]
}

// Snapshot returns the unexpired entries, negative ones first (with
// OneOrder, all in one), each list least recently used first: PutEntry in
// this order into another cache keeps the eviction order.
func (c *Cache[K, V]) Snapshot(now time.Time) []Keyed[K, V] {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Keyed[K, V], 0, c.pos.Len()+c.neg.Len())
	n := now.UnixNano()
	for _, l := range []*simplelru.LRU[K, item[V]]{c.neg, c.pos} {
		for _, k := range l.Keys() {
			it, _ := l.Peek(k)
			if n < it.expires {
				out = append(out, Keyed[K, V]{Key: k, Entry: it.entry(l == c.neg)})
			}
		}
	}
	return out
}
