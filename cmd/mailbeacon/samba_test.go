package main

// End to end against a real Active Directory domain controller (Samba,
// package sambatest; skipped without Samba, a failure under CI=true): the
// configuration an administrator would write, answered over HTTP and
// explained by lookup.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// adConfigText is the README's Active Directory example, pointed at the
// test DC. policyText is the policy section.
func adConfigText(t *testing.T, srv *sambatest.Server, policyText string) string {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "ldap-password")
	if err := os.WriteFile(pw, []byte(sambatest.ServicePassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
ldap:
  urls: [%q]
  ca_file: %q
  bind_dn: %s
  bind_password_file: %q
  base_dn: %q
%s
domains:
  - name: example.test
    provider: Example Mail
    services:
      - {type: imap, host: mail.example.test, port: 993, socket: tls}
      - {type: pop3, host: mail.example.test, port: 995, socket: tls}
      - {type: smtp, host: mail.example.test, port: 465, socket: tls}
      - {type: smtp, host: mail.example.test, port: 587, socket: starttls}
      - {type: activesync, url: "https://mail.example.test/Microsoft-Server-ActiveSync"}
`, srv.LDAPSURL, srv.CAFile, sambatest.ServiceUPN, pw, sambatest.BaseDN, policyText)
}

// The active-directory preset with the two one-line group rules of the
// README.
const adPolicy = `
policy:
  preset: active-directory
  services:
    pop3: {not: {member_of: "CN=Mail-POP3-Disabled,OU=Groups,DC=example,DC=test"}}
    activesync: {member_of: "CN=Mobile-Users,OU=Groups,DC=example,DC=test"}
`

// The exchange preset as it is.
const exchangePolicy = `
policy:
  preset: exchange
`

// The active-directory preset, also refusing locked-out and expired
// accounts.
const strictADPolicy = `
policy:
  preset: active-directory
  account_enabled:
    all:
      - {bit_clear: userAccountControl, mask: 0x2}
      - {bit_clear: msDS-User-Account-Control-Computed, mask: 0x10}   # YAML reads 0x10 as 16
      - {not: {filetime_past: accountExpires}}
`

type adApp struct {
	*app
	h          http.Handler
	configFile string
}

func buildAD(t *testing.T, text string) adApp {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	a := buildText(t, text)
	if err := a.source.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return adApp{app: a, h: protocols.NewHandler(a.resolver, a.handlerOptions(nil)), configFile: file}
}

// autoconfig fetches Thunderbird's document for addr and summarises it as
// "imap:LOGIN pop3:LOGIN smtp465:LOGIN ...".
func (a adApp) autoconfig(t *testing.T, addr string) string {
	t.Helper()
	code, doc := fetchAutoconfig(t, a.h, addr)
	if code != 200 {
		t.Fatalf("%s: HTTP %d", addr, code)
	}
	return doc.summary()
}

// explain returns the account and the rule that decided each service.
func (a adApp) explain(t *testing.T, addr string) (*policy.Account, *policy.Explanation, map[string]policy.Decision) {
	t.Helper()
	acct, ex, err := a.resolver.Explain(context.Background(), mustParse(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	dec := map[string]policy.Decision{}
	for _, d := range ex.Services {
		dec[d.Service] = d
	}
	return acct, ex, dec
}

func every(login string) string {
	return fmt.Sprintf("imap:%[1]s pop3:%[1]s smtp465:%[1]s smtp587:%[1]s", login)
}

func TestSambaActiveDirectory(t *testing.T) {
	srv := sambatest.DC(t)

	t.Run("active-directory preset with group rules", func(t *testing.T) {
		a := buildAD(t, adConfigText(t, srv, adPolicy))
		// Over HTTP, as Thunderbird asks.
		for _, tc := range []struct{ addr, want string }{
			// Found by a proxyAddresses alias: the UPN is the login.
			{"a.example@example.test", every("asmith@example.test")},
			{"alice@example.test", every("asmith@example.test")},
			// Disabled: the same answer as an address nobody has.
			{"carol@example.test", every("carol@example.test")},
			{"nobody@example.test", every("nobody@example.test")},
			// A member of Contractors, a member of Mail-POP3-Disabled.
			{"dave@example.test", "imap:dave@example.test smtp465:dave@example.test smtp587:dave@example.test"},
			// A direct member.
			{"bob@example.test", "imap:bob.login@example.test smtp465:bob.login@example.test smtp587:bob.login@example.test"},
			// Ambiguous: treated as unknown.
			{"twins@example.test", every("twins@example.test")},
		} {
			if got := a.autoconfig(t, tc.addr); got != tc.want {
				t.Errorf("%s: got %q, want %q", tc.addr, got, tc.want)
			}
		}

		acct, err := a.resolver.Resolve(context.Background(), mustParse(t, "a.example@example.test"))
		if err != nil || !acct.Known || acct.Primary != "alice@example.test" || acct.DisplayName != "Alice Smith" ||
			!acct.Has(policy.ActiveSync) || acct.DN != sambatest.UserDN("asmith") {
			t.Errorf("alias: %v %+v", err, acct)
		}
		// frank has no mail attribute: his primary address can only come
		// from the SMTP: proxyAddresses value.
		acct, err = a.resolver.Resolve(context.Background(), mustParse(t, "f@example.test"))
		if err != nil || acct.Primary != "frank@example.test" || acct.Services[0].Login != "frank@example.test" {
			t.Errorf("frank: %v %+v", err, acct)
		}

		// Why: each decision names its rule.
		_, ex, _ := a.explain(t, "carol@example.test")
		if ex.Enabled || !strings.Contains(ex.Reason, "account disabled (userAccountControl bit_clear 0x2 is false)") {
			t.Errorf("carol: %+v", ex)
		}
		_, _, dec := a.explain(t, "dave@example.test")
		if d := dec["pop3"]; d.Allowed || d.Rule != `not (member_of "CN=Mail-POP3-Disabled,OU=Groups,DC=example,DC=test" is true (nested groups included))` {
			t.Errorf("dave pop3: %+v", d)
		}
		if d := dec["activesync"]; !d.Allowed || !strings.Contains(d.Rule, "Mobile-Users") {
			t.Errorf("dave activesync: %+v", d)
		}
		_, _, dec = a.explain(t, "bob@example.test")
		if d := dec["activesync"]; d.Allowed || d.Rule != `member_of "CN=Mobile-Users,OU=Groups,DC=example,DC=test" is false (nested groups included)` {
			t.Errorf("bob activesync: %+v", d)
		}
		if d := dec["imap"]; !d.Allowed || d.Rule != "no rule for this service" {
			t.Errorf("bob imap: %+v", d)
		}

		// Authenticated discovery binds with the DN the search found.
		if acct, err := a.resolver.Authenticate(context.Background(), mustParse(t, "a.example@example.test"), sambatest.UserPassword); err != nil || acct.Primary != "alice@example.test" {
			t.Errorf("Authenticate alice: %v", err)
		}
		for _, tc := range []struct{ addr, pw string }{
			{"dave@example.test", "wrong"},
			{"carol@example.test", sambatest.UserPassword}, // disabled
			{"nobody@example.test", sambatest.UserPassword},
		} {
			if _, err := a.resolver.Authenticate(context.Background(), mustParse(t, tc.addr), tc.pw); !errors.Is(err, policy.ErrBadCredentials) {
				t.Errorf("Authenticate %s: %v, want ErrBadCredentials", tc.addr, err)
			}
		}
	})

	t.Run("autodiscover with a password", func(t *testing.T) {
		// The user types an alias and their password; the password is
		// checked by binding as the DN the search found.
		a := buildAD(t, adConfigText(t, srv, adPolicy+"\nautodiscover:\n  require_auth: true\n"))
		post := func(user, password string) *httptest.ResponseRecorder {
			body := `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"><Request>
<EMailAddress>a.example@example.test</EMailAddress>
<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006</AcceptableResponseSchema>
</Request></Autodiscover>`
			req := httptest.NewRequest("POST", "/autodiscover/autodiscover.xml", strings.NewReader(body))
			req.Header.Set("Content-Type", "text/xml")
			req.SetBasicAuth(user, password)
			rec := httptest.NewRecorder()
			a.h.ServeHTTP(rec, req)
			return rec
		}
		rec := post("a.example@example.test", sambatest.UserPassword)
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<EMailAddress>alice@example.test</EMailAddress>") ||
			!strings.Contains(rec.Body.String(), "https://mail.example.test/Microsoft-Server-ActiveSync") {
			t.Errorf("right password: %d %s", rec.Code, rec.Body)
		}
		if rec := post("a.example@example.test", "wrong"); rec.Code != http.StatusUnauthorized {
			t.Errorf("wrong password: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("exchange preset", func(t *testing.T) {
		a := buildAD(t, adConfigText(t, srv, exchangePolicy))
		for _, tc := range []struct{ addr, want string }{
			{"alice@example.test", every("asmith@example.test")},
			// protocolSettings IMAP4§0§…: no IMAP; hidden from the
			// address book, which does not matter.
			{"erin@example.test", "pop3:erin@example.test smtp465:erin@example.test smtp587:erin@example.test"},
			// protocolSettings POP3§0§…: no POP3.
			{"bob@example.test", "imap:bob.login@example.test smtp465:bob.login@example.test smtp587:bob.login@example.test"},
		} {
			if got := a.autoconfig(t, tc.addr); got != tc.want {
				t.Errorf("%s: got %q, want %q", tc.addr, got, tc.want)
			}
		}
		erin, _, dec := a.explain(t, "erin@example.test")
		if d := dec["imap"]; d.Allowed || d.Rule != `not (protocolSettings has_prefix "IMAP4§0" is true)` {
			t.Errorf("erin imap: %+v", d)
		}
		if !erin.Known || erin.Has(policy.IMAP) || !erin.Has(policy.POP3) || !erin.Has(policy.ActiveSync) {
			t.Errorf("erin: %+v", erin)
		}
		bob, _, dec := a.explain(t, "bob@example.test")
		if d := dec["activesync"]; d.Allowed || d.Rule != "msExchOmaAdminWirelessEnable bit_clear 0x4 is false" {
			t.Errorf("bob activesync: %+v", d)
		}
		if bob.Has(policy.POP3) || bob.Has(policy.ActiveSync) {
			t.Errorf("bob: %+v", bob)
		}

		// The lookup command prints the same, as JSON.
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{"lookup", "--config", a.configFile, "erin@example.test"}, &stdout, &stderr); code != 0 {
			t.Fatalf("lookup: exit %d: %s", code, stderr.String())
		}
		var out struct {
			Account struct {
				Primary  string `json:"primary"`
				Services []struct {
					Type string `json:"type"`
				} `json:"services"`
			} `json:"account"`
			Explanation policy.Explanation `json:"explanation"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("lookup output: %v\n%s", err, stdout.String())
		}
		rules := map[string]string{}
		for _, d := range out.Explanation.Services {
			rules[d.Service] = d.Rule
		}
		if out.Account.Primary != "erin@example.test" || out.Explanation.DN != sambatest.UserDN("erin") ||
			rules["imap"] != `not (protocolSettings has_prefix "IMAP4§0" is true)` ||
			rules["pop3"] != `not (protocolSettings has_prefix "POP3§0" is false)` ||
			rules["activesync"] != "msExchOmaAdminWirelessEnable bit_clear 0x4 is true" || rules["smtp"] != "no rule for this service" {
			t.Errorf("lookup erin:\n%s", stdout.String())
		}
	})

	t.Run("locked out and expired accounts", func(t *testing.T) {
		a := buildAD(t, adConfigText(t, srv, strictADPolicy))
		if got := a.autoconfig(t, "henry@example.test"); got != every("henry@example.test") {
			t.Errorf("henry (expired): %q", got)
		}
		_, ex, _ := a.explain(t, "henry@example.test")
		if ex.Enabled || !strings.Contains(ex.Reason, "not (accountExpires filetime_past is true (2021-01-01T00:00:00Z))") {
			t.Errorf("henry: %s", ex.Reason)
		}
		if acct, _, _ := a.explain(t, "ivan@example.test"); !acct.Known {
			t.Errorf("ivan before lockout: %+v", acct)
		}
		for range 3 { // the domain's lockout threshold
			_ = a.source.Authenticate(context.Background(), sambatest.UserDN("ivan"), "wrong")
		}
		_, ex, _ = a.explain(t, "ivan@example.test")
		if ex.Enabled || !strings.Contains(ex.Reason, "msDS-User-Account-Control-Computed bit_clear 16 is false") {
			t.Errorf("ivan after lockout: %s", ex.Reason)
		}
		if got := a.autoconfig(t, "alice@example.test"); got != every("asmith@example.test") {
			t.Errorf("alice: %q", got)
		}
	})
}

