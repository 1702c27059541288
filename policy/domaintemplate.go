package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// DomainSourceConfig is the domain_source section: where the directory
// keeps its mail domains (iRedMail mailDomain entries, an organizational
// unit per domain, Active Directory's UPN suffixes), and the template that
// turns one domain entry into the services mailbeacon answers with. Fields
// left empty take the value of the preset.
type DomainSourceConfig struct {
	// Preset: "iredmail" (its old name "openldap" still works),
	// "active-directory" (the forest's domains and UPN suffixes) or
	// "active-directory-ou" (uPNSuffixes on an organizational unit per
	// domain). Empty: nothing preset.
	Preset string `mapstructure:"preset"`

	ldapsource.DomainSearchConfig `mapstructure:",squash"`

	// NameAttribute holds the domain's own name. When the entry was found
	// by another name (iRedMail's domainAliasName), the asked domain is an
	// alias: it is answered with the services of this one, and its
	// addresses are this one's users (Domain.AliasOf), the asked addresses
	// kept. Empty: the asked name is the domain.
	NameAttribute string `mapstructure:"name_attribute"`
	// Enabled decides whether the domain is served; nil: every entry the
	// filter finds is. A disabled domain is answered as an unknown one.
	Enabled *Rule `mapstructure:"enabled"`
	// ServiceRules switch services off for the whole domain, before any
	// user's rule: a kind whose rule fails on the domain entry is removed.
	ServiceRules map[string]*Rule `mapstructure:"service_rules"`
	// Template is what a served domain offers.
	Template DomainTemplateConfig `mapstructure:"template"`
}

// DomainTemplateConfig is what every directory domain offers: the
// services, with {domain} standing for the domain's name and
// {attribute} for the first value of an attribute of its entry.
type DomainTemplateConfig struct {
	// Provider is the name clients show, a template; when an attribute it
	// names is missing, the domain's name. Default "{domain}".
	Provider string `mapstructure:"provider"`
	// Services as in domains[].services, host and url being templates.
	Services []ServiceTemplateConfig `mapstructure:"services"`
	// DefaultServices as in domains[].default_services: the service types
	// that unknown and disabled addresses get, and addresses not cached
	// while the directory fails; empty: all of a domain's services. A type
	// a domain's service_rules removed is left out for that domain.
	DefaultServices []string `mapstructure:"default_services"`
}

// ServiceTemplateConfig is one service of the domain template.
type ServiceTemplateConfig struct {
	ServiceConfig `mapstructure:",squash"`
	// HostAttribute names an attribute of the domain entry holding this
	// service's host, used when present and a host name. A transport such
	// as iRedMail's mtaTransport "relay:[mx1.example.net]:25" gives its
	// host; a value that names no host ("dovecot") is ignored.
	HostAttribute string `mapstructure:"host_attribute"`
}

// domainPresets are named starting points for DomainSourceConfig.
var domainPresets = map[string]DomainSourceConfig{
	// iredmail: iRedMail's domain entries, objectClass mailDomain, found
	// by domainName or by one of their domainAliasName values, served
	// while accountStatus is active. A domain lists the services it turns
	// off for all its users in disabledService (mailbeacon's test schema;
	// iRedMail has no such attribute, so nothing is turned off there).
	"iredmail": {
		DomainSearchConfig: ldapsource.DomainSearchConfig{
			Scope:  "one",
			Filter: "(&(objectClass=mailDomain)(|(domainName={domain})(domainAliasName={domain})))",
		},
		NameAttribute: "domainName",
		Enabled:       &Rule{Equals: "accountStatus", Value: "active"},
		ServiceRules:  disabledServiceRules("disabledService"),
	},
	// active-directory: the DNS names of the forest's domains (crossRef
	// entries that are NT domains) and the UPN suffixes added to the
	// forest (uPNSuffixes of CN=Partitions). base_dn is
	// CN=Partitions,CN=Configuration,<forest root DN>.
	"active-directory": {
		DomainSearchConfig: ldapsource.DomainSearchConfig{
			Scope: "sub",
			Filter: "(|(&(objectClass=crossRefContainer)(uPNSuffixes={domain}))" +
				"(&(objectClass=crossRef)(systemFlags:1.2.840.113556.1.4.803:=2)(dnsRoot={domain})))",
		},
	},
	// active-directory-ou: an organizational unit per hosted domain,
	// carrying the domain as one of its uPNSuffixes (as Exchange's
	// address-book-per-tenant setups have it). base_dn is the subtree
	// holding those units.
	"active-directory-ou": {
		DomainSearchConfig: ldapsource.DomainSearchConfig{
			Scope:  "sub",
			Filter: "(&(objectClass=organizationalUnit)(uPNSuffixes={domain}))",
		},
	},
}

