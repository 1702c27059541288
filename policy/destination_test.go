package policy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

const siteBGroup = "cn=site-b,ou=groups,dc=example,dc=com"

// destinationConfig is a migration in progress: Microsoft 365 for those
// whose targetAddress is a tenant address, site-b for a group's members.
func destinationConfig() Config {
	return Config{
		Preset: "generic",
		Login:  "{uid}",
		ServiceRules: map[string]*Rule{
			"pop3": {Has: "enabledService", Value: "pop3"},
		},
		Destinations: map[string]DestinationConfig{
			"m365": {Preset: "m365", OAuth: &OAuthConfig{ClientID: "our-app-id"}, Login: "{userPrincipalName}"},
			"site-b": {Provider: "Site B", Services: []ServiceConfig{
				{Type: "imap", Host: "imap.site-b.example.com"},
				{Type: "pop3", Host: "pop.site-b.example.com"},
				{Type: "smtp", Host: "smtp.site-b.example.com", Socket: "starttls"},
			}, Autodiscover: &DestinationAutodiscoverConfig{RedirectURL: "https://autodiscover.site-b.example.com/autodiscover/autodiscover.xml"}},
		},
		DestinationRules: []DestinationRuleConfig{
			{Destination: "m365", When: &Rule{HasSuffix: "targetAddress", Value: ".mail.onmicrosoft.com"}},
			{Destination: "site-b", When: &Rule{MemberOf: siteBGroup}},
		},
	}
}

func TestDestinationDecide(t *testing.T) {
	pol, err := New(destinationConfig())
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	cases := []struct {
		name     string
		local    string
		entry    *ldapsource.Entry // nil: not found
		dest     string
		reason   string // in DestinationReason
		kinds    string
		login    string
		redirect string
		url      string
		note     string // in RedirectNote
	}{
		{name: "on premises", local: "anna",
			entry:  entry(map[string][]string{"uid": {"anna"}, "enabledService": {"pop3"}}),
			reason: "no destination rule matched", kinds: "imap,pop3,smtp,smtp,activesync", login: "anna"},
		{name: "m365 by targetAddress", local: "bob",
			entry: entry(map[string][]string{"uid": {"bob"}, "userPrincipalName": {"bob@example.com"}, "enabledService": {"pop3"},
				"targetAddress": {"SMTP:bob@contoso.mail.onmicrosoft.com"}}),
			dest: "m365", reason: `destination m365 (policy.destination_rules[0]): targetAddress has_suffix ".mail.onmicrosoft.com" is true`,
			kinds: "imap,pop3,smtp,graph", login: "bob@example.com", redirect: "bob@contoso.mail.onmicrosoft.com"},
		{name: "m365 user without POP3 gets none there either", local: "dave",
			entry: entry(map[string][]string{"uid": {"dave"}, "userPrincipalName": {"dave@example.com"},
				"targetAddress": {"smtp:dave@contoso.MAIL.onmicrosoft.com"}}),
			dest: "m365", reason: "has_suffix", kinds: "imap,smtp,graph", login: "dave@example.com", redirect: "dave@contoso.mail.onmicrosoft.com"},
		{name: "site-b by group", local: "carol",
			entry: entry(map[string][]string{"uid": {"carol"}, "enabledService": {"pop3"}, "memberOf": {"CN=Site-B, OU=Groups, DC=example, DC=com"}}),
			dest:  "site-b", reason: `destination site-b (policy.destination_rules[1]): member_of "` + siteBGroup + `" is true`,
			kinds: "imap,pop3,smtp", login: "carol", url: "https://autodiscover.site-b.example.com/autodiscover/autodiscover.xml"},
		{name: "template that yields nothing", local: "erin",
			entry: entry(map[string][]string{"uid": {"erin"}, "userPrincipalName": {"erin@example.com"},
				"targetAddress": {"SMTP:@contoso.mail.onmicrosoft.com"}}),
			dest: "m365", reason: "has_suffix", kinds: "imap,smtp,graph", login: "erin@example.com",
			note: `redirect_address: "@contoso.mail.onmicrosoft.com" is not an address: no redirect, the destination's services`},
		{name: "unknown address gets the domain defaults", local: "nobody",
			kinds: "imap,pop3,smtp,smtp,activesync", login: "nobody@example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := Address{Local: tc.local, Domain: "example.com"}
			acct, ex := pol.Decide(d, addr, tc.entry)
			if got := kinds(acct); got != tc.kinds {
				t.Errorf("services %s, want %s", got, tc.kinds)
			}
			for _, s := range acct.Services {
				if s.Login != tc.login {
					t.Errorf("%s login %q, want %q", s.Kind, s.Login, tc.login)
				}
			}
			if ex.Destination != tc.dest || !strings.Contains(ex.DestinationReason, tc.reason) {
				t.Errorf("explanation: destination %q (%s), want %q (%s)", ex.Destination, ex.DestinationReason, tc.dest, tc.reason)
			}
			if tc.dest == "" {
				if acct.Destination != nil {
					t.Fatalf("destination %+v, want none", acct.Destination)
				}
				return
			}
			if acct.Destination == nil || acct.Destination.Name != tc.dest {
				t.Fatalf("destination %+v, want %s", acct.Destination, tc.dest)
			}
			if acct.Destination.RedirectAddr != tc.redirect || ex.RedirectAddr != tc.redirect {
				t.Errorf("redirect %q (explained %q), want %q", acct.Destination.RedirectAddr, ex.RedirectAddr, tc.redirect)
			}
			if acct.Destination.RedirectURL != tc.url || ex.RedirectURL != tc.url {
				t.Errorf("redirect URL %q (explained %q), want %q", acct.Destination.RedirectURL, ex.RedirectURL, tc.url)
			}
			if !strings.Contains(ex.RedirectNote, tc.note) || (tc.note == "" && ex.RedirectNote != "") {
				t.Errorf("redirect note %q, want %q", ex.RedirectNote, tc.note)
			}
			var decided []string
			for _, dec := range ex.Services {
				decided = append(decided, dec.Service)
			}
			want := map[string]string{"m365": "imap,pop3,smtp,graph", "site-b": "imap,pop3,smtp"}[tc.dest]
			if strings.Join(decided, ",") != want {
				t.Errorf("decisions for %v, want the destination's %s", decided, want)
			}
		})
	}
}

