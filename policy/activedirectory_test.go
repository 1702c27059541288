package policy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// Active Directory and Exchange presets, the rule operators they use, the
// primary-address specs and nested group resolution.

var decisionTime = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// adEntry is an entry as the decision sees it, at decisionTime, with
// groups resolved when groups is not nil.
func adEntry(attrs map[string][]string, asked, member []string) *decisionEntry {
	e := &decisionEntry{Entry: entry(attrs), now: decisionTime}
	if asked != nil {
		e.groups = newMemberships(asked, member)
	}
	return e
}

func TestRuleEvalADOperators(t *testing.T) {
	const pop3Group = "CN=Mail-POP3-Disabled,OU=Groups,DC=example,DC=com"
	e := adEntry(map[string][]string{
		"protocolSettings": {"HTTP§1§1§§§§§§", "POP3§0§1§4§ISO-8859-1§0§§§", "imap4§1§1§4§ISO-8859-1§0§1§0§0"},
		"expiredAt":        {"132539328000000000"}, // 2021-01-01T00:00:00Z
		"expiresAt":        {"134843328000000000"}, // 2028-04-20T16:00:00Z
		"neverZero":        {"0"},
		"neverMax":         {"9223372036854775807"},
		"garbage":          {"tomorrow"},
		"memberOf":         {"CN=Contractors,OU=Groups,DC=example,DC=com"},
	}, []string{pop3Group, "CN=Mobile-Users,OU=Groups,DC=example,DC=com"}, []string{pop3Group})
	for _, tc := range []struct {
		name    string
		rule    Rule
		want    bool
		whyHas  string
		noClock bool
	}{
		{"has_prefix", Rule{HasPrefix: "protocolSettings", Value: "POP3§0"}, true, `protocolSettings has_prefix "POP3§0" is true`, false},
		{"has_prefix ignores case", Rule{HasPrefix: "protocolSettings", Value: "IMAP4§1"}, true, "", false},
		{"has_prefix no match", Rule{HasPrefix: "protocolSettings", Value: "IMAP4§0"}, false, "", false},
		{"has_prefix longer than value", Rule{HasPrefix: "protocolSettings", Value: "HTTP§1§1§§§§§§§§§§"}, false, "", false},
		{"has_prefix missing attribute", Rule{HasPrefix: "nothere", Value: "x"}, false, "", false},
		{"filetime_past expired", Rule{FiletimePast: "expiredAt"}, true, "expiredAt filetime_past is true (2021-01-01T00:00:00Z)", false},
		{"filetime_past future", Rule{FiletimePast: "expiresAt"}, false, "(2028-04-20T16:00:00Z)", false},
		{"filetime_past 0 is never", Rule{FiletimePast: "neverZero"}, false, "(never)", false},
		{"filetime_past 2^63-1 is never", Rule{FiletimePast: "neverMax"}, false, "(never)", false},
		{"filetime_past not a number", Rule{FiletimePast: "garbage"}, false, "", false},
		{"filetime_past missing", Rule{FiletimePast: "nothere"}, false, "", false},
		{"filetime_past missing if_missing", Rule{FiletimePast: "nothere", IfMissing: ptr(true)}, true, "", false},
		{"filetime_past without a decision clock uses now", Rule{FiletimePast: "expiredAt"}, true, "", true},
		{"member_of resolved, nested", Rule{MemberOf: "cn=mail-pop3-disabled, ou=groups, dc=example, dc=com"}, true, "(nested groups included)", false},
		{"member_of resolved, not a member", Rule{MemberOf: "CN=Mobile-Users,OU=Groups,DC=example,DC=com"}, false, "is false (nested groups included)", false},
		{"member_of not resolved reads memberOf", Rule{MemberOf: "CN=Contractors,OU=Groups,DC=example,DC=com"}, true, `member_of "CN=Contractors,OU=Groups,DC=example,DC=com" is true`, false},
		{"resolved membership ignores if_missing", Rule{MemberOf: pop3Group, IfMissing: ptr(false)}, true, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.rule.Validate("rule"); err != nil {
				t.Fatal(err)
			}
			var got bool
			var why string
			if tc.noClock {
				got, why = tc.rule.Eval(e.Entry)
			} else {
				got, why = tc.rule.Eval(e)
			}
			if got != tc.want || !strings.Contains(why, tc.whyHas) {
				t.Errorf("Eval = %v (%s), want %v with %q", got, why, tc.want, tc.whyHas)
			}
		})
	}
}

