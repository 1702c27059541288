package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// Config is the policy section of the configuration: how directory
// attributes turn into what a user gets. Fields left empty take the value
// of the preset.
type Config struct {
	Preset string `mapstructure:"preset"`
	// Filter is the preset's LDAP search filter template; the ldap.filter
	// key overrides it.
	Filter string `mapstructure:"-"`
	// DisplayName lists attributes to try, first present wins.
	DisplayName []string `mapstructure:"display_name"`
	// PrimaryAddress says where the primary address is, which clients are
	// told when an alias was asked: one or more specs separated by commas,
	// tried in order, the first that gives a valid address wins. A spec is
	// an attribute ("mail": its first value) or an attribute and a value
	// prefix ("proxyAddresses:SMTP:": the value starting with "SMTP:",
	// without it). The prefix is matched case-sensitively: Exchange marks
	// the primary address with "SMTP:" and the others with "smtp:".
	PrimaryAddress string `mapstructure:"primary_address"`
	// Login is the login-name template: {attribute} placeholders over the
	// entry, and {email}, {local}, {domain} of the asked address (of the
	// address under the primary domain, for an alias domain's).
	Login string `mapstructure:"login"`
	// AccountEnabled decides whether the entry may use mail at all; nil
	// means every entry found is enabled.
	AccountEnabled *Rule `mapstructure:"account_enabled"`
	// ServiceRules decide per service kind; a kind without a rule is
	// allowed to every enabled account.
	ServiceRules map[string]*Rule `mapstructure:"services"`
	// HostAttribute optionally names a per-user server attribute (such as
	// mailHost) that replaces the domain's host for HostOverrideKinds; an
	// empty, non-nil HostOverrideKinds ([] in YAML) replaces it for none.
	HostAttribute     string   `mapstructure:"host_attribute"`
	HostOverrideKinds []string `mapstructure:"host_override_services"`
	// Unknown says what an unknown or disabled address gets: "defaults"
	// (the domain's services, login = typed address) or "reject".
	Unknown string `mapstructure:"unknown"`
	// Privacy says what unauthenticated answers show of a known account:
	// "standard" (the directory's display name, and the primary address
	// when an alias is asked) or "strict" (neither: the answer carries the
	// address as asked and no display name, as for an unknown address).
	Privacy string `mapstructure:"privacy"`
	// NestedGroups makes member_of rules ask the directory, once per
	// lookup, whether the entry is a member of each group directly or
	// through nested groups (Active Directory's in-chain matching rule
	// 1.2.840.113556.1.4.1941), instead of reading the memberOf attribute,
	// which lists direct memberships only. nil: the preset's setting.
	NestedGroups *bool `mapstructure:"nested_groups"`
	// Linked lists entries the user's entry links to (a class of
	// service, a domain entry), read in order, from which it inherits the
	// attributes it lacks. nil: the preset's.
	Linked []LinkedConfig `mapstructure:"linked"`
	// Destinations are named sets of services some users' mailboxes live
	// behind instead of their domain's (destination.go); by name.
	Destinations map[string]DestinationConfig `mapstructure:"destinations"`
	// DestinationRules choose a known, enabled user's destination: the
	// first that matches; none: the domain's services.
	DestinationRules []DestinationRuleConfig `mapstructure:"destination_rules"`
}

const (
	UnknownDefaults = "defaults"
	UnknownReject   = "reject"

	PrivacyStandard = "standard"
	PrivacyStrict   = "strict"
)

// Policy is a validated Config, ready to decide entries.
type Policy struct {
	filter        string
	displayName   []string
	primary       []addressSpec
	login         template
	enabled       *Rule
	services      map[Kind]*Rule
	hostAttr      string
	hostOverrides map[Kind]bool
	rejectUnknown bool
	strict        bool // policy.privacy: strict
	attributes    []string
	nestedGroups  bool
	groups        []string // member_of group DNs, when nestedGroups
	links         []*link  // policy.linked, in order
	destinations  map[string]*destination
	destRules     []destinationRule
}

