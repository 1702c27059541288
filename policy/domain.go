package policy

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// DomainConfig is one entry of the domains list in the configuration.
type DomainConfig struct {
	Name             string          `mapstructure:"name"`
	Provider         string          `mapstructure:"provider"`
	ShortName        string          `mapstructure:"short_name"`
	DocumentationURL string          `mapstructure:"documentation_url"`
	Services         []ServiceConfig `mapstructure:"services"`
	// EWSURL is a shorthand for a last {type: ews, url: …} service: the
	// domain offers Exchange Web Services (Autodiscover's EXCH/EXPR,
	// autoconfig's type="ews", v2 JSON's Protocol=EWS) to the users its
	// rules entitle. Only for backends that speak EWS.
	EWSURL string `mapstructure:"ews_url"`
	// OOFURL is the out-of-office (EWS) URL; default ews_url.
	OOFURL string `mapstructure:"oof_url"`
	// AutodiscoverURL is the public HTTPS URL of the POX endpoint, used by
	// the HTTP redirect probe and Autodiscover v2; default
	// https://autodiscover.<name>/autodiscover/autodiscover.xml.
	AutodiscoverURL string `mapstructure:"autodiscover_url"`
	// OAuth names the domain's OAuth issuer for public clients (oauth.go).
	OAuth *OAuthConfig `mapstructure:"oauth"`
	// DefaultServices lists the service types (imap, pop3, ...) that
	// unknown and disabled addresses get, and addresses not cached while
	// the directory fails; empty: all of the domain's services.
	DefaultServices []string `mapstructure:"default_services"`
}

// ServiceConfig is one service a domain offers, in order of preference.
type ServiceConfig struct {
	Type   string   `mapstructure:"type"`
	Host   string   `mapstructure:"host"`
	Port   int      `mapstructure:"port"`
	Socket string   `mapstructure:"socket"`
	Auth   []string `mapstructure:"auth"`
	URL    string   `mapstructure:"url"`
}

// defaultPorts per kind and socket, used when a service omits its port.
var defaultPorts = map[Kind]map[Socket]int{
	IMAP: {SocketTLS: 993, SocketSTARTTLS: 143, SocketPlain: 143},
	POP3: {SocketTLS: 995, SocketSTARTTLS: 110, SocketPlain: 110},
	SMTP: {SocketTLS: 465, SocketSTARTTLS: 587, SocketPlain: 587},
}

// exampleURL is shown when an HTTP-based service lacks its url.
var exampleURL = map[Kind]string{
	ActiveSync: "https://mail.example.com/Microsoft-Server-ActiveSync",
	CalDAV:     "https://dav.example.com/caldav/",
	CardDAV:    "https://dav.example.com/carddav/",
	EWS:        "https://mail.example.com/EWS/Exchange.asmx",
	Graph:      "https://graph.microsoft.com",
}

