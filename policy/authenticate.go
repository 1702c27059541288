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
	"sync"
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
	m := &r.binds
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ttl, m.ttlSet = ttl, true
	if ttl <= 0 {
		clear(m.seen)
	}
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
func (r *Resolver) Authenticate(ctx context.Context, addr Address, password string) (*Account, error) {
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
	if err != nil || !acct.Known || acct.DN == "" {
		// Resolve answers "unknown" both when the directory said so and,
		// under cache.on_directory_error "defaults", when it could not be
		// asked. Only the first is cached: an address with no cache entry
		// after Resolve was not looked up, and its password is unchecked.
		if _, cached := r.cache.Get(addr.String(), r.now()); !cached {
			return nil, fmt.Errorf("%w: cannot check a password for an address the directory did not look up", ErrDirectoryUnavailable)
		}
		// No bind is needed to refuse, but answering faster than a wrong
		// password would tell which addresses have accounts.
		r.binds.refusal.wait(ctx, r.sleep, r.now)
		return nil, ErrBadCredentials
	}
	m := &r.binds
	mac := m.mac(acct.DN, password)
	if m.remembers(addr.String(), mac, r.now()) {
		return acct, nil
	}
	// Concurrent logins of one user with one password share one bind, and
	// a success is remembered before the flight lands, so that a login
	// arriving just after it finds the memory rather than binding again.
	ch := m.flight.DoChan(addr.String()+"\x00"+hex.EncodeToString(mac[:]), func() (any, error) {
		start := r.now()
		err := b.Authenticate(context.WithoutCancel(ctx), acct.DN, password)
		switch {
		case err == nil:
			m.remember(addr.String(), mac, r.now())
		case errors.Is(err, ldapsource.ErrInvalidCredentials):
			m.refusal.note(r.now().Sub(start))
		}
		return nil, err
	})
	var res singleflight.Result
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res = <-ch:
	}
	switch {
	case res.Err == nil:
		return acct, nil
	case errors.Is(res.Err, ldapsource.ErrInvalidCredentials):
		return nil, ErrBadCredentials
	}
	return nil, fmt.Errorf("%w: %w", ErrDirectoryUnavailable, res.Err)
}

// bindMemory remembers successful binds briefly, and how long the
// directory takes to refuse a wrong password. Its zero value is ready.
type bindMemory struct {
	refusal timePad // how long the directory takes to refuse a wrong password
	once    sync.Once
	key     []byte // random per process: the MACs mean nothing elsewhere
	flight  singleflight.Group

	mu     sync.Mutex
	ttl    time.Duration
	ttlSet bool
	seen   map[string]rememberedBind // by address
}

type rememberedBind struct {
	mac   [sha256.Size]byte
	until time.Time
}

func (m *bindMemory) init() {
	m.once.Do(func() {
		m.key = make([]byte, 32)
		if _, err := rand.Read(m.key); err != nil {
			panic("policy: no randomness for the bind memory key: " + err.Error())
		}
		m.mu.Lock()
		if m.seen == nil {
			m.seen = map[string]rememberedBind{}
		}
		m.mu.Unlock()
	})
}

// mac is HMAC-SHA256(key, len(dn) || dn || password).
func (m *bindMemory) mac(dn, password string) [sha256.Size]byte {
	m.init()
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

func (m *bindMemory) remembers(addr string, mac [sha256.Size]byte, now time.Time) bool {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.seen[addr]
	if !ok {
		return false
	}
	if !now.Before(e.until) {
		delete(m.seen, addr)
		return false
	}
	return hmac.Equal(e.mac[:], mac[:])
}

func (m *bindMemory) remember(addr string, mac [sha256.Size]byte, now time.Time) {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	ttl := m.ttlLocked()
	if ttl <= 0 {
		return
	}
	if _, ok := m.seen[addr]; !ok && len(m.seen) >= maxRememberedBinds {
		for k, e := range m.seen {
			if !now.Before(e.until) {
				delete(m.seen, k)
			}
		}
		if len(m.seen) >= maxRememberedBinds {
			return // full of live entries: this user binds next time
		}
	}
	m.seen[addr] = rememberedBind{mac: mac, until: now.Add(ttl)}
}