// A configuration the DC refuses stops serve at start with status 78,
// naming the key; and a wrong service password costs the service account
// one failed logon in all: the refused start records it in state_dir, so
// the degraded start after it, flooded with 1,000 requests, does not bind
// again. The DC's lockout threshold (3) is never approached, and the
// account works once fixed.
func TestSambaMisconfigurationAndLockout(t *testing.T) {
	srv := sambatest.DC(t)
	dir := t.TempDir()
	text := adConfigText(t, srv, adPolicy) + fmt.Sprintf("state_dir: %q\nlimits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n", filepath.Join(dir, "state"))

	plain := filepath.Join(dir, "plain.yaml")
	writeFile(t, plain, strings.Replace(text, srv.LDAPSURL, srv.URL, 1))
	code, log := runServe(t, "--config", plain)
	if code != exitConfig || !strings.Contains(log, "ldap.urls: the directory refuses simple binds without TLS") || !strings.Contains(log, "--start-degraded") {
		t.Errorf("plain ldap:// to AD: exit %d:\n%s", code, log)
	}

	wrongPW := filepath.Join(dir, "wrong-password")
	writeFile(t, wrongPW, "not-the-password\n")
	wrong := filepath.Join(dir, "wrong.yaml")
	writeFile(t, wrong, regexp.MustCompile(`(?m)^  bind_password_file: .*$`).ReplaceAllString(text, fmt.Sprintf("  bind_password_file: %q", wrongPW)))
	code, log = runServe(t, "--config", wrong)
	if code != exitConfig || !strings.Contains(log, "ldap.bind_password_file: the directory refused ldap.bind_dn with its password (AD 52e") {
		t.Errorf("wrong password: exit %d:\n%s", code, log)
	}

	start := time.Now()
	s := startServe(t, []string{"--config", wrong, "--listen", "127.0.0.1:0", "--start-degraded"})
	if err := floodUnknown(s.addrs["server.listen"], sambatest.MailDomain, 1000, start, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("1,000 requests in %v", time.Since(start).Round(time.Millisecond))
	s.stop()
	if n := strings.Count(s.stderr.String(), `reason="the directory refused ldap.bind_dn with its password (AD 52e: no such account, or a wrong password; AD does not say which)"`); n != 1 {
		t.Errorf("the log says why %d times, want once:\n%s", n, s.stderr.String())
	}

	// What the DC counted: failed logons since the last good one, and
	// whether it locked the account.
	bad, locked := srv.Lockout(t, sambatest.ServiceDN)
	t.Logf("svc-mailbeacon after two starts and 1,000 requests with a wrong password: badPwdCount=%d locked=%v", bad, locked)
	if bad != 1 || locked {
		t.Errorf("svc-mailbeacon: badPwdCount=%d locked=%v; want 1 failed logon (the refused start), not locked", bad, locked)
	}
	// Fixed, it works at once: not locked out.
	buildAD(t, adConfigText(t, srv, adPolicy))
}

// The README's Active Directory example is a valid configuration (its
// files aside) with the policy the DC tests check.
func TestREADMEActiveDirectoryExample(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Active Directory\n")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README.md: no yaml block in the Active Directory section")
	}
	cfg, err := loadConfig(strings.NewReader(block), "README.md")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Policy.Preset != "active-directory" || !cfg.Autodiscover.RequireAuth {
		t.Errorf("policy %+v", cfg.Policy)
	}
	cfg.LDAP.CAFile, cfg.LDAP.BindPasswordFile, cfg.LDAP.BindPassword = "", "", "x"
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.source.Close()
}
