package ldapsource

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"
)

// DomainSearchConfig says where the directory keeps its mail domains: an
// iRedMail mailDomain entry per domain, an organizational unit per domain,
// or Active Directory's UPN suffixes.
type DomainSearchConfig struct {
	BaseDN string `mapstructure:"base_dn"`
	// Scope is "sub" (the whole subtree, the default), "one" (the base's
	// children) or "base" (the base entry itself, as for the uPNSuffixes
	// of CN=Partitions).
	Scope string `mapstructure:"scope"`
	// Filter finds the entry of one domain; {domain} is replaced by the
	// escaped, normalised domain name.
	Filter string `mapstructure:"filter"`
}

// DomainSearch finds domain entries through a Source's connections.
type DomainSearch struct {
	src    *Source
	base   string
	scope  int
	filter filterTemplate
	attrs  []string
}

// DomainSearch validates cfg and returns a search for domain entries that
// fetches attrs. It shares s's pool, timeouts and failover. Errors name the
// domain_source key at fault.
func (s *Source) DomainSearch(cfg DomainSearchConfig, attrs []string) (*DomainSearch, error) {
	if cfg.BaseDN == "" {
		return nil, fmt.Errorf("domain_source.base_dn: missing: the entry or subtree holding the domains, e.g. o=domains,dc=example,dc=com")
	}
	if err := noControlCharacter("domain_source.base_dn", cfg.BaseDN); err != nil {
		return nil, err
	}
	if _, err := ldap.ParseDN(cfg.BaseDN); err != nil {
		return nil, fmt.Errorf("domain_source.base_dn: %q is not a DN: %w", cfg.BaseDN, err)
	}
	scope, err := parseScope(cfg.Scope)
	if err != nil {
		return nil, fmt.Errorf("domain_source.scope: %w", err)
	}
	f, err := parseFilterOf(cfg.Filter, "{domain}", "domain")
	if err != nil {
		return nil, fmt.Errorf("domain_source.filter: %w", err)
	}
	if len(attrs) == 0 {
		attrs = []string{"1.1"}
	}
	return &DomainSearch{src: s, base: cfg.BaseDN, scope: scope, filter: f, attrs: attrs}, nil
}

func parseScope(s string) (int, error) {
	switch strings.ToLower(s) {
	case "", "sub", "subtree":
		return ldap.ScopeWholeSubtree, nil
	case "one", "onelevel":
		return ldap.ScopeSingleLevel, nil
	case "base":
		return ldap.ScopeBaseObject, nil
	}
	return 0, fmt.Errorf("%q is not one of sub, one, base", s)
}

// Filter returns the filter a lookup of domain sends, for explanations.
func (d *DomainSearch) Filter(domain string) string {
	return d.filter.expand(Query{Domain: domain})
}

// Lookup finds the one entry for domain. It returns ErrNotFound (also for
// a name that cannot be a domain, which never reaches the directory) or
// an *AmbiguousError as answers, and other errors for directory failures.
// Which of several entries names the domain is the caller's to decide: it
// knows how an entry names its domain (policy.DomainTemplate).
func (d *DomainSearch) Lookup(ctx context.Context, domain string) (*Entry, error) {
	if err := plausibleDomain(domain); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	e, err := d.src.findOne(ctx, searchSpec{base: d.base, scope: d.scope, filter: d.Filter(domain), attrs: d.attrs})
	return e, d.describe(err)
}

// searchSizeLimit bounds every search: one entry answers, two are an
// ambiguity whose entries are all known, three an ambiguity that may hide
// more.
const searchSizeLimit = 3

// AmbiguousError is ErrAmbiguous with the entries that matched, for a
// caller that can tell whether they are one thing after all: Active
// Directory's forest domain found both by its crossRef and as a UPN suffix
// of CN=Partitions is one domain.
type AmbiguousError struct {
	Entries []*Entry
	// Complete reports whether Entries are all the entries that match;
	// false when the search stopped at its size limit.
	Complete bool
}

func (e *AmbiguousError) Error() string {
	if e.Complete {
		return fmt.Sprintf("%v (%d)", ErrAmbiguous, len(e.Entries))
	}
	return fmt.Sprintf("%v (%d or more)", ErrAmbiguous, len(e.Entries))
}

// Is makes errors.Is(err, ErrAmbiguous) hold.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// Ping checks that the base entry of the domains can be read: a wrong
// domain_source.base_dn fails every domain, and says so here at start-up.
func (d *DomainSearch) Ping(ctx context.Context) error {
	_, err := d.src.findOne(ctx, searchSpec{base: d.base, scope: ldap.ScopeBaseObject, filter: "(objectClass=*)", attrs: []string{"1.1"}})
	if errors.Is(err, ErrNotFound) {
		err = ldap.NewError(ldap.LDAPResultNoSuchObject, errors.New("not readable"))
	}
	return d.describe(err)
}

// describe names the key at fault when the directory has no base entry
// (or does not let the service account see it), or refers elsewhere for it.
func (d *DomainSearch) describe(err error) error {
	if ldap.IsErrorWithCode(err, ldap.LDAPResultReferral) {
		var lerr *ldap.Error
		if errors.As(err, &lerr) {
			err = lerr
		}
		return referralError("domain_source.base_dn", err)
	}
	if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		// The pool names ldap.base_dn for a missing base: here it is
		// the domain source's.
		var lerr *ldap.Error
		if errors.As(err, &lerr) {
			err = lerr
		}
		return &Error{Kind: Configuration, Key: "domain_source.base_dn",
			Reason: fmt.Sprintf("no such entry as %q, or the service account may not read it", d.base),
			Fix:    "name the entry above the domain entries, and let ldap.bind_dn read it", Err: err}
	}
	return err
}

// plausibleDomain refuses names no DNS domain can have: callers validate
// names first, and this keeps the directory safe from one that forgot.
func plausibleDomain(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("domain name of %d bytes", len(name))
	}
	for l := range strings.SplitSeq(name, ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("domain label of %d bytes", len(l))
		}
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("byte %#x in a domain name", c)
		}
	}
	return nil
}
