package embedded

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

const (
	ruleBitAnd = "1.2.840.113556.1.4.803" // LDAP_MATCHING_RULE_BIT_AND (AD)
	ruleBitOr  = "1.2.840.113556.1.4.804" // LDAP_MATCHING_RULE_BIT_OR  (AD)
)

// Entry is one directory entry.
type Entry struct {
	DN    string
	Attrs map[string][]string // attribute names as given; lookup is case-insensitive
}

// Get returns the values of attr, matched case-insensitively.
func (e *Entry) Get(attr string) []string {
	for k, v := range e.Attrs {
		if strings.EqualFold(k, attr) {
			return v
		}
	}
	return nil
}

// Dir is an in-memory directory: entries plus RFC 4515 filter evaluation.
// Filters are parsed with go-ldap's CompileFilter and evaluated here,
// because gldap only parses requests.
type Dir struct {
	Entries []*Entry
}

// Bind checks a simple bind against the entry's userPassword (plain text, tests only).
// The bind name may be a DN or (AD style) a userPrincipalName / mail value.
func (d *Dir) Bind(name, password string) bool {
	if password == "" {
		return false // unauthenticated bind = fail (RFC 4513 5.1.2)
	}
	for _, e := range d.Entries {
		if strings.EqualFold(e.DN, name) || contains(e.Get("userPrincipalName"), name) {
			// Passwords compare exactly, unlike attribute values.
			return slices.Contains(e.Get("userPassword"), password)
		}
	}
	return false
}

// Search returns the entries under baseDN (scope 0 base, 1 one, 2 sub) that match filter.
func (d *Dir) Search(baseDN string, scope int, filter string) ([]*Entry, error) {
	f, err := ldap.CompileFilter(filter)
	if err != nil {
		return nil, err
	}
	var out []*Entry
	for _, e := range d.Entries {
		if !inScope(e.DN, baseDN, scope) {
			continue
		}
		ok, err := Match(f, e)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e)
		}
	}
	return out, nil
}

func inScope(dn, base string, scope int) bool {
	dnl, bl := strings.ToLower(dn), strings.ToLower(base)
	switch scope {
	case 0:
		return dnl == bl
	case 1:
		i := strings.Index(dnl, ",")
		return i >= 0 && dnl[i+1:] == bl
	default:
		return bl == "" || dnl == bl || strings.HasSuffix(dnl, ","+bl)
	}
}

func contains(vals []string, v string) bool {
	for _, x := range vals {
		if strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}

func str(p *ber.Packet) string { return p.Data.String() }

// Match evaluates a compiled filter against an entry. Equality/substring are
// case-insensitive (like caseIgnoreMatch); ordering compares numerically when
// both sides are integers; extensible match supports the AD bit rules.
func Match(f *ber.Packet, e *Entry) (bool, error) {
	switch f.Tag {
	case ldap.FilterAnd:
		for _, c := range f.Children {
			if ok, err := Match(c, e); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case ldap.FilterOr:
		for _, c := range f.Children {
			if ok, err := Match(c, e); err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case ldap.FilterNot:
		ok, err := Match(f.Children[0], e)
		return !ok, err
	case ldap.FilterPresent:
		return len(e.Get(str(f))) > 0, nil
	case ldap.FilterEqualityMatch, ldap.FilterApproxMatch:
		return contains(e.Get(str(f.Children[0])), str(f.Children[1])), nil
	case ldap.FilterGreaterOrEqual, ldap.FilterLessOrEqual:
		want := str(f.Children[1])
		for _, v := range e.Get(str(f.Children[0])) {
			c := compare(v, want)
			if (f.Tag == ldap.FilterGreaterOrEqual && c >= 0) || (f.Tag == ldap.FilterLessOrEqual && c <= 0) {
				return true, nil
			}
		}
		return false, nil
	case ldap.FilterSubstrings:
		for _, v := range e.Get(str(f.Children[0])) {
			if substr(strings.ToLower(v), f.Children[1].Children) {
				return true, nil
			}
		}
		return false, nil
	case ldap.FilterExtensibleMatch:
		var rule, attr, val string
		for _, c := range f.Children {
			switch c.Tag {
			case ldap.MatchingRuleAssertionMatchingRule:
				rule = str(c)
			case ldap.MatchingRuleAssertionType:
				attr = str(c)
			case ldap.MatchingRuleAssertionMatchValue:
				val = str(c)
			}
		}
		switch rule {
		case "":
			return contains(e.Get(attr), val), nil
		case ruleBitAnd, ruleBitOr:
			mask, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return false, nil
			}
			for _, v := range e.Get(attr) {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					continue
				}
				if (rule == ruleBitAnd && n&mask == mask) || (rule == ruleBitOr && n&mask != 0) {
					return true, nil
				}
			}
			return false, nil
		}
		return false, fmt.Errorf("unsupported matching rule %q", rule)
	}
	return false, fmt.Errorf("unsupported filter tag %d", f.Tag)
}

func compare(a, b string) int {
	ai, err1 := strconv.ParseInt(a, 10, 64)
	bi, err2 := strconv.ParseInt(b, 10, 64)
	if err1 == nil && err2 == nil {
		switch {
		case ai < bi:
			return -1
		case ai > bi:
			return 1
		}
		return 0
	}
	return strings.Compare(strings.ToLower(a), strings.ToLower(b))
}

func substr(v string, parts []*ber.Packet) bool {
	for _, p := range parts {
		sub := strings.ToLower(str(p))
		switch p.Tag {
		case ldap.FilterSubstringsInitial:
			if !strings.HasPrefix(v, sub) {
				return false
			}
			v = v[len(sub):]
		case ldap.FilterSubstringsAny:
			j := strings.Index(v, sub)
			if j < 0 {
				return false
			}
			v = v[j+len(sub):]
		case ldap.FilterSubstringsFinal:
			if !strings.HasSuffix(v, sub) {
				return false
			}
		}
	}
	return true
}