func TestDestinationPOP3DeniedIsExplained(t *testing.T) {
	pol, err := New(destinationConfig())
	if err != nil {
		t.Fatal(err)
	}
	e := entry(map[string][]string{"uid": {"dave"}, "targetAddress": {"SMTP:dave@contoso.mail.onmicrosoft.com"}})
	acct, ex := pol.Decide(testDomains(t)["example.com"], Address{Local: "dave", Domain: "example.com"}, e)
	if acct.Has(POP3) {
		t.Fatal("POP3 at the destination for a user without it")
	}
	i := slices.IndexFunc(ex.Services, func(d Decision) bool { return d.Service == "pop3" })
	if i < 0 || ex.Services[i].Allowed || !strings.Contains(ex.Services[i].Rule, `enabledService has "pop3" is false`) {
		t.Errorf("pop3 decision %+v", ex.Services)
	}
	// The login template of the destination lacks its attribute: the
	// policy's login, said so.
	if acct.Services[0].Login != "dave" || !strings.Contains(ex.Reason, "policy.destinations.m365.login: attribute userPrincipalName is missing") {
		t.Errorf("login %q, reason %q", acct.Services[0].Login, ex.Reason)
	}
}

func TestDestinationRedirectWithoutAddress(t *testing.T) {
	cfg := destinationConfig()
	// Chosen by a group, while the template reads targetAddress.
	cfg.DestinationRules = []DestinationRuleConfig{{Destination: "m365", When: &Rule{MemberOf: siteBGroup}}}
	pol, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	for _, tc := range []struct {
		name, target, note string
	}{
		{"missing", "", "attribute targetAddress is missing: no redirect"},
		{"not an address", "SMTP:not an address", `"not an address" is not an address: no redirect`},
		{"the user's own address", "smtp:frank@example.com", "a redirect would loop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[string][]string{"uid": {"frank"}, "memberOf": {siteBGroup}}
			if tc.target != "" {
				attrs["targetAddress"] = []string{tc.target}
			}
			acct, ex := pol.Decide(d, Address{Local: "frank", Domain: "example.com"}, entry(attrs))
			if acct.Destination == nil || acct.Destination.Name != "m365" {
				t.Fatalf("destination %+v, want m365", acct.Destination)
			}
			if acct.Destination.RedirectAddr != "" || !strings.Contains(ex.RedirectNote, tc.note) {
				t.Errorf("redirect %q, note %q, want none and %q", acct.Destination.RedirectAddr, ex.RedirectNote, tc.note)
			}
			if kinds(acct) != "imap,smtp,graph" {
				t.Errorf("services %s, want the destination's", kinds(acct))
			}
		})
	}
}

