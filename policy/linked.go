package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy/boundcache"
)

// LinkedConfig is one entry a user's entry links to, such as a Zimbra
// account's class of service: where it is, how it is found, and which
// attributes the user's entry takes from it when it lacks them.
type LinkedConfig struct {
	// Name names the linked entry in explanations and in the
	// placeholders of later linked entries ({domain.zimbraDomainDefaultCOSId}).
	Name string `mapstructure:"name"`
	// BaseDN is where the searches start; "" is ldap.base_dn.
	BaseDN string `mapstructure:"base_dn"`
	// Scope is "sub" (default), "one" or "base".
	Scope string `mapstructure:"scope"`
	// Find lists filters tried in order until one finds the entry. A
	// placeholder is {attribute} (the first value of the user's entry),
	// {attribute:domain} (its part after the last @), or {name.attribute}
	// (of an earlier linked entry). A filter with a placeholder that has
	// no value is skipped; one that finds nothing passes on to the next.
	Find []string `mapstructure:"find"`
	// DN is the entry read when no filter found one.
	DN string `mapstructure:"dn"`
	// Inherit lists the attributes the user's entry takes from this one
	// when it has no value of its own.
	Inherit []string `mapstructure:"inherit"`
}

// link is a validated LinkedConfig.
type link struct {
	name    string
	key     string // policy.linked[i]
	base    string
	scope   int
	find    []ldapsource.LinkedFilter
	dn      string
	inherit []string
	attrs   []string // what its searches fetch: inherit and what later links read
}

// LinkedDirectory is implemented by a Directory that can read linked
// entries; ldapsource.Source does.
type LinkedDirectory interface {
	FindLinked(ctx context.Context, q ldapsource.LinkedQuery, attrs []string) (*ldapsource.Entry, error)
}

// compileLinks validates the linked entries, in order: a placeholder may
// name an earlier linked entry only.
func compileLinks(cfgs []LinkedConfig) ([]*link, error) {
	var links []*link
	for i, c := range cfgs {
		l, err := compileLink(fmt.Sprintf("policy.linked[%d]", i), c, links)
		if err != nil {
			return nil, err
		}
		// What l's filters read of earlier links, their searches fetch.
		for _, f := range l.find {
			for _, ph := range f.Placeholders() {
				name, attr, ok := strings.Cut(ph, ".")
				if !ok {
					continue
				}
				for _, o := range links {
					if strings.EqualFold(o.name, name) {
						o.attrs = dedupFold(append(o.attrs, attr))
					}
				}
			}
		}
		links = append(links, l)
	}
	return links, nil
}

// compileLink validates c, the linked entry of configuration key key,
// after the earlier ones.
func compileLink(key string, c LinkedConfig, earlier []*link) (*link, error) {
	l := &link{name: c.Name, key: key, base: c.BaseDN, dn: c.DN, inherit: c.Inherit, attrs: slices.Clone(c.Inherit)}
	if !validLinkName(c.Name) {
		return nil, fmt.Errorf("%s.name: %q: give a name of letters, digits, - or _, e.g. cos", key, c.Name)
	}
	if slices.ContainsFunc(earlier, func(o *link) bool { return strings.EqualFold(o.name, c.Name) }) {
		return nil, fmt.Errorf("%s.name: %q is used twice: name each linked entry once", key, c.Name)
	}
	for _, dn := range []struct{ key, value string }{{key + ".base_dn", c.BaseDN}, {key + ".dn", c.DN}} {
		if dn.value == "" {
			continue
		}
		if err := ldapsource.CheckDN(dn.key, dn.value); err != nil {
			return nil, err
		}
	}
	var err error
	if l.scope, err = ldapsource.ParseScope(c.Scope); err != nil {
		return nil, fmt.Errorf("%s.scope: %w", key, err)
	}
	if len(c.Find) == 0 && c.DN == "" {
		return nil, fmt.Errorf("%s: neither find nor dn: give filters that find the entry, e.g. find: [\"(zimbraId={zimbraCOSId})\"], or its dn", key)
	}
	for j, tmpl := range c.Find {
		f, err := ldapsource.ParseLinkedFilter(tmpl)
		if err != nil {
			return nil, fmt.Errorf("%s.find[%d]: %w", key, j, err)
		}
		for _, ph := range f.Placeholders() {
			if err := checkPlaceholder(ph, earlier); err != nil {
				return nil, fmt.Errorf("%s.find[%d]: %w", key, j, err)
			}
		}
		l.find = append(l.find, f)
	}
	for _, a := range c.Inherit {
		if !validAttributeName(a) {
			return nil, fmt.Errorf("%s.inherit: %q is not an attribute name", key, a)
		}
	}
	return l, nil
}

