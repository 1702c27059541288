package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy/boundcache"
)

// Directory finds the entry for an address. ldapsource.Source implements it.
type Directory interface {
	Lookup(ctx context.Context, q ldapsource.Query) (*ldapsource.Entry, error)
}

var (
	// ErrUnknownDomain: the address's domain is not configured.
	ErrUnknownDomain = errors.New("domain not configured")
	// ErrRejected: the address is unknown or disabled and policy.unknown is "reject".
	ErrRejected = errors.New("no such account")
	// ErrDirectoryUnavailable: the directory failed, nothing usable was
	// cached, and cache.on_directory_error is "fail".
	ErrDirectoryUnavailable = errors.New("directory unavailable")
)

// CacheConfig is the cache section of the configuration.
type CacheConfig struct {
	TTL time.Duration `mapstructure:"ttl"`
	// NegativeTTL is how long an unknown or disabled address is cached;
	// under policy.privacy strict, TTL instead.
	NegativeTTL time.Duration `mapstructure:"negative_ttl"`
	// StaleFor is how long past its TTL an entry may still be served while
	// the directory cannot be reached.
	StaleFor time.Duration `mapstructure:"stale_for"`
	// OnDirectoryError: "defaults" answers an address that is not cached
	// with the domain defaults while the directory fails; "fail" answers
	// with an error (HTTP 503).
	OnDirectoryError string `mapstructure:"on_directory_error"`
	// MaxEntries bounds the number of cached addresses (0: the default);
	// when full, unknown addresses go first, then the least recently used
	// accounts (under policy.privacy strict, the least recently used
	// address of either kind).
	MaxEntries int `mapstructure:"max_entries"`
}

// DefaultCacheConfig holds the defaults documented in config.example.yaml.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{TTL: 10 * time.Minute, NegativeTTL: time.Minute, StaleFor: time.Hour, OnDirectoryError: "defaults",
		MaxEntries: boundcache.DefaultMaxEntries}
}

// Validate checks the cache settings; errors name the key.
func (c CacheConfig) Validate() error {
	switch {
	case c.TTL <= 0:
		return fmt.Errorf("cache.ttl: must be positive, e.g. 10m")
	case c.NegativeTTL <= 0:
		return fmt.Errorf("cache.negative_ttl: must be positive, e.g. 1m")
	case c.StaleFor < 0:
		return fmt.Errorf("cache.stale_for: must not be negative (0 disables serving stale entries)")
	case c.OnDirectoryError != "defaults" && c.OnDirectoryError != "fail":
		return fmt.Errorf("cache.on_directory_error: %q is not one of \"defaults\", \"fail\"", c.OnDirectoryError)
	case c.MaxEntries < 0:
		return fmt.Errorf("cache.max_entries: %d: must be positive, e.g. %d (0: that default)", c.MaxEntries, boundcache.DefaultMaxEntries)
	}
	return nil
}

// Resolver answers "what does this address get?", from the cache or the
// directory. Concurrent misses for one address share one directory search.
type Resolver struct {
	dir        Directory
	pol        *Policy
	domains    map[string]*Domain
	dsrc       *DomainSource // nil: the configured domains only
	cfg        CacheConfig
	cache      *boundcache.Cache[Address, *cachedAccount] // by the address, not its string: a hit allocates nothing; nil value: unknown or disabled
	flight     singleflight.Group
	links      *linkCache // policy.linked entries, by how they were found
	linkFlight singleflight.Group
	failing    atomic.Bool // the directory's last answer was a failure
	log        *slog.Logger
	metrics    *Metrics
	now        func() time.Time
	binds      *bindMemory // authenticate.go; shared across reloads
	sleep      func(context.Context, time.Duration)
}

// cachedAccount is what the cache keeps for a known address: the account,
// and the account as unauthenticated answers show it (policy.privacy),
// made once so that each stays one pointer for as long as the entry lives:
// protocols keeps rendered answers by pointer.
type cachedAccount struct{ full, public *Account }

func (r *Resolver) newCachedAccount(acct *Account) *cachedAccount {
	return &cachedAccount{full: acct, public: r.pol.public(acct)}
}

// NewResolver wires a policy, the domains and a directory together; m may
// be nil.
func NewResolver(dir Directory, pol *Policy, domains map[string]*Domain, cfg CacheConfig, log *slog.Logger, m *Metrics) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	c, err := boundcache.New[Address, *cachedAccount](cacheOptions(cfg, pol.Strict()))
	if err != nil {
		return nil, fmt.Errorf("cache.%w", err)
	}
	c.OnEvict = func(negative bool) {
		if negative {
			m.cacheEvictedNegative.Inc()
		} else {
			m.cacheEvictedAccount.Inc()
		}
	}
	lc, err := boundcache.New[string, *ldapsource.Entry](boundcache.Options{
		TTL: cfg.TTL, NegativeTTL: cfg.NegativeTTL, StaleFor: cfg.StaleFor, MaxEntries: cfg.MaxEntries})
	if err != nil {
		return nil, fmt.Errorf("cache.%w", err)
	}
	r := &Resolver{
		dir: dir, pol: pol, domains: domains, cfg: cfg, log: log, metrics: m, now: time.Now, sleep: sleepCtx, cache: c,
		binds: newBindMemory(log, m), links: lc,
	}
	if err := r.checkDirectory(); err != nil {
		return nil, err
	}
	return r, nil
}