// disabledServiceRules keeps a kind unless attr lists it.
func disabledServiceRules(attr string) map[string]*Rule {
	out := map[string]*Rule{}
	for _, k := range Kinds {
		out[string(k)] = &Rule{Not: &Rule{Has: attr, Value: string(k)}}
	}
	return out
}

// DomainPresetNames lists the domain_source presets.
func DomainPresetNames() []string { return slices.Sorted(maps.Keys(domainPresets)) }

// Active reports whether a domain source is configured.
func (c DomainSourceConfig) Active() bool {
	return c.Preset != "" || c.BaseDN != "" || c.Filter != "" || len(c.Template.Services) > 0
}

// DomainTemplate is a validated DomainSourceConfig: it turns domain
// entries into Domains.
type DomainTemplate struct {
	search   ldapsource.DomainSearchConfig
	nameAttr string
	enabled  *Rule
	switches map[Kind]*Rule
	provider template
	services []serviceTemplate
	attrs    []string
	defaults []Kind // template.default_services; nil: all
	// Fingerprint identifies the settings: a reload keeps the cached
	// domains only when it is unchanged.
	fingerprint string
}

type serviceTemplate struct {
	cfg      ServiceTemplateConfig
	proto    Service // kind, port, socket, auth; host and url made per domain
	kind     Kind
	host     template // empty for HTTP-based services
	url      template // empty for host-based services
	hostAttr string
}

// NewDomainTemplate merges cfg over its preset, validates and compiles it.
// Errors name the domain_source key at fault.
func NewDomainTemplate(cfg DomainSourceConfig) (*DomainTemplate, error) {
	merged := cfg
	if cfg.Preset != "" {
		name := cfg.Preset
		if n, old := PresetReplacement(name); old {
			name = n
		}
		base, ok := domainPresets[name]
		if !ok {
			return nil, fmt.Errorf("domain_source.preset: unknown preset %q (one of %s)", cfg.Preset, strings.Join(DomainPresetNames(), ", "))
		}
		merged = mergeDomainSource(base, cfg)
	}
	t := &DomainTemplate{search: merged.DomainSearchConfig, nameAttr: merged.NameAttribute, enabled: merged.Enabled}
	if merged.Filter == "" {
		return nil, fmt.Errorf("domain_source.filter: missing: give a filter with {domain}, e.g. (&(objectClass=mailDomain)(domainName={domain})), or a preset (%s)", strings.Join(DomainPresetNames(), ", "))
	}
	if t.enabled != nil {
		if err := t.enabled.Validate("domain_source.enabled"); err != nil {
			return nil, err
		}
	}
	var err error
	if t.switches, err = compileServiceRules(merged.ServiceRules, "domain_source.service_rules"); err != nil {
		return nil, err
	}
	prov := merged.Template.Provider
	if prov == "" {
		prov = "{domain}"
	}
	if t.provider, err = parseTemplate(prov); err != nil {
		return nil, fmt.Errorf("domain_source.template.provider: %w", err)
	}
	if len(merged.Template.Services) == 0 {
		return nil, fmt.Errorf("domain_source.template.services: no service: list at least imap or pop3, and smtp, with hosts such as mail.{domain}")
	}
	for i, sc := range merged.Template.Services {
		st, err := newServiceTemplate(sc)
		if err != nil {
			return nil, fmt.Errorf("domain_source.template.services[%d]: %w", i, err)
		}
		t.services = append(t.services, st)
	}
	for _, name := range merged.Template.DefaultServices {
		k, err := ParseKind(name)
		if err != nil {
			return nil, fmt.Errorf("domain_source.template.default_services: %w", err)
		}
		if !slices.ContainsFunc(t.services, func(st serviceTemplate) bool { return st.kind == k }) {
			return nil, fmt.Errorf("domain_source.template.default_services: %s is not among the template's services: list it under services, or drop it here", k)
		}
		if !slices.Contains(t.defaults, k) {
			t.defaults = append(t.defaults, k)
		}
	}
	t.attrs = t.collectAttributes()
	// JSON: the rules are pointers, whose addresses %v would print.
	fp, err := json.Marshal(merged)
	if err != nil {
		return nil, fmt.Errorf("domain_source: %w", err)
	}
	t.fingerprint = string(fp)
	return t, nil
}

