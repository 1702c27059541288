package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/patrickmn/go-cache"
	"golang.org/x/sync/singleflight"

	"github.com/mailbeacon/mailbeacon/ldapsource"
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
	TTL         time.Duration `mapstructure:"ttl"`
	NegativeTTL time.Duration `mapstructure:"negative_ttl"`
	// StaleFor is how long past its TTL an entry may still be served while
	// the directory cannot be reached.
	StaleFor time.Duration `mapstructure:"stale_for"`
	// OnDirectoryError: "defaults" answers an address that is not cached
	// with the domain defaults while the directory fails; "fail" answers
	// with an error (HTTP 503).
	OnDirectoryError string `mapstructure:"on_directory_error"`
}

// DefaultCacheConfig holds the defaults documented in config.example.yaml.
func DefaultCacheConfig() CacheConfig {
	return CacheConfig{TTL: 10 * time.Minute, NegativeTTL: time.Minute, StaleFor: time.Hour, OnDirectoryError: "defaults"}
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
	}
	return nil
}

// Resolver answers "what does this address get?", from the cache or the
// directory. Concurrent misses for one address share one directory search.
type Resolver struct {
	dir     Directory
	pol     *Policy
	domains map[string]*Domain
	dsrc    *DomainSource // nil: the configured domains only
	cfg     CacheConfig
	cache   *cache.Cache
	flight  singleflight.Group
	log     *slog.Logger
	now     func() time.Time
	binds   bindMemory // authenticate.go
	sleep   func(context.Context, time.Duration)
}

// cached is a cache item. acct is nil for an address the directory does not
// know or that is disabled: it gets the domain defaults, built per request
// because they carry the typed address.
type cached struct {
	acct       *Account
	freshUntil time.Time
}

// NewResolver wires a policy, the domains and a directory together.
func NewResolver(dir Directory, pol *Policy, domains map[string]*Domain, cfg CacheConfig, log *slog.Logger) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Resolver{
		dir: dir, pol: pol, domains: domains, cfg: cfg, log: log, now: time.Now, sleep: sleepCtx,
		cache: cache.New(cache.NoExpiration, time.Minute),
	}
	if err := r.checkDirectory(); err != nil {
		return nil, err
	}
	return r, nil
}

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

// Resolve returns the account for addr. An unknown or disabled address gets
// the domain defaults (Known false) unless the policy rejects them.
func (r *Resolver) Resolve(ctx context.Context, addr Address) (*Account, error) {
	d, err := r.Domain(ctx, addr.Domain)
	if err != nil {
		return nil, err
	}
	key := addr.String()
	var stale *cached
	if v, ok := r.cache.Get(key); ok {
		c := v.(*cached)
		// An account decided with another version of a directory domain
		// is decided anew.
		if r.now().Before(c.freshUntil) && (c.acct == nil || c.acct.Domain == d) {
			if c.acct != nil {
				cacheHit.Inc()
			} else {
				cacheNegative.Inc()
			}
			return r.answer(d, addr, c.acct)
		}
		stale = c
	}
	cacheMiss.Inc()
	ch := r.flight.DoChan(key, func() (any, error) {
		// Detached from the first caller's cancellation: the other callers
		// waiting on this search must not fail because one gave up. The
		// directory bounds the search with its own request timeout.
		return r.load(context.WithoutCancel(ctx), d, addr)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err == nil {
			return r.answer(d, addr, res.Val.(*cached).acct)
		}
		if stale != nil && r.now().Before(stale.freshUntil.Add(r.cfg.StaleFor)) {
			cacheStale.Inc()
			r.log.Warn("directory failed, serving stale cache entry", "domain", addr.Domain, "err", res.Err)
			return r.answer(d, addr, stale.acct)
		}
		if r.cfg.OnDirectoryError == "fail" {
			directoryToError.Inc()
			return nil, fmt.Errorf("%w: %v", ErrDirectoryUnavailable, res.Err)
		}
		directoryToDefaults.Inc()
		r.log.Warn("directory failed, answering with domain defaults", "domain", addr.Domain, "err", res.Err)
		return r.answer(d, addr, nil)
	}
}

// load searches the directory and caches the decision. Errors are
// directory failures only; "not found" and ambiguity are answers.
func (r *Resolver) load(ctx context.Context, d *Domain, addr Address) (*cached, error) {
	e, groups, err := r.fetch(ctx, addr)
	switch {
	case errors.Is(err, ldapsource.ErrAmbiguous):
		r.log.Warn("address matches more than one directory entry; treating it as unknown", "domain", addr.Domain)
		e = nil
	case errors.Is(err, ldapsource.ErrNotFound):
		e = nil
	case err != nil:
		return nil, err
	}
	acct, _ := r.pol.decide(d, addr, e, groups, r.now(), false)
	c := &cached{freshUntil: r.now().Add(r.cfg.NegativeTTL)}
	if acct.Known {
		c.acct, c.freshUntil = acct, r.now().Add(r.cfg.TTL)
	}
	r.cache.Set(addr.String(), c, c.freshUntil.Sub(r.now())+r.cfg.StaleFor)
	return c, nil
}

func (r *Resolver) answer(d *Domain, addr Address, acct *Account) (*Account, error) {
	if acct != nil {
		return acct, nil
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
	e, groups, err := r.fetch(ctx, addr)
	switch {
	case errors.Is(err, ldapsource.ErrAmbiguous):
		acct, ex := r.pol.Decide(d, addr, nil)
		ex.Reason = "more than one directory entry matches: treated as unknown; " + ex.Reason
		return acct, ex, nil
	case errors.Is(err, ldapsource.ErrNotFound):
		e = nil
	case err != nil:
		return nil, nil, err
	}
	acct, ex := r.pol.decide(d, addr, e, groups, r.now(), true)
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
