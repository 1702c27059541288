package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Rule is one test over a directory entry, written in configuration as a map
// with exactly one operator key:
//
//	{has: enabledService, value: pop3secured}   a value of a (multi-valued) attribute, case-insensitively
//	{equals: accountStatus, value: active}      the attribute's only (first) value, case-insensitively
//	{present: mailHost} / {absent: mailHost}
//	{bit_set: userAccountControl, mask: 2}      an integer attribute with all mask bits set
//	{bit_clear: userAccountControl, mask: 2}
//	{member_of: "cn=pop-users,ou=groups,dc=example,dc=com"}
//	{all: [...]} / {any: [...]} / {not: {...}}
//
// A leaf may say what a missing attribute means with if_missing: true|false;
// without it, has/equals/present/bit_set/member_of are false and absent and
// bit_clear are true when the attribute is missing.
type Rule struct {
	Has      string `mapstructure:"has" json:"has,omitempty"`
	Equals   string `mapstructure:"equals" json:"equals,omitempty"`
	Present  string `mapstructure:"present" json:"present,omitempty"`
	Absent   string `mapstructure:"absent" json:"absent,omitempty"`
	BitSet   string `mapstructure:"bit_set" json:"bit_set,omitempty"`
	BitClear string `mapstructure:"bit_clear" json:"bit_clear,omitempty"`
	MemberOf string `mapstructure:"member_of" json:"member_of,omitempty"`
	All      []Rule `mapstructure:"all" json:"all,omitempty"`
	Any      []Rule `mapstructure:"any" json:"any,omitempty"`
	Not      *Rule  `mapstructure:"not" json:"not,omitempty"`

	Value     string `mapstructure:"value" json:"value,omitempty"`
	Mask      string `mapstructure:"mask" json:"mask,omitempty"` // decimal or 0x hex
	IfMissing *bool  `mapstructure:"if_missing" json:"if_missing,omitempty"`

	mask uint64 // parsed Mask, set by Validate
}

// MemberOfAttribute is where member_of looks for group DNs: the attribute
// that Active Directory and OpenLDAP's memberof overlay maintain.
const MemberOfAttribute = "memberOf"

func (r *Rule) operators() []string {
	var ops []string
	for _, o := range []struct {
		name string
		set  bool
	}{
		{"has", r.Has != ""}, {"equals", r.Equals != ""}, {"present", r.Present != ""},
		{"absent", r.Absent != ""}, {"bit_set", r.BitSet != ""}, {"bit_clear", r.BitClear != ""},
		{"member_of", r.MemberOf != ""}, {"all", r.All != nil}, {"any", r.Any != nil}, {"not", r.Not != nil},
	} {
		if o.set {
			ops = append(ops, o.name)
		}
	}
	return ops
}

// Validate checks the rule and its children and prepares it for Eval.
// Errors name the path of the offending rule below path.
func (r *Rule) Validate(path string) error {
	ops := r.operators()
	switch len(ops) {
	case 0:
		return fmt.Errorf("%s: empty rule: give one of has, equals, present, absent, bit_set, bit_clear, member_of, all, any, not", path)
	case 1:
	default:
		return fmt.Errorf("%s: one operator per rule, found %s: nest them under all/any", path, strings.Join(ops, " and "))
	}
	switch ops[0] {
	case "has", "equals":
		if r.Value == "" {
			return fmt.Errorf("%s: %s needs a value: {%s: %s, value: ...}", path, ops[0], ops[0], r.attr())
		}
	case "bit_set", "bit_clear":
		m, err := strconv.ParseUint(strings.TrimSpace(r.Mask), 0, 64)
		if err != nil || m == 0 {
			return fmt.Errorf("%s: %s needs a non-zero integer mask, e.g. {%s: %s, mask: 2}", path, ops[0], ops[0], r.attr())
		}
		r.mask = m
	case "all", "any":
		list := r.All
		if ops[0] == "any" {
			list = r.Any
		}
		if len(list) == 0 {
			return fmt.Errorf("%s.%s: list is empty", path, ops[0])
		}
		for i := range list {
			if err := list[i].Validate(fmt.Sprintf("%s.%s[%d]", path, ops[0], i)); err != nil {
				return err
			}
		}
	case "not":
		return r.Not.Validate(path + ".not")
	}
	if (r.Value != "") != (ops[0] == "has" || ops[0] == "equals") {
		return fmt.Errorf("%s: value only goes with has or equals", path)
	}
	if (r.Mask != "") != (ops[0] == "bit_set" || ops[0] == "bit_clear") {
		return fmt.Errorf("%s: mask only goes with bit_set or bit_clear", path)
	}
	if r.IfMissing != nil && (ops[0] == "all" || ops[0] == "any" || ops[0] == "not") {
		return fmt.Errorf("%s: if_missing goes on a leaf rule, not on %s", path, ops[0])
	}
	return nil
}