func TestRuleValidateADOperators(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rule   Rule
		errHas string
	}{
		{"has_prefix without value", Rule{HasPrefix: "protocolSettings"}, "has_prefix needs a value"},
		{"value on filetime_past", Rule{FiletimePast: "accountExpires", Value: "0"}, "value only goes with has, has_prefix or equals"},
		{"member_of not a DN", Rule{MemberOf: "Mobile-Users"}, "member_of needs a group's distinguished name"},
		{"two operators", Rule{FiletimePast: "accountExpires", HasPrefix: "a", Value: "b"}, "one operator per rule"},
		{"empty names the new operators", Rule{}, "has_prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rule.Validate("rule")
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("Validate = %v, want %q", err, tc.errHas)
			}
		})
	}
}

func TestPrimaryAddressSpecs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spec  string
		attrs map[string][]string
		want  string // "" = the asked address stays primary
	}{
		{"mail", "mail", map[string][]string{"mail": {"Robert@Example.com"}}, "robert@example.com"},
		{"mail takes the first value only", "mail", map[string][]string{"mail": {"not an address", "second@example.com"}}, ""},
		{"SMTP: marks the primary", "proxyAddresses:SMTP:", map[string][]string{"proxyAddresses": {"smtp:alias@example.com", "X400:c=US;a= ;p=Example", "SMTP:Primary@Example.com"}}, "primary@example.com"},
		{"smtp: is not primary", "proxyAddresses:SMTP:", map[string][]string{"proxyAddresses": {"smtp:alias@example.com"}}, ""},
		{"falls back to the next spec", "proxyAddresses:SMTP:, mail", map[string][]string{"proxyAddresses": {"smtp:alias@example.com"}, "mail": {"m@example.com"}}, "m@example.com"},
		{"first spec wins", "proxyAddresses:SMTP:,mail", map[string][]string{"proxyAddresses": {"SMTP:p@example.com"}, "mail": {"m@example.com"}}, "p@example.com"},
		{"invalid SMTP: value skipped", "proxyAddresses:SMTP:,mail", map[string][]string{"proxyAddresses": {"SMTP:broken"}, "mail": {"m@example.com"}}, "m@example.com"},
		{"nothing anywhere", "proxyAddresses:SMTP:,mail", map[string][]string{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol, err := New(Config{Preset: "generic", PrimaryAddress: tc.spec})
			if err != nil {
				t.Fatal(err)
			}
			acct, _ := pol.Decide(testDomains(t)["example.com"], Address{Local: "asked", Domain: "example.com"}, entry(tc.attrs))
			want := tc.want
			if want == "" {
				want = "asked@example.com"
			}
			if acct.Primary != want {
				t.Errorf("primary %q, want %q", acct.Primary, want)
			}
		})
	}
	for _, bad := range []string{" , ", "proxy Addresses:SMTP:", ":SMTP:", "1mail"} {
		if _, err := New(Config{Preset: "generic", PrimaryAddress: bad}); err == nil || !strings.Contains(err.Error(), "policy.primary_address") {
			t.Errorf("primary_address %q: err = %v", bad, err)
		}
	}
}

