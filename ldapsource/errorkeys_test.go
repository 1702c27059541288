package ldapsource_test

// Configuration mistakes name the key at fault: refused at load (a control
// character in a DN, an empty base DN off a global catalog port), or when
// the directory answers (a referral for the base DN). "Lockout" in the
// names: these are refusals a lockout-safe service relies on.

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

func TestLockoutSafeConfigRefusesControlCharacters(t *testing.T) {
	for _, tc := range []struct {
		key string
		set func(*ldapsource.Config)
	}{
		{"ldap.bind_dn", func(c *ldapsource.Config) { c.BindDN = "EXAMPLE\bind-mail" }},
		{"ldap.bind_dn", func(c *ldapsource.Config) { c.BindDN = "cn=svc,\tdc=example,dc=com" }},
		{"ldap.base_dn", func(c *ldapsource.Config) { c.BaseDN = "dc=example,\ndc=com" }},
		{"ldap.base_dn", func(c *ldapsource.Config) { c.BaseDN = "dc=example,dc=com\u0085" }}, // C1 control, valid UTF-8
	} {
		cfg := slapdConfig("", true, "ldap://127.0.0.1:1")
		tc.set(&cfg)
		_, err := ldapsource.New(cfg, nil, nil, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.key+": ") || !strings.Contains(err.Error(), "single quotes") {
			t.Errorf("%s: %v; want a refusal naming %s with the quoting hint", tc.key, err, tc.key)
			continue
		}
		for _, r := range err.Error() {
			if r < 0x20 || r == 0x7f || r == 0x85 {
				t.Errorf("%s: the error holds the raw control character %U: %q", tc.key, r, err)
			}
		}
	}
	// A backslash written as one (single quotes in YAML) is fine.
	cfg := slapdConfig("", true, "ldap://127.0.0.1:1")
	cfg.BindDN = `EXAMPLE\svc-mailbeacon`
	if _, err := ldapsource.New(cfg, nil, nil, nil); err != nil {
		t.Errorf(`DOMAIN\user: %v`, err)
	}
	// domain_source.base_dn likewise.
	src, err := ldapsource.New(slapdConfig("", true, "ldap://127.0.0.1:1"), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.DomainSearch(ldapsource.DomainSearchConfig{BaseDN: "o=domains,\bdc=example,dc=com", Filter: "(domainName={domain})"}, nil); err == nil ||
		!strings.HasPrefix(err.Error(), "domain_source.base_dn: ") || !strings.Contains(err.Error(), `\b`) {
		t.Errorf("domain_source.base_dn with a backspace: %v", err)
	}
}

// An empty base DN is the whole forest, which only a global catalog
// (ports 3268 and 3269) searches.
func TestLockoutSafeConfigEmptyBaseDNNeedsGlobalCatalog(t *testing.T) {
	for _, tc := range []struct {
		urls []string
		ok   bool
	}{
		{[]string{"ldaps://dc1.example.com:3269"}, true},
		{[]string{"ldap://dc1.example.com:3268", "ldaps://dc2.example.com:3269"}, true},
		{[]string{"ldaps://dc1.example.com"}, false},
		{[]string{"ldap://dc1.example.com:389"}, false},
		{[]string{"ldaps://dc1.example.com:3269", "ldaps://dc2.example.com:636"}, false},
	} {
		cfg := slapdConfig("", false, tc.urls...)
		cfg.BaseDN = ""
		src, err := ldapsource.New(cfg, nil, nil, nil)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%v: %v", tc.urls, err)
		case !tc.ok && (err == nil || !strings.HasPrefix(err.Error(), "ldap.base_dn: ") || !strings.Contains(err.Error(), "3268 or 3269")):
			t.Errorf("%v: %v; want a refusal naming ldap.base_dn and the global catalog ports", tc.urls, err)
		}
		if src != nil {
			src.Close()
		}
	}
}

// A base DN the directory refers elsewhere (slapd's default referral here,
// as Active Directory answers another domain's DN) is a configuration
// error naming the key and the referral's URL, in Ping and in lookups.
func TestLockoutSafeReferralNamesBaseDNSlapd(t *testing.T) {
	const ref = "ldap://dc.other.example/"
	srv := ldaptest.Slapd(t, ldaptest.WithReferral(ref))
	cfg := slapdConfig(srv.CAFile, true, srv.URL)
	cfg.BaseDN = "dc=other,dc=com"
	src := slapdSource(t, cfg, "uid")
	check := func(what, key string, err error) {
		t.Helper()
		ce := ldapsource.ConfigurationError(err)
		if ce == nil || ce.Key != key || !strings.Contains(ce.Reason, `refers to "`+ref) {
			t.Errorf("%s: %v; want a configuration error naming %s and the referral", what, err, key)
		}
	}
	check("Ping", "ldap.base_dn", src.Ping(context.Background()))
	_, err := lookup(src, "alice@example.com")
	check("Lookup", "ldap.base_dn", err)

	good := slapdSource(t, slapdConfig(srv.CAFile, true, srv.URL), "uid")
	ds, err := good.DomainSearch(ldapsource.DomainSearchConfig{BaseDN: "o=domains,dc=other,dc=com", Filter: "(domainName={domain})"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("domain Ping", "domain_source.base_dn", ds.Ping(context.Background()))
	_, err = ds.Lookup(context.Background(), "example.com")
	check("domain Lookup", "domain_source.base_dn", err)
	if errors.Is(err, ldapsource.ErrNotFound) {
		t.Errorf("a referral is not an answer: %v", err)
	}
}
