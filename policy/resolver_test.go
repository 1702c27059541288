package policy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// fakeDirectory serves entries by address, counts searches, and can be made
// slow or broken.
type fakeDirectory struct {
	mu       sync.Mutex
	entries  map[string]*ldapsource.Entry
	err      error         // returned for every lookup when set
	gate     chan struct{} // when set, lookups wait for it to close
	searches atomic.Int64
	queries  []ldapsource.Query
}

func (f *fakeDirectory) Lookup(ctx context.Context, q ldapsource.Query) (*ldapsource.Entry, error) {
	f.searches.Add(1)
	f.mu.Lock()
	gate, err := f.gate, f.err
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	if q.Email == "twins@example.com" {
		return nil, ldapsource.ErrAmbiguous
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	e, ok := f.entries[q.Email]
	if q.Or != nil {
		// One search for either address, as ldapsource makes it.
		if o, found := f.entries[q.Or.Email]; found {
			if ok && o != e {
				return nil, &ldapsource.AmbiguousError{Entries: []*ldapsource.Entry{e, o}, Complete: true}
			}
			e, ok = o, true
		}
	}
	if !ok {
		return nil, ldapsource.ErrNotFound
	}
	return e, nil
}

func (f *fakeDirectory) set(fn func(f *fakeDirectory)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestResolver(t testing.TB, cfg CacheConfig) (*Resolver, *fakeDirectory, *clock) {
	t.Helper()
	dir := &fakeDirectory{entries: map[string]*ldapsource.Entry{
		"bob@example.com":   entry(map[string][]string{"uid": {"bob.login"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}}),
		"carol@example.com": entry(map[string][]string{"uid": {"carol"}, "accountStatus": {"disabled"}, "enabledService": {"mail", "imapsecured"}}),
	}}
	pol, err := New(Config{Login: "{uid}"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, pol, testDomains(t), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.now = clk.Now
	return r, dir, clk
}

func mustAddr(t testing.TB, s string) Address {
	t.Helper()
	a, err := ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestResolveConcurrentMissesCollapse(t *testing.T) {
	r, dir, _ := newTestResolver(t, DefaultCacheConfig())
	gate := make(chan struct{})
	dir.set(func(f *fakeDirectory) { f.gate = gate })
	const n = 100
	gatedBurst(t, n, gate, func() {
		// Let every goroutine reach the resolver before the directory answers.
		for dir.searches.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}, func(int) error {
		a, err := r.Resolve(context.Background(), mustAddr(t, "bob@example.com"))
		if err == nil && (!a.Known || a.Services[0].Login != "bob.login") {
			err = errors.New("wrong account")
		}
		return err
	})
	if got := dir.searches.Load(); got != 1 {
		t.Errorf("%d concurrent first requests caused %d directory searches, want 1", n, got)
	}
}

func TestResolveCacheTTLs(t *testing.T) {
	cfg := CacheConfig{TTL: 10 * time.Minute, NegativeTTL: time.Minute, StaleFor: time.Hour, OnDirectoryError: "defaults"}
	r, dir, clk := newTestResolver(t, cfg)
	ctx := context.Background()
	resolve := func(addr string) *Account {
		t.Helper()
		a, err := r.Resolve(ctx, mustAddr(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	resolve("bob@example.com")
	resolve("BOB@Example.com")
	if n := dir.searches.Load(); n != 1 {
		t.Fatalf("second lookup (other case) searched again: %d searches", n)
	}
	resolve("nobody@example.com")
	resolve("nobody@example.com")
	if n := dir.searches.Load(); n != 2 {
		t.Fatalf("negative entry not cached: %d searches", n)
	}
	clk.Advance(2 * time.Minute) // past the negative TTL, within the positive one
	resolve("nobody@example.com")
	resolve("bob@example.com")
	if n := dir.searches.Load(); n != 3 {
		t.Fatalf("after negative TTL: %d searches, want 3", n)
	}
	clk.Advance(9 * time.Minute) // past the positive TTL
	if a := resolve("bob@example.com"); !a.Known {
		t.Fatal("bob unknown after refresh")
	}
	if n := dir.searches.Load(); n != 4 {
		t.Fatalf("after TTL: %d searches, want 4", n)
	}
}

func TestResolveStaleWhileDirectoryDown(t *testing.T) {
	cfg := CacheConfig{TTL: time.Minute, NegativeTTL: time.Minute, StaleFor: 10 * time.Minute, OnDirectoryError: "defaults"}
	r, dir, clk := newTestResolver(t, cfg)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, mustAddr(t, "bob@example.com")); err != nil {
		t.Fatal(err)
	}
	dir.set(func(f *fakeDirectory) { f.err = errors.New("connection refused") })
	clk.Advance(5 * time.Minute) // stale, but within stale_for
	a, err := r.Resolve(ctx, mustAddr(t, "bob@example.com"))
	if err != nil || !a.Known || a.Services[0].Login != "bob.login" {
		t.Fatalf("stale entry not served: %v %+v", err, a)
	}
	// Not cached: domain defaults with the typed address.
	a, err = r.Resolve(ctx, mustAddr(t, "alice@example.com"))
	if err != nil || a.Known || a.Services[0].Login != "alice@example.com" || kinds(a) != "imap,pop3,smtp,smtp,activesync" {
		t.Fatalf("uncached address during outage: %v %+v", err, a)
	}
	clk.Advance(10 * time.Minute) // past stale_for
	a, err = r.Resolve(ctx, mustAddr(t, "bob@example.com"))
	if err != nil || a.Known {
		t.Fatalf("entry older than stale_for still served: %v %+v", err, a)
	}
	// The directory recovers: the real answer again.
	dir.set(func(f *fakeDirectory) { f.err = nil })
	if a, _ = r.Resolve(ctx, mustAddr(t, "bob@example.com")); !a.Known {
		t.Fatal("not recovered")
	}
}

func TestResolveOutageFailMode(t *testing.T) {
	cfg := DefaultCacheConfig()
	cfg.OnDirectoryError = "fail"
	r, dir, _ := newTestResolver(t, cfg)
	dir.set(func(f *fakeDirectory) { f.err = errors.New("connection refused") })
	if _, err := r.Resolve(context.Background(), mustAddr(t, "bob@example.com")); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Fatalf("got %v, want ErrDirectoryUnavailable", err)
	}
}

func TestResolveAnswers(t *testing.T) {
	r, _, _ := newTestResolver(t, DefaultCacheConfig())
	for _, tc := range []struct {
		addr   string
		known  bool
		login  string
		errIs  error
		kindsS string
	}{
		{"bob@example.com", true, "bob.login", nil, "imap,smtp,smtp"},
		{"carol@example.com", false, "carol@example.com", nil, "imap,pop3,smtp,smtp,activesync"},
		{"nobody@example.com", false, "nobody@example.com", nil, "imap,pop3,smtp,smtp,activesync"},
		{"twins@example.com", false, "twins@example.com", nil, "imap,pop3,smtp,smtp,activesync"},
		{"x@unknown.org", false, "", ErrUnknownDomain, ""},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			a, err := r.Resolve(context.Background(), mustAddr(t, tc.addr))
			if tc.errIs != nil {
				if !errors.Is(err, tc.errIs) {
					t.Fatalf("err %v, want %v", err, tc.errIs)
				}
				return
			}
			if err != nil || a.Known != tc.known || a.Services[0].Login != tc.login || kinds(a) != tc.kindsS {
				t.Errorf("got %v known=%v login=%s kinds=%s", err, a.Known, a.Services[0].Login, kinds(a))
			}
		})
	}
}

func TestResolveRejectMode(t *testing.T) {
	dir := &fakeDirectory{entries: map[string]*ldapsource.Entry{}}
	pol, _ := New(Config{Unknown: UnknownReject})
	r, _ := NewResolver(dir, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
	if _, err := r.Resolve(context.Background(), mustAddr(t, "nobody@example.com")); !errors.Is(err, ErrRejected) {
		t.Errorf("got %v, want ErrRejected", err)
	}
}

// A caller that gives up does not fail the others waiting on the same search.
func TestResolveCallerCancellation(t *testing.T) {
	r, dir, _ := newTestResolver(t, DefaultCacheConfig())
	gate := make(chan struct{})
	dir.set(func(f *fakeDirectory) { f.gate = gate })
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, mustAddr(t, "bob@example.com"))
		first <- err
	}()
	for dir.searches.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	second := make(chan *Account, 1)
	go func() {
		a, _ := r.Resolve(context.Background(), mustAddr(t, "bob@example.com"))
		second <- a
	}()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v", err)
	}
	close(gate)
	if a := <-second; a == nil || !a.Known {
		t.Fatalf("second caller got %+v", a)
	}
}

func TestResolveExplain(t *testing.T) {
	r, dir, _ := newTestResolver(t, DefaultCacheConfig())
	for range 2 {
		_, ex, err := r.Explain(context.Background(), mustAddr(t, "bob@example.com"))
		if err != nil || !ex.Found || !strings.Contains(ex.Reason, "enabled") {
			t.Fatalf("explain: %v %+v", err, ex)
		}
	}
	if dir.searches.Load() != 2 {
		t.Errorf("Explain must bypass the cache: %d searches", dir.searches.Load())
	}
	_, ex, err := r.Explain(context.Background(), mustAddr(t, "twins@example.com"))
	if err != nil || !strings.Contains(ex.Reason, "more than one") {
		t.Errorf("ambiguous explain: %v %+v", err, ex)
	}
}

func TestCacheConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg    CacheConfig
		errHas string
	}{
		{CacheConfig{TTL: 0, NegativeTTL: 1, OnDirectoryError: "defaults"}, "cache.ttl"},
		{CacheConfig{TTL: 1, NegativeTTL: 0, OnDirectoryError: "defaults"}, "cache.negative_ttl"},
		{CacheConfig{TTL: 1, NegativeTTL: 1, StaleFor: -1, OnDirectoryError: "defaults"}, "cache.stale_for"},
		{CacheConfig{TTL: 1, NegativeTTL: 1, OnDirectoryError: "panic"}, "cache.on_directory_error"},
	} {
		if err := tc.cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%+v: %v, want error naming %s", tc.cfg, err, tc.errHas)
		}
	}
}

