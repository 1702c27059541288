package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// iredmailTemplate is the iredmail preset with a template such as the
// README's: IMAP and SMTP on mail.<domain>, SMTP's host from mtaTransport
// when that names one, POP3, and ActiveSync by URL.
func iredmailTemplate(t testing.TB) *DomainTemplate {
	t.Helper()
	dt, err := NewDomainTemplate(DomainSourceConfig{
		Preset:             "iredmail",
		DomainSearchConfig: ldapsource.DomainSearchConfig{BaseDN: "o=domains,dc=example,dc=com"},
		Template: DomainTemplateConfig{
			Provider: "{cn}",
			Services: []ServiceTemplateConfig{
				{ServiceConfig: ServiceConfig{Type: "imap", Host: "mail.{domain}"}},
				{ServiceConfig: ServiceConfig{Type: "pop3", Host: "mail.{domain}"}},
				{ServiceConfig: ServiceConfig{Type: "smtp", Host: "smtp.{domain}"}, HostAttribute: "mtaTransport"},
				{ServiceConfig: ServiceConfig{Type: "activesync", URL: "https://mail.{domain}/Microsoft-Server-ActiveSync"}},
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return dt
}

func domainEntry(dn string, attrs map[string][]string) *ldapsource.Entry {
	e := &ldapsource.Entry{DN: dn, Attributes: map[string][]string{}}
	for k, v := range attrs {
		e.Attributes[strings.ToLower(k)] = v
	}
	return e
}

func TestDomainTemplateBuild(t *testing.T) {
	dt := iredmailTemplate(t)
	const dn = "domainName=hosted.example,o=domains,dc=example,dc=com"
	type svc struct{ kind, host string }
	tests := []struct {
		name     string
		asked    string
		attrs    map[string][]string
		unknown  bool
		provider string
		aliasOf  string
		services []svc
	}{
		{"active domain", "hosted.example",
			map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}, "cn": {"Hosted Ltd"}},
			false, "Hosted Ltd", "",
			[]svc{{"imap", "mail.hosted.example"}, {"pop3", "mail.hosted.example"}, {"smtp", "smtp.hosted.example"}, {"activesync", "https://mail.hosted.example/Microsoft-Server-ActiveSync"}}},
		{"alias answered as its target", "alias.example",
			map[string][]string{"domainName": {"Hosted.Example"}, "domainAliasName": {"alias.example"}, "accountStatus": {"active"}},
			false, "hosted.example", "hosted.example",
			[]svc{{"imap", "mail.hosted.example"}, {"pop3", "mail.hosted.example"}, {"smtp", "smtp.hosted.example"}, {"activesync", "https://mail.hosted.example/Microsoft-Server-ActiveSync"}}},
		{"disabled domain is unknown", "hosted.example",
			map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"disabled"}}, true, "", "", nil},
		{"no status is disabled", "hosted.example",
			map[string][]string{"domainName": {"hosted.example"}}, true, "", "", nil},
		{"domain-level switch removes pop3", "hosted.example",
			map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}, "disabledService": {"POP3"}},
			false, "hosted.example", "",
			[]svc{{"imap", "mail.hosted.example"}, {"smtp", "smtp.hosted.example"}, {"activesync", "https://mail.hosted.example/Microsoft-Server-ActiveSync"}}},
		{"host from a relay transport", "hosted.example",
			map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}, "mtaTransport": {"relay:[mx1.provider.example]:25"}, "disabledService": {"pop3", "activesync"}},
			false, "hosted.example", "",
			[]svc{{"imap", "mail.hosted.example"}, {"smtp", "mx1.provider.example"}}},
		{"a local transport names no host", "hosted.example",
			map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}, "mtaTransport": {"dovecot"}, "disabledService": {"pop3", "activesync"}},
			false, "hosted.example", "",
			[]svc{{"imap", "mail.hosted.example"}, {"smtp", "smtp.hosted.example"}}},
		{"every service switched off", "hosted.example",
			map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}, "disabledService": {"imap", "pop3", "smtp", "activesync"}}, true, "", "", nil},
		{"name attribute is no domain", "hosted.example",
			map[string][]string{"domainName": {"*)(x"}, "accountStatus": {"active"}}, true, "", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := dt.Build(tt.asked, domainEntry(dn, tt.attrs))
			if tt.unknown {
				if !errors.Is(err, ErrUnknownDomain) {
					t.Fatalf("Build = %v, %v; want ErrUnknownDomain", d, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []svc
			for _, s := range d.Services {
				h := s.Host
				if s.Kind.HTTPBased() {
					h = s.URL
				}
				got = append(got, svc{string(s.Kind), h})
			}
			if !slices.Equal(got, tt.services) {
				t.Errorf("services %v, want %v", got, tt.services)
			}
			if d.Name != tt.asked || d.Provider != tt.provider || d.Origin.AliasOf != tt.aliasOf || d.Origin.Entry != dn {
				t.Errorf("name %s provider %q alias of %q entry %s", d.Name, d.Provider, d.Origin.AliasOf, d.Origin.Entry)
			}
			if len(d.Origin.Services) != 4 {
				t.Errorf("origin explains %d services, want 4: %q", len(d.Origin.Services), d.Origin.Services)
			}
		})
	}
}

func TestDomainTemplateAttributes(t *testing.T) {
	got := iredmailTemplate(t).Attributes()
	want := []string{"accountStatus", "cn", "disabledService", "domainName", "mtaTransport"}
	if !slices.Equal(got, want) {
		t.Errorf("Attributes = %v, want %v", got, want)
	}
}

