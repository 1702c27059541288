package policy

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// DestinationConfig is one entry of policy.destinations: a named set of
// services that some users' mailboxes live behind instead of their
// domain's (a Microsoft 365 tenant during a migration, a second site).
// Fields left empty take the value of the preset.
type DestinationConfig struct {
	// Preset fills what is not given: "m365" or "google"
	// (DestinationPresets).
	Preset string `mapstructure:"preset"`
	// Provider is the name clients show; empty: the domain's.
	Provider string `mapstructure:"provider"`
	// Services are written as a domain's are.
	Services []ServiceConfig `mapstructure:"services"`
	// OAuth is the destination's authorization server; each key given
	// replaces the preset's.
	OAuth *OAuthConfig `mapstructure:"oauth"`
	// Login is the login-name template at the destination; empty:
	// policy.login.
	Login string `mapstructure:"login"`
	// Autodiscover says where Outlook's Autodiscover (POX) sends the
	// destination's users; given, it replaces the preset's ({} : nowhere,
	// they get the destination's settings).
	Autodiscover *DestinationAutodiscoverConfig `mapstructure:"autodiscover"`
}

// DestinationAutodiscoverConfig is a destination's autodiscover block: at
// most one of the two.
type DestinationAutodiscoverConfig struct {
	// RedirectAddress is a template over the entry giving the address
	// Outlook runs Autodiscover for instead (Action redirectAddr), e.g.
	// "{targetAddress|strip_prefix:smtp:}".
	RedirectAddress string `mapstructure:"redirect_address"`
	// RedirectURL is the https URL of the Autodiscover endpoint Outlook
	// is sent to instead (Action redirectUrl).
	RedirectURL string `mapstructure:"redirect_url"`
}

// DestinationRuleConfig is one entry of policy.destination_rules: tried in
// order for each known, enabled account; the first that matches chooses
// the destination.
type DestinationRuleConfig struct {
	// Destination names an entry of policy.destinations.
	Destination string `mapstructure:"destination"`
	// Domains limits the rule to addresses of these domains (an alias
	// domain's addresses count as its primary domain's too); empty: every
	// domain.
	Domains []string `mapstructure:"domains"`
	// When is the rule over the entry; nil: every account of Domains.
	When *Rule `mapstructure:"when"`
}

// destination is a validated DestinationConfig.
type destination struct {
	name     string
	provider string
	services []Service
	oauth    *OAuth
	login    *template // nil: policy.login
	redirect *template // redirect_address; nil: none
	url      string    // redirect_url
}

// destinationRule is a validated DestinationRuleConfig.
type destinationRule struct {
	key     string // policy.destination_rules[i], for explanations
	dest    *destination
	domains []string
	when    *Rule
}

// DestinationPresets names the destination presets, for help texts.
var DestinationPresets = []string{"m365", "google"}

