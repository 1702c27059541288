package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// slapdConfig is the demo configuration pointed at a real slapd, the way an
// administrator would write it: StartTLS or ldaps with the directory's CA,
// the bind password in a file.
func slapdConfig(t *testing.T, srv *ldaptest.Server, ldaps bool) config {
	t.Helper()
	cfg, err := loadConfig(strings.NewReader(slapdConfigText(t, srv, slapdOptions{ldaps: ldaps})), "slapd test config")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// slapdOptions change slapdConfigText's configuration.
type slapdOptions struct {
	ldaps     bool
	password  string // default ldaptest.ServicePassword
	caFile    string // default the server's CA
	baseDN    string // default ldaptest.BaseDN
	ldapExtra string // more keys of the ldap section, indented
	extra     string // more sections (not policy or domains)
}

// slapdConfigText is slapdConfig's YAML.
func slapdConfigText(t testing.TB, srv *ldaptest.Server, o slapdOptions) string {
	t.Helper()
	return demoConfig + slapdLDAPText(t, srv, o) + o.extra
}

// slapdLDAPText is the ldap section of a configuration against srv, its
// password in a file of the test's (o.extra is not in it).
func slapdLDAPText(t testing.TB, srv *ldaptest.Server, o slapdOptions) string {
	t.Helper()
	if o.password == "" {
		o.password = ldaptest.ServicePassword
	}
	if o.caFile == "" {
		o.caFile = srv.CAFile
	}
	if o.baseDN == "" {
		o.baseDN = ldaptest.BaseDN
	}
	pw := t.TempDir() + "/ldap-password"
	if err := os.WriteFile(pw, []byte(o.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, startTLS := srv.URL, true
	if o.ldaps {
		url, startTLS = srv.LDAPSURL, false
	}
	return fmt.Sprintf(`
ldap:
  urls: [%q]
  start_tls: %t
  ca_file: %q
  bind_dn: %q
  bind_password_file: %q
  base_dn: %q
%s
`, url, startTLS, o.caFile, ldaptest.ServiceDN, pw, o.baseDN, o.ldapExtra)
}

// The demo contract, answered from a real OpenLDAP server.
func TestDemoContractSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	for _, ldaps := range []bool{false, true} {
		t.Run(map[bool]string{false: "starttls", true: "ldaps"}[ldaps], func(t *testing.T) {
			a, err := build(slapdConfig(t, srv, ldaps), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.source.Close()
			if err := a.source.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkDemoContract(t, protocols.NewHandler(a.resolver, a.handlerOptions(nil)))
		})
	}
}

func TestLookupExplainsBobSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	a, err := build(slapdConfig(t, srv, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.source.Close()
	acct, ex, err := a.resolver.Explain(context.Background(), mustParse(t, "bob@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if acct.DisplayName != "Bob Builder" || acct.Services[0].Login != "bob.login" || acct.Has("pop3") || acct.Has("activesync") {
		t.Errorf("bob from slapd: %+v", toAccountJSON(acct))
	}
	if ex.DN != "uid=bob.login,ou=people,dc=example,dc=com" {
		t.Errorf("DN %q", ex.DN)
	}
	for _, d := range ex.Services {
		if d.Service == "pop3" && (d.Allowed || !strings.Contains(d.Rule, "pop3secured")) {
			t.Errorf("pop3 decision %+v", d)
		}
	}
	// dave's mailHost from slapd's misc.schema overrides the host.
	dave, _, err := a.resolver.Explain(context.Background(), mustParse(t, "dave@example.com"))
	if err != nil || dave.Services[0].Host != "mail2.example.com" {
		t.Errorf("dave: %v %+v", err, dave)
	}
}