func TestDomainTemplateConfigErrors(t *testing.T) {
	imap := ServiceTemplateConfig{ServiceConfig: ServiceConfig{Type: "imap", Host: "mail.{domain}"}}
	for _, tc := range []struct {
		cfg    DomainSourceConfig
		errHas string
	}{
		{DomainSourceConfig{Preset: "zimbra"}, "domain_source.preset: unknown preset"},
		{DomainSourceConfig{Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{imap}}}, "domain_source.filter: missing"},
		{DomainSourceConfig{Preset: "iredmail"}, "domain_source.template.services: no service"},
		{DomainSourceConfig{Preset: "iredmail", Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{
			{ServiceConfig: ServiceConfig{Type: "imap", Host: "mail.{domain"}}}}}, "domain_source.template.services[0]: host: unclosed"},
		{DomainSourceConfig{Preset: "iredmail", Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{
			{ServiceConfig: ServiceConfig{Type: "imap", Host: "mail_{domain}!"}}}}}, "domain_source.template.services[0]: host:"},
		{DomainSourceConfig{Preset: "iredmail", Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{
			{ServiceConfig: ServiceConfig{Type: "caldav", URL: "https://dav.{domain}/"}, HostAttribute: "mailHost"}}}}, "host_attribute"},
		{DomainSourceConfig{Preset: "iredmail", ServiceRules: map[string]*Rule{"fax": {Present: "x"}},
			Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{imap}}}, "domain_source.service_rules.fax"},
		{DomainSourceConfig{Preset: "iredmail", Enabled: &Rule{},
			Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{imap}}}, "domain_source.enabled"},
		{DomainSourceConfig{Preset: "iredmail", Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{imap},
			DefaultServices: []string{"pop3"}}}, "domain_source.template.default_services: pop3 is not among"},
		{DomainSourceConfig{Preset: "iredmail", Template: DomainTemplateConfig{Services: []ServiceTemplateConfig{imap},
			DefaultServices: []string{"fax"}}}, "domain_source.template.default_services"},
	} {
		if _, err := NewDomainTemplate(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("NewDomainTemplate(%+v) = %v; want …%s…", tc.cfg, err, tc.errHas)
		}
	}
}

func TestHostOfValue(t *testing.T) {
	for v, want := range map[string]string{
		"mail.example.net":                "mail.example.net",
		"relay:[MX1.example.net]:25":      "mx1.example.net",
		"smtp:mx2.example.net":            "mx2.example.net",
		"smtp:mx2.example.net:587":        "mx2.example.net",
		"dovecot":                         "",
		"relay:[192.0.2.1":                "",
		"lmtp:unix:private/dovecot-lmtp":  "",
		"relay:[bad host.example.net]:25": "",
	} {
		got, ok := hostOfValue(v)
		if got != want || ok != (want != "") {
			t.Errorf("hostOfValue(%q) = %q, %v; want %q", v, got, ok, want)
		}
	}
}

func TestDomainClientHosts(t *testing.T) {
	d := &Domain{Name: "hosted.example"}
	if got := d.ClientHosts(); !slices.Equal(got, []string{"autoconfig.hosted.example", "autodiscover.hosted.example"}) {
		t.Errorf("ClientHosts = %v", got)
	}
}

// template.default_services: what unknown and disabled addresses of a
// directory domain get, as domains[].default_services does for a listed
// one; a kind the domain switched off stays off.
func TestDomainTemplateDefaultServices(t *testing.T) {
	cfg := DomainSourceConfig{
		Preset:             "iredmail",
		DomainSearchConfig: ldapsource.DomainSearchConfig{BaseDN: "o=domains,dc=example,dc=com"},
		Template: DomainTemplateConfig{
			Services: []ServiceTemplateConfig{
				{ServiceConfig: ServiceConfig{Type: "imap", Host: "mail.{domain}"}},
				{ServiceConfig: ServiceConfig{Type: "pop3", Host: "mail.{domain}"}},
				{ServiceConfig: ServiceConfig{Type: "smtp", Host: "mail.{domain}"}},
			},
			DefaultServices: []string{"imap", "smtp"},
		},
	}
	dt, err := NewDomainTemplate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kinds := func(a *Account) (ks []string) {
		for _, s := range a.Services {
			ks = append(ks, string(s.Kind))
		}
		return ks
	}
	const dn = "domainName=hosted.example,o=domains,dc=example,dc=com"
	for _, tc := range []struct {
		name  string
		attrs map[string][]string
		want  []string
	}{
		{"POP3 the exception", map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}}, []string{"imap", "smtp"}},
		{"SMTP switched off for the domain", map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}, "disabledService": {"smtp"}}, []string{"imap"}},
	} {
		d, err := dt.Build("hosted.example", domainEntry(dn, tc.attrs))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := kinds(d.DefaultAccount(Address{Local: "nobody", Domain: "hosted.example"}, "nobody@hosted.example")); !slices.Equal(got, tc.want) {
			t.Errorf("%s: unknown address gets %v, want %v", tc.name, got, tc.want)
		}
	}
	cfg.Template.DefaultServices = nil
	if dt, err = NewDomainTemplate(cfg); err != nil {
		t.Fatal(err)
	}
	d, err := dt.Build("hosted.example", domainEntry(dn, map[string][]string{"domainName": {"hosted.example"}, "accountStatus": {"active"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(d.DefaultAccount(Address{Local: "nobody", Domain: "hosted.example"}, "nobody@hosted.example")); !slices.Equal(got, []string{"imap", "pop3", "smtp"}) {
		t.Errorf("without default_services: %v, want every service", got)
	}
}
