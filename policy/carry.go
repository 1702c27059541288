package policy

import (
	"strings"
	"time"

	"github.com/patrickmn/go-cache"
)

// Configuration reloads: a new Resolver starts with an empty cache. When
// the policy, the directory and the cache settings stay as they were, the
// new one takes over the old one's answers, except those of domains whose
// settings changed, so that a reload costs no burst of directory searches
// and never serves an answer made under the old settings of a domain.

// CarryCache copies the cached answers of from into r, leaving behind
// those of domains r does not serve and of domains for which keep (if not
// nil) returns false. Each entry keeps its freshness and expiry, and
// carried accounts point at r's Domain. It returns how many were carried.
// Call it before r serves requests; from may keep serving meanwhile (its
// later answers stay in its own cache).
func (r *Resolver) CarryCache(from *Resolver, keep func(domain string) bool) int {
	n := 0
	for key, item := range from.cache.Items() {
		c, ok := item.Object.(*cached)
		if !ok {
			continue
		}
		name := key[strings.LastIndexByte(key, '@')+1:]
		d, ok := r.domains[name]
		if !ok || (keep != nil && !keep(name)) {
			continue
		}
		nc := &cached{freshUntil: c.freshUntil}
		if c.acct != nil {
			a := *c.acct
			a.Domain = d
			nc.acct = &a
		}
		ttl := cache.NoExpiration
		if item.Expiration > 0 {
			if ttl = time.Until(time.Unix(0, item.Expiration)); ttl <= 0 {
				continue
			}
		}
		r.cache.Set(key, nc, ttl)
		n++
	}
	return n
}

// ForgetDomain drops every cached answer for addresses of the domain name
// and returns how many there were.
func (r *Resolver) ForgetDomain(name string) int {
	suffix := "@" + name
	n := 0
	for key := range r.cache.Items() {
		if strings.HasSuffix(key, suffix) {
			r.cache.Delete(key)
			n++
		}
	}
	return n
}
