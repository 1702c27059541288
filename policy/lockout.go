package policy

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// Binds as a user are what a directory's lockout policy counts. Anyone
// who can name a user could otherwise lock that user out through
// authenticated Autodiscover, by sending wrong passwords from as many
// addresses as it likes. The guard below bounds the refused binds per
// account (the entry's DN, so every alias of a user shares the bound),
// whoever asks.

// LockoutConfig bounds the refused binds made as one account.
type LockoutConfig struct {
	// Failures is how many refused binds of one account are allowed;
	// after them no password that has not bound before is tried for that
	// account until Pause has passed since the last refused one.
	Failures int
	// Pause is that quiet time. Make it at least the directory's own
	// observation window (Active Directory's "Reset account lockout
	// counter after"), so that the directory's count of bad passwords has
	// gone back to zero when mailbeacon tries again.
	Pause time.Duration
	// RefusalTime is when, after a login began, its refusal is answered
	// (wrong password, unknown or disabled address, refused from memory
	// alike), or when the directory has answered if that is later. Make it
	// more than the directory's slowest search and bind.
	RefusalTime time.Duration
}

// Defaults: 3 refused binds, then 30 minutes without one. Active
// Directory locks at 5 to 10 bad passwords within an observation window
// of (by default) 30 minutes, Samba alike: 3 leaves room for the user's
// own typing, and 30 minutes outlasts the usual window.
const (
	DefaultBindFailures = 3
	DefaultBindPause    = 30 * time.Minute
	// MaxBindFailures bounds Failures: far beyond it lies every
	// directory's lockout threshold.
	MaxBindFailures = 10
	// DefaultRefusalTime is well above a search and a bind on a connection
	// of its own (TCP, TLS, bind) to a directory on the local network, and
	// short for a person who mistyped.
	DefaultRefusalTime = 200 * time.Millisecond
	// MaxRefusalTime bounds RefusalTime: each refusal holds its request
	// that long.
	MaxRefusalTime = 10 * time.Second
)

// DefaultLockoutConfig returns the defaults.
func DefaultLockoutConfig() LockoutConfig {
	return LockoutConfig{Failures: DefaultBindFailures, Pause: DefaultBindPause, RefusalTime: DefaultRefusalTime}
}

// Validate reports a setting out of range; key prefixes the names of the
// configuration keys (e.g. "autodiscover.").
func (c LockoutConfig) Validate(key string) error {
	if c.Failures < 1 || c.Failures > MaxBindFailures {
		return fmt.Errorf("%sbind_failures: %d is out of range: 1 up to %d; keep it below the directory's lockout threshold, e.g. %d",
			key, c.Failures, MaxBindFailures, DefaultBindFailures)
	}
	if c.Pause < time.Second || c.Pause > 24*time.Hour {
		return fmt.Errorf("%sbind_pause: %s is out of range: 1s up to 24h; make it at least the directory's lockout observation window, e.g. %s",
			key, c.Pause, DefaultBindPause)
	}
	if c.RefusalTime < time.Millisecond || c.RefusalTime > MaxRefusalTime {
		return fmt.Errorf("%srefusal_time: %s is out of range: 1ms up to %s; make it more than the directory's slowest search and bind, e.g. %s",
			key, c.RefusalTime, MaxRefusalTime, DefaultRefusalTime)
	}
	return nil
}

// maxGuardedAccounts bounds the accounts the guard remembers: only
// accounts with a refused bind in the last hour (or a bind in flight)
// take a place, about 150 bytes plus 32 per refused password. When every
// place is taken, those whose pause is over are forgotten first (which
// only lets a refused password be tried once more); when all are within
// their pause, accounts without a place are not bound as at all until
// places free up: a flood naming more accounts than this refuses logins
// rather than locking anybody out.
const maxGuardedAccounts = 50_000

// minRefusedMemory is how long refused passwords are remembered at least
// (bind_pause when longer): a client stuck on an old password is refused
// from memory past the pause, at the cost of refusing, for that long, a
// password refused before it was set in the directory.
const minRefusedMemory = time.Hour

// maxRefusedPerAccount bounds the refused passwords remembered per
// account; the oldest is forgotten first.
const maxRefusedPerAccount = 16

// guardSweepEvery is how often the guard looks for ended pauses besides
// the accounts it is asked about.
const guardSweepEvery = time.Minute

// verdict is what the guard says about a bind.
type verdict int

const (
	bindAllowed    verdict = iota // bind; call done after
	knownGood                     // paused, but the password bound recently: accept without a bind
	refuseRepeated                // this password was refused for this account already
	refusePaused                  // the account's refused binds are spent
	refuseFull                    // no place to count this account's binds
)

// reason names a refusal in the metric.
func (v verdict) reason() string {
	switch v {
	case refuseRepeated:
		return "repeated"
	case refusePaused:
		return "paused"
	case refuseFull:
		return "full"
	}
	return ""
}

// accountGuard counts the refused binds per account.
type accountGuard struct {
	log     *slog.Logger
	metrics *Metrics

	mu        sync.Mutex
	cfg       LockoutConfig
	accounts  map[string]*guarded // by lower-case DN
	paused    int                 // accounts marked paused
	full      bool                // the table was full at the last admission (logged once)
	nextSweep time.Time
}

type guarded struct {
	dn       string // as the directory spells it, for the log
	failures int    // refused binds within the pause
	inflight int    // binds under way
	last     time.Time
	paused   bool                // failures reached the bound (logged once)
	refused  [][sha256.Size]byte // MACs of the refused passwords
}