// destinationPreset returns the preset's configuration.
//
// m365, as Microsoft documents Exchange Online:
//   - IMAP outlook.office365.com:993 and POP outlook.office365.com:995,
//     implicit TLS; SMTP smtp.office365.com:587, STARTTLS:
//     https://learn.microsoft.com/en-us/exchange/clients-and-mobile-in-exchange-online/pop3-and-imap4/pop3-and-imap4
//   - OAuth2 for them, with the scopes
//     https://outlook.office.com/IMAP.AccessAsUser.All, POP.AccessAsUser.All
//     and SMTP.Send (plus offline_access):
//     https://learn.microsoft.com/en-us/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
//   - the issuer https://login.microsoftonline.com/common/v2.0 and its
//     /oauth2/v2.0/authorize and /oauth2/v2.0/token endpoints:
//     https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc
//   - Microsoft Graph at https://graph.microsoft.com:
//     https://learn.microsoft.com/en-us/graph/use-the-api
//   - Autodiscover: Outlook is sent to the user's targetAddress (the
//     tenant address an Exchange hybrid sets on a remote mailbox), with
//     Action redirectAddr as in MS-OXDSCLI:
//     https://learn.microsoft.com/en-us/openspecs/exchange_server_protocols/ms-oxdscli
//
// google, as Google documents Gmail for other clients:
//   - IMAP imap.gmail.com:993 and POP pop.gmail.com:995, implicit TLS;
//     SMTP smtp.gmail.com:465 (implicit TLS) or 587 (STARTTLS):
//     https://developers.google.com/workspace/gmail/imap/imap-smtp
//   - OAuth2 with the scope https://mail.google.com/:
//     https://developers.google.com/workspace/gmail/imap/xoauth2-protocol
//   - the issuer https://accounts.google.com and its endpoints:
//     https://developers.google.com/identity/openid-connect/reference
//
// Neither names an OAuth client ID: a client registered by someone else
// is theirs to use; the administrator sets oauth.client_id to their own.
func destinationPreset(name string) (DestinationConfig, error) {
	oauth2 := []string{string(AuthOAuth2)}
	switch strings.ToLower(name) {
	case "m365":
		return DestinationConfig{
			Provider: "Microsoft 365",
			Services: []ServiceConfig{
				{Type: "imap", Host: "outlook.office365.com", Port: 993, Socket: "tls", Auth: oauth2},
				{Type: "pop3", Host: "outlook.office365.com", Port: 995, Socket: "tls", Auth: oauth2},
				{Type: "smtp", Host: "smtp.office365.com", Port: 587, Socket: "starttls", Auth: oauth2},
				{Type: "graph", URL: "https://graph.microsoft.com", Auth: oauth2},
			},
			OAuth: &OAuthConfig{
				Issuer:   "https://login.microsoftonline.com/common/v2.0",
				AuthURL:  "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
				TokenURL: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
				Scopes: []string{"https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/POP.AccessAsUser.All",
					"https://outlook.office.com/SMTP.Send", "offline_access"},
			},
			Autodiscover: &DestinationAutodiscoverConfig{RedirectAddress: "{targetAddress|strip_prefix:smtp:}"},
		}, nil
	case "google":
		return DestinationConfig{
			Provider: "Google Workspace",
			Services: []ServiceConfig{
				{Type: "imap", Host: "imap.gmail.com", Port: 993, Socket: "tls", Auth: oauth2},
				{Type: "pop3", Host: "pop.gmail.com", Port: 995, Socket: "tls", Auth: oauth2},
				{Type: "smtp", Host: "smtp.gmail.com", Port: 465, Socket: "tls", Auth: oauth2},
				{Type: "smtp", Host: "smtp.gmail.com", Port: 587, Socket: "starttls", Auth: oauth2},
			},
			OAuth: &OAuthConfig{
				Issuer:   "https://accounts.google.com",
				AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
				TokenURL: "https://oauth2.googleapis.com/token",
				Scopes:   []string{"https://mail.google.com/"},
			},
		}, nil
	}
	return DestinationConfig{}, fmt.Errorf("%q is not a destination preset: use one of %s, or drop preset and list the services", name, strings.Join(DestinationPresets, ", "))
}

// mergeDestination lays c over its preset.
func mergeDestination(base, c DestinationConfig) DestinationConfig {
	if c.Provider != "" {
		base.Provider = c.Provider
	}
	if len(c.Services) > 0 {
		base.Services = c.Services
	}
	if c.Login != "" {
		base.Login = c.Login
	}
	if c.Autodiscover != nil {
		base.Autodiscover = c.Autodiscover
	}
	switch {
	case c.OAuth == nil:
	case base.OAuth == nil:
		base.OAuth = c.OAuth
	default:
		o := *base.OAuth
		if c.OAuth.Issuer != "" {
			o.Issuer = c.OAuth.Issuer
		}
		if c.OAuth.ClientID != "" {
			o.ClientID = c.OAuth.ClientID
		}
		if c.OAuth.Scopes != nil {
			o.Scopes = c.OAuth.Scopes
		}
		if c.OAuth.AuthURL != "" {
			o.AuthURL = c.OAuth.AuthURL
		}
		if c.OAuth.TokenURL != "" {
			o.TokenURL = c.OAuth.TokenURL
		}
		base.OAuth = &o
	}
	return base
}

