package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

func testDomains(t testing.TB) map[string]*Domain {
	t.Helper()
	ds, err := NewDomains([]DomainConfig{{
		Name: "Example.com", Provider: "Example Mail",
		Services: []ServiceConfig{
			{Type: "imap", Host: "mail.example.com", Socket: "tls"},
			{Type: "pop3", Host: "mail.example.com", Port: 995},
			{Type: "smtp", Host: "mail.example.com", Port: 465, Socket: "ssl"},
			{Type: "smtp", Host: "mail.example.com", Socket: "starttls"},
			{Type: "activesync", URL: "https://mail.example.com/Microsoft-Server-ActiveSync"},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func kinds(a *Account) string {
	var ks []string
	for _, s := range a.Services {
		ks = append(ks, string(s.Kind))
	}
	return strings.Join(ks, ",")
}

func TestOpenLDAPPreset(t *testing.T) {
	pol, err := New(Config{Login: "{uid}", HostAttribute: "mailHost"})
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	addr := Address{Local: "bob", Domain: "example.com"}
	all := []string{"mail", "imapsecured", "pop3secured", "smtpsecured", "activesync"}
	for _, tc := range []struct {
		name      string
		attrs     map[string][]string
		known     bool
		kinds     string
		login     string
		host      string
		primary   string
		display   string
		reasonHas string
	}{
		{"everything", map[string][]string{"uid": {"bob"}, "accountStatus": {"active"}, "enabledService": all, "displayName": {"Bob"}},
			true, "imap,pop3,smtp,smtp,activesync", "bob", "mail.example.com", "bob@example.com", "Bob", "enabled"},
		{"no pop3 no activesync", map[string][]string{"uid": {"bob.login"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}},
			true, "imap,smtp,smtp", "bob.login", "mail.example.com", "bob@example.com", "", "enabled"},
		{"mail master switch off", map[string][]string{"uid": {"bob"}, "accountStatus": {"active"}, "enabledService": {"imapsecured", "smtpsecured", "activesync"}},
			true, "activesync", "bob", "mail.example.com", "bob@example.com", "", "enabled"},
		{"disabled gets defaults", map[string][]string{"uid": {"bob"}, "accountStatus": {"disabled"}, "enabledService": all},
			false, "imap,pop3,smtp,smtp,activesync", "bob@example.com", "mail.example.com", "bob@example.com", "", "account disabled"},
		{"status missing counts as disabled", map[string][]string{"uid": {"bob"}, "enabledService": all},
			false, "imap,pop3,smtp,smtp,activesync", "bob@example.com", "mail.example.com", "bob@example.com", "", "account disabled"},
		{"mailHost override", map[string][]string{"uid": {"bob"}, "accountStatus": {"active"}, "enabledService": all, "mailHost": {"Mail2.Example.com"}},
			true, "imap,pop3,smtp,smtp,activesync", "bob", "mail2.example.com", "bob@example.com", "", "enabled"},
		{"bad mailHost ignored", map[string][]string{"uid": {"bob"}, "accountStatus": {"active"}, "enabledService": all, "mailHost": {"not a host"}},
			true, "imap,pop3,smtp,smtp,activesync", "bob", "mail.example.com", "bob@example.com", "", "ignoring mailHost"},
		{"alias gets primary", map[string][]string{"uid": {"bob"}, "accountStatus": {"active"}, "enabledService": all, "mail": {"Robert@Example.com"}, "displayName": {" "}, "cn": {"Robert B"}},
			true, "imap,pop3,smtp,smtp,activesync", "bob", "mail.example.com", "robert@example.com", "Robert B", "enabled"},
		{"login attribute missing falls back to address", map[string][]string{"accountStatus": {"active"}, "enabledService": all},
			true, "imap,pop3,smtp,smtp,activesync", "bob@example.com", "mail.example.com", "bob@example.com", "", "attribute uid is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acct, ex := pol.Decide(d, addr, entry(tc.attrs))
			if acct.Known != tc.known || kinds(acct) != tc.kinds || acct.Primary != tc.primary || acct.DisplayName != tc.display {
				t.Errorf("got known=%v kinds=%s primary=%s display=%q", acct.Known, kinds(acct), acct.Primary, acct.DisplayName)
			}
			for _, s := range acct.Services {
				if s.Login != tc.login {
					t.Errorf("%s login %q, want %q", s.Kind, s.Login, tc.login)
				}
				if !s.Kind.HTTPBased() && s.Host != tc.host {
					t.Errorf("%s host %q, want %q", s.Kind, s.Host, tc.host)
				}
			}
			if !strings.Contains(ex.Reason, tc.reasonHas) {
				t.Errorf("reason %q lacks %q", ex.Reason, tc.reasonHas)
			}
			if len(ex.Services) != 4 {
				t.Errorf("want one decision per service kind, got %+v", ex.Services)
			}
		})
	}
}

func TestDecideExplainsWhyNoPOP(t *testing.T) {
	pol, _ := New(Config{Login: "{uid}"})
	_, ex := pol.Decide(testDomains(t)["example.com"], Address{Local: "bob", Domain: "example.com"},
		entry(map[string][]string{"uid": {"bob.login"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}}))
	for _, d := range ex.Services {
		if d.Service == "pop3" {
			if d.Allowed || !strings.Contains(d.Rule, `enabledService has "pop3secured" is false`) {
				t.Errorf("pop3 decision %+v does not name the rule", d)
			}
			return
		}
	}
	t.Error("no decision for pop3")
}

func TestNotFoundGetsDomainDefaults(t *testing.T) {
	pol, _ := New(Config{})
	acct, ex := pol.Decide(testDomains(t)["example.com"], Address{Local: "nobody", Domain: "example.com"}, nil)
	if acct.Known || kinds(acct) != "imap,pop3,smtp,smtp,activesync" || acct.Services[0].Login != "nobody@example.com" || ex.Found {
		t.Errorf("unknown address: known=%v kinds=%s login=%s", acct.Known, kinds(acct), acct.Services[0].Login)
	}
}

func TestGenericPreset(t *testing.T) {
	pol, err := New(Config{Preset: "generic"})
	if err != nil {
		t.Fatal(err)
	}
	if pol.Filter() != "(mail={email})" {
		t.Errorf("filter %q", pol.Filter())
	}
	acct, _ := pol.Decide(testDomains(t)["example.com"], Address{Local: "x", Domain: "example.com"},
		entry(map[string][]string{"mail": {"x@example.com"}, "cn": {"X"}}))
	if !acct.Known || kinds(acct) != "imap,pop3,smtp,smtp,activesync" || acct.Services[0].Login != "x@example.com" || acct.DisplayName != "X" {
		t.Errorf("generic: %+v", acct)
	}
}

func TestConfigOverridesPreset(t *testing.T) {
	pol, err := New(Config{
		Preset:         "openldap",
		AccountEnabled: &Rule{Present: "mail"},
		ServiceRules:   map[string]*Rule{"POP3": {Has: "enabledService", Value: "pop3"}},
		Login:          "EXAMPLE\\{uid}",
	})
	if err != nil {
		t.Fatal(err)
	}
	acct, _ := pol.Decide(testDomains(t)["example.com"], Address{Local: "x", Domain: "example.com"},
		entry(map[string][]string{"mail": {"x@example.com"}, "uid": {"x"}, "enabledService": {"mail", "pop3", "imapsecured"}}))
	if !acct.Known || kinds(acct) != "imap,pop3" || acct.Services[0].Login != `EXAMPLE\x` {
		t.Errorf("override: known=%v kinds=%s login=%s", acct.Known, kinds(acct), acct.Services[0].Login)
	}
	if got := strings.Join(pol.Attributes(), ","); got != "cn,displayName,enabledService,mail,uid" {
		t.Errorf("attributes %s", got)
	}
}

func TestPolicyConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		errHas string
	}{
		{"unknown preset", Config{Preset: "exchange2003"}, "policy.preset"},
		{"bad login template", Config{Login: "{uid"}, "policy.login"},
		{"unknown service", Config{ServiceRules: map[string]*Rule{"gopher": {Present: "x"}}}, "policy.services.gopher"},
		{"bad rule", Config{ServiceRules: map[string]*Rule{"imap": {Has: "x"}}}, "policy.services.imap"},
		{"bad account rule", Config{AccountEnabled: &Rule{}}, "policy.account_enabled"},
		{"bad unknown mode", Config{Unknown: "maybe"}, "policy.unknown"},
		{"bad host override kind", Config{HostOverrideKinds: []string{"ftp"}}, "policy.host_override_services"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("New = %v, want error naming %s", err, tc.errHas)
			}
		})
	}
}

