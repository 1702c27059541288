package policy

import (
	"strings"
	"testing"
)

func TestEWSService(t *testing.T) {
	imap := ServiceConfig{Type: "imap", Host: "mail.a.com"}
	ews := ServiceConfig{Type: "ews", URL: "https://mail.a.com/EWS/Exchange.asmx"}
	ds, err := NewDomains([]DomainConfig{
		{Name: "listed.com", Services: []ServiceConfig{imap, ews, {Type: "smtp", Host: "mail.a.com"}}},
		{Name: "short.com", Services: []ServiceConfig{imap}, EWSURL: "https://mail.short.com/EWS/Exchange.asmx"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// A listed EWS service keeps its place in the order of preference.
	if l := ds["listed.com"]; kinds(&Account{Services: l.Services}) != "imap,ews,smtp" || l.EWSURL != ews.URL || l.OOFURL != ews.URL {
		t.Errorf("listed: kinds %s, EWSURL %q, OOFURL %q", kinds(&Account{Services: l.Services}), l.EWSURL, l.OOFURL)
	}
	// ews_url is a shorthand for a last EWS service, with a password login.
	s := ds["short.com"]
	if kinds(&Account{Services: s.Services}) != "imap,ews" || s.EWSURL != "https://mail.short.com/EWS/Exchange.asmx" {
		t.Errorf("shorthand: kinds %s, EWSURL %q", kinds(&Account{Services: s.Services}), s.EWSURL)
	}
	if last := s.Services[len(s.Services)-1]; last.URL != s.EWSURL || len(last.Auth) != 1 || last.Auth[0] != AuthPasswordCleartext {
		t.Errorf("shorthand service %+v", last)
	}

	for _, tc := range []struct {
		name string
		cfg  DomainConfig
		err  string
	}{
		{"both forms", DomainConfig{Services: []ServiceConfig{imap, ews}, EWSURL: ews.URL}, "domains[0].ews_url: the services list has a {type: ews} entry already"},
		{"ews without url", DomainConfig{Services: []ServiceConfig{imap, {Type: "ews"}}}, "domains[0].services[1]: url: ews needs a url such as https://mail.example.com/EWS/Exchange.asmx"},
		{"ews with host", DomainConfig{Services: []ServiceConfig{imap, {Type: "ews", URL: ews.URL, Host: "mail.a.com"}}}, "domains[0].services[1]: ews is reached by url"},
		{"oof with listed ews is fine", DomainConfig{Services: []ServiceConfig{imap, ews}, OOFURL: "https://mail.a.com/EWS/oof.asmx"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name = "a.com"
			_, err := NewDomains([]DomainConfig{tc.cfg})
			if (tc.err == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.err)) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// The exchange preset reads the mailbox's EWS switch: msExchEwsEnabled 0
// turns EWS off, 1 or no value leaves it on (Set-CASMailbox -EwsEnabled).
func TestExchangePresetEWSSwitch(t *testing.T) {
	pol, err := New(Config{Preset: "exchange"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := NewDomains([]DomainConfig{{Name: "example.com", Services: []ServiceConfig{
		{Type: "imap", Host: "mail.example.com"},
		{Type: "smtp", Host: "mail.example.com"},
	}, EWSURL: "https://mail.example.com/EWS/Exchange.asmx"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		value []string
		kinds string
	}{
		{"no value: enabled", nil, "imap,smtp,ews"},
		{"1: enabled", []string{"1"}, "imap,smtp,ews"},
		{"0: disabled", []string{"0"}, "imap,smtp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[string][]string{"userPrincipalName": {"u@example.com"}, "userAccountControl": {"512"}}
			if tc.value != nil {
				attrs["msExchEwsEnabled"] = tc.value
			}
			acct, _ := pol.decide(ds["example.com"], Address{Local: "u", Domain: "example.com"}, &decisionEntry{Entry: entry(attrs), now: decisionTime}, true)
			if got := kinds(acct); got != tc.kinds {
				t.Errorf("kinds %s, want %s", got, tc.kinds)
			}
		})
	}
	if !strings.Contains(strings.Join(pol.Attributes(), ","), "msExchEwsEnabled") {
		t.Errorf("the search does not fetch msExchEwsEnabled: %v", pol.Attributes())
	}
}

func TestDomainOAuth(t *testing.T) {
	svc := []ServiceConfig{{Type: "imap", Host: "mail.a.com"}}
	ds, err := NewDomains([]DomainConfig{{Name: "a.com", Services: svc, OAuth: &OAuthConfig{
		Issuer: "https://login.a.com/realms/mail", ClientID: " thunderbird ", Scopes: []string{"IMAP", "offline_access"},
	}}, {Name: "b.com", Services: svc}})
	if err != nil {
		t.Fatal(err)
	}
	o := ds["a.com"].OAuth
	if o == nil || o.Issuer != "https://login.a.com/realms/mail" || o.ClientID != "thunderbird" || strings.Join(o.Scopes, " ") != "IMAP offline_access" || o.IssuerHost() != "login.a.com" {
		t.Errorf("oauth %+v", o)
	}
	if ds["b.com"].OAuth != nil {
		t.Error("a domain without oauth got one")
	}
	for _, tc := range []struct {
		name string
		cfg  OAuthConfig
		err  string
	}{
		{"http issuer", OAuthConfig{Issuer: "http://login.a.com"}, "domains[0].oauth.issuer:"},
		{"host only", OAuthConfig{Issuer: "login.a.com"}, "domains[0].oauth.issuer:"},
		{"issuer with query", OAuthConfig{Issuer: "https://login.a.com/?x=1"}, "domains[0].oauth.issuer:"},
		{"issuer with fragment", OAuthConfig{Issuer: "https://login.a.com/#x"}, "domains[0].oauth.issuer:"},
		{"scope with space", OAuthConfig{Issuer: "https://login.a.com", Scopes: []string{"IMAP SMTP"}}, "domains[0].oauth.scopes[0]:"},
		{"token url over http", OAuthConfig{Issuer: "https://login.a.com", TokenURL: "http://login.a.com/token"}, "domains[0].oauth.token_url:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewDomains([]DomainConfig{{Name: "a.com", Services: svc, OAuth: &tc.cfg}})
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("err = %v, want one starting %q", err, tc.err)
			}
		})
	}
}