// compileDestinations validates policy.destinations and
// policy.destination_rules.
func compileDestinations(cfgs map[string]DestinationConfig, rules []DestinationRuleConfig) (map[string]*destination, []destinationRule, error) {
	dests := make(map[string]*destination, len(cfgs))
	names := make([]string, 0, len(cfgs))
	for name := range cfgs {
		names = append(names, name)
	}
	slices.Sort(names) // the same error for the same configuration
	for _, name := range names {
		c := cfgs[name]
		key := "policy.destinations." + name
		if !validDestinationName(name) {
			return nil, nil, fmt.Errorf("%s: %q is not a destination name: use letters, digits, - and _", key, name)
		}
		if _, dup := dests[strings.ToLower(name)]; dup {
			return nil, nil, fmt.Errorf("%s: named twice (names ignore case): rename one", key)
		}
		d, err := newDestination(name, c, key)
		if err != nil {
			return nil, nil, err
		}
		dests[strings.ToLower(name)] = d
	}
	out := make([]destinationRule, 0, len(rules))
	for i, rc := range rules {
		key := fmt.Sprintf("policy.destination_rules[%d]", i)
		d, ok := dests[strings.ToLower(rc.Destination)]
		if !ok {
			return nil, nil, fmt.Errorf("%s.destination: %q is not among policy.destinations (%s): name one of them, or add it there", key, rc.Destination, strings.Join(destinationNames(dests), ", "))
		}
		r := destinationRule{key: key, dest: d, when: rc.When}
		for j, dn := range rc.Domains {
			n, err := NormalizeDomain(dn)
			if err != nil {
				return nil, nil, fmt.Errorf("%s.domains[%d]: %q is not a domain name: %w", key, j, dn, err)
			}
			r.domains = append(r.domains, n)
		}
		if r.when != nil {
			if err := r.when.Validate(key + ".when"); err != nil {
				return nil, nil, err
			}
		}
		out = append(out, r)
	}
	return dests, out, nil
}

func newDestination(name string, c DestinationConfig, key string) (*destination, error) {
	if c.Preset != "" {
		base, err := destinationPreset(c.Preset)
		if err != nil {
			return nil, fmt.Errorf("%s.preset: %w", key, err)
		}
		c = mergeDestination(base, c)
	}
	d := &destination{name: name, provider: c.Provider}
	if len(c.Services) == 0 {
		return nil, fmt.Errorf("%s.services: destination %s offers no service: list them as a domain's (imap, smtp, ...), or set preset", key, name)
	}
	for j, sc := range c.Services {
		s, err := newService(sc)
		if err != nil {
			return nil, fmt.Errorf("%s.services[%d]: %w", key, j, err)
		}
		d.services = append(d.services, s)
	}
	if c.OAuth != nil {
		o, err := newOAuth(*c.OAuth)
		if err != nil {
			return nil, fmt.Errorf("%s.oauth.%w", key, err)
		}
		d.oauth = o
	}
	if c.Login != "" {
		t, err := parseTemplate(c.Login)
		if err != nil {
			return nil, fmt.Errorf("%s.login: %w", key, err)
		}
		d.login = &t
	}
	if ad := c.Autodiscover; ad != nil {
		if ad.RedirectAddress != "" && ad.RedirectURL != "" {
			return nil, fmt.Errorf("%s.autodiscover: redirect_address and redirect_url both set: Outlook follows one, keep one", key)
		}
		if ad.RedirectAddress != "" {
			t, err := parseTemplate(ad.RedirectAddress)
			if err != nil {
				return nil, fmt.Errorf("%s.autodiscover.redirect_address: %w", key, err)
			}
			d.redirect = &t
		}
		if ad.RedirectURL != "" {
			u, err := url.Parse(ad.RedirectURL)
			if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
				return nil, fmt.Errorf("%s.autodiscover.redirect_url: %q is not an https:// URL (Outlook only follows redirects to HTTPS)", key, ad.RedirectURL)
			}
			d.url = ad.RedirectURL
		}
	}
	return d, nil
}