func BenchmarkResolveCached(b *testing.B) {
	r, _, _ := newTestResolver(b, DefaultCacheConfig())
	addr := mustAddr(b, "bob@example.com")
	ctx := context.Background()
	if _, err := r.Resolve(ctx, addr); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(ctx, addr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestBreakerStaleAnswerWhileDirectoryHangs: a directory that has just
// hung (no answer, no error yet: its breaker has not opened) holds up a
// stale cached answer by staleGraceTime, not by the directory's timeout;
// the search goes on and caches what the directory says when it answers.
func TestBreakerStaleAnswerWhileDirectoryHangs(t *testing.T) {
	cfg := CacheConfig{TTL: time.Minute, NegativeTTL: time.Minute, StaleFor: 10 * time.Minute, OnDirectoryError: "defaults"}
	r, dir, clk := newTestResolver(t, cfg)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, mustAddr(t, "bob@example.com")); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	dir.set(func(f *fakeDirectory) {
		f.gate = gate
		f.entries["bob@example.com"] = entry(map[string][]string{"uid": {"bob.renamed"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}})
	})
	clk.Advance(2 * time.Minute) // stale, within stale_for
	var took []time.Duration
	for range 20 {
		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		a, err := r.Resolve(wctx, mustAddr(t, "bob@example.com"))
		cancel()
		took = append(took, time.Since(start))
		if err != nil || !a.Known || a.Services[0].Login != "bob.login" {
			t.Fatalf("while the directory hangs: %v %+v; want bob's stale answer", err, a)
		}
	}
	slowest := slices.Max(took)
	t.Logf("stale answers while the directory hangs: slowest %v (grace %v)", slowest, staleGraceTime)
	if slowest > 10*staleGraceTime {
		t.Errorf("a stale answer took %v; want about %v", slowest, staleGraceTime)
	}
	if n := dir.searches.Load(); n != 2 {
		t.Errorf("%d searches; want 2 (the first, then one search for all the waiting lookups)", n)
	}
	// The directory answers: the search in flight caches the new entry.
	close(gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, err := r.Resolve(ctx, mustAddr(t, "bob@example.com"))
		if err == nil && a.Services[0].Login == "bob.renamed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the directory answered: %v %+v; want the new entry", err, a)
		}
		time.Sleep(time.Millisecond)
	}
}

