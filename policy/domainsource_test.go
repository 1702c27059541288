package policy

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// fakeDomains serves domain entries by name, counts searches, and can be
// made slow or broken.
type fakeDomains struct {
	mu       sync.Mutex
	entries  map[string]*ldapsource.Entry
	err      error
	gate     chan struct{}
	searches atomic.Int64
	// several are the ambiguities the search answers, by name.
	several map[string]*ldapsource.AmbiguousError
}

func (f *fakeDomains) Lookup(ctx context.Context, name string) (*ldapsource.Entry, error) {
	f.searches.Add(1)
	f.mu.Lock()
	gate, err, e, several := f.gate, f.err, f.entries[name], f.several[name]
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	switch {
	case err != nil:
		return nil, err
	case several != nil:
		return nil, several
	case e == nil:
		return nil, ldapsource.ErrNotFound
	}
	return e, nil
}

func (f *fakeDomains) set(name string, attrs map[string][]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if attrs == nil {
		delete(f.entries, name)
		return
	}
	f.entries[name] = domainEntry("domainName="+name+",o=domains,dc=example,dc=com", attrs)
}

func activeDomain(name string, extra ...string) map[string][]string {
	return map[string][]string{"domainName": {name}, "accountStatus": {"active"}, "disabledService": extra}
}

// newDomainResolver is newTestResolver with the iRedMail domain template
// serving hosted.example from the directory beside the configured
// example.com.
func newDomainResolver(t *testing.T) (*Resolver, *fakeDomains, *fakeDirectory, *clock) {
	t.Helper()
	r, dir, clk := newTestResolver(t, DefaultCacheConfig())
	dir.set(func(f *fakeDirectory) {
		f.entries["bob@hosted.example"] = entry(map[string][]string{"uid": {"bob"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "pop3secured", "smtpsecured"}})
	})
	fd := &fakeDomains{entries: map[string]*ldapsource.Entry{}}
	fd.set("hosted.example", activeDomain("hosted.example"))
	ds, err := NewDomainSource(fd, iredmailTemplate(t), DefaultCacheConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ds.now = clk.Now
	r.UseDomainSource(ds)
	return r, fd, dir, clk
}

func TestDomainSourceAnswers(t *testing.T) {
	r, fd, _, _ := newDomainResolver(t)
	ctx := context.Background()
	d, err := r.Domain(ctx, "hosted.example")
	if err != nil || d.Name != "hosted.example" || len(d.Services) != 4 {
		t.Fatalf("Domain(hosted.example) = %+v, %v", d, err)
	}
	if _, err := r.Domain(ctx, "nowhere.example"); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("unknown domain: %v", err)
	}
	// Only lookup shows where a domain came from: the cache keeps no Origin.
	if ex, err := r.DomainSource().Explain(ctx, "hosted.example"); d.Origin != nil || err != nil || ex.Origin == nil || len(ex.Origin.Services) != 4 {
		t.Errorf("origin: cached %+v, explained %+v (%v)", d.Origin, ex, err)
	}
	// The configured domain wins without asking the directory.
	fd.set("example.com", activeDomain("example.com"))
	before := fd.searches.Load()
	if d, err := r.Domain(ctx, "example.com"); err != nil || d.Provider != "Example Mail" {
		t.Errorf("configured domain: %+v, %v", d, err)
	}
	if fd.searches.Load() != before {
		t.Error("a configured domain was searched in the directory")
	}
	a, err := r.Resolve(ctx, mustAddr(t, "Bob@Hosted.Example"))
	if err != nil || !a.Known || a.Domain != d && a.Domain.Name != "hosted.example" || kinds(a) != "imap,pop3,smtp" {
		t.Errorf("Resolve(bob@hosted.example) = %+v (%s), %v", a, kinds(a), err)
	}
	if _, err := r.Resolve(ctx, mustAddr(t, "bob@nowhere.example")); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("address of an unknown domain: %v", err)
	}
	// A cached user of a cached directory domain is answered without the
	// directory; one of a domain not served is left to Resolve.
	if c, ok := r.ResolveCached(mustAddr(t, "bob@hosted.example")); !ok || c != a {
		t.Errorf("ResolveCached(bob@hosted.example) = %p, %v; want %p, true", c, ok, a)
	}
	if _, ok := r.ResolveCached(mustAddr(t, "bob@nowhere.example")); ok {
		t.Error("ResolveCached answered for a domain not served")
	}
}

// An unknown domain costs one search per negative TTL, and a domain added
// meanwhile is answered once it has passed; one disabled, once the TTL has.
func TestDomainSourceTTLs(t *testing.T) {
	r, fd, _, clk := newDomainResolver(t)
	ctx := context.Background()
	cfg := DefaultCacheConfig()
	for range 50 {
		if _, err := r.Domain(ctx, "new.example"); !errors.Is(err, ErrUnknownDomain) {
			t.Fatalf("new.example before it exists: %v", err)
		}
	}
	if n := fd.searches.Load(); n != 1 {
		t.Errorf("50 lookups of an unknown domain made %d searches, want 1", n)
	}
	fd.set("new.example", activeDomain("new.example"))
	clk.Advance(cfg.NegativeTTL - time.Second)
	if _, err := r.Domain(ctx, "new.example"); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("within the negative TTL: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := r.Domain(ctx, "new.example"); err != nil {
		t.Errorf("after the negative TTL: %v", err)
	}
	fd.set("new.example", map[string][]string{"domainName": {"new.example"}, "accountStatus": {"disabled"}})
	clk.Advance(cfg.TTL - time.Second)
	if _, err := r.Domain(ctx, "new.example"); err != nil {
		t.Errorf("disabled, within the TTL: %v", err)
	}
	clk.Advance(time.Second)
	if _, err := r.Domain(ctx, "new.example"); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("disabled, after the TTL: %v", err)
	}
}