func validDestinationName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func destinationNames(m map[string]*destination) []string {
	names := make([]string, 0, len(m))
	for _, d := range m {
		names = append(names, d.name)
	}
	slices.Sort(names)
	if len(names) == 0 {
		return []string{"none configured"}
	}
	return names
}

// destinationAttributes appends what the destination rules and templates
// read to dst.
func (p *Policy) destinationAttributes(dst []string) []string {
	for _, r := range p.destRules {
		if r.when != nil {
			dst = r.when.Attributes(dst)
		}
	}
	for _, d := range p.destinations {
		if d.login != nil {
			dst = append(dst, d.login.attributes()...)
		}
		if d.redirect != nil {
			dst = append(dst, d.redirect.attributes()...)
		}
	}
	return dst
}

// destinationGroups appends the groups of the destination rules to dst.
func (p *Policy) destinationGroups(dst []string) []string {
	for _, r := range p.destRules {
		if r.when != nil {
			dst = r.when.Groups(dst)
		}
	}
	return dst
}

// applies reports whether the rule covers addresses of domain d.
func (r *destinationRule) applies(d *Domain) bool {
	return len(r.domains) == 0 || slices.Contains(r.domains, d.Name) || (d.AliasOf != "" && slices.Contains(r.domains, d.AliasOf))
}

// chooseDestination runs the destination rules for an enabled entry of
// domain d: the first that matches chooses. nil: none did, the domain's
// services. The reason is built only when explain is set.
func (p *Policy) chooseDestination(d *Domain, e Entry, explain bool) (*destination, string) {
	var whys []string
	for i := range p.destRules {
		r := &p.destRules[i]
		if !r.applies(d) {
			if explain {
				whys = append(whys, r.key+": not for "+d.Name)
			}
			continue
		}
		if r.when == nil {
			if !explain {
				return r.dest, ""
			}
			return r.dest, fmt.Sprintf("destination %s (%s): every account of %s", r.dest.name, r.key, strings.Join(r.domains, ", "))
		}
		ok, why := r.when.eval(e, explain)
		if ok {
			if !explain {
				return r.dest, ""
			}
			return r.dest, fmt.Sprintf("destination %s (%s): %s", r.dest.name, r.key, why)
		}
		if explain {
			whys = append(whys, r.key+": "+why)
		}
	}
	if !explain || len(p.destRules) == 0 {
		return nil, ""
	}
	return nil, "no destination rule matched, the domain's services (" + strings.Join(whys, "; ") + ")"
}

// redirectOf expands the destination's redirect_address for the entry: ""
// and why not when it gives no address to send Outlook to.
func (dst *destination) redirectOf(addr Address, primary string, e Entry) (string, string) {
	if dst.redirect == nil {
		return "", ""
	}
	v, err := dst.redirect.expand(addr, e)
	if err != nil {
		return "", "redirect_address: " + err.Error() + ": no redirect, the destination's services"
	}
	a, err := ParseAddress(v)
	if err != nil {
		return "", fmt.Sprintf("redirect_address: %q is not an address: no redirect, the destination's services", v)
	}
	if a == addr || a.String() == primary {
		return "", fmt.Sprintf("redirect_address: %s is the user's own address, a redirect would loop: no redirect, the destination's services", a)
	}
	return a.String(), ""
}
