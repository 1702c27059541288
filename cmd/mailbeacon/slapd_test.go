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
	pw := t.TempDir() + "/ldap-password"
	if err := os.WriteFile(pw, []byte(ldaptest.ServicePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, startTLS := srv.URL, true
	if ldaps {
		url, startTLS = srv.LDAPSURL, false
	}
	text := demoConfig + fmt.Sprintf(`
ldap:
  urls: [%q]
  start_tls: %t
  ca_file: %q
  bind_dn: %q
  bind_password_file: %q
  base_dn: %q
`, url, startTLS, srv.CAFile, ldaptest.ServiceDN, pw, ldaptest.BaseDN)
	cfg, err := loadConfig(strings.NewReader(text), "slapd test config")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
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

// Against slapd, a wrong service password is a clear start-up check error.
func TestSlapdWrongServicePassword(t *testing.T) {
	srv := ldaptest.Slapd(t)
	cfg := slapdConfig(t, srv, false)
	cfg.LDAP.BindPasswordFile, cfg.LDAP.BindPassword = "", "wrong"
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.source.Close()
	err = a.source.Ping(context.Background())
	if err == nil || !strings.Contains(err.Error(), "check ldap.bind_dn and the bind password") {
		t.Errorf("Ping = %v", err)
	}
}
