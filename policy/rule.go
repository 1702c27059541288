package policy

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Rule is one test over a directory entry, written in configuration as a map
// with exactly one operator key:
//
//	{has: enabledService, value: pop3secured}   a value of a (multi-valued) attribute, case-insensitively
//	{has_prefix: protocolSettings, value: "POP3§0"}  a value starting with value, case-insensitively
//	{equals: accountStatus, value: active}      the attribute's only (first) value, case-insensitively
//	{present: mailHost} / {absent: mailHost}
//	{bit_set: userAccountControl, mask: 2}      an integer attribute with all mask bits set
//	{bit_clear: userAccountControl, mask: 2}
//	{filetime_past: accountExpires}             a Windows FILETIME before now (0 and 2^63-1: never)
//	{member_of: "cn=pop-users,ou=groups,dc=example,dc=com"}
//	{all: [...]} / {any: [...]} / {not: {...}}
//
// A leaf may say what a missing attribute means with if_missing: true|false;
// without it, has/has_prefix/equals/present/bit_set/filetime_past/member_of
// are false and absent and bit_clear are true when the attribute is missing.
//
// member_of reads the memberOf attribute, unless the directory resolved the
// entry's groups for the decision (policy.nested_groups): then it asks
// whether the entry is a member directly or through nested groups.
type Rule struct {
	Has          string `mapstructure:"has" json:"has,omitempty"`
	HasPrefix    string `mapstructure:"has_prefix" json:"has_prefix,omitempty"`
	Equals       string `mapstructure:"equals" json:"equals,omitempty"`
	Present      string `mapstructure:"present" json:"present,omitempty"`
	Absent       string `mapstructure:"absent" json:"absent,omitempty"`
	BitSet       string `mapstructure:"bit_set" json:"bit_set,omitempty"`
	BitClear     string `mapstructure:"bit_clear" json:"bit_clear,omitempty"`
	FiletimePast string `mapstructure:"filetime_past" json:"filetime_past,omitempty"`
	MemberOf     string `mapstructure:"member_of" json:"member_of,omitempty"`
	All          []Rule `mapstructure:"all" json:"all,omitempty"`
	Any          []Rule `mapstructure:"any" json:"any,omitempty"`
	Not          *Rule  `mapstructure:"not" json:"not,omitempty"`

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
		{"has", r.Has != ""}, {"has_prefix", r.HasPrefix != ""}, {"equals", r.Equals != ""}, {"present", r.Present != ""},
		{"absent", r.Absent != ""}, {"bit_set", r.BitSet != ""}, {"bit_clear", r.BitClear != ""},
		{"filetime_past", r.FiletimePast != ""}, {"member_of", r.MemberOf != ""},
		{"all", r.All != nil}, {"any", r.Any != nil}, {"not", r.Not != nil},
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
		return fmt.Errorf("%s: empty rule: give one of has, has_prefix, equals, present, absent, bit_set, bit_clear, filetime_past, member_of, all, any, not", path)
	case 1:
	default:
		return fmt.Errorf("%s: one operator per rule, found %s: nest them under all/any", path, strings.Join(ops, " and "))
	}
	switch ops[0] {
	case "has", "has_prefix", "equals":
		if r.Value == "" {
			return fmt.Errorf("%s: %s needs a value: {%s: %s, value: ...}", path, ops[0], ops[0], r.attr())
		}
	case "member_of":
		if !strings.Contains(r.MemberOf, "=") {
			return fmt.Errorf("%s: member_of needs a group's distinguished name, e.g. {member_of: \"CN=Mobile-Users,OU=Groups,DC=example,DC=com\"}, not %q", path, r.MemberOf)
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
	if (r.Value != "") != (ops[0] == "has" || ops[0] == "has_prefix" || ops[0] == "equals") {
		return fmt.Errorf("%s: value only goes with has, has_prefix or equals", path)
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
	for _, a := range []string{r.Has, r.HasPrefix, r.Equals, r.Present, r.Absent, r.BitSet, r.BitClear, r.FiletimePast} {
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

// Groups appends the group DNs of every member_of rule to dst.
func (r *Rule) Groups(dst []string) []string {
	if r.MemberOf != "" {
		dst = append(dst, r.MemberOf)
	}
	for i := range r.All {
		dst = r.All[i].Groups(dst)
	}
	for i := range r.Any {
		dst = r.Any[i].Groups(dst)
	}
	if r.Not != nil {
		dst = r.Not.Groups(dst)
	}
	return dst
}

// Entry is what rules read: attribute values by case-insensitive name.
type Entry interface {
	Values(attr string) []string
}

// groupEntry is implemented by an Entry whose group memberships the
// directory resolved for this decision, nested groups included: resolved
// is false for a group that was not asked about.
type groupEntry interface {
	InGroup(dn string) (member, resolved bool)
}

// originEntry is implemented by an Entry that takes attributes it lacks
// from linked entries: Origin says, for explanations, where a value came
// from ("from cos \"students\"") or was looked for, "" for the entry's own.
type originEntry interface {
	Origin(attr string) string
}

// withOrigin appends to why where e's value of attr came from.
func withOrigin(e Entry, attr, why string) string {
	if o, ok := e.(originEntry); ok {
		if s := o.Origin(attr); s != "" {
			return why + ", " + s
		}
	}
	return why
}

// clockEntry is implemented by an Entry that carries the time of the
// decision, for filetime_past; without it, the rule uses the current time.
type clockEntry interface {
	Now() time.Time
}

// Eval decides the rule for e and says why in one line.
func (r *Rule) Eval(e Entry) (bool, string) { return r.eval(e, true) }

// eval decides the rule; the reason is built only when explain is set.
func (r *Rule) eval(e Entry, explain bool) (bool, string) {
	switch {
	case r.All != nil:
		for i := range r.All {
			if ok, why := r.All[i].eval(e, explain); !ok {
				return false, why
			}
		}
		if !explain {
			return true, ""
		}
		return true, "all of " + r.String()
	case r.Any != nil:
		var whys []string
		for i := range r.Any {
			ok, why := r.Any[i].eval(e, explain)
			if ok {
				return true, why
			}
			if explain {
				whys = append(whys, why)
			}
		}
		if !explain {
			return false, ""
		}
		return false, "none of: " + strings.Join(whys, "; ")
	case r.Not != nil:
		ok, why := r.Not.eval(e, explain)
		if !explain {
			return !ok, ""
		}
		return !ok, "not (" + why + ")"
	}
	if r.MemberOf != "" {
		if g, ok := e.(groupEntry); ok {
			if member, resolved := g.InGroup(r.MemberOf); resolved {
				if !explain {
					return member, ""
				}
				return member, fmt.Sprintf("%s is %t (nested groups included)", r, member)
			}
		}
	}
	vals := e.Values(r.attr())
	if len(vals) == 0 && r.IfMissing != nil {
		if !explain {
			return *r.IfMissing, ""
		}
		return *r.IfMissing, withOrigin(e, r.attr(), fmt.Sprintf("%s: %s is missing, if_missing=%t", r, r.attr(), *r.IfMissing))
	}
	var ok bool
	switch {
	case r.Has != "":
		ok = containsFold(vals, r.Value)
	case r.HasPrefix != "":
		ok = hasPrefixFold(vals, r.Value)
	case r.FiletimePast != "":
		now := time.Now()
		if c, isClock := e.(clockEntry); isClock {
			now = c.Now()
		}
		t, expires := firstFiletime(vals)
		ok = expires && t.Before(now)
		if !explain {
			return ok, ""
		}
		if expires {
			return ok, withOrigin(e, r.attr(), fmt.Sprintf("%s is %t (%s)", r, ok, t.Format(time.RFC3339)))
		}
		return ok, withOrigin(e, r.attr(), fmt.Sprintf("%s is %t (never)", r, ok))
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
	if !explain {
		return ok, ""
	}
	return ok, withOrigin(e, r.attr(), fmt.Sprintf("%s is %t", r, ok))
}

// String renders the rule compactly for explanations and logs.
func (r *Rule) String() string {
	switch {
	case r.Has != "":
		return fmt.Sprintf("%s has %q", r.Has, r.Value)
	case r.HasPrefix != "":
		return fmt.Sprintf("%s has_prefix %q", r.HasPrefix, r.Value)
	case r.FiletimePast != "":
		return r.FiletimePast + " filetime_past"
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

// hasPrefixFold reports whether some value starts with prefix, ignoring case.
func hasPrefixFold(vals []string, prefix string) bool {
	for _, v := range vals {
		if len(v) >= len(prefix) && strings.EqualFold(v[:len(prefix)], prefix) {
			return true
		}
	}
	return false
}

// firstFiletime reads the first value as a Windows FILETIME, the format of
// Active Directory's accountExpires. 0 and 9223372036854775807 (2^63-1)
// mean "never", as does a value that is missing or not an integer.
func firstFiletime(vals []string) (time.Time, bool) {
	if len(vals) == 0 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(vals[0]), 10, 64)
	if err != nil || n <= 0 || n == math.MaxInt64 {
		return time.Time{}, false
	}
	// FILETIME counts 100-nanosecond intervals since 1601-01-01 UTC, which
	// is 11644473600 seconds before the Unix epoch.
	const perSecond, unixOffset = 10_000_000, 11_644_473_600
	return time.Unix(n/perSecond-unixOffset, (n%perSecond)*100).UTC(), true
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
