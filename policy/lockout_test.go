package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

const bobDN = "uid=bob.login,ou=people,dc=example,dc=com"

// lockoutResolver is newAuthResolver with bob reachable by a second
// address too, a log, and metrics on a registry of its own.
func lockoutResolver(t *testing.T, c LockoutConfig) (*Resolver, *bindingDirectory, *clock, *syncLog, *Metrics) {
	t.Helper()
	r, dir, clk := newAuthResolver(t, Config{})
	dir.entries["b.alias@example.com"] = dir.entries["bob@example.com"]
	logs := &syncLog{}
	m := NewMetrics(prometheus.NewRegistry())
	r.log, r.metrics = slog.New(slog.NewTextHandler(logs, nil)), m
	r.binds = newBindMemory(r.log, m)
	r.sleep = func(context.Context, time.Duration) {}
	r.SetBindLockout(c)
	return r, dir, clk, logs, m
}

type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func refusedCount(m *Metrics, reason string) int {
	return int(testutil.ToFloat64(map[string]prometheus.Counter{
		"repeated": m.authRefusedRepeated, "paused": m.authRefusedPaused, "full": m.authRefusedFull,
	}[reason]))
}

// Once bind_failures passwords have been refused for an account, whichever
// of its addresses was asked, no other password is tried for it until the
// pause has passed since the last refusal; then its password works again.
func TestLockoutBoundsRefusedBindsPerAccount(t *testing.T) {
	ctx := context.Background()
	r, dir, clk, logs, m := lockoutResolver(t, LockoutConfig{Failures: 3, Pause: 15 * time.Minute})
	addrs := []Address{mustAddr(t, "bob@example.com"), mustAddr(t, "B.Alias@example.com")}
	for i := range 3 {
		clk.Advance(time.Minute)
		if _, err := r.Authenticate(ctx, addrs[i%2], fmt.Sprintf("wrong-%d", i)); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("wrong password %d: %v", i, err)
		}
	}
	if n := dir.binds.Load(); n != 3 {
		t.Fatalf("%d binds for 3 wrong passwords, want 3", n)
	}
	for i := range 50 {
		for _, pw := range []string{fmt.Sprintf("other-%d", i), "Secret123!"} {
			if _, err := r.Authenticate(ctx, addrs[i%2], pw); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("%s while paused: %v, want ErrBadCredentials", pw, err)
			}
		}
	}
	if n := dir.binds.Load(); n != 3 {
		t.Errorf("%d binds after the bound was spent, want still 3", n)
	}
	if n := refusedCount(m, "paused"); n != 100 {
		t.Errorf("paused refusals counted: %d, want 100", n)
	}
	if v := testutil.ToFloat64(m.authPausedAccounts); v != 1 {
		t.Errorf("paused accounts gauge %v, want 1", v)
	}
	// The pause runs from the last refused bind, not the first.
	clk.Advance(15*time.Minute - time.Second)
	if _, err := r.Authenticate(ctx, addrs[0], "Secret123!"); !errors.Is(err, ErrBadCredentials) || dir.binds.Load() != 3 {
		t.Fatalf("before the pause ends: %v, %d binds", err, dir.binds.Load())
	}
	clk.Advance(time.Second)
	if _, err := r.Authenticate(ctx, addrs[1], "Secret123!"); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
	if n := dir.binds.Load(); n != 4 {
		t.Errorf("%d binds, want 4", n)
	}
	if v := testutil.ToFloat64(m.authPausedAccounts); v != 0 {
		t.Errorf("paused accounts gauge %v after the pause, want 0", v)
	}
	// Logged once per change, naming the account, never a password.
	if p, res := logs.count("binds as this account resume"), logs.count("reached autodiscover.bind_failures"); p != 1 || res != 1 {
		t.Errorf("paused logged %d times, resumed %d times; want once each:\n%s", res, p, logs)
	}
	if !strings.Contains(logs.String(), bobDN) {
		t.Errorf("the log does not name the account:\n%s", logs)
	}
	for _, pw := range []string{"wrong-", "other-", "Secret123"} {
		if strings.Contains(logs.String(), pw) {
			t.Errorf("the log holds a password (%s):\n%s", pw, logs)
		}
	}
}