// New merges cfg over its preset (default DefaultPreset), validates the
// result and compiles it. Errors name the configuration key at fault.
func New(cfg Config) (*Policy, error) {
	name := cfg.Preset
	if name == "" {
		name = DefaultPreset
	}
	base, err := Preset(name)
	if err != nil {
		return nil, fmt.Errorf("policy.preset: %w", err)
	}
	merged := merge(base, cfg)
	p := &Policy{
		filter:        merged.Filter,
		displayName:   merged.DisplayName,
		enabled:       merged.AccountEnabled,
		hostAttr:      merged.HostAttribute,
		hostOverrides: map[Kind]bool{},
	}
	if p.login, err = parseTemplate(merged.Login); err != nil {
		return nil, fmt.Errorf("policy.login: %w", err)
	}
	if p.primary, err = parseAddressSpecs(merged.PrimaryAddress); err != nil {
		return nil, fmt.Errorf("policy.primary_address: %w", err)
	}
	if p.enabled != nil {
		if err := p.enabled.Validate("policy.account_enabled"); err != nil {
			return nil, err
		}
	}
	if p.services, err = compileServiceRules(merged.ServiceRules, "policy.services"); err != nil {
		return nil, err
	}
	for _, k := range merged.HostOverrideKinds {
		kind, err := ParseKind(k)
		if err != nil {
			return nil, fmt.Errorf("policy.host_override_services: %w", err)
		}
		p.hostOverrides[kind] = true
	}
	switch merged.Unknown {
	case "", UnknownDefaults:
	case UnknownReject:
		p.rejectUnknown = true
	default:
		return nil, fmt.Errorf("policy.unknown: %q is not one of %q, %q", merged.Unknown, UnknownDefaults, UnknownReject)
	}
	switch merged.Privacy {
	case "", PrivacyStandard:
	case PrivacyStrict:
		p.strict = true
	default:
		return nil, fmt.Errorf("policy.privacy: %q is not one of %q, %q", merged.Privacy, PrivacyStandard, PrivacyStrict)
	}
	if p.links, err = compileLinks(merged.Linked); err != nil {
		return nil, err
	}
	if p.destinations, p.destRules, err = compileDestinations(merged.Destinations, merged.DestinationRules); err != nil {
		return nil, err
	}
	p.attributes = p.collectAttributes()
	if merged.NestedGroups != nil && *merged.NestedGroups {
		p.nestedGroups = true
		p.groups = p.collectGroups()
	}
	return p, nil
}

// compileServiceRules validates rules by service kind, named under key;
// a nil rule is no rule.
func compileServiceRules(rules map[string]*Rule, key string) (map[Kind]*Rule, error) {
	out := map[Kind]*Rule{}
	for k, r := range rules {
		kind, err := ParseKind(k)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", key, k, err)
		}
		if r == nil {
			continue
		}
		if err := r.Validate(key + "." + k); err != nil {
			return nil, err
		}
		out[kind] = r
	}
	return out, nil
}

func merge(base, over Config) Config {
	if len(over.DisplayName) > 0 {
		base.DisplayName = over.DisplayName
	}
	if over.PrimaryAddress != "" {
		base.PrimaryAddress = over.PrimaryAddress
	}
	if over.Login != "" {
		base.Login = over.Login
	}
	if over.AccountEnabled != nil {
		base.AccountEnabled = over.AccountEnabled
	}
	if base.ServiceRules == nil {
		base.ServiceRules = map[string]*Rule{}
	}
	for k, r := range over.ServiceRules {
		base.ServiceRules[strings.ToLower(k)] = r
	}
	if over.HostAttribute != "" {
		base.HostAttribute = over.HostAttribute
	}
	if over.HostOverrideKinds != nil { // [] turns the preset's off
		base.HostOverrideKinds = over.HostOverrideKinds
	}
	if over.Unknown != "" {
		base.Unknown = over.Unknown
	}
	if over.NestedGroups != nil {
		base.NestedGroups = over.NestedGroups
	}
	if over.Privacy != "" {
		base.Privacy = over.Privacy
	}
	if over.Linked != nil {
		base.Linked = over.Linked
	}
	if over.Destinations != nil {
		base.Destinations = over.Destinations
	}
	if over.DestinationRules != nil {
		base.DestinationRules = over.DestinationRules
	}
	return base
}

// ParseKind reads a service kind, case-insensitively.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if strings.EqualFold(s, string(k)) {
			return k, nil
		}
	}
	return "", fmt.Errorf("unknown service %q (one of %s)", s, joinStrings(Kinds))
}

// Filter is the preset's LDAP filter template, used unless ldap.filter
// says otherwise.
func (p *Policy) Filter() string { return p.filter }

// RejectUnknown reports whether unknown and disabled addresses are refused
// instead of getting the domain defaults.
func (p *Policy) RejectUnknown() bool { return p.rejectUnknown }

// Strict reports whether policy.privacy is "strict".
func (p *Policy) Strict() bool { return p.strict }

// public returns acct as an unauthenticated answer may show it: under
// strict privacy, a copy without the directory's display name, with the
// asked address as the primary one and without the destination's redirect
// address (another address of the user's, such as the tenant address), so
// that a known address answers in the shape of an unknown one (the login
// name, the services and the destination stay: they are the answer).
func (p *Policy) public(acct *Account) *Account {
	if !p.strict || !acct.Known {
		return acct
	}
	redirect := acct.Destination != nil && acct.Destination.RedirectAddr != ""
	if acct.DisplayName == "" && acct.Primary == acct.Address.String() && !redirect {
		return acct
	}
	a := *acct
	a.DisplayName, a.Primary = "", a.Address.String()
	if redirect {
		d := *acct.Destination
		d.RedirectAddr = ""
		a.Destination = &d
	}
	return &a
}

