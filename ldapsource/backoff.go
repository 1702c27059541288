package ldapsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Backoff bounds of service-account binds after a configuration error that
// is not a refusal of the credentials (certificate not verified, TLS
// required): such an error costs the account nothing, and a directory
// fixed on its side is found again within a minute. Refused credentials
// are never tried again (Refusals); a locked-out account is tried once per
// ldap.locked_retry_interval.
const (
	firstBackoff = 5 * time.Second
	maxBackoff   = time.Minute
)

// ErrBackoff marks a lookup refused without asking the directory, because
// the last bind as the service account failed on a configuration error and
// its backoff interval has not passed.
var ErrBackoff = errors.New("binds as the service account held back")

// bindGate keeps the service account from binding once per request while
// its credentials (or TLS settings) are refused. Until a bind has worked,
// and after each configuration error, dials go one at a time: concurrent
// callers share the outcome of the one in flight. Once a bind works, dials
// run in parallel again, as the pool needs; their binds still go one at a
// time (bind), each after checking that the credentials were not refused
// meanwhile, so that a password changed in the directory costs the
// account one failed logon, not one per connection being dialed.
//
// Sources with the same connection settings share one gate (Refusals), so
// a reload that keeps them keeps its state.
type bindGate struct {
	now         func() time.Time
	log         *slog.Logger
	backoffs    prometheus.Counter
	refusals    *Refusals
	digest      string            // of the credentials, for refusals
	classify    func(error) error // Source.classify: the key at fault
	lockedRetry time.Duration     // ldap.locked_retry_interval
	binding     chan struct{}     // one bind in flight

	mu      sync.Mutex
	worked  bool          // a bind has worked since the gate was made
	ok      bool          // a bind worked, and no configuration error since
	err     error         // the last configuration error, while !ok
	until   time.Time     // no bind before this, while err is backed off
	delay   time.Duration // the current backoff interval
	probing *probe        // the dial in flight while !ok, or nil
}

type probe struct {
	done chan struct{}
	err  error
}

// newBindGate returns a gate for binds with cfg's credentials, remembered
// in r.
func newBindGate(cfg *Config, r *Refusals, classify func(error) error, log *slog.Logger, backoffs prometheus.Counter) *bindGate {
	return &bindGate{
		now: time.Now, log: log, backoffs: backoffs, refusals: r, digest: r.digest(cfg), classify: classify,
		lockedRetry: cfg.LockedRetryInterval, binding: make(chan struct{}, 1),
	}
}

// dial runs try under the gate: directly once a bind has worked, else one
// at a time, and not at all while the credentials are known refused or
// during a backoff interval.
func (g *bindGate) dial(ctx context.Context, try func() (*conn, error)) (*conn, error) {
	for {
		if err := g.held(); err != nil {
			g.failed(err)
			return nil, err
		}
		g.mu.Lock()
		if g.ok {
			g.mu.Unlock()
			c, err := try()
			if ConfigurationError(err) != nil {
				g.failed(err)
			}
			return c, err
		}
		if g.err != nil && g.now().Before(g.until) {
			err, until := g.err, g.until
			g.mu.Unlock()
			return nil, fmt.Errorf("%w until %s after: %w", ErrBackoff, until.Format(time.TimeOnly), err)
		}
		if p := g.probing; p != nil {
			g.mu.Unlock()
			select {
			case <-p.done:
				if p.err != nil {
					return nil, p.err
				}
				continue // it worked: dial a connection of our own
			case <-ctx.Done():
				return nil, fmt.Errorf("waiting for a directory connection: %w", ctx.Err())
			}
		}
		p := &probe{done: make(chan struct{})}
		g.probing = p
		g.mu.Unlock()

		c, err := try()
		p.err = err
		switch {
		case err == nil:
			g.succeeded()
		case ConfigurationError(err) != nil:
			g.failed(err)
		}
		g.mu.Lock()
		g.probing = nil
		g.mu.Unlock()
		close(p.done)
		return c, err
	}
}

