package ldapsource_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// aliasLDIF: c7.test with its alias domain alias7.test; d8.test claiming
// c7.test as an alias too; dup.test held by two entries, three.test by
// three. u9 is c7.test's user, sam lists an address of the alias domain,
// and u8 of c7.test has a namesake listed under alias7.test.
const aliasLDIF = `dn: o=domains,dc=example,dc=com
objectClass: organization
o: domains

dn: domainName=c7.test,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: c7.test
domainAliasName: alias7.test
accountStatus: active

dn: domainName=d8.test,o=domains,dc=example,dc=com
objectClass: mailDomain
domainName: d8.test
domainAliasName: c7.test
accountStatus: active

dn: cn=dup one,o=domains,dc=example,dc=com
objectClass: mailDomain
cn: dup one
domainName: dup.test

dn: cn=dup two,o=domains,dc=example,dc=com
objectClass: mailDomain
cn: dup two
domainName: dup.test

dn: cn=three a,o=domains,dc=example,dc=com
objectClass: mailDomain
cn: three a
domainName: three.test

dn: cn=three b,o=domains,dc=example,dc=com
objectClass: mailDomain
cn: three b
domainName: three.test

dn: cn=three c,o=domains,dc=example,dc=com
objectClass: mailDomain
cn: three c
domainName: three.test

dn: uid=u9,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: u9
cn: U Nine
sn: Nine
mail: u9@c7.test

dn: uid=sam,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: sam
cn: Sam
sn: Sam
mail: sam@c7.test
shadowAddress: sales@alias7.test

dn: uid=u8,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: u8
cn: U Eight
sn: Eight
mail: u8@c7.test

dn: uid=u8b,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: u8b
cn: U Eight B
sn: Eight
shadowAddress: u8@alias7.test
`

// A query with an alternative address finds the entry by either, in one
// search, with both addresses escaped; an entry for each is ambiguous.
func TestAliasDomainLookupSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(aliasLDIF))
	src := slapdSource(t, slapdConfig(srv.CAFile, true, srv.URL), "uid")
	ctx := context.Background()
	q := func(local string) ldapsource.Query {
		return ldapsource.Query{Email: local + "@c7.test", Local: local, Domain: "c7.test",
			Or: &ldapsource.Query{Email: local + "@alias7.test", Local: local, Domain: "alias7.test"}}
	}
	if _, err := src.Lookup(ctx, q("warm")); !errors.Is(err, ldapsource.ErrNotFound) {
		t.Fatal(err) // binds and dials before counting
	}
	for _, tc := range []struct {
		local, uid string
		err        error
	}{
		{"u9", "u9", nil},     // under the primary domain
		{"sales", "sam", nil}, // listed under the alias domain
		{"nobody", "", ldapsource.ErrNotFound},
		{"*", "", ldapsource.ErrNotFound}, // escaped in both halves
	} {
		before := srv.SearchCount()
		e, err := src.Lookup(ctx, q(tc.local))
		if !errors.Is(err, tc.err) || (tc.err == nil && (e == nil || !slices.Equal(e.Values("uid"), []string{tc.uid}))) {
			t.Errorf("%s: %+v, %v; want uid %q, %v", tc.local, e, err, tc.uid, tc.err)
		}
		if n := srv.SearchCount() - before; n != 1 {
			t.Errorf("%s: %d searches, want 1", tc.local, n)
		}
	}
	_, err := src.Lookup(ctx, q("u8"))
	var amb *ldapsource.AmbiguousError
	if !errors.As(err, &amb) || !errors.Is(err, ldapsource.ErrAmbiguous) || len(amb.Entries) != 2 || !amb.Complete {
		t.Errorf("u8, an entry for each name: %v", err)
	}
}

// An ambiguous domain search hands back its entries, and says whether
// they are all that match.
func TestAliasDomainAmbiguousEntriesSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(aliasLDIF))
	src := slapdSource(t, slapdConfig(srv.CAFile, true, srv.URL))
	ds, err := src.DomainSearch(ldapsource.DomainSearchConfig{BaseDN: "o=domains,dc=example,dc=com", Scope: "one", Filter: iredmailDomainFilter},
		[]string{"domainName"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		dns      []string
		complete bool
	}{
		{"dup.test", []string{"cn=dup one,o=domains,dc=example,dc=com", "cn=dup two,o=domains,dc=example,dc=com"}, true},
		{"c7.test", []string{"domainName=c7.test,o=domains,dc=example,dc=com", "domainName=d8.test,o=domains,dc=example,dc=com"}, true},
		{"three.test", nil, false},
	} {
		_, err := ds.Lookup(ctx, tc.name)
		var amb *ldapsource.AmbiguousError
		if !errors.As(err, &amb) || !errors.Is(err, ldapsource.ErrAmbiguous) || amb.Complete != tc.complete {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var dns []string
		for _, e := range amb.Entries {
			dns = append(dns, e.DN)
			if len(e.Values("domainName")) != 1 {
				t.Errorf("%s: entry %s without its attributes", tc.name, e.DN)
			}
		}
		slices.Sort(dns)
		if tc.dns != nil && !slices.Equal(dns, tc.dns) {
			t.Errorf("%s: entries %v, want %v", tc.name, dns, tc.dns)
		}
		if !tc.complete && (len(dns) != 3 || !strings.Contains(err.Error(), "or more")) {
			t.Errorf("%s: %d entries, %v", tc.name, len(dns), err)
		}
	}
	if e, err := ds.Lookup(ctx, "alias7.test"); err != nil || e.DN != "domainName=c7.test,o=domains,dc=example,dc=com" {
		t.Errorf("alias7.test: %+v, %v", e, err)
	}
}