// Attributes lists every attribute the policy reads, so the directory
// search fetches only those.
func (p *Policy) Attributes() []string { return p.attributes }

func (p *Policy) collectAttributes() []string {
	attrs := slices.Clone(p.displayName)
	for _, s := range p.primary {
		attrs = append(attrs, s.attr)
	}
	attrs = append(attrs, p.login.attributes()...)
	if p.enabled != nil {
		attrs = p.enabled.Attributes(attrs)
	}
	for _, r := range p.services {
		attrs = r.Attributes(attrs)
	}
	if p.hostAttr != "" {
		attrs = append(attrs, p.hostAttr)
	}
	attrs = p.destinationAttributes(attrs)
	attrs = linkAttributes(p.links, attrs)
	return dedupFold(attrs)
}

// Explanation says how an account was decided: the answer to "why does Bob
// get no POP?". It is built on every decision but only the lookup command
// shows it; the cache keeps accounts only.
type Explanation struct {
	Address string `json:"address"`
	// AliasOf is the primary domain when the address's domain is an
	// alias domain: the user was searched as under it too.
	AliasOf string `json:"alias_of,omitempty"`
	Found   bool   `json:"found"`
	DN      string `json:"dn,omitempty"`
	// Server is the directory server that answered with the entry.
	Server   string     `json:"server,omitempty"`
	Enabled  bool       `json:"enabled"`
	Reason   string     `json:"reason"`
	Login    string     `json:"login"`
	Services []Decision `json:"services"`
	// Linked are the linked entries the decision read (policy.linked).
	Linked []LinkedExplanation `json:"linked,omitempty"`
	// Destination names the destination the destination rules chose,
	// empty for the domain's services; DestinationReason says which rule
	// chose it, or why none did.
	Destination       string `json:"destination,omitempty"`
	DestinationReason string `json:"destination_reason,omitempty"`
	// RedirectAddr and RedirectURL are where Autodiscover (POX) sends
	// Outlook for the destination's user; RedirectNote says why a
	// redirect_address gave none.
	RedirectAddr string `json:"redirect_address,omitempty"`
	RedirectURL  string `json:"redirect_url,omitempty"`
	RedirectNote string `json:"redirect_note,omitempty"`
}

// Decision is the verdict on one of the domain's services.
type Decision struct {
	Service string `json:"service"`
	Allowed bool   `json:"allowed"`
	Rule    string `json:"rule"`
}

// Decide turns a directory entry (nil: not found) into the account for
// addr in domain d, and says why. member_of rules read the entry's memberOf
// attribute: the Resolver, which asks the directory for nested groups when
// policy.nested_groups is on, is the way to decide with those.
// Linked entries (policy.linked) are read by the Resolver only.
func (p *Policy) Decide(d *Domain, addr Address, e *ldapsource.Entry) (*Account, *Explanation) {
	var de *decisionEntry
	if e != nil {
		de = &decisionEntry{Entry: e, now: time.Now()}
	}
	return p.decide(d, addr, de, true)
}

// decide is Decide with what the Resolver read for the entry (nil: not
// found): its resolved group memberships, its linked entries and the time
// of the decision. The explanation is built only when explain is set
// (lookup): it costs more than the decision, and serving requests never
// shows it.
func (p *Policy) decide(d *Domain, addr Address, e *decisionEntry, explain bool) (*Account, *Explanation) {
	var ex *Explanation
	if explain {
		ex = &Explanation{Address: addr.String()}
	}
	if e == nil {
		return p.defaults(d, addr, ex, "not found in the directory")
	}
	if explain {
		ex.Found, ex.DN, ex.Server = true, e.DN, e.Server
		ex.Linked = explainLinks(e.links)
	}
	if p.enabled != nil {
		ok, why := p.enabled.eval(e, explain)
		if !ok {
			return p.defaults(d, addr, ex, "account disabled ("+why+")")
		}
		if explain {
			ex.Reason = "account enabled (" + why + ")"
		}
	} else if explain {
		ex.Reason = "account enabled (no account_enabled rule)"
	}

	// An alias domain's users log in as under the primary domain: there
	// {email} and {domain} are the primary domain's.
	la := addr
	if d.AliasOf != "" {
		la.Domain = d.AliasOf
	}
	login, err := p.login.expand(la, e)
	if err != nil {
		login = addr.String()
		if explain {
			ex.Reason += "; login template: " + err.Error() + ", using the typed address"
		}
	}
	dest, destWhy := p.chooseDestination(d, e, explain)
	if explain {
		ex.DestinationReason = destWhy
	}
	if dest != nil {
		return p.decideDestination(d, addr, la, login, e, dest, ex)
	}
	var denied []Kind
	for _, k := range d.kinds() {
		dec := Decision{Service: string(k), Allowed: true, Rule: "no rule for this service"}
		if r := p.services[k]; r != nil {
			dec.Allowed, dec.Rule = r.eval(e, explain)
		}
		if !dec.Allowed {
			denied = append(denied, k)
		}
		if explain {
			ex.Services = append(ex.Services, dec)
		}
	}
	host := ""
	if p.hostAttr != "" {
		if v := e.Values(p.hostAttr); len(v) > 0 {
			h, err := NormalizeDomain(strings.TrimSpace(v[0]))
			if err != nil && explain {
				ex.Reason += fmt.Sprintf("; ignoring %s %q: not a host name", p.hostAttr, v[0])
			}
			host = h
		}
	}
	acct := p.foundAccount(d, addr, e, d.accountFor(addr, login, func(k Kind) bool { return !slices.Contains(denied, k) }, func(k Kind) string {
		if p.hostOverrides[k] {
			return host
		}
		return ""
	}))
	if explain {
		ex.Enabled, ex.Login = true, login
	}
	return acct, ex
}