func TestDomainSourceConcurrentLookupsCollapse(t *testing.T) {
	r, fd, _, _ := newDomainResolver(t)
	gate := make(chan struct{})
	fd.mu.Lock()
	fd.gate = gate
	fd.mu.Unlock()
	const n = 300
	// Let them reach the flight before the directory answers.
	gatedBurst(t, 2*n, gate, func() { time.Sleep(50 * time.Millisecond) }, func(i int) error {
		name := "hosted.example"
		if i%2 == 1 {
			name = "unknown.example"
		}
		_, err := r.Domain(context.Background(), name)
		if name == "unknown.example" && errors.Is(err, ErrUnknownDomain) {
			err = nil
		}
		return err
	})
	if got := fd.searches.Load(); got != 2 {
		t.Errorf("%d concurrent lookups of two domains made %d searches, want 2", 2*n, got)
	}
}

func TestDomainSourceDirectoryDown(t *testing.T) {
	r, fd, _, clk := newDomainResolver(t)
	ctx := context.Background()
	if _, err := r.Domain(ctx, "hosted.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Domain(ctx, "gone.example"); !errors.Is(err, ErrUnknownDomain) {
		t.Fatal(err)
	}
	fd.mu.Lock()
	fd.err = errors.New("connection refused")
	fd.mu.Unlock()
	clk.Advance(DefaultCacheConfig().TTL + time.Minute)
	if d, err := r.Domain(ctx, "hosted.example"); err != nil || d.Name != "hosted.example" {
		t.Errorf("stale domain while down: %v, %v", d, err)
	}
	if _, err := r.Domain(ctx, "gone.example"); !errors.Is(err, ErrUnknownDomain) {
		t.Errorf("stale unknown domain while down: %v", err)
	}
	if _, err := r.Domain(ctx, "never.example"); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Errorf("uncached domain while down: %v, want ErrDirectoryUnavailable", err)
	}
	if _, err := r.Resolve(ctx, mustAddr(t, "x@never.example")); !errors.Is(err, ErrDirectoryUnavailable) {
		t.Errorf("address of an uncached domain while down: %v", err)
	}
}

// A service the domain switches off reaches accounts cached before: they
// are decided anew with the changed domain, and only then.
func TestDomainSourceSwitchReachesCachedAccounts(t *testing.T) {
	r, fd, dir, clk := newDomainResolver(t)
	ctx := context.Background()
	bob := mustAddr(t, "bob@hosted.example")
	if a, err := r.Resolve(ctx, bob); err != nil || kinds(a) != "imap,pop3,smtp" {
		t.Fatalf("before: %s, %v", kinds(a), err)
	}
	clk.Advance(DefaultCacheConfig().TTL) // the domain is due, the account too
	searches := dir.searches.Load()
	if a, err := r.Resolve(ctx, bob); err != nil || kinds(a) != "imap,pop3,smtp" {
		t.Fatalf("unchanged domain: %s, %v", kinds(a), err)
	}
	dir.searches.Store(searches)
	clk.Advance(time.Second)
	if _, err := r.Resolve(ctx, bob); err != nil || dir.searches.Load() != searches {
		t.Errorf("unchanged domain: the account was searched again (%d searches)", dir.searches.Load()-searches)
	}
	fd.set("hosted.example", activeDomain("hosted.example", "pop3"))
	clk.Advance(DefaultCacheConfig().TTL)
	if a, err := r.Resolve(ctx, bob); err != nil || kinds(a) != "imap,smtp" {
		t.Errorf("pop3 off for the domain: %s, %v", kinds(a), err)
	}
}

func TestDomainSourceCarry(t *testing.T) {
	r, fd, _, _ := newDomainResolver(t)
	ctx := context.Background()
	if _, err := r.Domain(ctx, "hosted.example"); err != nil {
		t.Fatal(err)
	}
	same, err := NewDomainSource(fd, iredmailTemplate(t), DefaultCacheConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	same.now = r.DomainSource().now
	if n := same.CarryFrom(r.DomainSource()); n != 1 {
		t.Errorf("same template carried %d domains, want 1", n)
	}
	changed := iredmailTemplate(t)
	changed.fingerprint += "x"
	other, err := NewDomainSource(fd, changed, DefaultCacheConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	other.now = r.DomainSource().now
	if n := other.CarryFrom(r.DomainSource()); n != 0 || other.Len() != 0 {
		t.Errorf("changed template carried %d domains, want 0", n)
	}
}
