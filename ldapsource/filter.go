package ldapsource

import (
	"fmt"
	"slices"
	"strings"

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
	var t filterTemplate
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			t.parts = append(t.parts, rest)
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("unclosed { in %q", tmpl)
		}
		name := rest[i+1 : i+j]
		if !slices.Contains(allowed, name) {
			return t, fmt.Errorf("unknown placeholder {%s} in %q: use %s", name, tmpl, says)
		}
		t.parts = append(t.parts, rest[:i], name)
		rest = rest[i+j+1:]
	}
	if len(t.parts) == 1 {
		return t, fmt.Errorf("%q has no %s placeholder: every lookup would find the same entries", tmpl, says)
	}
	sample := t.expand(Query{Email: "x@example.com", Local: "x", Domain: "example.com"})
	if _, err := ldap.CompileFilter(sample); err != nil {
		return t, fmt.Errorf("%q is not a valid LDAP filter: %w", tmpl, err)
	}
	return t, nil
}

func (t filterTemplate) expand(q Query) string {
	if q.Or != nil {
		return "(|" + t.expand(Query{Email: q.Email, Local: q.Local, Domain: q.Domain}) + t.expand(*q.Or) + ")"
	}
	var b strings.Builder
	for i, p := range t.parts {
		if i%2 == 0 {
			b.WriteString(p)
		} else {
			b.WriteString(ldap.EscapeFilter(placeholders[p](q)))
		}
	}
	return b.String()
}