func TestActiveDirectoryPreset(t *testing.T) {
	d := testDomains(t)["example.com"]
	asked := Address{Local: "a.example", Domain: "example.com"}
	alice := func(extra map[string][]string) map[string][]string {
		m := map[string][]string{
			"displayName":        {"Alice Example"},
			"userPrincipalName":  {"asmith@corp.example.com"},
			"sAMAccountName":     {"asmith"},
			"mail":               {"alice@example.com"},
			"proxyAddresses":     {"smtp:a.example@example.com", "SMTP:Alice@Example.com"},
			"userAccountControl": {"512"},
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	strict := &Rule{All: []Rule{
		{BitClear: "userAccountControl", Mask: "2"},
		{BitClear: "msDS-User-Account-Control-Computed", Mask: "0x10"},
		{Not: &Rule{FiletimePast: "accountExpires"}},
	}}
	for _, tc := range []struct {
		name     string
		cfg      Config
		attrs    map[string][]string
		known    bool
		login    string
		primary  string
		display  string
		reasonIn string
	}{
		{"alias gets primary and UPN login", Config{}, alice(nil), true, "asmith@corp.example.com", "alice@example.com", "Alice Example", "userAccountControl bit_clear 0x2 is true"},
		{"sAMAccountName login", Config{Login: "{sAMAccountName}"}, alice(nil), true, "asmith", "alice@example.com", "Alice Example", ""},
		{"DOMAIN\\sAMAccountName login", Config{Login: `EXAMPLE\{sAMAccountName}`}, alice(nil), true, `EXAMPLE\asmith`, "alice@example.com", "Alice Example", ""},
		{"mail login", Config{Login: "{mail}"}, alice(nil), true, "alice@example.com", "alice@example.com", "Alice Example", ""},
		{"no proxyAddresses: primary from mail", Config{}, alice(map[string][]string{"proxyAddresses": nil}), true, "asmith@corp.example.com", "alice@example.com", "Alice Example", ""},
		{"display name falls back to cn", Config{}, alice(map[string][]string{"displayName": nil, "cn": {"asmith"}}), true, "asmith@corp.example.com", "alice@example.com", "asmith", ""},
		{"disabled (514)", Config{}, alice(map[string][]string{"userAccountControl": {"514"}}), false, "a.example@example.com", "a.example@example.com", "", "account disabled (userAccountControl bit_clear 0x2 is false)"},
		{"disabled with other bits (66050)", Config{}, alice(map[string][]string{"userAccountControl": {"66050"}}), false, "a.example@example.com", "a.example@example.com", "", "account disabled"},
		{"locked out: enabled by the preset", Config{}, alice(map[string][]string{"msDS-User-Account-Control-Computed": {"16"}}), true, "asmith@corp.example.com", "alice@example.com", "Alice Example", ""},
		{"locked out: disabled by the strict rule", Config{AccountEnabled: strict}, alice(map[string][]string{"msDS-User-Account-Control-Computed": {"16"}}), false, "a.example@example.com", "a.example@example.com", "", "msDS-User-Account-Control-Computed bit_clear 0x10 is false"},
		{"expired: disabled by the strict rule", Config{AccountEnabled: strict}, alice(map[string][]string{"accountExpires": {"132539328000000000"}}), false, "a.example@example.com", "a.example@example.com", "", "not (accountExpires filetime_past is true (2021-01-01T00:00:00Z))"},
		{"never expires: enabled by the strict rule", Config{AccountEnabled: strict}, alice(map[string][]string{"accountExpires": {"9223372036854775807"}, "msDS-User-Account-Control-Computed": {"0"}}), true, "asmith@corp.example.com", "alice@example.com", "Alice Example", "all of"},
		{"UPN missing: typed address", Config{}, alice(map[string][]string{"userPrincipalName": nil}), true, "a.example@example.com", "alice@example.com", "Alice Example", "attribute userPrincipalName is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Preset = "active-directory"
			pol, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			acct, ex := pol.decide(d, asked, &decisionEntry{Entry: entry(tc.attrs), now: decisionTime}, true)
			if acct.Known != tc.known || acct.Primary != tc.primary || acct.DisplayName != tc.display || acct.Services[0].Login != tc.login {
				t.Errorf("known=%v primary=%s display=%q login=%s", acct.Known, acct.Primary, acct.DisplayName, acct.Services[0].Login)
			}
			if kinds(acct) != "imap,pop3,smtp,smtp,activesync" {
				t.Errorf("kinds %s: the preset has no service rules", kinds(acct))
			}
			if !strings.Contains(ex.Reason, tc.reasonIn) {
				t.Errorf("reason %q lacks %q", ex.Reason, tc.reasonIn)
			}
		})
	}

	pol, _ := New(Config{Preset: "active-directory"})
	if pol.Filter() != "(&(objectCategory=person)(objectClass=user)(|(mail={email})(proxyAddresses=smtp:{email})))" {
		t.Errorf("filter %s", pol.Filter())
	}
	if got := strings.Join(pol.Attributes(), ","); got != "cn,displayName,mail,proxyAddresses,userAccountControl,userPrincipalName" {
		t.Errorf("attributes %s", got)
	}
	if len(pol.Groups()) != 0 {
		t.Errorf("groups %v without member_of rules", pol.Groups())
	}
}

func TestExchangePreset(t *testing.T) {
	pol, err := New(Config{Preset: "exchange"})
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	for _, tc := range []struct {
		name  string
		attrs map[string][]string
		kinds string
		rule  map[string]string // service -> text the decision names
	}{
		{"nothing set: everything", nil, "imap,pop3,smtp,smtp,activesync",
			map[string]string{"pop3": `not (protocolSettings has_prefix "POP3§0" is false)`, "activesync": "msExchOmaAdminWirelessEnable bit_clear 0x4 is true"}},
		{"POP3 off (Exchange's own format)", map[string][]string{"protocolSettings": {"POP3§0§1§4§ISO-8859-1§0§§§"}}, "imap,smtp,smtp,activesync",
			map[string]string{"pop3": `not (protocolSettings has_prefix "POP3§0" is true)`}},
		{"IMAP4 off", map[string][]string{"protocolSettings": {"IMAP4§0§1§4§ISO-8859-1§0§1§0§0", "POP3§1§1§4§ISO-8859-1§0§§§"}}, "pop3,smtp,smtp,activesync",
			map[string]string{"imap": `not (protocolSettings has_prefix "IMAP4§0" is true)`}},
		{"both off, short form", map[string][]string{"protocolSettings": {"POP3§0", "IMAP4§0"}}, "smtp,smtp,activesync", nil},
		{"re-enabled after being off", map[string][]string{"protocolSettings": {"POP3§1§1§4§ISO-8859-1§0§§§", "IMAP4§1§1§4§ISO-8859-1§0§1§0§0"}}, "imap,pop3,smtp,smtp,activesync", nil},
		{"HTTP off does not matter", map[string][]string{"protocolSettings": {"HTTP§0§1§§§§§§"}}, "imap,pop3,smtp,smtp,activesync", nil},
		{"wireless 0: all enabled", map[string][]string{"msExchOmaAdminWirelessEnable": {"0"}}, "imap,pop3,smtp,smtp,activesync", nil},
		{"wireless 1: notifications off only", map[string][]string{"msExchOmaAdminWirelessEnable": {"1"}}, "imap,pop3,smtp,smtp,activesync", nil},
		{"wireless 2: OMA off only", map[string][]string{"msExchOmaAdminWirelessEnable": {"2"}}, "imap,pop3,smtp,smtp,activesync", nil},
		{"wireless 4: ActiveSync off", map[string][]string{"msExchOmaAdminWirelessEnable": {"4"}}, "imap,pop3,smtp,smtp",
			map[string]string{"activesync": "msExchOmaAdminWirelessEnable bit_clear 0x4 is false"}},
		{"wireless 5", map[string][]string{"msExchOmaAdminWirelessEnable": {"5"}}, "imap,pop3,smtp,smtp", nil},
		{"wireless 7: all off", map[string][]string{"msExchOmaAdminWirelessEnable": {"7"}}, "imap,pop3,smtp,smtp", nil},
		{"hidden from address lists is ignored", map[string][]string{"msExchHideFromAddressLists": {"TRUE"}}, "imap,pop3,smtp,smtp,activesync", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[string][]string{"userPrincipalName": {"u@example.com"}, "userAccountControl": {"512"}}
			for k, v := range tc.attrs {
				attrs[k] = v
			}
			acct, ex := pol.decide(d, Address{Local: "u", Domain: "example.com"}, &decisionEntry{Entry: entry(attrs), now: decisionTime}, true)
			if !acct.Known || kinds(acct) != tc.kinds {
				t.Errorf("known=%v kinds=%s, want %s", acct.Known, kinds(acct), tc.kinds)
			}
			for svc, want := range tc.rule {
				i := slices.IndexFunc(ex.Services, func(d Decision) bool { return d.Service == svc })
				if i < 0 || !strings.Contains(ex.Services[i].Rule, want) {
					t.Errorf("%s decision %+v lacks %q", svc, ex.Services, want)
				}
			}
		})
	}
	if got := strings.Join(pol.Attributes(), ","); !strings.Contains(got, "msExchOmaAdminWirelessEnable,") || !strings.Contains(got, "protocolSettings,") || strings.Contains(got, "msExchHideFromAddressLists") {
		t.Errorf("attributes %s", got)
	}
}

