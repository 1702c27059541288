package policy

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// Binder checks a user's password by binding to the directory as the
// user's entry. ldapsource.Source implements it.
type Binder interface {
	Authenticate(ctx context.Context, dn, password string) error
}

var _ Binder = (*ldapsource.Source)(nil)

// ErrBadCredentials: the password is wrong, or the address is unknown or
// disabled (the two are not told apart).
var ErrBadCredentials = errors.New("invalid credentials")

// DefaultAuthCacheTTL is how long a successful bind is remembered unless
// SetAuthCacheTTL says otherwise.
const DefaultAuthCacheTTL = 2 * time.Minute

// maxRememberedBinds bounds the memory of successful binds.
const maxRememberedBinds = 10000

// SetAuthCacheTTL sets how long Authenticate remembers a successful bind,
// so that a client polling Autodiscover does not cause a bind per request.
// Zero or less turns remembering off. Safe to call at any time.
func (r *Resolver) SetAuthCacheTTL(ttl time.Duration) {
	m := r.binds
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ttl, m.ttlSet = ttl, true
	if ttl <= 0 {
		clear(m.seen)
	}
}

// SetBindLockout sets the bound on refused binds per account (see
// LockoutConfig); a zero field keeps its default. Safe to call at any
// time.
func (r *Resolver) SetBindLockout(c LockoutConfig) {
	d := DefaultLockoutConfig()
	if c.Failures == 0 {
		c.Failures = d.Failures
	}
	if c.Pause == 0 {
		c.Pause = d.Pause
	}
	if c.RefusalTime == 0 {
		c.RefusalTime = d.RefusalTime
	}
	r.binds.guard.setConfig(c)
}

// CarryAuthentication makes r share from's memory of binds, so that a
// reload does not give every account its refused binds anew. r keeps its
// own settings (auth cache TTL, bind lockout), which from then follows
// too. Unless sameDirectory, the successful binds are forgotten: they
// vouched for passwords of another directory. Call it before r serves.
func (r *Resolver) CarryAuthentication(from *Resolver, sameDirectory bool) {
	mine := r.binds
	mine.mu.Lock()
	ttl, ttlSet := mine.ttl, mine.ttlSet
	mine.mu.Unlock()
	mine.guard.mu.Lock()
	cfg := mine.guard.cfg
	mine.guard.mu.Unlock()

	m := from.binds
	m.mu.Lock()
	m.ttl, m.ttlSet = ttl, ttlSet
	if !sameDirectory || m.ttlLocked() <= 0 {
		clear(m.seen)
	}
	m.mu.Unlock()
	m.guard.setConfig(cfg)
	r.binds = m
}

// Authenticate returns the account for addr if password opens it: the
// address must resolve to a known, enabled entry, and a bind as that
// entry's DN (on a connection of its own) must succeed. Unknown and
// disabled addresses get ErrBadCredentials, like a wrong password. A
// directory that cannot be asked gives an error wrapping
// ErrDirectoryUnavailable.
//
// Successful binds are remembered for the auth cache TTL as an HMAC-SHA256
// of DN and password under a random per-process key: the password itself
// is never kept. A changed password therefore keeps working until the
// entry expires or the new one is used; an account disabled in the
// directory stops working when its cache entry is refreshed.
//
// Binds that the directory refuses are bounded per entry (whichever
// address named it), as SetBindLockout says: a password refused once for
// an entry is refused again without a bind, and once the bound is spent
// no other password is tried until the pause has passed, except the one
// that last bound successfully within the pause, which is accepted from
// memory. Those refusals look and take as long as any other.
//
// Every refusal (ErrBadCredentials, and ErrUnknownDomain, which the POX
// endpoint answers with the same 401) is returned when the refusal time
// (SetBindLockout) has passed since Authenticate began, or when the
// directory answered if that is later: whether the refusal took a search,
// a bind, both or neither does not show in its time.
func (r *Resolver) Authenticate(ctx context.Context, addr Address, password string) (*Account, error) {
	m := r.binds
	deadline := r.now().Add(m.guard.refusalTime())
	acct, err := r.authenticate(ctx, addr, password)
	if errors.Is(err, ErrBadCredentials) || errors.Is(err, ErrUnknownDomain) {
		m.padRefusal(ctx, deadline, r.sleep, r.now)
	}
	return acct, err
}