// A password the directory refused for an account is refused again from
// memory, however often it comes and from whichever address, even while
// the bound is not spent.
func TestLockoutRepeatedPasswordNeverBindsAgain(t *testing.T) {
	ctx := context.Background()
	r, dir, clk, _, m := lockoutResolver(t, LockoutConfig{Failures: 10, Pause: time.Hour})
	for i := range 200 {
		addr := []string{"bob@example.com", "b.alias@example.com"}[i%2]
		if _, err := r.Authenticate(ctx, mustAddr(t, addr), "Summer2026!"); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
		clk.Advance(10 * time.Second)
	}
	if n := dir.binds.Load(); n != 1 {
		t.Errorf("%d binds for one wrong password sent 200 times, want 1", n)
	}
	if n := refusedCount(m, "repeated"); n != 199 {
		t.Errorf("repeated refusals counted: %d, want 199", n)
	}
	// The right password still binds: one refusal of 10 is spent.
	if _, err := r.Authenticate(ctx, mustAddr(t, "bob@example.com"), "Secret123!"); err != nil {
		t.Fatal(err)
	}
}

// While an account is paused, the password that bound for it within the
// pause is accepted from memory, without a bind; any other is refused.
func TestLockoutKnownGoodPasswordWhilePaused(t *testing.T) {
	ctx := context.Background()
	r, dir, clk, _, _ := lockoutResolver(t, LockoutConfig{Failures: 3, Pause: 30 * time.Minute})
	r.SetAuthCacheTTL(2 * time.Minute)
	bob := mustAddr(t, "bob@example.com")
	if _, err := r.Authenticate(ctx, bob, "Secret123!"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Minute) // past the auth cache TTL
	for i := range 3 {
		_, _ = r.Authenticate(ctx, bob, fmt.Sprintf("wrong-%d", i))
	}
	if n := dir.binds.Load(); n != 4 {
		t.Fatalf("%d binds, want 4", n)
	}
	if _, err := r.Authenticate(ctx, mustAddr(t, "b.alias@example.com"), "Secret123!"); err != nil {
		t.Errorf("known-good password while paused: %v", err)
	}
	if _, err := r.Authenticate(ctx, bob, "Secret123?"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("unseen password while paused: %v", err)
	}
	if n := dir.binds.Load(); n != 4 {
		t.Errorf("%d binds while paused, want none (4)", n)
	}
	// A success older than the pause vouches for nothing: the account is
	// still paused (30m from the last refusal), the password unchecked.
	clk.Advance(28 * time.Minute)
	if _, err := r.Authenticate(ctx, bob, "Secret123!"); !errors.Is(err, ErrBadCredentials) || dir.binds.Load() != 4 {
		t.Errorf("31m after the success, still paused: %v, %d binds", err, dir.binds.Load())
	}
	// With the auth cache off nothing is remembered, so nothing vouches.
	r2, dir2, clk2, _, _ := lockoutResolver(t, LockoutConfig{Failures: 1, Pause: time.Hour})
	r2.SetAuthCacheTTL(0)
	_, _ = r2.Authenticate(ctx, bob, "Secret123!")
	clk2.Advance(time.Minute)
	_, _ = r2.Authenticate(ctx, bob, "wrong")
	if _, err := r2.Authenticate(ctx, bob, "Secret123!"); !errors.Is(err, ErrBadCredentials) || dir2.binds.Load() != 2 {
		t.Errorf("auth_cache_ttl 0, paused: %v, %d binds", err, dir2.binds.Load())
	}
}