func TestDomainConfigErrors(t *testing.T) {
	ok := ServiceConfig{Type: "imap", Host: "mail.example.com"}
	for _, tc := range []struct {
		name   string
		cfg    []DomainConfig
		errHas string
	}{
		{"none", nil, "domains: no domain"},
		{"bad name", []DomainConfig{{Name: "not a domain", Services: []ServiceConfig{ok}}}, "domains[0].name"},
		{"duplicate", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{ok}}, {Name: "A.com", Services: []ServiceConfig{ok}}}, "domains[1].name"},
		{"no services", []DomainConfig{{Name: "a.com"}}, "domains[0].services"},
		{"bad type", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "x400"}}}}, "domains[0].services[0]: type"},
		{"bad port", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "imap", Host: "m.a.com", Port: 70000}}}}, "port"},
		{"bad socket", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "imap", Host: "m.a.com", Socket: "ssl3"}}}}, "socket"},
		{"bad host", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "imap", Host: "m a"}}}}, "host"},
		{"url on imap", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "imap", Host: "m.a.com", URL: "https://x"}}}}, "url"},
		{"activesync without url", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "activesync"}}}}, "needs a url"},
		{"activesync with host", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "activesync", URL: "https://m.a.com/x", Host: "m.a.com"}}}}, "do not apply"},
		{"bad auth", []DomainConfig{{Name: "a.com", Services: []ServiceConfig{{Type: "imap", Host: "m.a.com", Auth: []string{"kerberos5"}}}}}, "auth"},
		{"bad documentation url", []DomainConfig{{Name: "a.com", DocumentationURL: "ftp://x", Services: []ServiceConfig{ok}}}, "documentation_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewDomains(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("NewDomains = %v, want error containing %q", err, tc.errHas)
			}
		})
	}
}

