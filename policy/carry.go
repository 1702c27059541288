package policy

// Configuration reloads: a new Resolver starts with an empty cache. When
// the policy, the directory and the cache settings stay as they were, the
// new one takes over the old one's answers, except those of domains whose
// settings changed, so that a reload costs no burst of directory searches
// and never serves an answer made under the old settings of a domain.

// CarryCache copies the cached answers of from into r, leaving behind
// those of domains r does not serve and of domains for which keep (if not
// nil) returns false, and its linked entries (policy.linked). Each entry
// keeps its freshness and expiry, and carried accounts point at r's
// Domain. It returns how many answers were carried.
// Call it before r serves requests; from may keep serving meanwhile (its
// later answers stay in its own cache).
func (r *Resolver) CarryCache(from *Resolver, keep func(domain string) bool) int {
	n := 0
	now := r.now()
	for _, item := range from.cache.Snapshot(now) {
		name := item.Key.Domain
		d, ok := r.domains[name]
		if !ok || (keep != nil && !keep(name)) {
			continue
		}
		e := item.Entry
		if e.Value != nil {
			a := *e.Value.full
			a.Domain = d
			e.Value = r.newCachedAccount(&a)
		}
		r.cache.PutEntry(item.Key, e, now)
		n++
	}
	// Linked entries (a class of service) are read under the same policy
	// and directory: they come along whole.
	for _, item := range from.links.Snapshot(now) {
		r.links.PutEntry(item.Key, item.Entry, now)
	}
	return n
}

// ForgetDomain drops every cached answer for addresses of the domain name
// and returns how many there were.
func (r *Resolver) ForgetDomain(name string) int {
	return r.cache.DeleteFunc(func(key Address) bool { return key.Domain == name })
}