func mergeDomainSource(base, over DomainSourceConfig) DomainSourceConfig {
	base.Preset = over.Preset
	if over.BaseDN != "" {
		base.BaseDN = over.BaseDN
	}
	if over.Scope != "" {
		base.Scope = over.Scope
	}
	if over.Filter != "" {
		base.Filter = over.Filter
	}
	if over.NameAttribute != "" {
		base.NameAttribute = over.NameAttribute
	}
	if over.Enabled != nil {
		base.Enabled = over.Enabled
	}
	rules := maps.Clone(base.ServiceRules)
	if rules == nil {
		rules = map[string]*Rule{}
	}
	for k, r := range over.ServiceRules {
		rules[strings.ToLower(k)] = r
	}
	base.ServiceRules = rules
	base.Template = over.Template
	return base
}

// newServiceTemplate validates one service as newService does, with a
// sample domain standing in for the templates' placeholders.
func newServiceTemplate(c ServiceTemplateConfig) (serviceTemplate, error) {
	st := serviceTemplate{cfg: c, hostAttr: c.HostAttribute}
	sample := c.ServiceConfig
	var err error
	if c.Host != "" {
		if st.host, err = parseTemplate(c.Host); err != nil {
			return st, fmt.Errorf("host: %w", err)
		}
		sample.Host = sampleExpand(st.host)
	}
	if c.URL != "" {
		if st.url, err = parseTemplate(c.URL); err != nil {
			return st, fmt.Errorf("url: %w", err)
		}
		sample.URL = sampleExpand(st.url)
	}
	s, err := newService(sample)
	if err != nil {
		return st, err
	}
	if c.HostAttribute != "" && s.Kind.HTTPBased() {
		return st, fmt.Errorf("host_attribute: %s is reached by url", s.Kind)
	}
	st.kind = s.Kind
	st.proto = s
	st.proto.Host, st.proto.URL = "", ""
	return st, nil
}

// sampleExpand fills every placeholder with a host-name label, to check
// what the template makes.
func sampleExpand(t template) string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.literal != "" {
			b.WriteString(p.literal)
		} else if strings.EqualFold(p.attr, "domain") {
			b.WriteString("example.com")
		} else {
			b.WriteString("x")
		}
	}
	return b.String()
}

func (t *DomainTemplate) collectAttributes() []string {
	var attrs []string
	if t.nameAttr != "" {
		attrs = append(attrs, t.nameAttr)
	}
	if t.enabled != nil {
		attrs = t.enabled.Attributes(attrs)
	}
	for _, r := range t.switches {
		attrs = r.Attributes(attrs)
	}
	attrs = append(attrs, t.provider.attributes()...)
	for _, s := range t.services {
		attrs = append(attrs, s.host.attributes()...)
		attrs = append(attrs, s.url.attributes()...)
		if s.hostAttr != "" {
			attrs = append(attrs, s.hostAttr)
		}
	}
	return dedupFold(attrs)
}

// dedupFold sorts attribute names and drops repeats, case-insensitively.
func dedupFold(attrs []string) []string {
	seen := map[string]bool{}
	out := attrs[:0]
	for _, a := range attrs {
		if a == "" || seen[strings.ToLower(a)] {
			continue
		}
		seen[strings.ToLower(a)] = true
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) })
	return out
}

