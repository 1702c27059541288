package policy

import (
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

func entry(attrs map[string][]string) *ldapsource.Entry {
	e := &ldapsource.Entry{DN: "uid=x,dc=example,dc=com", Attributes: map[string][]string{}}
	for k, v := range attrs {
		e.Attributes[strings.ToLower(k)] = v
	}
	return e
}

func ptr[T any](v T) *T { return &v }

func TestRuleEval(t *testing.T) {
	e := entry(map[string][]string{
		"enabledService":     {"mail", "IMAPSecured"},
		"accountStatus":      {"Active"},
		"userAccountControl": {"66050"}, // 0x10202: normal account, disabled, password never expires
		"negativeFlags":      {"-2147483646"},
		"memberOf":           {"CN=Mobile Users, OU=Groups, DC=example, DC=com"},
	})
	for _, tc := range []struct {
		name string
		rule Rule
		want bool
	}{
		{"has case-insensitive", Rule{Has: "enabledService", Value: "imapsecured"}, true},
		{"has attribute name case-insensitive", Rule{Has: "ENABLEDSERVICE", Value: "mail"}, true},
		{"has missing value", Rule{Has: "enabledService", Value: "pop3secured"}, false},
		{"has missing attribute", Rule{Has: "nothere", Value: "x"}, false},
		{"has missing attribute if_missing true", Rule{Has: "nothere", Value: "x", IfMissing: ptr(true)}, true},
		{"equals", Rule{Equals: "accountStatus", Value: "active"}, true},
		{"equals other", Rule{Equals: "accountStatus", Value: "disabled"}, false},
		{"present", Rule{Present: "accountStatus"}, true},
		{"present missing", Rule{Present: "mailHost"}, false},
		{"absent", Rule{Absent: "mailHost"}, true},
		{"absent present", Rule{Absent: "accountStatus"}, false},
		{"absent if_missing false", Rule{Absent: "mailHost", IfMissing: ptr(false)}, false},
		{"bit_set disabled bit", Rule{BitSet: "userAccountControl", Mask: "2"}, true},
		{"bit_set hex mask", Rule{BitSet: "userAccountControl", Mask: "0x10000"}, true},
		{"bit_set locked-out bit not set", Rule{BitSet: "userAccountControl", Mask: "16"}, false},
		{"bit_clear disabled bit", Rule{BitClear: "userAccountControl", Mask: "2"}, false},
		{"bit_clear missing attribute", Rule{BitClear: "nothere", Mask: "2"}, true},
		{"bit_set missing attribute", Rule{BitSet: "nothere", Mask: "2"}, false},
		{"bit_set negative 32-bit value", Rule{BitSet: "negativeFlags", Mask: "2"}, true},
		{"bit_set non-numeric value", Rule{BitSet: "accountStatus", Mask: "1"}, false},
		{"member_of ignores case and spaces", Rule{MemberOf: "cn=mobile users,ou=groups,dc=example,dc=com"}, true},
		{"member_of other group", Rule{MemberOf: "cn=pop,ou=groups,dc=example,dc=com"}, false},
		{"all true", Rule{All: []Rule{{Has: "enabledService", Value: "mail"}, {Equals: "accountStatus", Value: "active"}}}, true},
		{"all one false", Rule{All: []Rule{{Has: "enabledService", Value: "mail"}, {Absent: "accountStatus"}}}, false},
		{"any one true", Rule{Any: []Rule{{Absent: "accountStatus"}, {Has: "enabledService", Value: "mail"}}}, true},
		{"any none", Rule{Any: []Rule{{Absent: "accountStatus"}, {Present: "mailHost"}}}, false},
		{"not", Rule{Not: &Rule{BitSet: "userAccountControl", Mask: "2"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.rule.Validate("rule"); err != nil {
				t.Fatal(err)
			}
			got, why := tc.rule.Eval(e)
			if got != tc.want {
				t.Errorf("Eval = %v (%s), want %v", got, why, tc.want)
			}
			if why == "" {
				t.Error("no explanation")
			}
		})
	}
}

func TestRuleValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rule    Rule
		errHas  string
		wantErr bool
	}{
		{"empty", Rule{}, "empty rule", true},
		{"two operators", Rule{Has: "a", Value: "b", Present: "c"}, "one operator per rule", true},
		{"has without value", Rule{Has: "a"}, "needs a value", true},
		{"bit_set without mask", Rule{BitSet: "a"}, "non-zero integer mask", true},
		{"bit_set bad mask", Rule{BitSet: "a", Mask: "two"}, "non-zero integer mask", true},
		{"value on present", Rule{Present: "a", Value: "x"}, "value only goes with", true},
		{"mask on has", Rule{Has: "a", Value: "x", Mask: "2"}, "mask only goes with", true},
		{"if_missing on all", Rule{All: []Rule{{Present: "a"}}, IfMissing: ptr(true)}, "if_missing goes on a leaf", true},
		{"empty any", Rule{Any: []Rule{}}, "list is empty", true},
		{"nested error names its path", Rule{All: []Rule{{Present: "a"}, {Not: &Rule{Has: "b"}}}}, "rule.all[1].not", true},
		{"ok", Rule{Any: []Rule{{Present: "a"}, {BitClear: "uac", Mask: "0x2"}}}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.rule.Validate("rule")
			if (err != nil) != tc.wantErr || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("Validate = %v, want error containing %q", err, tc.errHas)
			}
		})
	}
}

func TestRuleAttributes(t *testing.T) {
	r := Rule{All: []Rule{{Has: "enabledService", Value: "x"}, {Not: &Rule{MemberOf: "cn=g"}}, {Any: []Rule{{BitSet: "uac", Mask: "2"}}}}}
	got := strings.Join(r.Attributes(nil), ",")
	if got != "enabledService,memberOf,uac" {
		t.Errorf("Attributes = %s", got)
	}
}
