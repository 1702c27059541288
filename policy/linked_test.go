package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// linkedDirectory is a fakeDirectory that also serves linked entries, by
// the filter that finds them (or the DN, for a fixed DN), and can fail or
// hang on any of them.
type linkedDirectory struct {
	*fakeDirectory
	mu     sync.Mutex
	linked map[string]*ldapsource.Entry
	fail   map[string]error // errHang: answers a timeout after a while
	finds  map[string]int   // searches by key
}

// searched returns how many searches asked for key.
func (f *linkedDirectory) searched(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.finds[key]
}

var errHang = errors.New("hang")

func (f *linkedDirectory) FindLinked(ctx context.Context, q ldapsource.LinkedQuery, attrs []string) (*ldapsource.Entry, error) {
	key := q.Filter
	if key == "" {
		key = q.BaseDN
	}
	f.mu.Lock()
	f.finds[key]++
	e, err := f.linked[key], f.fail[key]
	f.mu.Unlock()
	switch {
	case errors.Is(err, errHang):
		// ldapsource gives up after ldap.request_timeout.
		time.Sleep(30 * time.Millisecond)
		return nil, fmt.Errorf("ldap search at ldap://hung: %w", context.DeadlineExceeded)
	case err != nil:
		return nil, err
	case e == nil:
		return nil, ldapsource.ErrNotFound
	}
	return e, nil
}

func (f *linkedDirectory) setFail(key string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[key] = err
}

const (
	cosStudents = "id-students"
	cosStaff    = "id-staff"
	cosDefault  = "id-default"
	defaultDN   = "cn=default,cn=cos,cn=zimbra"
)

func cosFilter(id string) string { return "(&(objectClass=zimbraCOS)(zimbraId=" + id + "))" }
func domainFilter(d string) string {
	return "(&(objectClass=zimbraDomain)(zimbraDomainName=" + d + "))"
}