// groupDirectory is a fakeDirectory that also resolves nested groups.
type groupDirectory struct {
	*fakeDirectory
	mu      sync.Mutex
	nested  map[string][]string // entry DN -> groups, nested included
	calls   int
	lastAsk []string
	err     error
}

func (g *groupDirectory) MemberOf(ctx context.Context, dn string, groups []string) ([]string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls++
	g.lastAsk = slices.Clone(groups)
	if g.err != nil {
		return nil, g.err
	}
	var out []string
	for _, grp := range g.nested[dn] {
		if slices.ContainsFunc(groups, func(a string) bool { return normDN(a) == normDN(grp) }) {
			out = append(out, grp)
		}
	}
	return out, nil
}

func TestNestedGroupsResolvedOncePerLookupAndCached(t *testing.T) {
	const (
		pop3Off = "CN=Mail-POP3-Disabled,OU=Groups,DC=example,DC=com"
		mobile  = "CN=Mobile-Users,OU=Groups,DC=example,DC=com"
	)
	daveDN := "CN=Dave,CN=Users,DC=example,DC=com"
	dave := entry(map[string][]string{"userPrincipalName": {"dave@example.com"}, "userAccountControl": {"512"},
		"memberOf": {"CN=Contractors,OU=Groups,DC=example,DC=com"}}) // direct membership only
	dave.DN = daveDN
	dir := &groupDirectory{
		fakeDirectory: &fakeDirectory{entries: map[string]*ldapsource.Entry{"dave@example.com": dave}},
		nested:        map[string][]string{daveDN: {"CN=Contractors,OU=Groups,DC=example,DC=com", pop3Off}},
	}
	pol, err := New(Config{Preset: "active-directory", ServiceRules: map[string]*Rule{
		"pop3":       {Not: &Rule{MemberOf: pop3Off}},
		"activesync": {MemberOf: mobile},
		"imap":       {Not: &Rule{MemberOf: strings.ToLower(pop3Off)}}, // the same group, spelt differently
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := pol.Groups(); len(got) != 2 {
		t.Fatalf("groups %v: want the two distinct member_of DNs", got)
	}
	r, err := NewResolver(dir, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := mustAddr(t, "dave@example.com")
	for range 3 {
		acct, err := r.Resolve(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		if kinds(acct) != "smtp,smtp" {
			t.Errorf("dave: kinds %s, want no imap/pop3 (nested group) and no activesync (not in Mobile-Users)", kinds(acct))
		}
	}
	if dir.calls != 1 || dir.searches.Load() != 1 {
		t.Errorf("%d group resolutions and %d searches for 3 requests: want 1 and 1 (cached with the account)", dir.calls, dir.searches.Load())
	}
	_, ex, err := r.Explain(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ex.Services {
		if d.Service == "pop3" && (d.Allowed || d.Rule != `not (member_of "`+pop3Off+`" is true (nested groups included))`) {
			t.Errorf("pop3 decision %+v", d)
		}
	}
	if dir.calls != 2 {
		t.Errorf("Explain did not resolve groups (%d calls)", dir.calls)
	}

	// A failure to resolve groups is a directory failure: defaults, not a
	// decision made without the groups, and nothing cached.
	dir.err = errors.New("directory gone")
	r2, _ := NewResolver(dir, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
	acct, err := r2.Resolve(context.Background(), addr)
	if err != nil || acct.Known {
		t.Errorf("group failure: %v %+v", err, acct)
	}
	if _, _, err := r2.Explain(context.Background(), addr); err == nil || !strings.Contains(err.Error(), "directory gone") {
		t.Errorf("Explain with group failure: %v", err)
	}
	// An address not found costs no group resolution.
	calls := dir.calls
	if _, err := r2.Resolve(context.Background(), mustAddr(t, "nobody@example.com")); err != nil || dir.calls != calls {
		t.Errorf("not found: %v, %d group calls", err, dir.calls-calls)
	}
}

func TestNestedGroupsOff(t *testing.T) {
	const grp = "CN=Mail-POP3-Disabled,OU=Groups,DC=example,DC=com"
	e := entry(map[string][]string{"userPrincipalName": {"x@example.com"}, "memberOf": {grp}})
	dir := &groupDirectory{fakeDirectory: &fakeDirectory{entries: map[string]*ldapsource.Entry{"x@example.com": e}}}
	pol, err := New(Config{Preset: "active-directory", NestedGroups: ptr(false), ServiceRules: map[string]*Rule{"pop3": {Not: &Rule{MemberOf: grp}}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := r.Resolve(context.Background(), mustAddr(t, "x@example.com"))
	if err != nil || acct.Has(POP3) || dir.calls != 0 {
		t.Errorf("nested_groups false: %v pop3=%v group calls=%d (memberOf should decide)", err, acct.Has(POP3), dir.calls)
	}
	if !slices.Contains(pol.Attributes(), "memberOf") {
		t.Errorf("attributes %v lack memberOf", pol.Attributes())
	}
}

func TestNestedGroupsNeedACapableDirectory(t *testing.T) {
	pol, err := New(Config{Preset: "active-directory", ServiceRules: map[string]*Rule{"activesync": {MemberOf: "CN=Mobile-Users,DC=example,DC=com"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewResolver(&fakeDirectory{}, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "policy.nested_groups") {
		t.Errorf("NewResolver = %v", err)
	}
	// Without member_of rules there is nothing to resolve.
	pol, _ = New(Config{Preset: "exchange"})
	if _, err := NewResolver(&fakeDirectory{}, pol, testDomains(t), DefaultCacheConfig(), nil, nil); err != nil {
		t.Errorf("exchange preset without member_of: %v", err)
	}
}