// attr is the attribute a leaf rule reads ("" for all/any/not).
func (r *Rule) attr() string {
	for _, a := range []string{r.Has, r.Equals, r.Present, r.Absent, r.BitSet, r.BitClear} {
		if a != "" {
			return a
		}
	}
	if r.MemberOf != "" {
		return MemberOfAttribute
	}
	return ""
}

// Attributes appends every attribute the rule reads to dst.
func (r *Rule) Attributes(dst []string) []string {
	if a := r.attr(); a != "" {
		dst = append(dst, a)
	}
	for i := range r.All {
		dst = r.All[i].Attributes(dst)
	}
	for i := range r.Any {
		dst = r.Any[i].Attributes(dst)
	}
	if r.Not != nil {
		dst = r.Not.Attributes(dst)
	}
	return dst
}

// Entry is what rules read: attribute values by case-insensitive name.
type Entry interface {
	Values(attr string) []string
}

// Eval decides the rule for e and says why in one line.
func (r *Rule) Eval(e Entry) (bool, string) {
	switch {
	case r.All != nil:
		for i := range r.All {
			if ok, why := r.All[i].Eval(e); !ok {
				return false, why
			}
		}
		return true, "all of " + r.String()
	case r.Any != nil:
		var whys []string
		for i := range r.Any {
			ok, why := r.Any[i].Eval(e)
			if ok {
				return true, why
			}
			whys = append(whys, why)
		}
		return false, "none of: " + strings.Join(whys, "; ")
	case r.Not != nil:
		ok, why := r.Not.Eval(e)
		return !ok, "not (" + why + ")"
	}
	vals := e.Values(r.attr())
	if len(vals) == 0 && r.IfMissing != nil {
		return *r.IfMissing, fmt.Sprintf("%s: %s is missing, if_missing=%t", r, r.attr(), *r.IfMissing)
	}
	var ok bool
	switch {
	case r.Has != "":
		ok = containsFold(vals, r.Value)
	case r.Equals != "":
		ok = len(vals) > 0 && strings.EqualFold(vals[0], r.Value)
	case r.Present != "":
		ok = len(vals) > 0
	case r.Absent != "":
		ok = len(vals) == 0
	case r.BitSet != "":
		ok = anyInt(vals, func(n uint64) bool { return n&r.mask == r.mask }, false)
	case r.BitClear != "":
		ok = anyInt(vals, func(n uint64) bool { return n&r.mask == 0 }, true)
	case r.MemberOf != "":
		ok = containsDN(vals, r.MemberOf)
	}
	return ok, fmt.Sprintf("%s is %t", r, ok)
}

// String renders the rule compactly for explanations and logs.
func (r *Rule) String() string {
	switch {
	case r.Has != "":
		return fmt.Sprintf("%s has %q", r.Has, r.Value)
	case r.Equals != "":
		return fmt.Sprintf("%s equals %q", r.Equals, r.Value)
	case r.Present != "":
		return r.Present + " present"
	case r.Absent != "":
		return r.Absent + " absent"
	case r.BitSet != "":
		return fmt.Sprintf("%s bit_set %s", r.BitSet, r.Mask)
	case r.BitClear != "":
		return fmt.Sprintf("%s bit_clear %s", r.BitClear, r.Mask)
	case r.MemberOf != "":
		return fmt.Sprintf("member_of %q", r.MemberOf)
	case r.All != nil:
		return "all(" + ruleList(r.All) + ")"
	case r.Any != nil:
		return "any(" + ruleList(r.Any) + ")"
	case r.Not != nil:
		return "not(" + r.Not.String() + ")"
	}
	return "(empty rule)"
}

func ruleList(rs []Rule) string {
	parts := make([]string, len(rs))
	for i := range rs {
		parts[i] = rs[i].String()
	}
	return strings.Join(parts, ", ")
}

func containsFold(vals []string, want string) bool {
	for _, v := range vals {
		if strings.EqualFold(v, want) {
			return true
		}
	}
	return false
}

// anyInt reports whether some value parses as an integer and satisfies f.
// AD stores userAccountControl as a signed 32-bit decimal; negative values
// are read as their two's-complement bits. With no parsable value the
// answer is missing.
func anyInt(vals []string, f func(uint64) bool, missing bool) bool {
	parsed := false
	for _, v := range vals {
		n, err := parseIntBits(v)
		if err != nil {
			continue
		}
		parsed = true
		if f(n) {
			return true
		}
	}
	if !parsed {
		return missing
	}
	return false
}

var errNotInt = errors.New("not an integer")

func parseIntBits(v string) (uint64, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseUint(v, 10, 64); err == nil {
		return n, nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return uint64(n), nil
	}
	return 0, errNotInt
}

// containsDN compares DNs loosely: case-insensitive, ignoring spaces after
// commas, which is how directories differ in spelling the same group.
func containsDN(vals []string, want string) bool {
	w := normDN(want)
	for _, v := range vals {
		if normDN(v) == w {
			return true
		}
	}
	return false
}

func normDN(dn string) string {
	parts := strings.Split(dn, ",")
	for i, p := range parts {
		parts[i] = strings.ToLower(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}