func validLinkName(n string) bool {
	if n == "" || !isLetter(n[0]) {
		return false
	}
	for i := 1; i < len(n); i++ {
		if c := n[i]; !isLetter(c) && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// checkPlaceholder accepts {attribute}, {attribute:domain} and
// {name.attribute} of an earlier link.
func checkPlaceholder(ph string, earlier []*link) error {
	if name, attr, ok := strings.Cut(ph, "."); ok {
		if !validAttributeName(attr) {
			return fmt.Errorf("placeholder {%s}: %q is not an attribute name", ph, attr)
		}
		if !slices.ContainsFunc(earlier, func(o *link) bool { return strings.EqualFold(o.name, name) }) {
			return fmt.Errorf("placeholder {%s}: no linked entry %q before this one: list it earlier", ph, name)
		}
		return nil
	}
	attr, mod, hasMod := strings.Cut(ph, ":")
	if hasMod && mod != "domain" {
		return fmt.Errorf("placeholder {%s}: unknown :%s, only :domain (the part after @)", ph, mod)
	}
	if !validAttributeName(attr) {
		return fmt.Errorf("placeholder {%s}: %q is not an attribute name", ph, attr)
	}
	return nil
}

// linkAttributes appends what the user's search must fetch for the links:
// the attributes their filters read, and those they may inherit (the
// entry's own value wins).
func linkAttributes(links []*link, dst []string) []string {
	for _, l := range links {
		dst = append(dst, l.inherit...)
		for _, f := range l.find {
			for _, ph := range f.Placeholders() {
				if _, _, ok := strings.Cut(ph, "."); !ok {
					attr, _, _ := strings.Cut(ph, ":")
					dst = append(dst, attr)
				}
			}
		}
	}
	return dst
}

// linkedEntry is one link as read for one user: the entry found (nil:
// none) and how.
type linkedEntry struct {
	link  *link
	entry *ldapsource.Entry
	by    string // the filter that found it, or "dn"
}

// label is how explanations name the entry: the link and the value of
// the entry's first RDN, e.g. "cos students".
func (le linkedEntry) label() string {
	rdn, _, _ := strings.Cut(le.entry.DN, ",")
	_, v, ok := strings.Cut(rdn, "=")
	if !ok {
		v = le.entry.DN
	}
	return le.link.name + " " + strconv.Quote(v)
}

// linkCache is what the Resolver keeps of linked entries, by how they
// were found: one search per linked entry and TTL, whatever the number
// of users linking to it.
type linkCache = boundcache.Cache[string, *ldapsource.Entry]

// readLinks reads the policy's linked entries for e, in order, from the
// cache (unless fresh is set: lookup bypasses it) or the directory. A
// directory failure on any of them fails the whole lookup: a decision
// without its class of service could grant what the class denies.
func (r *Resolver) readLinks(ctx context.Context, e *ldapsource.Entry, fresh bool) ([]linkedEntry, error) {
	if len(r.pol.links) == 0 {
		return nil, nil
	}
	ld := r.dir.(LinkedDirectory) // checkDirectory
	var out []linkedEntry
	for _, l := range r.pol.links {
		le, err := r.readOneLink(ctx, ld, l, func(ph string) string { return placeholderValue(e, out, ph) }, fresh)
		if err != nil {
			return nil, err
		}
		out = append(out, le)
	}
	return out, nil
}

// readOneLink finds l: by its first filter whose placeholders all have a
// value and that finds an entry, else by its fixed DN.
func (r *Resolver) readOneLink(ctx context.Context, ld LinkedDirectory, l *link, value func(string) string, fresh bool) (linkedEntry, error) {
	le := linkedEntry{link: l}
	for _, f := range l.find {
		if slices.ContainsFunc(f.Placeholders(), func(ph string) bool { return strings.TrimSpace(value(ph)) == "" }) {
			continue
		}
		filter := f.Expand(value)
		q := ldapsource.LinkedQuery{Key: l.key, BaseDN: l.base, Scope: l.scope, Filter: filter}
		found, err := r.readLink(ctx, ld, q, l.attrs, fresh)
		if err != nil {
			return le, &linkedError{name: l.name, how: filter, err: err}
		}
		if found != nil {
			le.entry, le.by = found, filter
			return le, nil
		}
	}
	if l.dn == "" {
		return le, nil
	}
	found, err := r.readLink(ctx, ld, ldapsource.LinkedQuery{Key: l.key, BaseDN: l.dn}, l.attrs, fresh)
	if err != nil {
		return le, &linkedError{name: l.name, how: l.dn, err: err}
	}
	if found != nil {
		le.entry, le.by = found, "dn"
	}
	return le, nil
}

// placeholderValue is the value of a find placeholder for the user's entry
// e and the linked entries read before: "" when there is none.
func placeholderValue(e *ldapsource.Entry, earlier []linkedEntry, ph string) string {
	if name, attr, ok := strings.Cut(ph, "."); ok {
		for _, le := range earlier {
			if le.entry != nil && strings.EqualFold(le.link.name, name) {
				return first(le.entry.Values(attr))
			}
		}
		return ""
	}
	attr, mod, _ := strings.Cut(ph, ":")
	v := first(e.Values(attr))
	if mod != "domain" {
		return v
	}
	if i := strings.LastIndexByte(v, '@'); i >= 0 {
		return v[i+1:]
	}
	return ""
}

// linkedError is a failure to read a linked entry: a directory failure
// of the lookup, even when it wraps ErrAmbiguous (two classes of service
// with one id is no answer about the user).
type linkedError struct {
	name, how string
	err       error
}

func (e *linkedError) Error() string {
	return fmt.Sprintf("reading the linked entry %s (%s): %v", e.name, e.how, e.err)
}

func (e *linkedError) Unwrap() error { return e.err }

// linkedFailure reports whether err is a failure to read a linked entry.
func linkedFailure(err error) bool {
	var le *linkedError
	return errors.As(err, &le)
}

func first(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	return vals[0]
}

// readLink returns the entry q finds (nil: none), from the cache when
// fresh is not set. Concurrent misses for one query share one search; a
// search that fails serves the stale entry, if any, within
// cache.stale_for. Ambiguity is a failure, never a guess.
func (r *Resolver) readLink(ctx context.Context, ld LinkedDirectory, q ldapsource.LinkedQuery, attrs []string, fresh bool) (*ldapsource.Entry, error) {
	if fresh {
		e, err := ld.FindLinked(ctx, q, attrs)
		if errors.Is(err, ldapsource.ErrNotFound) {
			return nil, nil
		}
		return e, err
	}
	key := q.Key + "\x00" + q.BaseDN + "\x00" + strconv.Itoa(q.Scope) + "\x00" + q.Filter
	now := r.now()
	var stale *boundcache.Entry[*ldapsource.Entry]
	if c, ok := r.links.Get(key, now); ok {
		if c.Fresh(now) {
			return c.Value, nil
		}
		stale = &c
	}
	ch := r.linkFlight.DoChan(key, func() (any, error) {
		// A search that ended since this caller's cache miss has cached
		// its entry: singleflight forgets a key once its search returns.
		if c, ok := r.links.Get(key, r.now()); ok && c.Fresh(r.now()) {
			return c.Value, nil
		}
		// Detached, as the user's search is: other users wait on it.
		e, err := ld.FindLinked(context.WithoutCancel(ctx), q, attrs)
		switch {
		case errors.Is(err, ldapsource.ErrNotFound):
			e = nil
		case err != nil:
			return nil, err
		}
		r.links.Put(key, e, e == nil, r.now())
		return e, nil
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			if stale != nil {
				return stale.Value, nil
			}
			return nil, res.Err
		}
		return res.Val.(*ldapsource.Entry), nil
	}
}

// inherited returns the values of attr from the first linked entry that
// may give it and has it, and that entry.
func inherited(links []linkedEntry, attr string) ([]string, *linkedEntry) {
	for i := range links {
		le := &links[i]
		if le.entry == nil || !slices.ContainsFunc(le.link.inherit, func(a string) bool { return strings.EqualFold(a, attr) }) {
			continue
		}
		if v := le.entry.Values(attr); len(v) > 0 {
			return v, le
		}
	}
	return nil, nil
}

// origin says, for explanations, where the value of attr came from when
// it is not the entry's own: "from cos \"students\"", or where it was
// looked for in vain. "" when attr is not inherited or the entry has it.
func origin(e *ldapsource.Entry, links []linkedEntry, attr string) string {
	if len(e.Values(attr)) > 0 {
		return ""
	}
	if _, le := inherited(links, attr); le != nil {
		return "from " + le.label()
	}
	var looked []string
	for _, le := range links {
		if !slices.ContainsFunc(le.link.inherit, func(a string) bool { return strings.EqualFold(a, attr) }) {
			continue
		}
		if le.entry == nil {
			looked = append(looked, "no "+le.link.name+" found")
		} else {
			looked = append(looked, "not in "+le.label())
		}
	}
	if len(looked) == 0 {
		return ""
	}
	return "missing: " + strings.Join(looked, ", ")
}

// LinkedExplanation says which linked entry a decision read, and how it
// was found.
type LinkedExplanation struct {
	Name    string `json:"name"`
	DN      string `json:"dn,omitempty"` // "": none found
	FoundBy string `json:"found_by"`
}

func explainLinks(links []linkedEntry) []LinkedExplanation {
	var out []LinkedExplanation
	for _, le := range links {
		x := LinkedExplanation{Name: le.link.name, FoundBy: "none found"}
		if le.entry != nil {
			x.DN, x.FoundBy = le.entry.DN, le.by
			if le.by == "dn" {
				x.FoundBy = "the fixed dn"
			}
		}
		out = append(out, x)
	}
	return out
}

// PingLinked reads the base entry of each linked entry's base_dn, so that
// one the directory lacks is reported at start-up, naming its key, rather
// than failing every lookup. Nothing to do without policy.linked.
func (r *Resolver) PingLinked(ctx context.Context) error {
	ld, ok := r.dir.(LinkedDirectory)
	if !ok {
		return nil
	}
	for _, l := range r.pol.links {
		if l.base == "" {
			continue // ldap.base_dn, which the directory check reads
		}
		q := ldapsource.LinkedQuery{Key: l.key, BaseDN: l.base, Scope: ldapsource.ScopeBase, Filter: "(objectClass=*)"}
		if _, err := ld.FindLinked(ctx, q, nil); err != nil && !errors.Is(err, ldapsource.ErrNotFound) {
			return fmt.Errorf("reading %s.base_dn: %w", l.key, err)
		}
	}
	return nil
}

// HasLinked reports whether the policy reads linked entries.
func (r *Resolver) HasLinked() bool { return len(r.pol.links) > 0 }
