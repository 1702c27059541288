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

// Backoff bounds of service-account binds after a configuration error. A
// directory that refuses the password sees one bind per interval, the
// interval doubling up to the cap: four binds in the first minute, then
// one a minute. The first interval is long enough that a service started
// twice with a wrong password (say serve, then serve --start-degraded)
// and flooded at once costs an account with a lockout threshold of 3 two
// failed logons, not three.
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
// run in parallel again, as the pool needs.
type bindGate struct {
	now      func() time.Time
	log      *slog.Logger
	backoffs prometheus.Counter

	mu      sync.Mutex
	ok      bool          // a bind worked, and no configuration error since
	err     error         // the last configuration error, while !ok
	until   time.Time     // no bind before this, while err != nil
	delay   time.Duration // the current backoff interval
	probing *probe        // the dial in flight while !ok, or nil
}

type probe struct {
	done chan struct{}
	err  error
}

// dial runs try under the gate: directly once a bind has worked, else one
// at a time, and not at all during a backoff interval.
func (g *bindGate) dial(ctx context.Context, try func() (*conn, error)) (*conn, error) {
	for {
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
			g.worked()
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

// worked records a successful bind.
func (g *bindGate) worked() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		g.log.Info("the directory accepts the service account again", "after", g.err.Error())
	}
	g.ok, g.err, g.delay = true, nil, 0
}

// failed records a configuration error and starts or lengthens the backoff.
// It logs when the error is new or differs from the last one, not per bind.
func (g *bindGate) failed(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ce := ConfigurationError(err)
	if g.err != nil && g.now().Before(g.until) {
		return // parallel dials that failed together: one interval
	}
	if g.err == nil || ConfigurationError(g.err).Reason != ce.Reason {
		g.log.Error("the directory refuses the service account: lookups get stale or default answers, and the service account binds again at most once per backoff interval (up to "+maxBackoff.String()+") so that a lockout policy does not lock it",
			"key", ce.Key, "reason", ce.Reason, "fix", ce.Fix, "err", ce.Err)
	}
	g.delay = min(max(2*g.delay, firstBackoff), maxBackoff)
	g.ok, g.err, g.until = false, err, g.now().Add(g.delay)
	g.backoffs.Inc()
}