// Search is the directory search that finds a domain's entry.
func (t *DomainTemplate) Search() ldapsource.DomainSearchConfig { return t.search }

// Attributes lists what the template reads from a domain entry.
func (t *DomainTemplate) Attributes() []string { return t.attrs }

// Fingerprint changes whenever the settings do.
func (t *DomainTemplate) Fingerprint() string { return t.fingerprint }

// DomainOrigin says where a Domain came from, for `lookup`.
type DomainOrigin struct {
	// Source is "configuration" (a domains entry) or "directory".
	Source string `json:"source"`
	// Entry is the configuration key or the directory entry's DN.
	Entry string `json:"entry"`
	// AliasOf is the domain whose services an alias domain is answered with.
	AliasOf string `json:"alias_of,omitempty"`
	// Reason says why the domain is served.
	Reason string `json:"reason,omitempty"`
	// Services says, per service of the template, what made it or why it
	// was removed.
	Services []string `json:"services,omitempty"`
}

// errDomainDisabled is wrapped by Build's error for a disabled domain.
var errDomainDisabled = errors.New("domain disabled in the directory")

// Build turns the entry found for the asked (normalised) name into the
// Domain served under that name, with its Origin. A disabled domain, or
// an entry whose name attribute is no domain name, gives an error wrapping
// ErrUnknownDomain.
func (t *DomainTemplate) Build(asked string, e *ldapsource.Entry) (*Domain, error) {
	return t.build(asked, e, true)
}

// build is Build; the Origin, which only lookup shows, is made only when
// explain is set: a cached domain then holds no strings of its own but
// its name, provider and hosts.
func (t *DomainTemplate) build(asked string, e *ldapsource.Entry, explain bool) (*Domain, error) {
	var origin *DomainOrigin
	if explain {
		origin = &DomainOrigin{Source: "directory", Entry: e.DN}
	}
	target := asked
	if t.nameAttr != "" {
		v := e.Values(t.nameAttr)
		if len(v) == 0 {
			return nil, fmt.Errorf("%w: %s: entry %s has no %s", ErrUnknownDomain, asked, e.DN, t.nameAttr)
		}
		n, err := NormalizeDomain(strings.TrimSpace(v[0]))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: entry %s: %s %q is not a domain name", ErrUnknownDomain, asked, e.DN, t.nameAttr, v[0])
		}
		if n != asked {
			target = n
			if explain {
				origin.AliasOf = n
			}
		}
	}
	if t.enabled != nil {
		ok, why := t.enabled.eval(e, explain)
		if !ok {
			return nil, fmt.Errorf("%w: %s: %w (%s)", ErrUnknownDomain, asked, errDomainDisabled, why)
		}
		if explain {
			origin.Reason = "enabled (" + why + ")"
		}
	} else if explain {
		origin.Reason = "found (no enabled rule)"
	}
	tdom := Address{Domain: target}
	d := &Domain{Name: asked, Origin: origin, Services: make([]Service, 0, len(t.services))}
	if target != asked {
		d.AliasOf = target
	}
	prov, err := t.provider.expand(tdom, e)
	if err != nil || strings.TrimSpace(prov) == "" {
		prov = target
	}
	d.Provider, d.ShortName = prov, prov
	for i, st := range t.services {
		note := func(what string) {
			if explain {
				origin.Services = append(origin.Services, fmt.Sprintf("template.services[%d] %s: %s", i, st.kind, what))
			}
		}
		if r := t.switches[st.kind]; r != nil {
			if ok, why := r.eval(e, explain); !ok {
				note("removed for the domain (" + why + ")")
				continue
			}
		}
		s, why, err := st.build(tdom, e, explain)
		if err != nil {
			note("left out: " + err.Error())
			continue
		}
		note(why)
		d.Services = append(d.Services, s)
	}
	if len(d.Services) == 0 {
		return nil, fmt.Errorf("%w: %s: entry %s leaves no service", ErrUnknownDomain, asked, e.DN)
	}
	if t.defaults != nil {
		// Non-nil even when empty: a domain that switched off every
		// default service offers unknown addresses none, not all.
		d.DefaultServices = make([]Kind, 0, len(t.defaults))
		for _, k := range t.defaults {
			if slices.ContainsFunc(d.Services, func(s Service) bool { return s.Kind == k }) {
				d.DefaultServices = append(d.DefaultServices, k)
			}
		}
	}
	return d, nil
}

