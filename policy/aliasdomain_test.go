package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// newAliasDomainResolver serves hosted.example from the directory with
// alias.example as its alias (iRedMail's domainAliasName), and u9, a
// user of hosted.example without pop3secured, with a display name.
func newAliasDomainResolver(t *testing.T) (*Resolver, *fakeDomains, *fakeDirectory, *clock) {
	t.Helper()
	r, fd, dir, clk := newDomainResolver(t)
	fd.mu.Lock()
	fd.entries["alias.example"] = domainEntry("domainName=hosted.example,o=domains,dc=example,dc=com",
		map[string][]string{"domainName": {"hosted.example"}, "domainAliasName": {"alias.example"}, "accountStatus": {"active"}})
	fd.mu.Unlock()
	dir.set(func(f *fakeDirectory) {
		f.entries["u9@hosted.example"] = entry(map[string][]string{"uid": {"u9"}, "mail": {"u9@hosted.example"}, "displayName": {"U Nine"},
			"accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}})
	})
	return r, fd, dir, clk
}

// An address of an alias domain is the primary domain's user: found by
// the same local part under the primary domain (and as asked) in one
// search, decided by that user's rules, logged in as that user, the asked
// address kept.
func TestAliasDomainResolvesThePrimaryDomainsUser(t *testing.T) {
	r, _, dir, _ := newAliasDomainResolver(t)
	ctx := context.Background()
	primary, err := r.Resolve(ctx, mustAddr(t, "u9@hosted.example"))
	if err != nil || !primary.Known {
		t.Fatalf("u9@hosted.example: %+v, %v", primary, err)
	}
	before := dir.searches.Load()
	a, err := r.Resolve(ctx, mustAddr(t, "U9@Alias.Example"))
	if err != nil {
		t.Fatal(err)
	}
	if !a.Known || kinds(a) != "imap,smtp" || a.DisplayName != "U Nine" || a.Primary != "u9@hosted.example" ||
		a.Address.String() != "u9@alias.example" || a.Domain.Name != "alias.example" || a.Domain.AliasOf != "hosted.example" {
		t.Errorf("u9@alias.example: %+v (%s)", a, kinds(a))
	}
	for i, s := range a.Services[:min(len(a.Services), len(primary.Services))] {
		p := primary.Services[i]
		if s.Login != "u9" || s.Host != p.Host || s.Port != p.Port || s.Kind != p.Kind {
			t.Errorf("service %d: %+v, the primary address's %+v", i, s, p)
		}
	}
	if n := dir.searches.Load() - before; n != 1 {
		t.Errorf("the alias address made %d searches, want 1", n)
	}
	q := dir.queries[len(dir.queries)-1]
	if q.Email != "u9@hosted.example" || q.Domain != "hosted.example" || q.Or == nil || q.Or.Email != "u9@alias.example" || q.Or.Domain != "alias.example" {
		t.Errorf("query %+v (or %+v)", q, q.Or)
	}
	// Cached under the asked address, as any address: no search again.
	if _, err := r.Resolve(ctx, mustAddr(t, "u9@alias.example")); err != nil || dir.searches.Load()-before != 1 {
		t.Errorf("cached alias address searched again: %d searches, %v", dir.searches.Load()-before, err)
	}

	// Unknown under both names: the defaults, one search, cached
	// negatively like any unknown address.
	before = dir.searches.Load()
	for range 5 {
		if a, err := r.Resolve(ctx, mustAddr(t, "nobody@alias.example")); err != nil || a.Known || a.Services[0].Login != "nobody@alias.example" {
			t.Fatalf("unknown alias address: %+v, %v", a, err)
		}
	}
	if n := dir.searches.Load() - before; n != 1 {
		t.Errorf("an unknown alias address made %d searches, want 1", n)
	}

	// A directory that lists the alias-domain address on an entry: found
	// by it, in the same single search.
	dir.set(func(f *fakeDirectory) {
		f.entries["sales@alias.example"] = entry(map[string][]string{"uid": {"sam"}, "accountStatus": {"active"}, "enabledService": {"mail", "pop3secured"}})
	})
	if a, err := r.Resolve(ctx, mustAddr(t, "sales@alias.example")); err != nil || !a.Known || kinds(a) != "pop3" || a.Services[0].Login != "sam" {
		t.Errorf("address listed under the alias domain: %+v (%s), %v", a, kinds(a), err)
	}
	// An entry for each name is two users: not a guess, the defaults.
	dir.set(func(f *fakeDirectory) {
		f.entries["u8@hosted.example"] = entry(map[string][]string{"uid": {"u8"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured"}})
		f.entries["u8@alias.example"] = entry(map[string][]string{"uid": {"other"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured"}})
	})
	if a, err := r.Resolve(ctx, mustAddr(t, "u8@alias.example")); err != nil || a.Known {
		t.Errorf("two entries, one per name: %+v, %v", a, err)
	}

	// lookup says how: the alias, both addresses searched, the user found.
	_, ex, err := r.Explain(ctx, mustAddr(t, "u9@alias.example"))
	if err != nil || ex.AliasOf != "hosted.example" || !ex.Found || ex.Login != "u9" ||
		!strings.HasPrefix(ex.Reason, "alias.example is an alias of hosted.example: searched as u9@hosted.example or u9@alias.example; account enabled") {
		t.Errorf("explained: %+v, %v", ex, err)
	}
}

// A login template of the asked address's parts gives the primary
// domain's: the user's real login, not one the mail server does not know.
func TestAliasDomainLoginTemplate(t *testing.T) {
	pol, err := New(Config{Login: "{email}"})
	if err != nil {
		t.Fatal(err)
	}
	d := &Domain{Name: "alias.example", AliasOf: "hosted.example", Services: []Service{{Kind: IMAP, Host: "mail.hosted.example", Port: 993, Auth: []Auth{AuthPasswordCleartext}}}}
	e := entry(map[string][]string{"accountStatus": {"active"}, "enabledService": {"mail", "imapsecured"}})
	a, _ := pol.Decide(d, mustAddr(t, "u9@alias.example"), e)
	if !a.Known || a.Services[0].Login != "u9@hosted.example" {
		t.Errorf("login %+v", a)
	}
}

// Hundreds of concurrent first requests for one alias address share one
// search; the primary address is an address of its own.
func TestAliasDomainConcurrentMissesCollapse(t *testing.T) {
	r, _, dir, _ := newAliasDomainResolver(t)
	if _, err := r.Domain(context.Background(), "alias.example"); err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	dir.set(func(f *fakeDirectory) { f.gate = gate })
	const n = 300
	gatedBurst(t, n, gate, func() { time.Sleep(50 * time.Millisecond) }, func(i int) error {
		addr := "u9@alias.example"
		if i%3 == 0 {
			addr = "u9@hosted.example"
		}
		a, err := r.Resolve(context.Background(), mustAddr(t, addr))
		if err == nil && (!a.Known || kinds(a) != "imap,smtp") {
			err = fmt.Errorf("%s: %+v", addr, a)
		}
		return err
	})
	if got := dir.searches.Load(); got != 2 {
		t.Errorf("%d concurrent lookups of an alias address and its primary made %d searches, want 2", n, got)
	}
}

// Two entries that name the same domain are one domain (Active
// Directory's forest name, once also a UPN suffix); entries naming
// different domains, or more than the search returned, stay ambiguous.
func TestAliasDomainSameDomainEntriesAreOneDomain(t *testing.T) {
	const (
		crossRef   = "CN=EXAMPLE,CN=Partitions,CN=Configuration,DC=example,DC=test"
		partitions = "CN=Partitions,CN=Configuration,DC=example,DC=test"
	)
	ad, err := NewDomainTemplate(DomainSourceConfig{
		Preset:             "active-directory",
		DomainSearchConfig: ldapsource.DomainSearchConfig{BaseDN: partitions},
		Template: DomainTemplateConfig{Provider: "{name}", Services: []ServiceTemplateConfig{
			{ServiceConfig: ServiceConfig{Type: "imap", Host: "mail.{domain}"}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	x := domainEntry(crossRef, map[string][]string{"name": {"crossref"}})
	p := domainEntry(partitions, map[string][]string{"name": {"partitions"}})
	for _, order := range [][]*ldapsource.Entry{{x, p}, {p, x}} {
		fd := &fakeDomains{entries: map[string]*ldapsource.Entry{}, several: map[string]*ldapsource.AmbiguousError{
			"example.test": {Entries: order, Complete: true},
			"partial.test": {Entries: order, Complete: false},
		}}
		ds, err := NewDomainSource(fd, ad, DefaultCacheConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ds.Domain(context.Background(), "example.test")
		if err != nil || d.Provider != "crossref" || d.Services[0].Host != "mail.example.test" {
			t.Errorf("forest domain, entries %s first: %+v, %v", order[0].DN, d, err)
		}
		if ex, err := ds.Explain(context.Background(), "example.test"); err != nil || ex.Origin.Entry != crossRef {
			t.Errorf("explained: %+v, %v", ex, err)
		}
		if _, err := ds.Explain(context.Background(), "partial.test"); !errors.Is(err, ErrUnknownDomain) || !errors.Is(err, ldapsource.ErrAmbiguous) {
			t.Errorf("more entries than the search returned: %v", err)
		}
	}

	ired := iredmailTemplate(t)
	c7 := domainEntry("domainName=c7.test,o=domains,dc=example,dc=com", activeDomain("c7.test"))
	c7b := domainEntry("domainName=c7.test,o=other,dc=example,dc=com", activeDomain("c7.test"))
	d8 := domainEntry("domainName=d8.test,o=domains,dc=example,dc=com", map[string][]string{"domainName": {"d8.test"}, "domainAliasName": {"c7.test"}})
	noName := domainEntry("cn=x,o=domains,dc=example,dc=com", map[string][]string{"cn": {"x"}})
	for _, tc := range []struct {
		name    string
		entries []*ldapsource.Entry
		want    *ldapsource.Entry
	}{
		{"same name", []*ldapsource.Entry{c7b, c7}, c7},
		{"different domains", []*ldapsource.Entry{c7, d8}, nil},
		{"an entry naming none", []*ldapsource.Entry{c7, noName}, nil},
	} {
		got, ok := ired.oneDomain("c7.test", &ldapsource.AmbiguousError{Entries: tc.entries, Complete: true})
		if ok != (tc.want != nil) || got != tc.want {
			t.Errorf("%s: %v %v, want %v", tc.name, got, ok, tc.want)
		}
	}
}
