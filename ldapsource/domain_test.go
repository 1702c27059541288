package ldapsource_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

// domainLDIF holds iRedMail-style domain entries (objectClass mailDomain)
// under o=domains, as the embedded server sees them.
const domainLDIF = `
dn: o=domains,dc=example,dc=com
objectClass: organization
o: domains

dn: domainName=hosted.example,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: hosted.example
accountStatus: active
domainAliasName: alias.example

dn: domainName=other.example,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: other.example
accountStatus: active
`

const iredmailDomainFilter = "(&(objectClass=mailDomain)(|(domainName={domain})(domainAliasName={domain})))"

func domainServer(t *testing.T) *embedded.Server {
	t.Helper()
	dir, err := embedded.ParseLDIF(strings.NewReader(embedded.DemoLDIF() + domainLDIF))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := embedded.Start(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func domainSearch(t *testing.T, url string, cfg ldapsource.DomainSearchConfig) *ldapsource.DomainSearch {
	t.Helper()
	ds, err := bindSource(t, false, "", url).DomainSearch(cfg, []string{"domainName", "accountStatus"})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestDomainSearchFinds(t *testing.T) {
	srv := domainServer(t)
	ds := domainSearch(t, srv.URL, ldapsource.DomainSearchConfig{BaseDN: "o=domains,dc=example,dc=com", Scope: "one", Filter: iredmailDomainFilter})
	ctx := context.Background()
	for name, wantDN := range map[string]string{
		"hosted.example": "domainName=hosted.example,o=domains,dc=example,dc=com",
		"alias.example":  "domainName=hosted.example,o=domains,dc=example,dc=com",
		"other.example":  "domainName=other.example,o=domains,dc=example,dc=com",
	} {
		e, err := ds.Lookup(ctx, name)
		if err != nil || e.DN != wantDN {
			t.Errorf("Lookup(%s) = %v, %v; want %s", name, e, err, wantDN)
			continue
		}
		if got := e.Values("domainName"); len(got) != 1 {
			t.Errorf("Lookup(%s): domainName %v", name, got)
		}
	}
	if _, err := ds.Lookup(ctx, "nowhere.example"); !errors.Is(err, ldapsource.ErrNotFound) {
		t.Errorf("unknown domain: %v", err)
	}
}

// TestDomainSearchHostileNames sends names that would widen the filter if
// pasted unescaped, and names no domain can have: the first reach the
// directory escaped and find nothing, the second never reach it.
func TestDomainSearchHostileNames(t *testing.T) {
	srv := domainServer(t)
	ds := domainSearch(t, srv.URL, ldapsource.DomainSearchConfig{BaseDN: "o=domains,dc=example,dc=com", Filter: "(&(objectClass=mailDomain)(domainName={domain}))"})
	ctx := context.Background()
	for _, name := range []string{"*", "hosted.example)(objectClass=*", "*.example", `hosted.example\`, "hosted.ex*"} {
		if got := ds.Filter(name); strings.Count(got, "(") != 3 || strings.Contains(got[strings.Index(got, "domainName="):], "*") {
			t.Errorf("Filter(%q) = %s: not escaped", name, got)
		}
		if e, err := ds.Lookup(ctx, name); !errors.Is(err, ldapsource.ErrNotFound) {
			t.Errorf("Lookup(%q) = %v, %v; want not found", name, e, err)
		}
	}
	before := srv.Searches()
	for _, name := range []string{
		"",
		strings.Repeat("a", 64) + ".example",
		strings.Repeat("abcdefgh.", 30) + "example",
		"hosted..example",
		"hosted.example\x00",
		"hosted example",
	} {
		if _, err := ds.Lookup(ctx, name); !errors.Is(err, ldapsource.ErrNotFound) {
			t.Errorf("Lookup(%q): %v, want not found", name, err)
		}
	}
	if n := srv.Searches() - before; n != 0 {
		t.Errorf("%d searches reached the directory for impossible names", n)
	}
}

func TestDomainSearchConfigErrors(t *testing.T) {
	src := bindSource(t, false, "", "ldap://127.0.0.1:1")
	for _, tc := range []struct {
		cfg     ldapsource.DomainSearchConfig
		errHas  string
		keyPath string
	}{
		{ldapsource.DomainSearchConfig{Filter: "(domainName={domain})"}, "missing", "domain_source.base_dn"},
		{ldapsource.DomainSearchConfig{BaseDN: "not a dn", Filter: "(domainName={domain})"}, "not a DN", "domain_source.base_dn"},
		{ldapsource.DomainSearchConfig{BaseDN: "o=domains", Scope: "deep", Filter: "(domainName={domain})"}, "sub, one, base", "domain_source.scope"},
		{ldapsource.DomainSearchConfig{BaseDN: "o=domains", Filter: "(mail={email})"}, "{domain}", "domain_source.filter"},
		{ldapsource.DomainSearchConfig{BaseDN: "o=domains", Filter: "(objectClass=mailDomain)"}, "no {domain}", "domain_source.filter"},
		{ldapsource.DomainSearchConfig{BaseDN: "o=domains", Filter: "(domainName={domain}"}, "not a valid", "domain_source.filter"},
	} {
		_, err := src.DomainSearch(tc.cfg, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.keyPath+":") || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("DomainSearch(%+v) = %v; want %s: …%s…", tc.cfg, err, tc.keyPath, tc.errHas)
		}
	}
}
