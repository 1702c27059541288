package ldapsource

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// LinkedFilter is a search filter template for an entry that another entry
// links to (a Zimbra account's class of service, its domain). Its {name}
// placeholders are filled by the caller; every value is escaped with
// ldap.EscapeFilter, so that nothing read from a directory entry or a
// request can change the filter's structure.
type LinkedFilter struct {
	parts []string // literal, placeholder, literal, ...
}

// ParseLinkedFilter checks tmpl: balanced braces, placeholder names that
// are not empty, and a filter that compiles.
func ParseLinkedFilter(tmpl string) (LinkedFilter, error) {
	parts, err := splitPlaceholders(tmpl, func(name string) error {
		if name == "" || strings.ContainsAny(name, "{()") {
			return fmt.Errorf("placeholder {%s} in %q: name an attribute, e.g. {zimbraCOSId}", name, tmpl)
		}
		return nil
	})
	if err != nil {
		return LinkedFilter{}, err
	}
	f := LinkedFilter{parts: parts}
	if strings.ContainsRune(strings.Join(f.parts, ""), '}') {
		return f, fmt.Errorf("unopened } in %q", tmpl)
	}
	sample := f.Expand(func(string) string { return "x" })
	if _, err := ldap.CompileFilter(sample); err != nil {
		return f, fmt.Errorf("%q is not a valid LDAP filter: %w", tmpl, err)
	}
	return f, nil
}

// Placeholders returns the names of f's placeholders, in order.
func (f LinkedFilter) Placeholders() []string {
	var names []string
	for i := 1; i < len(f.parts); i += 2 {
		names = append(names, f.parts[i])
	}
	return names
}

// Expand fills the placeholders with value(name), escaped.
func (f LinkedFilter) Expand(value func(name string) string) string {
	return expandParts(f.parts, value)
}

// LinkedQuery is one search for a linked entry: a filter under a base, or
// (Filter empty) the entry at BaseDN itself.
type LinkedQuery struct {
	// Key is the configuration key the search comes from, named in
	// errors: policy.linked[1].
	Key    string
	BaseDN string // "" is ldap.base_dn
	Scope  int    // as ParseScope returns it; the zero value is ScopeBase
	Filter string // expanded (LinkedFilter.Expand); "" reads BaseDN itself
}

// ScopeBase is the scope of a search of the base entry alone.
const ScopeBase = ldap.ScopeBaseObject

// ParseScope reads a search scope: "sub" (the default), "one" or "base".
func ParseScope(s string) (int, error) { return parseScope(s) }

// CheckDN reports a value that is not a distinguished name, for the
// configuration key key.
func CheckDN(key, dn string) error {
	if err := noControlCharacter(key, dn); err != nil {
		return err
	}
	if _, err := ldap.ParseDN(dn); err != nil {
		return fmt.Errorf("%s: %q is not a DN: %w", key, dn, err)
	}
	return nil
}

// FindLinked returns the one entry q finds, with attrs. It returns
// ErrNotFound (also for a fixed DN that does not exist) or ErrAmbiguous as
// answers, and other errors for directory failures; a search base that
// does not exist is a configuration error naming q.Key.
func (s *Source) FindLinked(ctx context.Context, q LinkedQuery, attrs []string) (*Entry, error) {
	if len(attrs) == 0 {
		attrs = []string{"1.1"}
	}
	sp := searchSpec{base: q.BaseDN, scope: q.Scope, filter: q.Filter, attrs: attrs}
	if sp.base == "" {
		sp.base = s.cfg.BaseDN
	}
	fixed := q.Filter == ""
	if fixed {
		sp.scope, sp.filter = ldap.ScopeBaseObject, "(objectClass=*)"
	}
	e, err := s.findOne(ctx, sp)
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrAmbiguous) {
		return e, err
	}
	key := q.Key + ".base_dn"
	if fixed {
		key = q.Key + ".dn"
	}
	var lerr *ldap.Error
	if ldap.IsErrorWithCode(err, ldap.LDAPResultReferral) && errors.As(err, &lerr) {
		return nil, referralError(key, lerr)
	}
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		if fixed {
			return nil, ErrNotFound
		}
		if errors.As(err, &lerr) {
			err = lerr
		}
		return nil, &Error{Kind: Configuration, Key: key,
			Reason: fmt.Sprintf("no such entry as %q, or the service account may not read it", sp.base),
			Fix:    "name the entry above the linked entries, and let ldap.bind_dn read it", Err: err}
	}
	return nil, err
}
