package main

// Per-user destinations against a real slapd holding a migration in
// progress (ldaptest.DestinationLDIF): on premises, Microsoft 365 by
// targetAddress, site B by group.

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// destinationConfigText configures example.com against srv with the
// destinations m365 (the preset) and site-b.
func destinationConfigText(t testing.TB, srv *ldaptest.Server) string {
	t.Helper()
	return slapdLDAPText(t, srv, slapdOptions{}) + fmt.Sprintf(`policy:
  preset: iredmail
  login: "{uid}"
  destinations:
    m365:
      preset: m365
      login: "{mail}"
      oauth: {client_id: 00000000-0000-0000-0000-000000000001}
    site-b:
      provider: Site B
      services:
        - {type: imap, host: imap.site-b.example.com}
        - {type: pop3, host: pop.site-b.example.com}
        - {type: smtp, host: smtp.site-b.example.com, socket: starttls}
      autodiscover:
        redirect_url: "https://autodiscover.site-b.example.com/autodiscover/autodiscover.xml"
  destination_rules:
    - destination: m365
      when: {has_suffix: targetAddress, value: ".mail.onmicrosoft.com"}
    - destination: site-b
      when: {member_of: %q}
domains:
  - name: example.com
    provider: Example
    services:
      - {type: imap, host: mail.example.com, port: 993, socket: tls}
      - {type: pop3, host: mail.example.com, port: 995, socket: tls}
      - {type: smtp, host: mail.example.com, port: 465, socket: tls}
`, ldaptest.DestinationGroupDN)
}

// TestDestinationLookupSlapd runs lookup for each user: the destination,
// the rule that chose it, the services with their decisions, the redirect.
func TestDestinationLookupSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.Destination()...)
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, destinationConfigText(t, srv))
	const (
		m365Reason = `destination m365 (policy.destination_rules[0]): targetAddress has_suffix ".mail.onmicrosoft.com" is true`
		onPrem     = "imap:mail.example.com:993:olga pop3:mail.example.com:995:olga smtp:mail.example.com:465:olga"
	)
	for _, tc := range []struct {
		name, addr   string
		dest, reason string
		services     string // type:host:port:login, or type:url:login
		decisions    string // service=allowed
		redirect     string
		url          string
	}{
		{name: "on premises", addr: "olga@example.com",
			reason: `no destination rule matched, the domain's services (policy.destination_rules[0]: targetAddress has_suffix ".mail.onmicrosoft.com" is false; ` +
				`policy.destination_rules[1]: member_of "` + ldaptest.DestinationGroupDN + `" is false)`,
			services:  onPrem,
			decisions: "imap=true pop3=true smtp=true"},
		{name: "m365 by targetAddress", addr: "mike@example.com", dest: "m365", reason: m365Reason,
			services: "imap:outlook.office365.com:993:mike@example.com pop3:outlook.office365.com:995:mike@example.com " +
				"smtp:smtp.office365.com:587:mike@example.com graph:https://graph.microsoft.com:mike@example.com",
			decisions: "imap=true pop3=true smtp=true graph=true", redirect: "mike@" + ldaptest.DestinationTenantDomain},
		{name: "m365 without POP3", addr: "nina@example.com", dest: "m365", reason: m365Reason,
			services: "imap:outlook.office365.com:993:nina@example.com smtp:smtp.office365.com:587:nina@example.com " +
				"graph:https://graph.microsoft.com:nina@example.com",
			decisions: "imap=true pop3=false smtp=true graph=true", redirect: "nina@" + ldaptest.DestinationTenantDomain},
		{name: "site-b by group", addr: "sam@example.com", dest: "site-b",
			reason:    `destination site-b (policy.destination_rules[1]): member_of "` + ldaptest.DestinationGroupDN + `" is true`,
			services:  "imap:imap.site-b.example.com:993:sam pop3:pop.site-b.example.com:995:sam smtp:smtp.site-b.example.com:587:sam",
			decisions: "imap=true pop3=true smtp=true", url: "https://autodiscover.site-b.example.com/autodiscover/autodiscover.xml"},
		{name: "unknown address", addr: "nobody@example.com",
			services:  strings.ReplaceAll(onPrem, ":olga", ":nobody@example.com"),
			decisions: "imap=true pop3=true smtp=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.SearchCount()
			var out, errOut strings.Builder
			if code := run(t.Context(), []string{"lookup", "--config", cfgFile, tc.addr}, &out, &errOut); code != 0 {
				t.Fatalf("lookup: %d %s", code, errOut.String())
			}
			if n := srv.SearchCount() - before; n != 1 {
				t.Errorf("%d searches, want 1", n)
			}
			var got lookupOutput
			if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
				t.Fatal(err)
			}
			ex := got.Explanation
			if ex == nil {
				t.Fatalf("no explanation:\n%s", out.String())
			}
			if ex.Destination != tc.dest || ex.DestinationReason != tc.reason || ex.RedirectAddr != tc.redirect || ex.RedirectURL != tc.url {
				t.Errorf("destination %q, reason %q, redirect %q %q\nwant %q, %q, %q %q",
					ex.Destination, ex.DestinationReason, ex.RedirectAddr, ex.RedirectURL, tc.dest, tc.reason, tc.redirect, tc.url)
			}
			var services, decisions []string
			for _, s := range got.Account.Services {
				where := fmt.Sprintf("%s:%d", s.Host, s.Port)
				if s.URL != "" {
					where = s.URL
				}
				services = append(services, s.Type+":"+where+":"+s.Login)
			}
			for _, d := range ex.Services {
				decisions = append(decisions, fmt.Sprintf("%s=%t", d.Service, d.Allowed))
			}
			if strings.Join(services, " ") != tc.services {
				t.Errorf("services\n got %s\nwant %s", strings.Join(services, " "), tc.services)
			}
			if strings.Join(decisions, " ") != tc.decisions {
				t.Errorf("decisions %s, want %s", strings.Join(decisions, " "), tc.decisions)
			}
		})
	}
}