// Hundreds of concurrent logins with wrong passwords, the same and
// different ones, through two addresses of one account: binds stay within
// the bound, and every one is refused.
func TestLockoutConcurrentFlood(t *testing.T) {
	r, dir, _, logs, _ := lockoutResolver(t, LockoutConfig{Failures: 3, Pause: time.Hour})
	dir.gate = make(chan struct{})
	if _, err := r.Resolve(context.Background(), mustAddr(t, "bob@example.com")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(context.Background(), mustAddr(t, "b.alias@example.com")); err != nil {
		t.Fatal(err)
	}
	const n = 400
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			addr := []string{"bob@example.com", "b.alias@example.com"}[i%2]
			pw := "Winter2026!" // half the same
			if i%2 == 1 {
				pw = fmt.Sprintf("guess-%d", i)
			}
			_, err := r.Authenticate(context.Background(), mustAddr(t, addr), pw)
			errs <- err
		}()
	}
	close(start)
	time.Sleep(50 * time.Millisecond) // let them pile up on the binds under way
	close(dir.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("a wrong password got %v", err)
		}
	}
	if b := dir.binds.Load(); b > 3 || b < 1 {
		t.Errorf("%d binds for %d concurrent wrong passwords, want 1 to 3", b, n)
	}
	if c := logs.count("reached autodiscover.bind_failures"); c > 1 {
		t.Errorf("paused logged %d times", c)
	}
}

// The guard remembers at most maxGuardedAccounts accounts: beyond them a
// new account is refused without a bind (never forgotten into a lockout),
// and places free up as pauses end.
func TestLockoutMemoryBound(t *testing.T) {
	logs := &syncLog{}
	m := NewMetrics(prometheus.NewRegistry())
	g := newAccountGuard(slog.New(slog.NewTextHandler(logs, nil)), m)
	g.setConfig(LockoutConfig{Failures: 2, Pause: time.Minute})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mac [32]byte
	for i := range maxGuardedAccounts + 1000 {
		dn := fmt.Sprintf("uid=u%d,dc=example", i)
		mac[0], mac[1], mac[2] = byte(i), byte(i>>8), byte(i>>16)
		v := g.admit(dn, mac, false, now)
		if i < maxGuardedAccounts {
			if v != bindAllowed {
				t.Fatalf("account %d: %v", i, v)
			}
			g.done(dn, mac, true, true, now)
		} else if v != refuseFull {
			t.Fatalf("account %d beyond the bound: verdict %v, want refuseFull", i, v)
		}
	}
	if n, _ := g.state(); n != maxGuardedAccounts {
		t.Errorf("%d accounts remembered, want %d", n, maxGuardedAccounts)
	}
	// Every remembered account still counts its refusals.
	mac[0], mac[1], mac[2] = 0xff, 0xff, 0xff
	if v := g.admit("uid=u7,dc=example", mac, false, now); v != bindAllowed {
		t.Errorf("a remembered account: %v", v)
	}
	g.done("uid=u7,dc=example", mac, true, true, now)
	if v := g.admit("UID=U7,DC=EXAMPLE", [32]byte{1, 2, 3, 4}, false, now); v != refusePaused {
		t.Errorf("u7 after two refusals (DN in other case): %v, want refusePaused", v)
	}
	if c := logs.count("too many accounts"); c != 1 {
		t.Errorf("full logged %d times, want 1", c)
	}
	// Once the pauses are over, the accounts that only remember refused
	// passwords make room; a success leaves nothing behind.
	now = now.Add(time.Minute)
	if v := g.admit("uid=new,dc=example", mac, false, now); v != bindAllowed {
		t.Fatalf("after the pauses: %v", v)
	}
	g.done("uid=new,dc=example", mac, false, false, now)
	if n, paused := g.state(); n > maxGuardedAccounts*7/8 || paused != 0 {
		t.Errorf("after the pauses and a success: %d accounts, %d paused; want at most %d, none paused", n, paused, maxGuardedAccounts*7/8)
	}
	if v := testutil.ToFloat64(m.authPausedAccounts); v != 0 {
		t.Errorf("paused gauge %v, want 0", v)
	}
	if c := logs.count("room again"); c != 1 {
		t.Errorf("room again logged %d times, want 1", c)
	}
	// Those remembered past the hour are forgotten altogether.
	now = now.Add(time.Hour)
	g.admit("uid=other,dc=example", mac, false, now)
	g.done("uid=other,dc=example", mac, false, false, now)
	if n, _ := g.state(); n != 0 {
		t.Errorf("an hour later %d accounts remembered, want 0", n)
	}
}