// held returns the error binds are held back with because the credentials
// were refused, or the account is locked out; nil if they may bind. The
// first hold a process sees is logged, once.
func (g *bindGate) held() error {
	err, first := g.refusals.held(g.digest, g.now())
	if err == nil {
		return nil
	}
	if first {
		if errors.Is(err, ErrLockedOut) {
			g.log.Error("not binding as the service account: the directory reported it locked out; mailbeacon tries it again once per ldap.locked_retry_interval",
				"key", err.Key, "reason", err.Reason, "fix", err.Fix, "err", err.Err, "state", g.refusals.File())
		} else {
			g.log.Error("not binding as the service account: the directory refused these credentials before, and mailbeacon does not bind with them again until the password (or the keytab's content), ldap.bind_dn or ldap.urls change",
				"key", err.Key, "reason", err.Reason, "fix", err.Fix, "err", err.Err, "state", g.refusals.File())
		}
	}
	return err
}

// errBindQueue marks a dial that ran out of time waiting for another
// service-account bind to end: that server did not fail to answer, so its
// breaker stays closed.
var errBindQueue = errors.New("waiting to bind as the service account")

// bind runs one bind as the service account (f), at most one at a time,
// and not at all with credentials known refused. A refusal is remembered
// before the next bind may start, and logged once with the key and the
// fix.
func (g *bindGate) bind(ctx context.Context, f func() error) error {
	select {
	case g.binding <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errBindQueue, ctx.Err())
	}
	defer func() { <-g.binding }()
	if err := g.held(); err != nil {
		return err
	}
	err := f()
	if err == nil {
		if ferr := g.refusals.forget(g.digest); ferr != nil {
			g.log.Error("could not update the record of refused service-account credentials", "state", g.refusals.File(), "err", ferr)
		}
		return nil
	}
	kind := kindOfRefusal(err)
	if kind == notRefused {
		return err
	}
	ce := ConfigurationError(g.classify(err))
	now := g.now()
	rec := refusal{Digest: g.digest, At: now, Key: ce.Key, Reason: ce.Reason, Fix: ce.Fix, Err: err.Error()}
	if kind == accountLocked {
		rec.Locked, rec.RetryAt = true, now.Add(g.lockedRetry)
		g.log.Error("the directory reports the service account locked out: lookups get stale or default answers; mailbeacon binds as it again once per ldap.locked_retry_interval, at "+rec.RetryAt.Format(time.DateTime),
			"key", ce.Key, "reason", ce.Reason, "fix", ce.Fix, "err", err, "state", g.refusals.File())
	} else {
		g.log.Error("the directory refused the service account's credentials: mailbeacon does not bind with them again until the password (or the keytab's content), ldap.bind_dn or ldap.urls change (then reload or restart)",
			"key", ce.Key, "reason", ce.Reason, "fix", ce.Fix, "err", err, "state", g.refusals.File())
	}
	if rerr := g.refusals.remember(rec); rerr != nil {
		g.log.Error("could not record the refused service-account credentials: they are remembered until the process exits", "state", g.refusals.File(), "err", rerr)
	}
	return err
}

// succeeded records a successful bind.
func (g *bindGate) succeeded() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		g.log.Info("the directory accepts the service account again", "after", g.err.Error())
	}
	g.worked, g.ok, g.err, g.delay = true, true, nil, 0
}

// failed records a configuration error. Refused credentials and a locked
// account are held back by Refusals; other errors start or lengthen the
// backoff, logged when the error is new or differs from the last one, not
// per bind.
func (g *bindGate) failed(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ce := ConfigurationError(err)
	if errors.Is(err, ErrRefusedBefore) || errors.Is(err, ErrLockedOut) {
		g.ok, g.err, g.until = false, err, time.Time{}
		return
	}
	if kindOfRefusal(err) != notRefused {
		// Logged and remembered by bind.
		g.ok, g.err, g.until = false, err, time.Time{}
		g.backoffs.Inc()
		return
	}
	if g.err != nil && g.now().Before(g.until) {
		return // parallel dials that failed together: one interval
	}
	if prev := ConfigurationError(g.err); prev == nil || prev.Reason != ce.Reason {
		// Where the process goes on running (a bind had worked), say
		// when the account binds again; at start, serve says it, or
		// exits.
		msg := "the directory refuses the service account's configuration"
		if g.worked {
			msg += ": lookups get stale or default answers, and the service account binds again at most once per backoff interval (up to " + maxBackoff.String() + ")"
		}
		g.log.Error(msg, "key", ce.Key, "reason", ce.Reason, "fix", ce.Fix, "err", ce.Err)
	}
	g.delay = min(max(2*g.delay, firstBackoff), maxBackoff)
	g.ok, g.err, g.until = false, err, g.now().Add(g.delay)
	g.backoffs.Inc()
}
