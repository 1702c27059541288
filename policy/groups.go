package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// GroupDirectory is implemented by a Directory that can tell which of some
// groups an entry belongs to, directly or through nested groups.
// ldapsource.Source does, with Active Directory's in-chain matching rule.
// The Resolver asks it once per lookup when policy.nested_groups is on, and
// the answer is part of the decision it caches.
type GroupDirectory interface {
	MemberOf(ctx context.Context, dn string, groups []string) ([]string, error)
}

// memberships are the groups a directory resolved for one entry: of the
// groups asked about, those the entry belongs to.
type memberships struct {
	asked  map[string]bool // normalised DNs
	member map[string]bool
}

func newMemberships(asked, member []string) *memberships {
	m := &memberships{asked: map[string]bool{}, member: map[string]bool{}}
	for _, g := range asked {
		m.asked[normDN(g)] = true
	}
	for _, g := range member {
		m.member[normDN(g)] = true
	}
	return m
}

// decisionEntry is what rules read in one decision: the directory entry,
// the groups resolved for it (nil: none, member_of reads memberOf), the
// linked entries it inherits attributes from, and the time of the
// decision.
type decisionEntry struct {
	*ldapsource.Entry
	groups *memberships
	links  []linkedEntry
	now    time.Time
}

// Values returns the entry's own values of attr, else those inherited
// from the first linked entry that has them.
func (e *decisionEntry) Values(attr string) []string {
	if v := e.Entry.Values(attr); len(v) > 0 || len(e.links) == 0 {
		return v
	}
	v, _ := inherited(e.links, attr)
	return v
}

// Origin implements originEntry.
func (e *decisionEntry) Origin(attr string) string { return origin(e.Entry, e.links, attr) }

// InGroup implements groupEntry.
func (e *decisionEntry) InGroup(dn string) (member, resolved bool) {
	if e.groups == nil || !e.groups.asked[normDN(dn)] {
		return false, false
	}
	return e.groups.member[normDN(dn)], true
}

// Now implements clockEntry.
func (e *decisionEntry) Now() time.Time { return e.now }

// Groups lists the group DNs the directory is asked about for each lookup:
// those of the member_of rules when policy.nested_groups is on, else none.
func (p *Policy) Groups() []string { return p.groups }

func (p *Policy) collectGroups() []string {
	var gs []string
	if p.enabled != nil {
		gs = p.enabled.Groups(gs)
	}
	for _, k := range Kinds { // a stable order
		if r := p.services[k]; r != nil {
			gs = r.Groups(gs)
		}
	}
	gs = p.destinationGroups(gs)
	seen := map[string]bool{}
	out := gs[:0]
	for _, g := range gs {
		if !seen[normDN(g)] {
			seen[normDN(g)] = true
			out = append(out, g)
		}
	}
	return out
}

// fetch looks addr of domain d up and, when the policy needs them,
// resolves the entry's nested group memberships and reads its linked
// entries (from their cache unless fresh is set): each is a directory
// failure when it fails, and all go into the one decision that is cached.
func (r *Resolver) fetch(ctx context.Context, d *Domain, addr Address, fresh bool) (*decisionEntry, error) {
	e, err := r.dir.Lookup(ctx, queryOf(d, addr))
	if err != nil {
		return nil, err
	}
	de := &decisionEntry{Entry: e, now: r.now()}
	if len(r.pol.groups) > 0 {
		gd, ok := r.dir.(GroupDirectory)
		if !ok {
			return nil, errors.New("policy.nested_groups: this directory cannot resolve nested groups")
		}
		member, err := gd.MemberOf(ctx, e.DN, r.pol.groups)
		if err != nil {
			return nil, fmt.Errorf("resolving the groups of %s: %w", e.DN, err)
		}
		de.groups = newMemberships(r.pol.groups, member)
	}
	if de.links, err = r.readLinks(ctx, e, fresh); err != nil {
		return nil, err
	}
	return de, nil
}

// queryOf is the search for addr of domain d. An alias domain's address
// is searched under the primary domain, where the directory keeps the
// users (iRedMail: u9@c7.test for u9@alias7.test), and as asked, for
// directories that list alias-domain addresses on the entries: both in
// one search, so that it costs what any other address does, and an entry
// for each is an ambiguity, never a guess.
func queryOf(d *Domain, addr Address) ldapsource.Query {
	q := ldapsource.Query{Email: addr.String(), Local: addr.Local, Domain: addr.Domain}
	if d.AliasOf == "" {
		return q
	}
	p := Address{Local: addr.Local, Domain: d.AliasOf}
	return ldapsource.Query{Email: p.String(), Local: p.Local, Domain: p.Domain, Or: &q}
}

// checkDirectory reports a policy the directory cannot serve.
func (r *Resolver) checkDirectory() error {
	if len(r.pol.links) > 0 {
		if _, ok := r.dir.(LinkedDirectory); !ok {
			return errors.New("policy.linked: this directory cannot read linked entries")
		}
	}
	if len(r.pol.groups) > 0 {
		if _, ok := r.dir.(GroupDirectory); !ok {
			return errors.New("policy.nested_groups: this directory cannot resolve nested groups: set nested_groups: false to read memberOf")
		}
	}
	return nil
}

// addressSpec is one place a primary address may be: an attribute, and
// optionally the prefix that marks the value to take.
type addressSpec struct {
	attr   string
	prefix string
}

func parseAddressSpecs(s string) ([]addressSpec, error) {
	var out []addressSpec
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		attr, prefix, _ := strings.Cut(part, ":")
		if !validAttributeName(attr) {
			return nil, fmt.Errorf("%q is not an attribute name, or an attribute and a prefix such as \"proxyAddresses:SMTP:\"", part)
		}
		out = append(out, addressSpec{attr: attr, prefix: prefix})
	}
	if len(out) == 0 {
		return nil, errors.New("empty: name the attribute holding the primary address, e.g. mail")
	}
	return out, nil
}

// validAttributeName accepts an LDAP attribute type name (RFC 4512
// descr: a letter, then letters, digits and hyphens).
func validAttributeName(a string) bool {
	if a == "" || !isLetter(a[0]) {
		return false
	}
	for i := 1; i < len(a); i++ {
		if c := a[i]; !isLetter(c) && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// primaryOf returns the entry's primary address by the first spec that
// gives a valid one.
// PrimaryAddress returns the entry's primary address, found as
// policy.primary_address says.
func (p *Policy) PrimaryAddress(e Entry) (string, bool) { return p.primaryOf(e) }

func (p *Policy) primaryOf(e Entry) (string, bool) {
	for _, s := range p.primary {
		vals := e.Values(s.attr)
		if s.prefix == "" && len(vals) > 1 {
			vals = vals[:1]
		}
		for _, v := range vals {
			if !strings.HasPrefix(v, s.prefix) {
				continue
			}
			if pa, err := ParseAddress(strings.TrimSpace(v[len(s.prefix):])); err == nil {
				return pa.String(), true
			}
		}
	}
	return "", false
}