// A refused password stays refused from memory after the pause ends, for
// an hour: a client stuck on an old password costs no bind meanwhile.
func TestLockoutRefusedPasswordOutlivesPause(t *testing.T) {
	ctx := context.Background()
	r, dir, clk, _, _ := lockoutResolver(t, LockoutConfig{Failures: 1, Pause: 5 * time.Minute})
	bob := mustAddr(t, "bob@example.com")
	_, _ = r.Authenticate(ctx, bob, "OldPassword1")
	for range 11 {
		clk.Advance(5 * time.Minute)
		if _, err := r.Authenticate(ctx, bob, "OldPassword1"); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
	}
	if n := dir.binds.Load(); n != 1 {
		t.Errorf("%d binds for an old password over 55 minutes, want 1", n)
	}
	if _, err := r.Authenticate(ctx, bob, "Secret123!"); err != nil {
		t.Errorf("right password after the pause: %v", err)
	}
	clk.Advance(time.Hour)
	_, _ = r.Authenticate(ctx, bob, "OldPassword1")
	if n := dir.binds.Load(); n != 3 {
		t.Errorf("%d binds, want 3: an hour on, the old password is tried once more", n)
	}
}

// A reload's new Resolver takes over the count: a SIGHUP does not give an
// account its refused binds anew. After a change of directory the
// successes are forgotten, the refusals kept.
func TestLockoutCarriedAcrossReload(t *testing.T) {
	ctx := context.Background()
	bob := mustAddr(t, "bob@example.com")
	for _, same := range []bool{true, false} {
		r1, dir, _, _, _ := lockoutResolver(t, LockoutConfig{Failures: 2, Pause: time.Hour})
		if _, err := r1.Authenticate(ctx, bob, "Secret123!"); err != nil {
			t.Fatal(err)
		}
		_, _ = r1.Authenticate(ctx, bob, "wrong-1")
		_, _ = r1.Authenticate(ctx, bob, "wrong-2")
		r2, _, _ := newAuthResolver(t, Config{})
		r2.dir, r2.now, r2.sleep = dir, r1.now, r1.sleep
		r2.SetBindLockout(LockoutConfig{Failures: 2, Pause: time.Hour})
		r2.CarryAuthentication(r1, same)
		binds := dir.binds.Load()
		if _, err := r2.Authenticate(ctx, bob, "wrong-3"); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
		_, err := r2.Authenticate(ctx, bob, "Secret123!")
		if same && err != nil {
			t.Errorf("same directory: the remembered success is lost: %v", err)
		}
		if !same && !errors.Is(err, ErrBadCredentials) {
			t.Errorf("other directory: a success of the old one vouches: %v", err)
		}
		if n := dir.binds.Load() - binds; n != 0 {
			t.Errorf("same directory %t: %d binds after the reload, want 0", same, n)
		}
	}
}

// A refusal from memory is answered at the same deadline as one the
// directory made.
func TestLockoutRefusalAsSlowAsBind(t *testing.T) {
	r, dir, clk, _, _ := lockoutResolver(t, LockoutConfig{Failures: 1, Pause: time.Hour, RefusalTime: 100 * time.Millisecond})
	r.sleep = func(_ context.Context, d time.Duration) { clk.Advance(d) }
	dir.onBind = func() { clk.Advance(40 * time.Millisecond) }
	ctx := context.Background()
	bob := mustAddr(t, "bob@example.com")
	for _, pw := range []string{"wrong", "wrong", "other"} {
		start := clk.Now()
		if _, err := r.Authenticate(ctx, bob, pw); !errors.Is(err, ErrBadCredentials) {
			t.Fatal(err)
		}
		if took := clk.Now().Sub(start); took != 100*time.Millisecond {
			t.Errorf("password %q refused after %v, want 100ms", pw, took)
		}
	}
	if dir.binds.Load() != 1 {
		t.Errorf("%d binds, want 1", dir.binds.Load())
	}
}

func TestLockoutConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		c    LockoutConfig
		want string
	}{
		{DefaultLockoutConfig(), ""},
		{LockoutConfig{Failures: 0, Pause: time.Minute}, "autodiscover.bind_failures: 0 is out of range"},
		{LockoutConfig{Failures: 11, Pause: time.Minute}, "autodiscover.bind_failures: 11"},
		{LockoutConfig{Failures: 3, Pause: time.Millisecond}, "autodiscover.bind_pause: 1ms"},
		{LockoutConfig{Failures: 3, Pause: 25 * time.Hour}, "autodiscover.bind_pause: 25h0m0s"},
		{LockoutConfig{Failures: 3, Pause: time.Minute}, "autodiscover.refusal_time: 0s is out of range"},
		{LockoutConfig{Failures: 3, Pause: time.Minute, RefusalTime: 11 * time.Second}, "autodiscover.refusal_time: 11s"},
	} {
		err := tc.c.Validate("autodiscover.")
		if (tc.want == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
}

// A refusal that blames the account's state (locked, expired) rather than
// the password counts against the bound, but the password is not
// remembered as wrong: once the account is unlocked it binds.
func TestLockoutAccountStateRefusalNotRemembered(t *testing.T) {
	ctx := context.Background()
	r, dir, _, _, _ := lockoutResolver(t, LockoutConfig{Failures: 3, Pause: time.Hour})
	bob := mustAddr(t, "bob@example.com")
	locked := error(fmt.Errorf("%w: %w", ldapsource.ErrInvalidCredentials, ldapsource.ErrAccountRestricted))
	dir.bindErr.Store(&locked)
	if _, err := r.Authenticate(ctx, bob, "Secret123!"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("locked account: %v", err)
	}
	dir.bindErr.Store(nil) // unlocked
	if _, err := r.Authenticate(ctx, bob, "Secret123!"); err != nil {
		t.Errorf("right password after the unlock: %v", err)
	}
	if n := dir.binds.Load(); n != 2 {
		t.Errorf("%d binds, want 2", n)
	}
	// The refusal counted: two more wrong passwords spend the bound.
	_, _ = r.Authenticate(ctx, bob, "wrong-1")
	_, _ = r.Authenticate(ctx, bob, "wrong-2")
	if _, err := r.Authenticate(ctx, bob, "wrong-3"); !errors.Is(err, ErrBadCredentials) || dir.binds.Load() != 4 {
		t.Errorf("third wrong password after a state refusal: %v, %d binds; want no bind (4)", err, dir.binds.Load())
	}
}

// The memory of successes is bounded: when full, entries past the auth
// cache TTL (kept only to vouch for a paused account) make room for a
// fresh success.
func TestLockoutSuccessMemoryBound(t *testing.T) {
	m := newBindMemory(slog.New(slog.DiscardHandler), NewMetrics(nil))
	m.ttl, m.ttlSet = 2*time.Minute, true
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxRememberedBinds {
		dn := fmt.Sprintf("uid=u%d", i)
		m.remember(dn, m.mac(dn, "pw"), now)
	}
	now = now.Add(time.Minute)
	m.remember("uid=fresh", m.mac("uid=fresh", "pw"), now)
	if fresh, _ := m.remembers("uid=fresh", m.mac("uid=fresh", "pw"), now); fresh {
		t.Error("full of fresh entries, yet one more was remembered")
	}
	now = now.Add(2 * time.Minute) // the first ones are past the TTL, within the pause
	m.remember("uid=fresh", m.mac("uid=fresh", "pw"), now)
	if fresh, _ := m.remembers("uid=fresh", m.mac("uid=fresh", "pw"), now); !fresh {
		t.Error("entries past the TTL did not make room")
	}
	if n := len(m.seen); n > maxRememberedBinds {
		t.Errorf("%d entries, want at most %d", n, maxRememberedBinds)
	}
}
