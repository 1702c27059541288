package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
	"github.com/mailbeacon/mailbeacon/policy"
)

const adPartitions = "CN=Partitions,CN=Configuration," + sambatest.BaseDN

// adDomainSource is a domain_source section for the AD presets with short
// cache times, the README's template.
func adDomainSource(preset, baseDN string) string {
	return `
cache:
  ttl: 2s
  negative_ttl: 1s
domain_source:
  preset: ` + preset + `
  base_dn: "` + baseDN + `"
  template:
    services:
      - {type: imap, host: "mail.{domain}", port: 993, socket: tls}
      - {type: smtp, host: "mail.{domain}", port: 465, socket: tls}
`
}

// waitDomain asks for name until it is served (or, with served false,
// refused), within limit.
func waitDomain(t *testing.T, res *policy.Resolver, name string, served bool, limit time.Duration) *policy.Domain {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		d, err := res.Domain(context.Background(), name)
		if (err == nil) == served {
			return d
		}
		if err != nil && !errors.Is(err, policy.ErrUnknownDomain) {
			t.Fatalf("Domain(%s): %v", name, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Domain(%s) after %v: %v, want served %v", name, limit, err, served)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Domains from Active Directory: the forest's domain names and UPN
// suffixes (preset active-directory), and an OU per hosted domain carrying
// it in uPNSuffixes (active-directory-ou). A suffix added by the
// administrator is served within the negative TTL, without a restart.
func TestSambaDirectoryDomain(t *testing.T) {
	srv := sambatest.DC(t)
	admin := srv.Bind(t, sambatest.AdminUPN, sambatest.AdminPassword)
	ctx := context.Background()

	t.Run("UPN suffixes", func(t *testing.T) {
		a := buildAD(t, adConfigText(t, srv, adPolicy+adDomainSource("active-directory", adPartitions)))
		// The configured example.test wins over the forest's own name.
		if d, err := a.resolver.Domain(ctx, sambatest.MailDomain); err != nil || d.Provider != "Example Mail" {
			t.Errorf("configured domain: %+v, %v", d, err)
		}
		// The forest's domain, found by its crossRef's dnsRoot.
		if d, err := a.resolver.DomainSource().Explain(ctx, sambatest.MailDomain); err != nil || !strings.Contains(d.Origin.Entry, "CN=Partitions") {
			t.Errorf("forest domain from the directory: %+v, %v", d, err)
		}
		if _, err := a.resolver.Domain(ctx, "hosted.test"); !errors.Is(err, policy.ErrUnknownDomain) {
			t.Fatalf("hosted.test before the suffix: %v", err)
		}
		mod := ldap.NewModifyRequest(adPartitions, nil)
		mod.Add("uPNSuffixes", []string{"hosted.test"})
		if err := admin.Modify(mod); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			del := ldap.NewModifyRequest(adPartitions, nil)
			del.Delete("uPNSuffixes", []string{"hosted.test"})
			_ = admin.Modify(del)
		})
		d := waitDomain(t, a.resolver, "hosted.test", true, 3*time.Second)
		if len(d.Services) != 2 || d.Services[0].Host != "mail.hosted.test" {
			t.Errorf("hosted.test: %+v", d)
		}
		if ex, err := a.resolver.DomainSource().Explain(ctx, "hosted.test"); err != nil || ex.Origin.Entry != adPartitions {
			t.Errorf("hosted.test explained: %+v, %v", ex, err)
		}
		if got := a.autoconfig(t, "someone@hosted.test"); got != "imap:someone@hosted.test smtp465:someone@hosted.test" {
			t.Errorf("autoconfig for hosted.test: %s", got)
		}
		code, _ := fetchAutoconfig(t, a.h, "someone@nowhere.test")
		if code != 404 {
			t.Errorf("unknown domain: %d", code)
		}
	})

	t.Run("an OU per domain", func(t *testing.T) {
		const ou = "OU=Tenant One," + sambatest.BaseDN
		add := ldap.NewAddRequest(ou, nil)
		add.Attribute("objectClass", []string{"organizationalUnit"})
		add.Attribute("uPNSuffixes", []string{"tenant.test"})
		if err := admin.Add(add); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.Del(ldap.NewDelRequest(ou, nil)) })
		a := buildAD(t, adConfigText(t, srv, adPolicy+adDomainSource("active-directory-ou", sambatest.BaseDN)))
		waitDomain(t, a.resolver, "tenant.test", true, 3*time.Second)
		if ex, err := a.resolver.DomainSource().Explain(ctx, "tenant.test"); err != nil || ex.Origin.Entry != ou {
			t.Errorf("tenant.test explained: %+v, %v", ex, err)
		}
		if got := a.autoconfig(t, "x@tenant.test"); got != "imap:x@tenant.test smtp465:x@tenant.test" {
			t.Errorf("autoconfig for tenant.test: %s", got)
		}
		if _, err := a.resolver.Domain(ctx, "hosted.test"); !errors.Is(err, policy.ErrUnknownDomain) {
			t.Errorf("a domain on no OU: %v", err)
		}
	})
}