func newAccountGuard(log *slog.Logger, m *Metrics) *accountGuard {
	return &accountGuard{log: log, metrics: m, cfg: DefaultLockoutConfig(), accounts: map[string]*guarded{}}
}

// refusalTime is the configured RefusalTime.
func (g *accountGuard) refusalTime() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg.RefusalTime
}

func (g *accountGuard) setConfig(c LockoutConfig) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cfg = c
	// A lowered bound pauses accounts at their next admission.
}

// refreshLocked ends the record's pause once bind_pause has passed since
// its last refused bind, and forgets it once its refused passwords are
// old too. It reports whether the record is kept.
func (g *accountGuard) refreshLocked(key string, rec *guarded, now time.Time) bool {
	if rec.inflight > 0 || rec.last.IsZero() {
		return true
	}
	if rec.failures > 0 && !now.Before(rec.last.Add(g.cfg.Pause)) {
		rec.failures = 0
		g.resumeLocked(rec)
	}
	if rec.failures == 0 && !now.Before(rec.last.Add(max(g.cfg.Pause, minRefusedMemory))) {
		delete(g.accounts, key)
		return false
	}
	return true
}

func (g *accountGuard) sweepLocked(now time.Time) {
	g.nextSweep = now.Add(guardSweepEvery)
	for k, rec := range g.accounts {
		g.refreshLocked(k, rec, now)
	}
}

// makeRoomLocked frees places when the table is full: ended pauses go
// first, then accounts whose pause is over (they only remember refused
// passwords).
func (g *accountGuard) makeRoomLocked(now time.Time) {
	g.sweepLocked(now)
	for k, rec := range g.accounts {
		if len(g.accounts) < maxGuardedAccounts*7/8 {
			return
		}
		if rec.failures == 0 && rec.inflight == 0 {
			delete(g.accounts, k)
		}
	}
}

// admit decides whether to bind as dn with the password whose MAC is
// mac. good says that password bound successfully within the pause. On
// bindAllowed the caller must call done when the bind has an answer.
func (g *accountGuard) admit(dn string, mac [sha256.Size]byte, good bool, now time.Time) verdict {
	key := strings.ToLower(dn)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !now.Before(g.nextSweep) {
		g.sweepLocked(now)
	}
	rec := g.accounts[key]
	if rec != nil && !g.refreshLocked(key, rec, now) {
		rec = nil
	}
	if rec != nil {
		if rec.failures < g.cfg.Failures {
			g.resumeLocked(rec) // the bound was raised by a reload
		}
		for _, r := range rec.refused {
			if hmac.Equal(r[:], mac[:]) {
				return refuseRepeated
			}
		}
		if rec.failures+rec.inflight >= g.cfg.Failures {
			if good {
				return knownGood
			}
			if rec.failures >= g.cfg.Failures && !rec.paused {
				g.pauseLocked(rec) // the bound was lowered by a reload
			}
			return refusePaused
		}
	} else {
		if len(g.accounts) >= maxGuardedAccounts {
			g.makeRoomLocked(now)
		}
		if len(g.accounts) >= maxGuardedAccounts {
			if !g.full {
				g.full = true
				g.log.Warn("authenticated Autodiscover: too many accounts with refused passwords are remembered; "+
					"passwords of other accounts are refused without a bind until some pauses end", "accounts", len(g.accounts))
			}
			return refuseFull
		}
		if g.full {
			g.full = false
			g.log.Info("authenticated Autodiscover: room again for accounts with refused passwords", "accounts", len(g.accounts))
		}
		rec = &guarded{dn: dn}
		g.accounts[key] = rec
	}
	rec.inflight++
	return bindAllowed
}

func (g *accountGuard) resumeLocked(rec *guarded) {
	if !rec.paused {
		return
	}
	rec.paused = false
	g.paused--
	g.metrics.authPausedAccounts.Dec()
	g.log.Info("authenticated Autodiscover: binds as this account resume", "account", rec.dn)
}

func (g *accountGuard) pauseLocked(rec *guarded) {
	rec.paused = true
	g.paused++
	g.metrics.authPausedAccounts.Inc()
	g.log.Warn("authenticated Autodiscover: refused passwords for this account reached autodiscover.bind_failures; "+
		"no other password is tried for it until autodiscover.bind_pause has passed",
		"account", rec.dn, "failures", rec.failures, "until", rec.last.Add(g.cfg.Pause).UTC().Format(time.RFC3339))
}

// done records the answer to a bind admitted by admit: refused says the
// directory refused it, wrong that it blamed the password (which is then
// refused from memory when it comes again).
func (g *accountGuard) done(dn string, mac [sha256.Size]byte, refused, wrong bool, now time.Time) {
	key := strings.ToLower(dn)
	g.mu.Lock()
	defer g.mu.Unlock()
	rec := g.accounts[key]
	if rec == nil {
		return // cannot happen: a record with a bind under way is never dropped
	}
	rec.inflight--
	if refused {
		rec.failures++
		rec.last = now
		if wrong {
			if len(rec.refused) == maxRefusedPerAccount {
				rec.refused = append(rec.refused[:0], rec.refused[1:]...) // the oldest goes
			}
			rec.refused = append(rec.refused, mac)
		}
		if rec.failures >= g.cfg.Failures && !rec.paused {
			g.pauseLocked(rec)
		}
		return
	}
	if rec.failures == 0 && rec.inflight == 0 && len(rec.refused) == 0 {
		delete(g.accounts, key) // nothing to remember
	}
}

// state returns, for tests, how many accounts are remembered and how
// many of them are paused.
func (g *accountGuard) state() (accounts, paused int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.accounts), g.paused
}