func TestDomainDefaultsAndPorts(t *testing.T) {
	d := testDomains(t)["example.com"]
	want := []int{993, 995, 465, 587, 0}
	for i, s := range d.Services {
		if s.Port != want[i] {
			t.Errorf("service %d (%s) port %d, want %d", i, s.Kind, s.Port, want[i])
		}
		if len(s.Auth) != 1 || s.Auth[0] != AuthPasswordCleartext {
			t.Errorf("service %d auth %v", i, s.Auth)
		}
	}
	if d.Provider != "Example Mail" || d.ShortName != "Example Mail" || d.Name != "example.com" {
		t.Errorf("domain %+v", d)
	}
}

func TestLoginTemplate(t *testing.T) {
	e := entry(map[string][]string{"uid": {"bob"}, "sAMAccountName": {"BBuilder"}})
	addr := Address{Local: "bob", Domain: "example.com"}
	for _, tc := range []struct{ tmpl, want, errHas string }{
		{"{uid}", "bob", ""},
		{`EXAMPLE\{sAMAccountName}`, `EXAMPLE\BBuilder`, ""},
		{"{local}@corp.{domain}", "bob@corp.example.com", ""},
		{"{email}", "bob@example.com", ""},
		{"{userPrincipalName}", "", "attribute userPrincipalName is missing"},
		{"{uid", "", "unclosed"},
		{"uid}", "", "unmatched"},
		{"{}", "", "bad placeholder"},
		{"", "", "empty template"},
	} {
		t.Run(tc.tmpl, func(t *testing.T) {
			tp, err := parseTemplate(tc.tmpl)
			var got string
			if err == nil {
				got, err = tp.expand(addr, e)
			}
			if got != tc.want || (err != nil) != (tc.errHas != "") || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("got %q, %v; want %q, error containing %q", got, err, tc.want, tc.errHas)
			}
		})
	}
}

// Serving requests decides without an explanation: the same accounts as
// with one, and no explanation built.
func TestDecideWithoutExplanation(t *testing.T) {
	pol, err := New(Config{Login: "{uid}", HostAttribute: "mailHost"})
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	addr := Address{Local: "x", Domain: "example.com"}
	for name, e := range map[string]*ldapsource.Entry{
		"not found": nil,
		"enabled":   entry(map[string][]string{"uid": {"x"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}, "mailHost": {"mail2.example.com"}}),
		"disabled":  entry(map[string][]string{"uid": {"x"}, "accountStatus": {"disabled"}}),
		"bad host":  entry(map[string][]string{"uid": {"x"}, "accountStatus": {"active"}, "enabledService": {"mail", "pop3secured"}, "mailHost": {"not a host"}}),
		"no login":  entry(map[string][]string{"accountStatus": {"active"}, "enabledService": {"mail"}}),
	} {
		var de *decisionEntry
		if e != nil {
			de = &decisionEntry{Entry: e, now: time.Now()}
		}
		with, ex := pol.decide(d, addr, de, true)
		without, none := pol.decide(d, addr, de, false)
		if !reflect.DeepEqual(with, without) || ex == nil || none != nil {
			t.Errorf("%s: with explanation %+v (%v), without %+v (%v)", name, with, ex != nil, without, none)
		}
	}
}