// newZimbraResolver serves the zimbra preset from a fake directory with
// three classes of service: default (POP3 on), students (POP3 off) and
// staff (POP3 off, mobile sync on), the domain school.test whose default
// is staff, and example.com, which names none.
func newZimbraResolver(t *testing.T, cfg CacheConfig, users map[string]map[string][]string) (*Resolver, *linkedDirectory, *clock) {
	t.Helper()
	cos := func(name, id, pop, mobile string) *ldapsource.Entry {
		e := entry(map[string][]string{"cn": {name}, "zimbraId": {id}, "zimbraImapEnabled": {"TRUE"},
			"zimbraPop3Enabled": {pop}, "zimbraFeatureMobileSyncEnabled": {mobile}})
		e.DN = "cn=" + name + ",cn=cos,cn=zimbra"
		return e
	}
	school := entry(map[string][]string{"zimbraDomainName": {"school.test"}, "zimbraDomainDefaultCOSId": {cosStaff}})
	school.DN = "dc=school,dc=test"
	example := entry(map[string][]string{"zimbraDomainName": {"example.com"}})
	example.DN = "dc=example,dc=com"
	dir := &linkedDirectory{
		fakeDirectory: &fakeDirectory{entries: map[string]*ldapsource.Entry{}},
		linked: map[string]*ldapsource.Entry{
			cosFilter(cosStudents):      cos("students", cosStudents, "FALSE", "FALSE"),
			cosFilter(cosStaff):         cos("staff", cosStaff, "FALSE", "TRUE"),
			defaultDN:                   cos("default", cosDefault, "TRUE", "FALSE"),
			cosFilter(cosDefault):       cos("default", cosDefault, "TRUE", "FALSE"),
			domainFilter("school.test"): school,
			domainFilter("example.com"): example,
		},
		fail:  map[string]error{},
		finds: map[string]int{},
	}
	for addr, attrs := range users {
		e := entry(attrs)
		e.DN = "uid=" + addr + ",ou=people"
		dir.entries[addr] = e
	}
	pol, err := New(Config{Preset: "zimbra"})
	if err != nil {
		t.Fatal(err)
	}
	svc := []ServiceConfig{
		{Type: "imap", Host: "mail.example.com"}, {Type: "pop3", Host: "mail.example.com"},
		{Type: "smtp", Host: "mail.example.com"}, {Type: "activesync", URL: "https://mail.example.com/Microsoft-Server-ActiveSync"},
	}
	ds, err := NewDomains([]DomainConfig{
		{Name: "example.com", Services: svc, DefaultServices: []string{"imap", "smtp"}},
		{Name: "school.test", Services: svc, DefaultServices: []string{"imap", "smtp"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, pol, ds, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.now = clk.Now
	return r, dir, clk
}

// zimbraUser is an active account delivered at addr, with more attributes
// as name, value pairs.
func zimbraUser(addr string, more ...string) map[string][]string {
	a := map[string][]string{"zimbraAccountStatus": {"active"}, "zimbraMailDeliveryAddress": {addr}}
	for i := 0; i+1 < len(more); i += 2 {
		a[more[i]] = []string{more[i+1]}
	}
	return a
}

// The account's own value wins, then the COS its zimbraCOSId names, then
// its domain's default COS, then the COS named default.
func TestPresetZimbraInheritanceOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		user      map[string][]string
		noDefault bool   // the COS default is missing
		pop3      bool   // the decision
		rule      string // the pop3 rule's explanation
	}{
		{"own value over its COS", zimbraUser("u@example.com", "zimbraCOSId", cosStudents, "zimbraPop3Enabled", "TRUE"),
			false, true, `zimbraPop3Enabled equals "TRUE" is true`},
		{"own FALSE over COS default", zimbraUser("u@example.com", "zimbraPop3Enabled", "FALSE"),
			false, false, `zimbraPop3Enabled equals "TRUE" is false`},
		{"zimbraCOSId", zimbraUser("u@school.test", "zimbraCOSId", cosStudents),
			false, false, `zimbraPop3Enabled equals "TRUE" is false, from cos "students"`},
		{"zimbraCOSId over the domain default", zimbraUser("u@school.test", "zimbraCOSId", cosDefault),
			false, true, `zimbraPop3Enabled equals "TRUE" is true, from cos "default"`},
		{"domain default", zimbraUser("u@school.test"),
			false, false, `zimbraPop3Enabled equals "TRUE" is false, from cos "staff"`},
		{"dangling zimbraCOSId: the domain default", zimbraUser("u@school.test", "zimbraCOSId", "id-gone"),
			false, false, `zimbraPop3Enabled equals "TRUE" is false, from cos "staff"`},
		{"no domain default: COS default", zimbraUser("u@example.com"),
			false, true, `zimbraPop3Enabled equals "TRUE" is true, from cos "default"`},
		{"no domain entry: COS default", zimbraUser("u@nowhere.test"),
			false, true, `zimbraPop3Enabled equals "TRUE" is true, from cos "default"`},
		{"no COS at all: off", zimbraUser("u@example.com"),
			true, false, `zimbraPop3Enabled equals "TRUE" is false, missing: no cos found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := newZimbraResolver(t, DefaultCacheConfig(), map[string]map[string][]string{"u@example.com": tc.user})
			if tc.noDefault {
				delete(dir.linked, defaultDN)
			}
			acct, err := r.Resolve(context.Background(), mustAddr(t, "u@example.com"))
			if err != nil || !acct.Known || acct.Has(POP3) != tc.pop3 {
				t.Fatalf("resolve: %v, known %t, pop3 %t, want %t", err, acct != nil && acct.Known, acct != nil && acct.Has(POP3), tc.pop3)
			}
			_, ex, err := r.Explain(context.Background(), mustAddr(t, "u@example.com"))
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range ex.Services {
				if d.Service == string(POP3) && (d.Rule != tc.rule || d.Allowed != tc.pop3) {
					t.Errorf("pop3 decision %+v, want rule %q", d, tc.rule)
				}
			}
		})
	}
}

// A linked entry the directory cannot read fails the lookup as a
// directory failure: the account never gets a service because its COS
// could not be read.
func TestPresetZimbraLinkedFailures(t *testing.T) {
	users := map[string]map[string][]string{
		"ada@example.com": zimbraUser("ada@example.com", "zimbraCOSId", cosStudents),
		"eve@example.com": zimbraUser("eve@example.com", "zimbraCOSId", cosStudents),
	}
	for _, tc := range []struct {
		name    string
		err     error
		onError string
		want    string // "defaults", "unavailable"
	}{
		{"outage, defaults", errors.New("ldap: connection refused"), "defaults", "defaults"},
		{"outage, fail", errors.New("ldap: connection refused"), "fail", "unavailable"},
		{"hang, defaults", errHang, "defaults", "defaults"},
		{"hang, fail", errHang, "fail", "unavailable"},
		// Two classes of service with one id: no answer about the user,
		// so not "unknown" (which "fail" would not refuse) either.
		{"ambiguous COS, fail", &ldapsource.AmbiguousError{Complete: true}, "fail", "unavailable"},
		{"misconfigured base, fail", &ldapsource.Error{Kind: ldapsource.Configuration, Key: "policy.linked[1].base_dn", Err: errors.New("no such object")}, "fail", "unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultCacheConfig()
			cfg.OnDirectoryError = tc.onError
			r, dir, clk := newZimbraResolver(t, cfg, users)
			dir.setFail(cosFilter(cosStudents), tc.err)
			acct, err := r.Resolve(context.Background(), mustAddr(t, "ada@example.com"))
			switch tc.want {
			case "defaults":
				// The domain's default_services (imap, smtp), login the
				// typed address: not ada's account with POP3 from nowhere.
				if err != nil || acct.Known || kinds(acct) != "imap,smtp" {
					t.Errorf("got %v %+v, want the domain defaults", err, acct)
				}
			case "unavailable":
				if !errors.Is(err, ErrDirectoryUnavailable) {
					t.Errorf("got %v %+v, want ErrDirectoryUnavailable", err, acct)
				}
			}
			if _, _, err := r.Explain(context.Background(), mustAddr(t, "ada@example.com")); err == nil || !strings.Contains(err.Error(), "linked entry cos") {
				t.Errorf("explain: %v, want the linked entry's failure", err)
			}

			// Once read, the COS serves stale while the directory fails:
			// eve, not cached herself, is decided with it.
			dir.setFail(cosFilter(cosStudents), nil)
			if acct, err := r.Resolve(context.Background(), mustAddr(t, "ada@example.com")); err != nil || !acct.Known || acct.Has(POP3) || !acct.Has(IMAP) {
				t.Fatalf("ada after recovery: %v %+v", err, acct)
			}
			clk.Advance(cfg.TTL + time.Second)
			dir.setFail(cosFilter(cosStudents), tc.err)
			acct, err = r.Resolve(context.Background(), mustAddr(t, "eve@example.com"))
			if err != nil || !acct.Known || acct.Has(POP3) || !acct.Has(IMAP) {
				t.Errorf("eve with a stale COS: %v %+v", err, acct)
			}
		})
	}
}

// Users of one COS share its search: concurrent misses collapse into
// one, and later users read the cache until the TTL ends.
func TestPresetZimbraLinkedCachedPerEntry(t *testing.T) {
	users := map[string]map[string][]string{}
	const n = 200
	for i := range n {
		a := fmt.Sprintf("u%d@example.com", i)
		users[a] = zimbraUser(a, "zimbraCOSId", cosStudents)
	}
	r, dir, clk := newZimbraResolver(t, DefaultCacheConfig(), users)
	gate := make(chan struct{})
	dir.set(func(f *fakeDirectory) { f.gate = gate })
	gatedBurst(t, n, gate, func() {
		for dir.searches.Load() < n {
			time.Sleep(time.Millisecond)
		}
	}, func(i int) error {
		a, err := r.Resolve(context.Background(), mustAddr(t, fmt.Sprintf("u%d@example.com", i)))
		if err == nil && (!a.Known || a.Has(POP3)) {
			err = fmt.Errorf("u%d: %+v", i, a)
		}
		return err
	})
	if got := dir.searched(cosFilter(cosStudents)); got != 1 {
		t.Errorf("%d users of one COS: %d searches for it, want 1", n, got)
	}
	// After the TTL, the next user searches it again, once.
	clk.Advance(DefaultCacheConfig().TTL + time.Second)
	users["late@example.com"] = zimbraUser("late@example.com", "zimbraCOSId", cosStudents)
	dir.set(func(f *fakeDirectory) { f.entries["late@example.com"] = entry(users["late@example.com"]) })
	for range 2 {
		if _, err := r.Resolve(context.Background(), mustAddr(t, "late@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	if got := dir.searched(cosFilter(cosStudents)); got != 2 {
		t.Errorf("after the TTL: %d searches for the COS, want 2", got)
	}
}

// A reload carries the linked entries with the accounts: the next user of
// a COS read before it costs no search for the COS.
func TestPresetZimbraLinkedCarried(t *testing.T) {
	users := map[string]map[string][]string{
		"ada@example.com": zimbraUser("ada@example.com", "zimbraCOSId", cosStudents),
		"eve@example.com": zimbraUser("eve@example.com", "zimbraCOSId", cosStudents),
	}
	old, dir, _ := newZimbraResolver(t, DefaultCacheConfig(), users)
	if _, err := old.Resolve(context.Background(), mustAddr(t, "ada@example.com")); err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, old.pol, old.domains, DefaultCacheConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.now = old.now
	r.CarryCache(old, nil)
	if acct, err := r.Resolve(context.Background(), mustAddr(t, "eve@example.com")); err != nil || !acct.Known || acct.Has(POP3) {
		t.Fatalf("eve: %v %+v", err, acct)
	}
	if got := dir.searched(cosFilter(cosStudents)); got != 1 {
		t.Errorf("the COS was searched %d times across the reload, want 1", got)
	}
}

// host_override_services: [] turns the preset's zimbraMailHost off, for
// clients that reach every mailbox through Zimbra's proxy.
func TestPresetZimbraHostOverrideOff(t *testing.T) {
	d := testDomains(t)["example.com"]
	e := entry(zimbraUser("u@example.com", "zimbraMailHost", "mbox1.example.com", "zimbraImapEnabled", "TRUE"))
	for _, tc := range []struct {
		kinds []string
		host  string
	}{{nil, "mbox1.example.com"}, {[]string{}, "mail.example.com"}} {
		pol, err := New(Config{Preset: "zimbra", HostOverrideKinds: tc.kinds})
		if err != nil {
			t.Fatal(err)
		}
		acct, _ := pol.Decide(d, mustAddr(t, "u@example.com"), e)
		if s, ok := acct.First(IMAP); !ok || s.Host != tc.host {
			t.Errorf("host_override_services %#v: imap %+v, want host %s", tc.kinds, s, tc.host)
		}
	}
}

// policy.linked errors name the key, the value and the fix.
func TestPresetLinkedConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linked []LinkedConfig
		err    string
	}{
		{"no name", []LinkedConfig{{Find: []string{"(zimbraId={zimbraCOSId})"}}}, `policy.linked[0].name: ""`},
		{"twice", []LinkedConfig{{Name: "cos", DN: "cn=a"}, {Name: "COS", DN: "cn=b"}}, `policy.linked[1].name: "COS" is used twice`},
		{"nothing to find by", []LinkedConfig{{Name: "cos"}}, "policy.linked[0]: neither find nor dn"},
		{"bad filter", []LinkedConfig{{Name: "cos", Find: []string{"(zimbraId={zimbraCOSId}"}}}, "policy.linked[0].find[0]: "},
		{"later link", []LinkedConfig{{Name: "cos", Find: []string{"(zimbraId={domain.x})"}}, {Name: "domain", DN: "dc=x"}},
			`policy.linked[0].find[0]: placeholder {domain.x}: no linked entry "domain" before this one`},
		{"bad modifier", []LinkedConfig{{Name: "d", Find: []string{"(n={mail:local})"}}}, "policy.linked[0].find[0]: placeholder {mail:local}: unknown :local"},
		{"bad base", []LinkedConfig{{Name: "cos", BaseDN: "not a dn", DN: "cn=x"}}, `policy.linked[0].base_dn: "not a dn" is not a DN`},
		{"bad scope", []LinkedConfig{{Name: "cos", Scope: "deep", DN: "cn=x"}}, `policy.linked[0].scope: "deep"`},
		{"bad inherit", []LinkedConfig{{Name: "cos", DN: "cn=x", Inherit: []string{"a b"}}}, `policy.linked[0].inherit: "a b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Preset: "zimbra", Linked: tc.linked})
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("err = %v, want prefix %q", err, tc.err)
			}
		})
	}
	// A directory that cannot read linked entries is refused at start-up.
	pol, err := New(Config{Preset: "zimbra"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewResolver(&fakeDirectory{}, pol, testDomains(t), DefaultCacheConfig(), nil, nil); err == nil || !strings.Contains(err.Error(), "policy.linked") {
		t.Errorf("NewResolver without FindLinked: %v", err)
	}
}
