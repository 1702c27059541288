package policy

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// presetCase is one entry decided by a preset: what the account gets.
type presetCase struct {
	name  string
	attrs map[string][]string
	known bool
	kinds string // the services offered, in the domain's order
	login string // of every service
	host  string // of the IMAP, POP3 and SMTP services
}

// checkPreset decides each case with the named preset over testDomains'
// example.com, asked as bob@example.com.
func checkPreset(t *testing.T, preset string, cases []presetCase) {
	t.Helper()
	pol, err := New(Config{Preset: preset})
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	addr := Address{Local: "bob", Domain: "example.com"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			acct, ex := pol.Decide(d, addr, entry(tc.attrs))
			if acct.Known != tc.known || kinds(acct) != tc.kinds {
				t.Errorf("known=%v kinds=%s, want known=%v kinds=%s (%s)", acct.Known, kinds(acct), tc.known, tc.kinds, ex.Reason)
			}
			for _, s := range acct.Services {
				if s.Login != tc.login {
					t.Errorf("%s login %q, want %q", s.Kind, s.Login, tc.login)
				}
				if !s.Kind.HTTPBased() && s.Host != tc.host {
					t.Errorf("%s host %q, want %q", s.Kind, s.Host, tc.host)
				}
			}
		})
	}
}

const (
	allKinds = "imap,pop3,smtp,smtp,activesync"
	defHost  = "mail.example.com"
	asked    = "bob@example.com" // the login of a disabled account
)

func TestPresetUnivention(t *testing.T) {
	user := func(extra ...string) map[string][]string {
		m := map[string][]string{"uid": {"bob"}, "mailPrimaryAddress": {"bob@example.com"}, "krb5KDCFlags": {"126"}}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = append(m[extra[i]], extra[i+1])
		}
		return m
	}
	checkPreset(t, "univention", []presetCase{
		{"enabled", user(), true, allKinds, "bob@example.com", defHost},
		{"kerberos invalid flag", map[string][]string{"mailPrimaryAddress": {"bob@example.com"}, "krb5KDCFlags": {"254"}}, false, allKinds, asked, defHost},
		{"shadowExpire 1", user("shadowExpire", "1"), false, allKinds, asked, defHost},
		{"expired in 2024", user("shadowExpire", "20000"), false, allKinds, asked, defHost},
		{"expires in 2243", user("shadowExpire", "99999"), true, allKinds, "bob@example.com", defHost},
		{"no kerberos flags", map[string][]string{"mailPrimaryAddress": {"bob@example.com"}}, true, allKinds, "bob@example.com", defHost},
		{"home server", user("univentionMailHomeServer", "Mail2.Example.com"), true, allKinds, "bob@example.com", "mail2.example.com"},
	})
}

func TestPresetKolab(t *testing.T) {
	const root = "dc=hosted,dc=com"
	user := func(extra ...string) map[string][]string {
		m := map[string][]string{"mail": {"bob@example.com"}, "uid": {"bob"}}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = append(m[extra[i]], extra[i+1])
		}
		return m
	}
	noAS := "imap,pop3,smtp,smtp"
	checkPreset(t, "kolab", []presetCase{
		{"no status, no role", user(), true, noAS, "bob@example.com", defHost},
		{"active bits, activesync role", user("inetUserStatus", "50", "nsRoleDN", "CN=ActiveSync-User,"+root), true, allKinds, "bob@example.com", defHost},
		{"imap-user role alone", user("nsRoleDN", "cn=imap-user,"+root), true, noAS, "bob@example.com", defHost},
		{"suspended bit", user("inetUserStatus", "54", "nsRoleDN", "cn=activesync-user,"+root), false, allKinds, asked, defHost},
		{"deleted bit", user("inetUserStatus", "8"), false, allKinds, asked, defHost},
		{"389 inactive", user("inetUserStatus", "inactive"), false, allKinds, asked, defHost},
		{"389 active", user("inetUserStatus", "Active"), true, noAS, "bob@example.com", defHost},
		{"nsAccountLock", user("nsAccountLock", "TRUE"), false, allKinds, asked, defHost},
		{"mailHost", user("mailHost", "imap2.example.com"), true, noAS, "bob@example.com", "imap2.example.com"},
	})
}

func TestPresetQmailLDAP(t *testing.T) {
	user := func(status string) map[string][]string {
		m := map[string][]string{"mail": {"bob@example.com"}, "uid": {"bob"}}
		if status != "" {
			m["accountStatus"] = []string{status}
		}
		return m
	}
	withHost := user("active")
	withHost["mailHost"] = []string{"qmail2.example.com"}
	checkPreset(t, "qmail-ldap", []presetCase{
		{"active", user("active"), true, allKinds, "bob", defHost},
		{"no status is active", user(""), true, allKinds, "bob", defHost},
		{"nopop", user("nopop"), true, "imap,smtp,smtp,activesync", "bob", defHost},
		{"disabled", user("disabled"), false, allKinds, asked, defHost},
		{"deleted", user("Deleted"), false, allKinds, asked, defHost},
		{"mailHost", withHost, true, allKinds, "bob", "qmail2.example.com"},
	})
}

func TestPresetPostfixBook(t *testing.T) {
	user := func(enabled ...string) map[string][]string {
		return map[string][]string{"mail": {"bob@example.com"}, "mailEnabled": enabled, "mailHost": {"ignored.example.com"}}
	}
	checkPreset(t, "postfix-book", []presetCase{
		{"enabled", user("TRUE"), true, allKinds, "bob@example.com", defHost},
		{"disabled", user("FALSE"), false, allKinds, asked, defHost},
		{"no mailEnabled", user(), false, allKinds, asked, defHost},
	})
}