func TestDestinationByDomain(t *testing.T) {
	ds, err := NewDomains([]DomainConfig{
		{Name: "example.com", Services: []ServiceConfig{{Type: "imap", Host: "mail.example.com"}}},
		{Name: "brand.example", Services: []ServiceConfig{{Type: "imap", Host: "mail.brand.example"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := New(Config{Preset: "generic", Login: "{uid}",
		Destinations:     map[string]DestinationConfig{"google": {Preset: "google"}},
		DestinationRules: []DestinationRuleConfig{{Destination: "google", Domains: []string{"Brand.Example"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := entry(map[string][]string{"uid": {"gina"}})
	acct, ex := pol.Decide(ds["brand.example"], Address{Local: "gina", Domain: "brand.example"}, e)
	if acct.Destination == nil || acct.Destination.Name != "google" || kinds(acct) != "imap,pop3,smtp,smtp" ||
		!strings.Contains(ex.DestinationReason, "every account of brand.example") {
		t.Errorf("brand.example: destination %+v, services %s, reason %q", acct.Destination, kinds(acct), ex.DestinationReason)
	}
	if acct.Destination.OAuth == nil || acct.Destination.OAuth.Issuer != "https://accounts.google.com" || acct.Destination.Provider != "Google Workspace" {
		t.Errorf("google preset: %+v", acct.Destination)
	}
	acct, ex = pol.Decide(ds["example.com"], Address{Local: "gina", Domain: "example.com"}, e)
	if acct.Destination != nil || !strings.Contains(ex.DestinationReason, "not for example.com") {
		t.Errorf("example.com: destination %+v, reason %q", acct.Destination, ex.DestinationReason)
	}
}

func TestDestinationDisabledGetsDomainDefaults(t *testing.T) {
	cfg := destinationConfig()
	cfg.AccountEnabled = &Rule{Equals: "accountStatus", Value: "active"}
	pol, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	e := entry(map[string][]string{"uid": {"bob"}, "accountStatus": {"disabled"}, "targetAddress": {"SMTP:bob@contoso.mail.onmicrosoft.com"}})
	acct, ex := pol.Decide(d, Address{Local: "bob", Domain: "example.com"}, e)
	def := d.DefaultAccount(Address{Local: "bob", Domain: "example.com"}, "bob@example.com")
	if acct.Destination != nil || ex.Destination != "" || ex.DestinationReason != "" || kinds(acct) != kinds(def) {
		t.Errorf("disabled: destination %+v (%q), services %s, want the domain defaults", acct.Destination, ex.DestinationReason, kinds(acct))
	}
}

// TestDestinationStrictPrivacy: under strict privacy the unauthenticated
// answer carries no redirect address (the tenant address is another
// address of the user's), the authenticated one does; each stays one
// pointer while cached.
func TestDestinationStrictPrivacy(t *testing.T) {
	for _, strict := range []bool{false, true} {
		cfg := destinationConfig()
		if strict {
			cfg.Privacy = PrivacyStrict
		}
		pol, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		dir := &fakeDirectory{entries: map[string]*ldapsource.Entry{
			"bob@example.com": entry(map[string][]string{"uid": {"bob"}, "userPrincipalName": {"bob@example.com"},
				"targetAddress": {"SMTP:bob@contoso.mail.onmicrosoft.com"}}),
		}}
		r, err := NewResolver(dir, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		addr := Address{Local: "bob", Domain: "example.com"}
		pub, err := r.Resolve(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		full, err := r.resolve(context.Background(), addr, true)
		if err != nil {
			t.Fatal(err)
		}
		want := "bob@contoso.mail.onmicrosoft.com"
		if strict {
			want = ""
		}
		if pub.Destination == nil || pub.Destination.Name != "m365" || pub.Destination.RedirectAddr != want {
			t.Errorf("strict=%t: public destination %+v, want redirect %q", strict, pub.Destination, want)
		}
		if full.Destination == nil || full.Destination.RedirectAddr != "bob@contoso.mail.onmicrosoft.com" {
			t.Errorf("strict=%t: full destination %+v", strict, full.Destination)
		}
		again, _ := r.Resolve(context.Background(), addr)
		if again != pub || again.Destination != pub.Destination {
			t.Errorf("strict=%t: cached answer is a new pointer", strict)
		}
		if n := dir.searches.Load(); n != 1 {
			t.Errorf("strict=%t: %d searches, want 1", strict, n)
		}
	}
}

func TestDestinationAttributesAndGroups(t *testing.T) {
	cfg := destinationConfig()
	cfg.NestedGroups = ptr(true)
	pol, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"targetAddress", "userPrincipalName", MemberOfAttribute} {
		if !slices.ContainsFunc(pol.Attributes(), func(s string) bool { return strings.EqualFold(s, a) }) {
			t.Errorf("attributes %v lack %s", pol.Attributes(), a)
		}
	}
	if !slices.Contains(pol.Groups(), siteBGroup) {
		t.Errorf("groups %v lack %s", pol.Groups(), siteBGroup)
	}
}

func TestDestinationConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"unknown destination", func(c *Config) { c.DestinationRules[0].Destination = "m356" },
			`policy.destination_rules[0].destination: "m356" is not among policy.destinations (m365, site-b)`},
		{"bad rule", func(c *Config) { c.DestinationRules[1].When = &Rule{HasSuffix: "targetAddress"} },
			"policy.destination_rules[1].when: has_suffix needs a value"},
		{"bad domain", func(c *Config) { c.DestinationRules[0].Domains = []string{"not a domain"} },
			`policy.destination_rules[0].domains[0]: "not a domain" is not a domain name`},
		{"unknown preset", func(c *Config) { c.Destinations["m365"] = DestinationConfig{Preset: "exchange-online"} },
			`policy.destinations.m365.preset: "exchange-online" is not a destination preset: use one of m365, google`},
		{"no services", func(c *Config) { c.Destinations["site-b"] = DestinationConfig{Provider: "B"} },
			"policy.destinations.site-b.services: destination site-b offers no service"},
		{"bad service", func(c *Config) {
			c.Destinations["site-b"] = DestinationConfig{Services: []ServiceConfig{{Type: "graph"}}}
		}, "policy.destinations.site-b.services[0]: url: graph needs a url such as https://graph.microsoft.com"},
		{"bad oauth", func(c *Config) {
			c.Destinations["m365"] = DestinationConfig{Preset: "m365", OAuth: &OAuthConfig{Issuer: "http://x"}}
		},
			`policy.destinations.m365.oauth.issuer: "http://x" is not an issuer identifier`},
		{"both redirects", func(c *Config) {
			c.Destinations["m365"] = DestinationConfig{Preset: "m365", Autodiscover: &DestinationAutodiscoverConfig{RedirectAddress: "{mail}", RedirectURL: "https://x.example/a"}}
		}, "policy.destinations.m365.autodiscover: redirect_address and redirect_url both set"},
		{"bad redirect template", func(c *Config) {
			c.Destinations["m365"] = DestinationConfig{Preset: "m365", Autodiscover: &DestinationAutodiscoverConfig{RedirectAddress: "{targetAddress|lower}"}}
		}, "policy.destinations.m365.autodiscover.redirect_address: bad placeholder {targetAddress|lower}"},
		{"plain redirect URL", func(c *Config) {
			c.Destinations["m365"] = DestinationConfig{Preset: "m365", Autodiscover: &DestinationAutodiscoverConfig{RedirectURL: "http://x.example/a"}}
		}, `policy.destinations.m365.autodiscover.redirect_url: "http://x.example/a" is not an https:// URL`},
		{"named twice", func(c *Config) { c.Destinations["M365"] = DestinationConfig{Preset: "m365"} },
			"policy.destinations.m365: named twice (names ignore case)"},
		{"bad name", func(c *Config) { c.Destinations["site b"] = DestinationConfig{Preset: "google"} },
			`policy.destinations.site b: "site b" is not a destination name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := destinationConfig()
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("error %v, want %q", err, tc.err)
			}
		})
	}
}

func TestDestinationHasSuffixRule(t *testing.T) {
	e := entry(map[string][]string{"targetAddress": {"x500:/o=first", "SMTP:bob@Contoso.Mail.OnMicrosoft.com"}})
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{".mail.onmicrosoft.com", true},
		{"@contoso.mail.onmicrosoft.com", true},
		{".onmicrosoft.de", false},
		{"a-value-longer-than-any-of-the-attribute's-values-by-far.mail.onmicrosoft.com", false},
	} {
		r := Rule{HasSuffix: "targetAddress", Value: tc.value}
		if err := r.Validate("t"); err != nil {
			t.Fatal(err)
		}
		if got, why := r.Eval(e); got != tc.want {
			t.Errorf("%s: %t (%s), want %t", tc.value, got, why, tc.want)
		}
	}
	r := Rule{HasSuffix: "nothere", Value: "x"}
	if ok, _ := r.Eval(e); ok {
		t.Error("has_suffix on a missing attribute is true")
	}
}

func TestDestinationTemplateStripPrefix(t *testing.T) {
	for _, tc := range []struct {
		tmpl, value, want, err string
	}{
		{"{targetAddress|strip_prefix:smtp:}", "SMTP:bob@t.mail.onmicrosoft.com", "bob@t.mail.onmicrosoft.com", ""},
		{"{targetAddress|strip_prefix:smtp:}", "smtp:bob@t.example", "bob@t.example", ""},
		{"{targetAddress|strip_prefix:smtp:}", "bob@t.example", "bob@t.example", ""},
		{"{targetAddress|strip_prefix:smtp:}", "X500:/o=x", "X500:/o=x", ""},
		{"{email|strip_prefix:BOB}", "", "@example.com", ""},
		{"{targetAddress|strip_prefix:}", "", "", "bad placeholder"},
		{"{targetAddress|upper}", "", "", "bad placeholder"},
		{"{|strip_prefix:smtp:}", "", "", "bad placeholder"},
	} {
		tm, err := parseTemplate(tc.tmpl)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.tmpl, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.tmpl, err)
		}
		if a := tm.attributes(); tc.value != "" && !slices.Equal(a, []string{"targetAddress"}) {
			t.Errorf("%s: attributes %v", tc.tmpl, a)
		}
		got, err := tm.expand(Address{Local: "bob", Domain: "example.com"}, entry(map[string][]string{"targetAddress": {tc.value}}))
		if err != nil || got != tc.want {
			t.Errorf("%s over %q: %q, %v, want %q", tc.tmpl, tc.value, got, err, tc.want)
		}
	}
}

// TestDestinationDirectoryFailures: while the directory fails (refuses or
// hangs) a cached user keeps the destination, an address not cached gets
// the domain defaults, never a destination; a directory that cannot
// resolve nested groups for a member_of destination rule is refused at
// start.
func TestDestinationDirectoryFailures(t *testing.T) {
	cfg := CacheConfig{TTL: time.Minute, NegativeTTL: time.Minute, StaleFor: 10 * time.Minute, OnDirectoryError: "defaults"}
	pol, err := New(destinationConfig())
	if err != nil {
		t.Fatal(err)
	}
	dir := &fakeDirectory{entries: map[string]*ldapsource.Entry{
		"bob@example.com": entry(map[string][]string{"uid": {"bob"}, "targetAddress": {"SMTP:bob@contoso.mail.onmicrosoft.com"}}),
		"sam@example.com": entry(map[string][]string{"uid": {"sam"}, "memberOf": {siteBGroup}}),
	}}
	r, err := NewResolver(dir, pol, testDomains(t), cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.now = clk.Now
	ctx := context.Background()
	bob := Address{Local: "bob", Domain: "example.com"}
	if a, err := r.Resolve(ctx, bob); err != nil || a.Destination == nil {
		t.Fatalf("bob: %v %+v", err, a)
	}
	clk.Advance(5 * time.Minute) // stale, within stale_for
	for _, fail := range []struct {
		name string
		set  func(f *fakeDirectory)
	}{
		{"outage", func(f *fakeDirectory) { f.err = errors.New("connection refused") }},
		{"hang", func(f *fakeDirectory) { f.err, f.gate = nil, make(chan struct{}) }},
	} {
		dir.set(fail.set)
		a, err := r.Resolve(ctx, bob)
		if err != nil || a.Destination == nil || a.Destination.Name != "m365" || a.Destination.RedirectAddr == "" {
			t.Errorf("%s: cached bob %v %+v, want his m365 destination", fail.name, err, a)
		}
		if fail.name == "outage" {
			a, err = r.Resolve(ctx, Address{Local: "sam", Domain: "example.com"})
			if err != nil || a.Known || a.Destination != nil || kinds(a) != "imap,pop3,smtp,smtp,activesync" {
				t.Errorf("%s: uncached sam %v %+v, want the domain defaults", fail.name, err, a)
			}
		}
	}
	dir.set(func(f *fakeDirectory) { close(f.gate); f.gate = nil })

	nested := destinationConfig()
	nested.NestedGroups = ptr(true)
	pol, err = New(nested)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewResolver(dir, pol, testDomains(t), cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "policy.nested_groups") {
		t.Errorf("a directory without nested groups for a member_of destination rule: %v", err)
	}
}
