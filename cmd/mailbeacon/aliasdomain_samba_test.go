package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// An administrator adds the forest's own name as a UPN suffix: the
// active-directory domain source then finds example.test twice (its
// crossRef's dnsRoot and the uPNSuffixes of CN=Partitions), which is one
// domain, not an ambiguity: its users keep their answers.
func TestAliasDomainUPNSuffixSamba(t *testing.T) {
	srv := sambatest.DC(t)
	admin := srv.Bind(t, sambatest.AdminUPN, sambatest.AdminPassword)
	ctx := context.Background()
	// No domains list: example.test comes from the directory only.
	text, _, _ := strings.Cut(adConfigText(t, srv, adPolicy+adDomainSource("active-directory", adPartitions)), "\ndomains:")
	const alice = "imap:asmith@example.test smtp465:asmith@example.test"
	before := buildAD(t, text)
	if got := before.autoconfig(t, "alice@example.test"); got != alice {
		t.Fatalf("before the suffix: %s", got)
	}

	mod := ldap.NewModifyRequest(adPartitions, nil)
	mod.Add("uPNSuffixes", []string{sambatest.MailDomain})
	if err := admin.Modify(mod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		del := ldap.NewModifyRequest(adPartitions, nil)
		del.Delete("uPNSuffixes", []string{sambatest.MailDomain})
		_ = admin.Modify(del)
	})

	a := buildAD(t, text)
	// The directory now has two entries for the name.
	_, err := a.domains.Lookup(ctx, sambatest.MailDomain)
	var amb *ldapsource.AmbiguousError
	if !errors.As(err, &amb) || len(amb.Entries) != 2 || !amb.Complete {
		t.Fatalf("domain search for %s: %v, want two entries", sambatest.MailDomain, err)
	}
	if got := a.autoconfig(t, "alice@example.test"); got != alice {
		t.Errorf("after the suffix: %s, want %s", got, alice)
	}
	if got := a.autoconfig(t, "nobody@example.test"); got != "imap:nobody@example.test smtp465:nobody@example.test" {
		t.Errorf("unknown address after the suffix: %s", got)
	}
	const crossRef = "CN=EXAMPLE," + adPartitions
	if ex, err := a.resolver.DomainSource().Explain(ctx, sambatest.MailDomain); err != nil || !strings.EqualFold(ex.Origin.Entry, crossRef) ||
		!strings.Contains(ex.Origin.Reason, "2 entries name this domain") {
		t.Errorf("explained: %+v, %v", ex, err)
	}
	// The running server, its domain cached before the suffix, keeps
	// answering once the TTL (2s) has passed.
	time.Sleep(2500 * time.Millisecond)
	if got := before.autoconfig(t, "alice@example.test"); got != alice {
		t.Errorf("cached domain past its TTL: %s", got)
	}
}