// padRefusal waits until deadline. A fixed deadline per request, rather
// than a wait as long as the directory takes on average, gives every
// kind of refusal one distribution of times, the timer's lateness alone
// (tens of microseconds against a deadline of hundreds of milliseconds);
// a refusal already past it (the directory was slower) is counted and
// logged once, as it can be told apart.
func (m *bindMemory) padRefusal(ctx context.Context, deadline time.Time, sleep func(context.Context, time.Duration), now func() time.Time) {
	left := deadline.Sub(now())
	if left > 0 {
		sleep(ctx, left)
		return
	}
	m.guard.metrics.authRefusalsLate.Inc()
	if m.lateLogged.CompareAndSwap(false, true) {
		m.guard.log.Warn("authenticated Autodiscover: a refusal took longer than autodiscover.refusal_time, so its time can tell "+
			"whether the directory was asked to bind; raise refusal_time above the directory's slowest bind "+
			"(logged once; counted in mailbeacon_auth_refusals_late_total)", "late_by", -left)
	}
}

func (r *Resolver) authenticate(ctx context.Context, addr Address, password string) (*Account, error) {
	if _, err := r.Domain(ctx, addr.Domain); err != nil {
		return nil, err
	}
	if password == "" {
		return nil, ErrBadCredentials
	}
	b, ok := r.dir.(Binder)
	if !ok {
		return nil, errors.New("policy: this directory cannot check passwords")
	}
	acct, err := r.resolve(ctx, addr, true)
	if err != nil && !errors.Is(err, ErrRejected) {
		return nil, err
	}
	m := r.binds
	if err != nil || !acct.Known || acct.DN == "" {
		// Resolve answers "unknown" both when the directory said so and,
		// under cache.on_directory_error "defaults", when it could not be
		// asked. Only the first is cached: an address with no cache entry
		// after Resolve was not looked up, and its password is unchecked.
		if _, cached := r.cache.Get(addr, r.now()); !cached {
			return nil, fmt.Errorf("%w: cannot check a password for an address the directory did not look up", ErrDirectoryUnavailable)
		}
		// No bind is needed to refuse; Authenticate pads the time.
		return nil, ErrBadCredentials
	}
	dn := acct.DN
	mac := m.mac(dn, password)
	fresh, good := m.remembers(dn, mac, r.now())
	if fresh {
		return acct, nil
	}
	// Concurrent logins of one user with one password share one bind, and
	// a success is remembered before the flight lands, so that a login
	// arriving just after it finds the memory rather than binding again.
	// The guard is asked inside the flight: a flood of one password costs
	// one admission.
	ch := m.flight.DoChan(strings.ToLower(dn)+"\x00"+hex.EncodeToString(mac[:]), func() (any, error) {
		switch v := m.guard.admit(dn, mac, good, r.now()); v {
		case bindAllowed:
		case knownGood:
			return nil, nil
		default:
			return nil, refusedWithoutBind(v)
		}
		err := b.Authenticate(context.WithoutCancel(ctx), dn, password)
		refused := errors.Is(err, ldapsource.ErrInvalidCredentials)
		// A refusal for the account's state (locked, expired) counts, but
		// the password may be right: it is not remembered as wrong.
		m.guard.done(dn, mac, refused, !errors.Is(err, ldapsource.ErrAccountRestricted), r.now())
		switch {
		case err == nil:
			m.remember(dn, mac, r.now())
		case refused:
			m.forget(dn, mac)
		}
		return nil, err
	})
	var res singleflight.Result
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res = <-ch:
	}
	var skipped refusedWithoutBind
	switch {
	case res.Err == nil:
		return acct, nil
	case errors.As(res.Err, &skipped):
		r.metrics.authRefused(skipped.reason())
		return nil, ErrBadCredentials
	case errors.Is(res.Err, ldapsource.ErrInvalidCredentials):
		return nil, ErrBadCredentials
	}
	return nil, fmt.Errorf("%w: %w", ErrDirectoryUnavailable, res.Err)
}