// NewDomains validates the domains list; errors name the key at fault
// (domains[i].services[j].port, ...).
func NewDomains(cfgs []DomainConfig) (map[string]*Domain, error) {
	if len(cfgs) == 0 {
		return nil, fmt.Errorf("domains: no domain configured: add at least one entry with a name and services")
	}
	out := make(map[string]*Domain, len(cfgs))
	for i, c := range cfgs {
		key := fmt.Sprintf("domains[%d]", i)
		name, err := NormalizeDomain(c.Name)
		if err != nil {
			return nil, fmt.Errorf("%s.name: %q is not a domain name: %w", key, c.Name, err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s.name: %s is configured twice", key, name)
		}
		d := &Domain{Name: name, Provider: c.Provider, ShortName: c.ShortName, DocumentationURL: c.DocumentationURL,
			Origin: &DomainOrigin{Source: "configuration", Entry: key, Reason: "listed in the configuration"}}
		if d.Provider == "" {
			d.Provider = name
		}
		if d.ShortName == "" {
			d.ShortName = d.Provider
		}
		if d.DocumentationURL != "" {
			if err := checkHTTPURL(d.DocumentationURL); err != nil {
				return nil, fmt.Errorf("%s.documentation_url: %w", key, err)
			}
		}
		if len(c.Services) == 0 {
			return nil, fmt.Errorf("%s.services: %s offers no service: list at least imap or pop3, and smtp", key, name)
		}
		for j, sc := range c.Services {
			s, err := newService(sc)
			if err != nil {
				return nil, fmt.Errorf("%s.services[%d]: %w", key, j, err)
			}
			d.Services = append(d.Services, s)
		}
		if err := d.setExchangeURLs(c); err != nil {
			return nil, fmt.Errorf("%s.%w", key, err)
		}
		if c.OAuth != nil {
			if d.OAuth, err = newOAuth(*c.OAuth); err != nil {
				return nil, fmt.Errorf("%s.oauth.%w", key, err)
			}
		}
		if err := d.setDefaultServices(c.DefaultServices); err != nil {
			return nil, fmt.Errorf("%s.default_services: %w", key, err)
		}
		out[name] = d
	}
	return out, nil
}

func newService(c ServiceConfig) (Service, error) {
	kind, err := ParseKind(c.Type)
	if err != nil {
		return Service{}, fmt.Errorf("type: %w", err)
	}
	s := Service{Kind: kind}
	if kind.HTTPBased() {
		if c.URL == "" {
			return Service{}, fmt.Errorf("url: %s needs a url such as %s", kind, exampleURL[kind])
		}
		if err := checkHTTPURL(c.URL); err != nil {
			return Service{}, fmt.Errorf("url: %w", err)
		}
		if c.Host != "" || c.Port != 0 || c.Socket != "" {
			return Service{}, fmt.Errorf("%s is reached by url; host, port and socket do not apply", kind)
		}
		s.URL = c.URL
	} else {
		if c.URL != "" {
			return Service{}, fmt.Errorf("url: %s takes host, port and socket, not a url", kind)
		}
		host, err := NormalizeDomain(c.Host)
		if err != nil {
			return Service{}, fmt.Errorf("host: %q is not a host name", c.Host)
		}
		s.Host = host
		switch strings.ToLower(c.Socket) {
		case "", "tls", "ssl":
			s.Socket = SocketTLS
		case "starttls":
			s.Socket = SocketSTARTTLS
		case "plain", "none":
			s.Socket = SocketPlain
		default:
			return Service{}, fmt.Errorf("socket: %q is not one of tls, starttls, plain", c.Socket)
		}
		s.Port = c.Port
		if s.Port == 0 {
			s.Port = defaultPorts[kind][s.Socket]
		}
		if s.Port < 1 || s.Port > 65535 {
			return Service{}, fmt.Errorf("port: %d is not a TCP port", c.Port)
		}
	}
	if len(c.Auth) == 0 {
		s.Auth = []Auth{AuthPasswordCleartext}
	}
	for _, a := range c.Auth {
		auth, err := parseAuth(a)
		if err != nil {
			return Service{}, fmt.Errorf("auth: %w", err)
		}
		s.Auth = append(s.Auth, auth)
	}
	return s, nil
}

func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

// setExchangeURLs turns the ews_url shorthand into a last EWS service,
// and validates and copies the domain-wide Exchange-style URLs. It runs
// after the services are parsed. Errors start with the key (ews_url, ...)
// for the caller to prefix.
func (d *Domain) setExchangeURLs(c DomainConfig) error {
	if c.EWSURL != "" {
		if err := checkHTTPURL(c.EWSURL); err != nil {
			return fmt.Errorf("ews_url: %w", err)
		}
		if slices.ContainsFunc(d.Services, func(s Service) bool { return s.Kind == EWS }) {
			return fmt.Errorf("ews_url: the services list has a {type: ews} entry already: ews_url is a shorthand for one, drop it")
		}
		d.Services = append(d.Services, Service{Kind: EWS, URL: c.EWSURL, Auth: []Auth{AuthPasswordCleartext}})
	}
	for _, s := range d.Services {
		if s.Kind == EWS {
			d.EWSURL, d.OOFURL = s.URL, s.URL
			break
		}
	}
	if c.OOFURL != "" {
		if d.EWSURL == "" {
			return fmt.Errorf("oof_url: only applies to a domain offering EWS: set ews_url (or a {type: ews} service) too, or drop oof_url")
		}
		if err := checkHTTPURL(c.OOFURL); err != nil {
			return fmt.Errorf("oof_url: %w", err)
		}
		d.OOFURL = c.OOFURL
	}
	if c.AutodiscoverURL != "" {
		u, err := url.Parse(c.AutodiscoverURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
			return fmt.Errorf("autodiscover_url: %q is not an https:// URL (Outlook only follows redirects to HTTPS)", c.AutodiscoverURL)
		}
		d.AutodiscoverURL = c.AutodiscoverURL
	}
	return nil
}

// setDefaultServices validates and sets the kinds unknown addresses get.
func (d *Domain) setDefaultServices(types []string) error {
	if len(types) == 0 {
		return nil
	}
	kinds := d.kinds()
	for _, t := range types {
		k, err := ParseKind(t)
		if err != nil {
			return err
		}
		if !slices.Contains(kinds, k) {
			return fmt.Errorf("%s is not among the services of %s: list it under services, or drop it here", k, d.Name)
		}
		if !slices.Contains(d.DefaultServices, k) {
			d.DefaultServices = append(d.DefaultServices, k)
		}
	}
	return nil
}