// cacheOptions are the account cache's settings. Under strict privacy an
// unknown address is kept as long as an account, and evicted in the same
// order of use: otherwise asking an address twice, negative_ttl apart or
// around a flood of unknown addresses, would tell by the second answer's
// time (a directory search or none) whether it exists.
func cacheOptions(cfg CacheConfig, strict bool) boundcache.Options {
	o := boundcache.Options{TTL: cfg.TTL, NegativeTTL: cfg.NegativeTTL, StaleFor: cfg.StaleFor, MaxEntries: cfg.MaxEntries}
	if strict {
		o.NegativeTTL, o.OneOrder = cfg.TTL, true
	}
	return o
}

// CachedEntries returns how many addresses the cache holds (at most
// cache.max_entries).
func (r *Resolver) CachedEntries() int { return r.cache.Len() }

// UseDomainSource makes r serve the directory's domains besides the
// configured ones, which take precedence. Call it before r serves.
func (r *Resolver) UseDomainSource(ds *DomainSource) { r.dsrc = ds }

// DomainSource is the directory's domain source, nil when none is used.
func (r *Resolver) DomainSource() *DomainSource { return r.dsrc }

// Domain returns the served domain of the normalised name: a configured
// one, else the directory's. The error wraps ErrUnknownDomain for a domain
// not served, ErrDirectoryUnavailable when that cannot be known now.
func (r *Resolver) Domain(ctx context.Context, name string) (*Domain, error) {
	if d, ok := r.domains[name]; ok {
		return d, nil
	}
	if r.dsrc != nil {
		return r.dsrc.Domain(ctx, name)
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownDomain, name)
}

// Resolve returns the account for addr as unauthenticated answers may show
// it (policy.privacy). An unknown or disabled address gets the domain
// defaults (Known false) unless the policy rejects them.
func (r *Resolver) Resolve(ctx context.Context, addr Address) (*Account, error) {
	return r.resolve(ctx, addr, false)
}

// ResolveCached returns what Resolve would for addr when that is a known
// address's fresh cached answer under a served domain whose own answer
// is at hand (configured, or fresh in the domain source's cache), and ok
// false otherwise (unknown, not cached, stale): the caller then calls
// Resolve. It never asks the directory.
func (r *Resolver) ResolveCached(addr Address) (acct *Account, ok bool) {
	d, ok := r.domains[addr.Domain]
	if !ok && r.dsrc != nil {
		d, ok = r.dsrc.cached(addr.Domain)
	}
	if !ok {
		return nil, false
	}
	now := r.now()
	e, ok := r.cache.Get(addr, now)
	if !ok || e.Negative || !e.Fresh(now) || e.Value.full.Domain != d {
		return nil, false
	}
	r.metrics.cacheHit.Inc()
	return e.Value.public, true
}

