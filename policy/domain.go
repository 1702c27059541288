package policy

import (
	"fmt"
	"net/url"
	"strings"
)

// DomainConfig is one entry of the domains list in the configuration.
type DomainConfig struct {
	Name             string          `mapstructure:"name"`
	Provider         string          `mapstructure:"provider"`
	ShortName        string          `mapstructure:"short_name"`
	DocumentationURL string          `mapstructure:"documentation_url"`
	Services         []ServiceConfig `mapstructure:"services"`
	// EWSURL opts the domain into Exchange-style answers: Autodiscover's
	// Outlook response carries EXCH/EXPR protocols with this URL, and the
	// v2 JSON endpoint answers Protocol=EWS. Only for backends that speak EWS.
	EWSURL string `mapstructure:"ews_url"`
	// OOFURL is the out-of-office (EWS) URL; default ews_url.
	OOFURL string `mapstructure:"oof_url"`
	// AutodiscoverURL is the public HTTPS URL of the POX endpoint, used by
	// the HTTP redirect probe and Autodiscover v2; default
	// https://autodiscover.<name>/autodiscover/autodiscover.xml.
	AutodiscoverURL string `mapstructure:"autodiscover_url"`
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
		if err := d.setExchangeURLs(c); err != nil {
			return nil, fmt.Errorf("%s.%w", key, err)
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
			return Service{}, fmt.Errorf("url: %s needs a url such as https://mail.example.com/Microsoft-Server-ActiveSync", kind)
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

// setExchangeURLs validates and copies the optional Exchange-style URLs.
// Errors start with the key (ews_url, ...) for the caller to prefix.
func (d *Domain) setExchangeURLs(c DomainConfig) error {
	if c.EWSURL != "" {
		if err := checkHTTPURL(c.EWSURL); err != nil {
			return fmt.Errorf("ews_url: %w", err)
		}
		d.EWSURL, d.OOFURL = c.EWSURL, c.EWSURL
	}
	if c.OOFURL != "" {
		if c.EWSURL == "" {
			return fmt.Errorf("oof_url: only applies with ews_url: set ews_url too, or drop oof_url")
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