// gatedBurst runs f(0) … f(n-1) at once, each in a goroutine of its own,
// while the fake directory holds its answers back on gate: once all have
// started and settle has let them reach the resolver, gate opens. It
// fails the test with the first error f returned.
func gatedBurst(t *testing.T, n int, gate chan struct{}, settle func(), f func(i int) error) {
	t.Helper()
	var wg, started sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			errs <- f(i)
		}()
	}
	started.Wait()
	settle()
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// ResolveCached answers, without the directory, exactly the lookups that
// Resolve answers from the cache with a known address, with the same
// pointer; anything else (not yet asked, unknown, disabled, stale, a
// domain not served) is left to Resolve.
func TestResolveCachedKnownOnly(t *testing.T) {
	cfg := CacheConfig{TTL: time.Minute, NegativeTTL: time.Minute, StaleFor: 10 * time.Minute, OnDirectoryError: "defaults"}
	r, dir, clk := newTestResolver(t, cfg)
	ctx := context.Background()
	for _, tc := range []struct {
		addr      string
		askFirst  bool
		advance   time.Duration
		wantKnown bool
	}{
		{"bob@example.com", false, 0, false},
		{"bob@example.com", true, 0, true},
		{"carol@example.com", true, 0, false},  // disabled: a negative entry
		{"nobody@example.com", true, 0, false}, // unknown
		{"bob@example.com", true, 2 * time.Minute, false},
		{"bob@other.example", false, 0, false},
	} {
		addr := mustAddr(t, tc.addr)
		var want *Account
		if tc.askFirst {
			a, err := r.Resolve(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			want = a
		}
		clk.Advance(tc.advance)
		searches := dir.searches.Load()
		got, ok := r.ResolveCached(addr)
		if ok != tc.wantKnown || (ok && got != want) {
			t.Errorf("%+v: ResolveCached = %p, %v; want %p, %v", tc, got, ok, want, tc.wantKnown)
		}
		if n := dir.searches.Load() - searches; n != 0 {
			t.Errorf("%+v: %d directory searches", tc, n)
		}
		r.cache.DeleteFunc(func(Address) bool { return true })
	}
}