// resolve is Resolve; full asks for the whole account (Authenticate).
func (r *Resolver) resolve(ctx context.Context, addr Address, full bool) (*Account, error) {
	d, err := r.Domain(ctx, addr.Domain)
	if err != nil {
		return nil, err
	}
	now := r.now()
	var stale *boundcache.Entry[*cachedAccount]
	if e, ok := r.cache.Get(addr, now); ok {
		// An account decided with another version of a directory domain
		// is decided anew.
		if e.Fresh(now) && (e.Negative || e.Value.full.Domain == d) {
			if !e.Negative {
				r.metrics.cacheHit.Inc()
			} else {
				r.metrics.cacheNegative.Inc()
			}
			return r.answer(d, addr, e.Value, full)
		}
		stale = &e
	}
	r.metrics.cacheMiss.Inc()
	ch := r.flight.DoChan(addr.String(), func() (any, error) {
		// singleflight forgets a key once its search returns: a search
		// that ended between this caller's cache miss and now has cached
		// its answer, which is not asked for again.
		if e, ok := r.cache.Get(addr, r.now()); ok && e.Fresh(r.now()) && (e.Negative || e.Value.full.Domain == d) {
			return e.Value, nil
		}
		// Detached from the first caller's cancellation: the other callers
		// waiting on this search must not fail because one gave up. The
		// directory bounds the search with its own request timeout.
		return r.load(context.WithoutCancel(ctx), d, addr)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-staleGrace(stale != nil):
		// The search goes on and caches what it finds.
		r.metrics.cacheStale.Inc()
		return r.answer(d, addr, stale.Value, full)
	case res := <-ch:
		r.noteDirectory(addr.Domain, res.Err)
		if res.Err == nil {
			return r.answer(d, addr, res.Val.(*cachedAccount), full)
		}
		if stale != nil {
			r.metrics.cacheStale.Inc()
			return r.answer(d, addr, stale.Value, full)
		}
		if r.cfg.OnDirectoryError == "fail" {
			r.metrics.directoryToError.Inc()
			return nil, fmt.Errorf("%w: %v", ErrDirectoryUnavailable, res.Err)
		}
		r.metrics.directoryToDefaults.Inc()
		// Not answer(nil): under policy.unknown "reject" that would tell
		// a real user, during an outage, that the address does not exist.
		return d.DefaultAccount(addr, addr.String()), nil
	}
}

// staleGraceTime is how long a lookup that holds a stale answer waits for
// the directory before it serves that answer. A directory that answers
// keeps answers fresh as before; one that has just hung costs a cached
// user this, not ldap.request_timeout, until the directory's breaker
// (ldapsource) opens and lookups fail at once.
const staleGraceTime = 20 * time.Millisecond

// staleGrace returns a channel that delivers after staleGraceTime when a
// stale answer can be served, and nil (never) otherwise.
func staleGrace(haveStale bool) <-chan time.Time {
	if !haveStale {
		return nil
	}
	return time.After(staleGraceTime)
}

// noteDirectory logs when the directory starts failing and when it
// answers again: once per change, not once per request.
func (r *Resolver) noteDirectory(domain string, err error) {
	if err == nil {
		if r.failing.CompareAndSwap(true, false) {
			r.log.Info("the directory answers again")
		}
		return
	}
	kind := ldapsource.KindOf(err)
	r.metrics.directoryFailures.WithLabelValues(kind.String()).Inc()
	if r.failing.CompareAndSwap(false, true) {
		answer := "the domain's default_services"
		if r.cfg.OnDirectoryError == "fail" {
			answer = "an error"
		}
		r.log.Warn("directory lookups fail: addresses cached in the last cache.stale_for get their cached answer, others "+answer+
			"; logged again when the directory answers", "kind", kind.String(), "domain", domain, "err", err)
	}
}

// load searches the directory and caches the decision: the account, or
// nil for an address unknown or disabled. Errors are directory failures
// only; "not found" and ambiguity are answers.
func (r *Resolver) load(ctx context.Context, d *Domain, addr Address) (*cachedAccount, error) {
	e, err := r.fetch(ctx, d, addr, false)
	switch {
	case errors.Is(err, ldapsource.ErrAmbiguous) && !linkedFailure(err):
		r.log.Warn("address matches more than one directory entry; treating it as unknown", "domain", addr.Domain)
		e = nil
	case errors.Is(err, ldapsource.ErrNotFound):
		e = nil
	case err != nil:
		return nil, err
	}
	acct, _ := r.pol.decide(d, addr, e, false)
	var c *cachedAccount
	if acct.Known {
		c = r.newCachedAccount(acct)
	}
	r.cache.Put(addr, c, c == nil, r.now())
	return c, nil
}

func (r *Resolver) answer(d *Domain, addr Address, c *cachedAccount, full bool) (*Account, error) {
	switch {
	case c != nil && full:
		return c.full, nil
	case c != nil:
		return c.public, nil
	}
	if r.pol.RejectUnknown() {
		return nil, ErrRejected
	}
	return d.DefaultAccount(addr, addr.String()), nil
}

// Explain looks addr up in the directory, bypassing the cache, and says
// how each service was decided.
func (r *Resolver) Explain(ctx context.Context, addr Address) (*Account, *Explanation, error) {
	d, ok := r.domains[addr.Domain]
	if !ok && r.dsrc != nil {
		var err error
		if d, err = r.dsrc.Explain(ctx, addr.Domain); err != nil {
			return nil, nil, err
		}
		ok = true
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", ErrUnknownDomain, addr.Domain)
	}
	e, err := r.fetch(ctx, d, addr, true)
	var acct *Account
	var ex *Explanation
	switch {
	case errors.Is(err, ldapsource.ErrAmbiguous) && !linkedFailure(err):
		acct, ex = r.pol.Decide(d, addr, nil)
		ex.Reason = "more than one directory entry matches: treated as unknown; " + ex.Reason
	case errors.Is(err, ldapsource.ErrNotFound):
		acct, ex = r.pol.decide(d, addr, nil, true)
	case err != nil:
		return nil, nil, err
	default:
		acct, ex = r.pol.decide(d, addr, e, true)
	}
	if d.AliasOf != "" {
		q := queryOf(d, addr)
		ex.AliasOf = d.AliasOf
		ex.Reason = fmt.Sprintf("%s is an alias of %s: searched as %s or %s; %s", addr.Domain, d.AliasOf, q.Email, q.Or.Email, ex.Reason)
	}
	return acct, ex, nil
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