// The old name of the iredmail preset still works, names the same
// preset, and is not listed among the presets.
func TestPresetOpenLDAPIsIRedMail(t *testing.T) {
	if n, ok := PresetReplacement("openldap"); !ok || n != "iredmail" {
		t.Errorf("PresetReplacement(openldap) = %q, %v", n, ok)
	}
	if _, ok := PresetReplacement("iredmail"); ok {
		t.Error("iredmail is no old name")
	}
	old, err := New(Config{Preset: "openldap"})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := New(Config{Preset: "iredmail"})
	if err != nil {
		t.Fatal(err)
	}
	def, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Policy{old, def} {
		if p.Filter() != cur.Filter() || !slices.Equal(p.Attributes(), cur.Attributes()) {
			t.Errorf("filter %q attributes %v, want iredmail's %q %v", p.Filter(), p.Attributes(), cur.Filter(), cur.Attributes())
		}
	}
	names := PresetNames()
	if slices.Contains(names, "openldap") || !slices.Contains(names, "iredmail") {
		t.Errorf("PresetNames() = %v", names)
	}
}

// Each preset's filter finds its entries by the address and the aliases
// it documents, and every preset validates.
func TestPresetFilters(t *testing.T) {
	for preset, want := range map[string][]string{
		"iredmail":     {"objectClass=mailUser", "mail={email}", "shadowAddress={email}"},
		"univention":   {"objectClass=univentionMail", "mailPrimaryAddress={email}", "mailAlternativeAddress={email}"},
		"kolab":        {"objectClass=kolabInetOrgPerson", "mail={email}", "alias={email}", "mailAlternateAddress={email}"},
		"qmail-ldap":   {"objectClass=qmailUser", "mail={email}", "mailAlternateAddress={email}"},
		"postfix-book": {"objectClass=PostfixBookMailAccount", "mail={email}", "mailAlias={email}"},
	} {
		pol, err := New(Config{Preset: preset})
		if err != nil {
			t.Errorf("%s: %v", preset, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(pol.Filter(), "("+w+")") {
				t.Errorf("%s: filter %q lacks (%s)", preset, pol.Filter(), w)
			}
		}
	}
}

// domain_source.preset takes the old name too.
func TestPresetOpenLDAPDomainSource(t *testing.T) {
	svc := []ServiceTemplateConfig{{ServiceConfig: ServiceConfig{Type: "imap", Host: "mail.{domain}"}}}
	old, err := NewDomainTemplate(DomainSourceConfig{Preset: "openldap", Template: DomainTemplateConfig{Services: svc}})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := NewDomainTemplate(DomainSourceConfig{Preset: "iredmail", Template: DomainTemplateConfig{Services: svc}})
	if err != nil {
		t.Fatal(err)
	}
	if old.search.Filter != cur.search.Filter || !strings.Contains(cur.search.Filter, "objectClass=mailDomain") {
		t.Errorf("openldap's filter %q, iredmail's %q", old.search.Filter, cur.search.Filter)
	}
	if names := DomainPresetNames(); slices.Contains(names, "openldap") || !slices.Contains(names, "iredmail") {
		t.Errorf("DomainPresetNames() = %v", names)
	}
}

// days_past, which the univention preset reads shadowExpire with: a day
// count since 1970-01-01 that the day of the decision has reached.
func TestPresetRuleDaysPast(t *testing.T) {
	today := decisionTime.Unix() / secondsPerDay // 2026-06-01
	yes, no := true, false
	for _, tc := range []struct {
		vals      []string
		ifMissing *bool
		want      bool
		why       string
	}{
		{[]string{strconv.FormatInt(today, 10)}, nil, true, "is true (2026-06-01)"},
		{[]string{strconv.FormatInt(today-1, 10)}, nil, true, "is true"},
		{[]string{"1"}, nil, true, "(1970-01-02)"},
		{[]string{strconv.FormatInt(today+1, 10)}, nil, false, "is false (2026-06-02)"},
		{[]string{"0"}, nil, false, "(never)"},
		{[]string{"-1"}, nil, false, "(never)"},
		{[]string{"soon"}, nil, false, "(never)"},
		{[]string{"9223372036854775807"}, nil, false, "(never)"},
		{nil, nil, false, "(never)"},
		{nil, &yes, true, "missing, if_missing=true"},
		{nil, &no, false, "missing, if_missing=false"},
	} {
		r := Rule{DaysPast: "shadowExpire", IfMissing: tc.ifMissing}
		if err := r.Validate("policy.account_enabled"); err != nil {
			t.Fatal(err)
		}
		attrs := map[string][]string{}
		if tc.vals != nil {
			attrs["shadowExpire"] = tc.vals
		}
		got, why := r.Eval(adEntry(attrs, nil, nil))
		if got != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%v: %v %q, want %v %q", tc.vals, got, why, tc.want, tc.why)
		}
	}
	if attrs := (&Rule{DaysPast: "shadowExpire"}).Attributes(nil); !slices.Equal(attrs, []string{"shadowExpire"}) {
		t.Errorf("attributes %v", attrs)
	}
	if err := (&Rule{DaysPast: "shadowExpire", Value: "1"}).Validate("p"); err == nil {
		t.Error("days_past with a value validated")
	}
}
