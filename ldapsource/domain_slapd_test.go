package ldapsource_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// The domain search against OpenLDAP: iRedMail-style entries found by
// name and by alias name; names carrying filter metacharacters reach the
// server escaped and match nothing, impossible names never reach it.
func TestDomainSearchSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	src, err := ldapsource.New(ldapsource.Config{
		URLs: []string{srv.URL}, StartTLS: true, CAFile: srv.CAFile,
		BindDN: ldaptest.ServiceDN, BindPassword: ldaptest.ServicePassword, BaseDN: ldaptest.BaseDN,
		Filter:      "(mail={email})",
		DialTimeout: 2 * time.Second, RequestTimeout: 5 * time.Second, PoolSize: 2,
	}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	ds, err := src.DomainSearch(ldapsource.DomainSearchConfig{BaseDN: "o=domains,dc=example,dc=com", Scope: "one", Filter: iredmailDomainFilter},
		[]string{"domainName", "accountStatus", "mtaTransport"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, want := range map[string]string{
		"hosted.example": "hosted.example",
		"alias.example":  "hosted.example",
		"off.example":    "off.example", // found: the template decides it is disabled
	} {
		e, err := ds.Lookup(ctx, name)
		if err != nil || len(e.Values("domainName")) != 1 || e.Values("domainName")[0] != want {
			t.Errorf("Lookup(%s) = %+v, %v; want domainName %s", name, e, err, want)
		}
	}
	for _, name := range []string{"nowhere.example", "*", "*.example", "hosted.example)(objectClass=*", "hosted*", `\2a`, "hosted.example\x00"} {
		if e, err := ds.Lookup(ctx, name); !errors.Is(err, ldapsource.ErrNotFound) {
			t.Errorf("Lookup(%q) = %+v, %v; want not found", name, e, err)
		}
	}
	if _, err := ds.Lookup(ctx, strings.Repeat("a", 64)+".example"); !errors.Is(err, ldapsource.ErrNotFound) {
		t.Errorf("overlong label: %v", err)
	}
	// A scope of one level under the base holds the domains; the base
	// entry itself is not one of them.
	base, err := src.DomainSearch(ldapsource.DomainSearchConfig{BaseDN: "domainName=hosted.example,o=domains,dc=example,dc=com", Scope: "one", Filter: iredmailDomainFilter}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := base.Lookup(ctx, "hosted.example"); !errors.Is(err, ldapsource.ErrNotFound) {
		t.Errorf("scope one below the entry: %v", err)
	}
}
