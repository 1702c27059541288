package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy/boundcache"
)

// DomainFinder finds the directory entry of one domain.
// ldapsource.DomainSearch implements it.
type DomainFinder interface {
	Lookup(ctx context.Context, domain string) (*ldapsource.Entry, error)
}

// DomainSource answers "is this domain served, and with what?" from the
// directory, through a DomainTemplate, cached like accounts: positive and
// negative TTLs, stale answers while the directory fails, bounded in
// entries, concurrent lookups of one domain collapsed into one search. An
// unknown domain costs at most one search per negative TTL.
type DomainSource struct {
	find   DomainFinder
	tmpl   *DomainTemplate
	cache  *boundcache.Cache[string, *Domain] // nil Value: not served
	flight singleflight.Group
	log    *slog.Logger
	now    func() time.Time
}

// NewDomainSource caches the domains find and tmpl make, with cfg's TTLs.
func NewDomainSource(find DomainFinder, tmpl *DomainTemplate, cfg CacheConfig, log *slog.Logger) (*DomainSource, error) {
	c, err := boundcache.New[string, *Domain](boundcache.Options{TTL: cfg.TTL, NegativeTTL: cfg.NegativeTTL, StaleFor: cfg.StaleFor})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &DomainSource{find: find, tmpl: tmpl, cache: c, log: log, now: time.Now}, nil
}

// Template is the template the source builds domains with.
func (s *DomainSource) Template() *DomainTemplate { return s.tmpl }

// Domain returns the served domain of the normalised name, an error
// wrapping ErrUnknownDomain when the directory does not serve it, or one
// wrapping ErrDirectoryUnavailable when that cannot be known now.
func (s *DomainSource) Domain(ctx context.Context, name string) (*Domain, error) {
	now := s.now()
	e, cached := s.cache.Get(name, now)
	if cached && e.Fresh(now) {
		return answerDomain(name, e.Value)
	}
	ch := s.flight.DoChan(name, func() (any, error) {
		// A search that ended since this caller's cache miss has cached
		// its answer: singleflight forgets a key once its search returns.
		if e, ok := s.cache.Get(name, s.now()); ok && e.Fresh(s.now()) {
			return e.Value, nil
		}
		// Detached from the first caller's cancellation, as for accounts:
		// the others waiting must not fail because it gave up.
		return s.load(context.WithoutCancel(ctx), name)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-staleGrace(cached):
		// As for accounts: a hung directory does not hold up a domain
		// it served; the search goes on and caches what it finds.
		return answerDomain(name, e.Value)
	case res := <-ch:
		if res.Err == nil {
			return answerDomain(name, res.Val.(*Domain))
		}
		if cached {
			s.log.Warn("directory failed, serving the stale domain", "domain", name, "err", res.Err)
			return answerDomain(name, e.Value)
		}
		return nil, fmt.Errorf("%w: domain %s: %v", ErrDirectoryUnavailable, name, res.Err)
	}
}

// cached returns the served domain name when its fresh answer is
// cached, without the directory.
func (s *DomainSource) cached(name string) (*Domain, bool) {
	now := s.now()
	e, ok := s.cache.Get(name, now)
	if !ok || !e.Fresh(now) || e.Value == nil {
		return nil, false
	}
	return e.Value, true
}

func answerDomain(name string, d *Domain) (*Domain, error) {
	if d == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownDomain, name)
	}
	return d, nil
}

// load searches the directory and caches what it says, nil for a domain
// not served. Errors are directory failures only.
func (s *DomainSource) load(ctx context.Context, name string) (*Domain, error) {
	d, err := s.build(ctx, name, false)
	switch {
	case errors.Is(err, ErrUnknownDomain):
		s.log.Debug("domain not served", "domain", name, "why", err)
		s.cache.Put(name, nil, true, s.now())
		return nil, nil
	case err != nil:
		return nil, err
	}
	// An unchanged domain keeps its Domain, so the accounts cached with
	// it stay valid; a changed one makes them decided anew.
	if old, ok := s.cache.Get(name, s.now()); ok && old.Value != nil && sameDomain(old.Value, d) {
		d = old.Value
	}
	s.cache.Put(name, d, false, s.now())
	return d, nil
}

// build asks the directory, bypassing the cache; the domain's Origin is
// made only with explain.
func (s *DomainSource) build(ctx context.Context, name string, explain bool) (*Domain, error) {
	e, err := s.find.Lookup(ctx, name)
	var amb *ldapsource.AmbiguousError
	same := 0
	if errors.As(err, &amb) {
		if one, ok := s.tmpl.oneDomain(name, amb); ok {
			e, err, same = one, nil, len(amb.Entries)
		}
	}
	switch {
	case errors.Is(err, ldapsource.ErrAmbiguous):
		s.log.Warn("several directory entries match the domain; treating it as not served: make domain_source.filter match one", "domain", name)
		return nil, fmt.Errorf("%w: %s: %w", ErrUnknownDomain, name, err)
	case errors.Is(err, ldapsource.ErrNotFound):
		return nil, fmt.Errorf("%w: %s: no directory entry", ErrUnknownDomain, name)
	case err != nil:
		return nil, err
	}
	d, err := s.tmpl.build(name, e, explain)
	if err == nil && explain && same > 1 {
		d.Origin.Reason += fmt.Sprintf("; %d entries name this domain, one domain: this one is first by DN", same)
	}
	return d, err
}

// Explain looks name up in the directory, bypassing the cache: the domain,
// or the error saying why it is not served.
func (s *DomainSource) Explain(ctx context.Context, name string) (*Domain, error) {
	return s.build(ctx, name, true)
}

// sameDomain reports whether a and b answer alike (their origins aside).
func sameDomain(a, b *Domain) bool {
	x, y := *a, *b
	x.Origin, y.Origin = nil, nil
	return reflect.DeepEqual(x, y)
}

// CarryFrom takes over old's cached domains when both use the same
// template, and reports how many; a changed template starts empty.
func (s *DomainSource) CarryFrom(old *DomainSource) int {
	if old == nil || old.tmpl.Fingerprint() != s.tmpl.Fingerprint() {
		return 0
	}
	now := s.now()
	n := 0
	for _, k := range old.cache.Snapshot(now) {
		s.cache.PutEntry(k.Key, k.Entry, now)
		n++
	}
	return n
}

// Len is the number of cached domains, served or not.
func (s *DomainSource) Len() int { return s.cache.Len() }
