package ldapsource

import (
	"fmt"
	"slices"
	"strings"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// Query is what one lookup searches for: the parts of a validated address.
type Query struct {
	Email  string
	Local  string
	Domain string
	// Or, when set, is a second address the same search finds the entry
	// by: an address of an alias domain is searched both as the same
	// local part under the primary domain (Query) and as asked (Or), in
	// one search whose filter is the two expansions joined by |.
	Or *Query
}

// filterTemplate is a search filter with {email}, {local} and {domain}
// placeholders. Values are escaped with ldap.EscapeFilter when expanded, so
// nothing from a request can change the filter's structure.
type filterTemplate struct {
	parts []string // literal, placeholder, literal, ... (odd indexes are placeholder names)
	// addressAttrs are the attributes (lower-case) whose assertions hold
	// {email} or {local}: where an entry found for a non-ASCII address
	// must hold that address (exactMatch).
	addressAttrs []string
}

var placeholders = map[string]func(Query) string{
	"email":  func(q Query) string { return q.Email },
	"local":  func(q Query) string { return q.Local },
	"domain": func(q Query) string { return q.Domain },
}

// parseFilter checks tmpl: known placeholders only, at least one of them,
// and a filter that compiles.
func parseFilter(tmpl string) (filterTemplate, error) {
	return parseFilterOf(tmpl, "{email}, {local} or {domain}", "email", "local", "domain")
}

// parseFilterOf is parseFilter accepting only the placeholders allowed,
// which the error messages call says.
func parseFilterOf(tmpl, says string, allowed ...string) (filterTemplate, error) {
	parts, err := splitPlaceholders(tmpl, func(name string) error {
		if !slices.Contains(allowed, name) {
			return fmt.Errorf("unknown placeholder {%s} in %q: use %s", name, tmpl, says)
		}
		return nil
	})
	if err != nil {
		return filterTemplate{}, err
	}
	t := filterTemplate{parts: parts}
	if len(t.parts) == 1 {
		return t, fmt.Errorf("%q has no %s placeholder: every lookup would find the same entries", tmpl, says)
	}
	sample := t.expand(Query{Email: "x@example.com", Local: "x", Domain: "example.com"})
	if _, err := ldap.CompileFilter(sample); err != nil {
		return t, fmt.Errorf("%q is not a valid LDAP filter: %w", tmpl, err)
	}
	// A NUL marks the address's values: a request's address never has one.
	marked, err := ldap.CompileFilter(t.expand(Query{Email: "\x00", Local: "\x00", Domain: "example.com"}))
	if err != nil {
		return t, fmt.Errorf("%q is not a valid LDAP filter: %w", tmpl, err)
	}
	walkAssertions(marked, func(attr, value string) {
		if strings.Contains(value, "\x00") && !slices.Contains(t.addressAttrs, attr) {
			t.addressAttrs = append(t.addressAttrs, attr)
		}
	})
	return t, nil
}

// walkAssertions calls fn with the attribute (lower-case) and the value of
// every assertion in f; a substrings assertion's parts are joined.
func walkAssertions(f *ber.Packet, fn func(attr, value string)) {
	switch f.Tag {
	case ldap.FilterAnd, ldap.FilterOr, ldap.FilterNot:
		for _, c := range f.Children {
			walkAssertions(c, fn)
		}
	default:
		attr, value, _ := assertion(f)
		fn(attr, value)
	}
}

// assertion returns the attribute (lower-case) and value of the filter
// item f, and whether it is an equality match.
func assertion(f *ber.Packet) (attr, value string, equality bool) {
	switch f.Tag {
	case ldap.FilterEqualityMatch, ldap.FilterApproxMatch, ldap.FilterGreaterOrEqual, ldap.FilterLessOrEqual:
		if len(f.Children) == 2 {
			attr, value = f.Children[0].Data.String(), f.Children[1].Data.String()
		}
	case ldap.FilterSubstrings:
		if len(f.Children) == 2 {
			attr = f.Children[0].Data.String()
			var b strings.Builder
			for _, p := range f.Children[1].Children {
				b.WriteString(p.Data.String())
			}
			value = b.String()
		}
	case ldap.FilterExtensibleMatch:
		for _, c := range f.Children {
			switch c.Tag {
			case ldap.MatchingRuleAssertionType:
				attr = c.Data.String()
			case ldap.MatchingRuleAssertionMatchValue:
				value = c.Data.String()
			}
		}
	case ldap.FilterPresent:
		attr = f.Data.String()
	}
	return strings.ToLower(attr), value, f.Tag == ldap.FilterEqualityMatch
}

// exactMatch reports whether entry e, which the directory returned for the
// expanded filter, holds the address it was searched for as mailbeacon
// matches addresses: ASCII letters case-insensitively, every other byte as
// it is. Directories match by their own rules - OpenLDAP's caseIgnoreMatch
// folds U+0130 to i and fullwidth letters to ASCII (NFKC), Active
// Directory ignores width - so alİce@ or ａlice@ would otherwise find
// alice. Only assertions on addressAttrs with non-ASCII values are
// checked; an assertion that cannot be checked exactly (substrings,
// ordering, approximate, extensible match) does not hold; a negation is
// left to the directory.
func (t filterTemplate) exactMatch(filter string, e *Entry) bool {
	f, err := ldap.CompileFilter(filter)
	if err != nil {
		return false
	}
	return t.holds(f, e)
}

func (t filterTemplate) holds(f *ber.Packet, e *Entry) bool {
	switch f.Tag {
	case ldap.FilterAnd:
		for _, c := range f.Children {
			if !t.holds(c, e) {
				return false
			}
		}
		return true
	case ldap.FilterOr:
		for _, c := range f.Children {
			if t.holds(c, e) {
				return true
			}
		}
		return false
	case ldap.FilterNot:
		return true
	}
	attr, value, equality := assertion(f)
	if isASCII(value) || !slices.Contains(t.addressAttrs, attr) {
		return true
	}
	if !equality {
		return false
	}
	return slices.ContainsFunc(e.Values(attr), func(v string) bool { return equalASCIIFold(v, value) })
}

// ascii reports whether every value of q is ASCII: the directory's
// matching then agrees with mailbeacon's.
func (q Query) ascii() bool {
	return isASCII(q.Email) && isASCII(q.Local) && (q.Or == nil || q.Or.ascii())
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// equalASCIIFold compares a and b byte for byte, A-Z equal to a-z.
func equalASCIIFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func (t filterTemplate) expand(q Query) string {
	if q.Or != nil {
		return "(|" + t.expand(Query{Email: q.Email, Local: q.Local, Domain: q.Domain}) + t.expand(*q.Or) + ")"
	}
	return expandParts(t.parts, func(name string) string { return placeholders[name](q) })
}

// splitPlaceholders splits tmpl into literal, placeholder name, literal,
// ... (odd indexes are names); check refuses a name with its error.
func splitPlaceholders(tmpl string, check func(name string) error) ([]string, error) {
	var parts []string
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return append(parts, rest), nil
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unclosed { in %q", tmpl)
		}
		name := rest[i+1 : i+j]
		if err := check(name); err != nil {
			return nil, err
		}
		parts = append(parts, rest[:i], name)
		rest = rest[i+j+1:]
	}
}

// expandParts joins the parts splitPlaceholders made, each placeholder
// as value(name) escaped with ldap.EscapeFilter.
func expandParts(parts []string, value func(name string) string) string {
	var b strings.Builder
	for i, p := range parts {
		if i%2 == 0 {
			b.WriteString(p)
		} else {
			b.WriteString(ldap.EscapeFilter(value(p)))
		}
	}
	return b.String()
}