// decideDestination finishes the account of an enabled entry whose
// destination the rules chose: the destination's services that the
// service rules allow, logged into with the destination's login template
// (else login), and its Autodiscover redirect. la is the address the
// login templates see. The per-user host (host_attribute) is the
// domain's servers' and does not apply.
func (p *Policy) decideDestination(d *Domain, addr, la Address, login string, e *decisionEntry, dest *destination, ex *Explanation) (*Account, *Explanation) {
	explain := ex != nil
	if dest.login != nil {
		l, err := dest.login.expand(la, e)
		switch {
		case err == nil:
			login = l
		case explain:
			ex.Reason += fmt.Sprintf("; policy.destinations.%s.login: %s, using %s", dest.name, err, login)
		}
	}
	allowed := map[Kind]bool{}
	var services []Service
	for _, s := range dest.services {
		ok, seen := allowed[s.Kind]
		if !seen {
			dec := Decision{Service: string(s.Kind), Allowed: true, Rule: "no rule for this service"}
			if r := p.services[s.Kind]; r != nil {
				dec.Allowed, dec.Rule = r.eval(e, explain)
			}
			ok, allowed[s.Kind] = dec.Allowed, dec.Allowed
			if explain {
				ex.Services = append(ex.Services, dec)
			}
		}
		if ok {
			s.Login = login
			services = append(services, s)
		}
	}
	acct := p.foundAccount(d, addr, e, services)
	to := &Destination{Name: dest.name, Provider: dest.provider, OAuth: dest.oauth, RedirectURL: dest.url}
	var note string
	to.RedirectAddr, note = dest.redirectOf(addr, acct.Primary, e)
	acct.Destination = to
	if explain {
		ex.Enabled, ex.Login = true, login
		ex.Destination, ex.RedirectAddr, ex.RedirectURL, ex.RedirectNote = dest.name, to.RedirectAddr, to.RedirectURL, note
	}
	return acct, ex
}

// foundAccount is the account of the entry e found for addr in d, with
// services: its primary address as policy.primary_address finds it (else
// addr), its display name and DN.
func (p *Policy) foundAccount(d *Domain, addr Address, e *decisionEntry, services []Service) *Account {
	acct := &Account{
		Address:     addr,
		Primary:     addr.String(),
		DisplayName: p.displayNameOf(e),
		Known:       true,
		DN:          e.DN,
		Domain:      d,
		Services:    services,
	}
	if pa, ok := p.primaryOf(e); ok {
		acct.Primary = pa
	}
	return acct
}

// defaults is the answer for an entry not found or disabled (why), with
// its explanation when ex is not nil.
func (p *Policy) defaults(d *Domain, addr Address, ex *Explanation, why string) (*Account, *Explanation) {
	acct := d.DefaultAccount(addr, addr.String())
	if ex == nil {
		return acct, nil
	}
	ex.Reason = why + ": domain defaults, login is the typed address"
	ex.Login = addr.String()
	for _, k := range d.kinds() {
		dec := Decision{Service: string(k), Allowed: true, Rule: "domain default"}
		if !d.OffersByDefault(k) {
			dec.Allowed, dec.Rule = false, "not in the domain's default_services"
		}
		ex.Services = append(ex.Services, dec)
	}
	return acct, ex
}

func (p *Policy) displayNameOf(e Entry) string {
	for _, a := range p.displayName {
		if v := e.Values(a); len(v) > 0 && strings.TrimSpace(v[0]) != "" {
			return strings.TrimSpace(v[0])
		}
	}
	return ""
}