// refusedWithoutBind is the guard's refusal, inside the flight.
type refusedWithoutBind verdict

func (v refusedWithoutBind) Error() string { return "refused without a bind: " + verdict(v).reason() }

func (v refusedWithoutBind) reason() string { return verdict(v).reason() }

// bindMemory remembers successful binds briefly and the refused binds per
// account. One is shared by the Resolvers of successive configurations.
type bindMemory struct {
	key        []byte // random per process: the MACs mean nothing elsewhere
	flight     singleflight.Group
	guard      *accountGuard
	lateLogged atomic.Bool // a refusal past refusal_time was logged

	mu     sync.Mutex
	ttl    time.Duration
	ttlSet bool
	seen   map[string]rememberedBind // by lower-case DN
}

type rememberedBind struct {
	mac [sha256.Size]byte
	at  time.Time // when it bound
}

func newBindMemory(log *slog.Logger, m *Metrics) *bindMemory {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("policy: no randomness for the bind memory key: " + err.Error())
	}
	return &bindMemory{key: key, guard: newAccountGuard(log, m), seen: map[string]rememberedBind{}}
}

// mac is HMAC-SHA256(key, len(dn) || lower-case dn || password).
func (m *bindMemory) mac(dn, password string) [sha256.Size]byte {
	dn = strings.ToLower(dn)
	h := hmac.New(sha256.New, m.key)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(dn)))
	h.Write(n[:])
	h.Write([]byte(dn))
	h.Write([]byte(password))
	var out [sha256.Size]byte
	copy(out[:], h.Sum(nil))
	return out
}

func (m *bindMemory) ttlLocked() time.Duration {
	if !m.ttlSet {
		return DefaultAuthCacheTTL
	}
	return m.ttl
}

// keepLocked is how long a success is kept: the TTL, and while an account
// is paused, the pause, in which the password is still accepted.
func (m *bindMemory) keepLocked() time.Duration {
	ttl := m.ttlLocked()
	if ttl <= 0 {
		return 0
	}
	m.guard.mu.Lock()
	pause := m.guard.cfg.Pause
	m.guard.mu.Unlock()
	return max(ttl, pause)
}

// remembers reports whether mac bound as dn within the TTL (fresh) or
// within the bind pause (good).
func (m *bindMemory) remembers(dn string, mac [sha256.Size]byte, now time.Time) (fresh, good bool) {
	key := strings.ToLower(dn)
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.seen[key]
	if !ok {
		return false, false
	}
	age := now.Sub(e.at)
	if age >= m.keepLocked() || age < 0 {
		delete(m.seen, key)
		return false, false
	}
	if !hmac.Equal(e.mac[:], mac[:]) {
		return false, false
	}
	return age < m.ttlLocked(), true
}

func (m *bindMemory) remember(dn string, mac [sha256.Size]byte, now time.Time) {
	key := strings.ToLower(dn)
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := m.keepLocked()
	if keep <= 0 {
		return
	}
	if _, ok := m.seen[key]; !ok && len(m.seen) >= maxRememberedBinds {
		// Past the TTL an entry only vouches for a paused account: those
		// go before this user's fresh one is given up.
		for _, old := range []time.Duration{keep, m.ttlLocked()} {
			for k, e := range m.seen {
				if now.Sub(e.at) >= old {
					delete(m.seen, k)
				}
			}
			if len(m.seen) < maxRememberedBinds {
				break
			}
		}
		if len(m.seen) >= maxRememberedBinds {
			return // full of live entries: this user binds next time
		}
	}
	m.seen[key] = rememberedBind{mac: mac, at: now}
}

// forget drops the success of mac for dn: the directory refused it since.
func (m *bindMemory) forget(dn string, mac [sha256.Size]byte) {
	key := strings.ToLower(dn)
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.seen[key]; ok && hmac.Equal(e.mac[:], mac[:]) {
		delete(m.seen, key)
	}
}