// nameOf is the domain entry e names: its name attribute's, or asked when
// the template has none (the filter matched the entry by the asked name).
// "" when the entry names no domain.
func (t *DomainTemplate) nameOf(asked string, e *ldapsource.Entry) string {
	if t.nameAttr == "" {
		return asked
	}
	v := e.Values(t.nameAttr)
	if len(v) == 0 {
		return ""
	}
	n, err := NormalizeDomain(strings.TrimSpace(v[0]))
	if err != nil {
		return ""
	}
	return n
}

// oneDomain resolves an ambiguity of the domain search: when every entry
// that matched names the same domain (Active Directory's forest domain is
// both a crossRef's dnsRoot and, once an administrator adds it, a UPN
// suffix of CN=Partitions), they are one domain, and the entry first by DN
// (compared without case) is used, whichever order the directory answered
// in. Entries naming different domains, or more entries than the search
// returned, stay an ambiguity: false.
func (t *DomainTemplate) oneDomain(asked string, amb *ldapsource.AmbiguousError) (*ldapsource.Entry, bool) {
	if !amb.Complete || len(amb.Entries) == 0 {
		return nil, false
	}
	name := t.nameOf(asked, amb.Entries[0])
	first := amb.Entries[0]
	for _, e := range amb.Entries[1:] {
		if n := t.nameOf(asked, e); n == "" || n != name {
			return nil, false
		}
		if strings.ToLower(e.DN) < strings.ToLower(first.DN) {
			first = e
		}
	}
	return first, name != ""
}

// build makes the service for domain dom from entry e and, with explain,
// says how.
func (st serviceTemplate) build(dom Address, e *ldapsource.Entry, explain bool) (Service, string, error) {
	s := st.proto // Auth shared: services are never modified in place
	why := ""
	if st.hostAttr != "" {
		if v := e.Values(st.hostAttr); len(v) > 0 {
			if h, ok := hostOfValue(v[0]); ok {
				s.Host = h
				if explain {
					why = fmt.Sprintf("host %s from %s %q", h, st.hostAttr, v[0])
				}
			}
		}
	}
	if s.Host == "" && st.cfg.Host != "" {
		h, err := st.host.expand(dom, e)
		if err != nil {
			return Service{}, "", fmt.Errorf("host %s: %w", st.cfg.Host, err)
		}
		if s.Host, err = NormalizeDomain(h); err != nil {
			return Service{}, "", fmt.Errorf("host %s: %q is not a host name", st.cfg.Host, h)
		}
		if explain {
			why = fmt.Sprintf("host %s from template %s", s.Host, st.cfg.Host)
		}
	}
	if st.cfg.URL != "" {
		u, err := st.url.expand(dom, e)
		if err != nil {
			return Service{}, "", fmt.Errorf("url %s: %w", st.cfg.URL, err)
		}
		if err := checkHTTPURL(u); err != nil {
			return Service{}, "", fmt.Errorf("url %s: %w", st.cfg.URL, err)
		}
		s.URL = u
		if explain {
			why = fmt.Sprintf("url %s from template %s", u, st.cfg.URL)
		}
	}
	return s, why, nil
}

// hostOfValue reads a host name out of an attribute value: a plain host
// name, or a transport such as "relay:[mx.example.net]:25" or
// "smtp:mx.example.net". Values naming no host ("dovecot") give false.
func hostOfValue(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if _, rest, ok := strings.Cut(v, ":"); ok {
		v = rest
	}
	if strings.HasPrefix(v, "[") {
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return "", false
		}
		v = v[1:end]
	} else if h, _, ok := strings.Cut(v, ":"); ok {
		v = h
	}
	h, err := NormalizeDomain(v)
	return h, err == nil
}
