package protocols

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Thunderbird autoconfig, config-v1.1.xml (CLIENTS.md §1.4–1.6).
// Element names carry no namespace prefix: Thunderbird keys parsed XML by
// nodeName, so <a:clientConfig> would not be found (quirk 6).

type clientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider emailProvider `xml:"emailProvider"`
	// OAuth2 is draft-ietf-mailmaint-autoconfig's element at the root
	// (CLIENTS.md §1.8): no listed client reads it, all skip it.
	OAuth2 *oAuth2 `xml:"oAuth2,omitempty"`
}

type oAuth2 struct {
	Issuer   string `xml:"issuer"`
	Scope    string `xml:"scope,omitempty"`
	AuthURL  string `xml:"authURL,omitempty"`
	TokenURL string `xml:"tokenURL,omitempty"`
	ClientID string `xml:"clientID,omitempty"`
}

type emailProvider struct {
	// Thunderbird rejects the whole file unless id is a valid host name and
	// at least one <domain> is given.
	ID               string         `xml:"id,attr"`
	Domain           []string       `xml:"domain"`
	DisplayName      string         `xml:"displayName"`
	DisplayShortName string         `xml:"displayShortName"`
	Incoming         []mailServer   `xml:"incomingServer"`
	Outgoing         []mailServer   `xml:"outgoingServer"`
	Documentation    *documentation `xml:"documentation,omitempty"`
}

// mailServer is an incomingServer or outgoingServer. For imap, pop3 and
// smtp every element is always present: Thunderbird for Android rejects
// the whole document when an imap/smtp block lacks one (quirk 8), and
// Thunderbird turns a missing username into the string "undefined". A
// URL-based server (ews) has a url instead of hostname, port and
// socketType, as the draft and Thunderbird have it (quirk 26); Android
// skips the whole block by its type (quirk 27).
type mailServer struct {
	Type           string       `xml:"type,attr"`
	URL            string       `xml:"url,omitempty"`
	Hostname       string       `xml:"hostname,omitempty"`
	Port           int          `xml:"port,omitempty"`
	SocketType     string       `xml:"socketType,omitempty"`
	Authentication []serverAuth `xml:"authentication"`
	Username       string       `xml:"username"`
}

// serverAuth is one <authentication>; System "http" marks the draft's HTTP
// scheme names (Basic), which Thunderbird does not know and passes over
// (quirk 26), so they follow the values it reads.
type serverAuth struct {
	System string `xml:"system,attr,omitempty"`
	Value  string `xml:",chardata"`
}

type documentation struct {
	URL   string `xml:"url,attr"`
	Descr descr  `xml:"descr"`
}

type descr struct {
	Lang string `xml:"lang,attr"`
	Text string `xml:",chardata"`
}

// placeholderAddress is Thunderbird's variable for the address the user
// typed, used when the request does not say which address it is for
// (Thunderbird for Android never sends ?emailaddress=, quirk 2).
const placeholderAddress = "%EMAILADDRESS%"

// autoconfigSocket spells a socket as config-v1.1.xml does (case-sensitive
// in Thunderbird).
var autoconfigSocket = map[policy.Socket]string{
	policy.SocketTLS:      "SSL",
	policy.SocketSTARTTLS: "STARTTLS",
}

// renderAutoconfig builds the config-v1.1.xml document for an account.
// It is a pure function of the account; golden files pin its output.
func renderAutoconfig(a *policy.Account) ([]byte, error) {
	return encodeXMLDoc(autoconfigDocument(a))
}

// autoconfigDocument is the config-v1.1.xml document of an account, to
// encode.
func autoconfigDocument(a *policy.Account) clientConfig {
	d := a.Domain
	cc := clientConfig{
		Version: "1.1",
		Provider: emailProvider{
			ID:               d.Name,
			Domain:           []string{d.Name},
			DisplayName:      providerName(a),
			DisplayShortName: shortName(a),
		},
	}
	for _, s := range a.Services {
		if s.Kind == policy.EWS || s.Kind == policy.Graph {
			// In the domain's order: the first incoming server is
			// Thunderbird's default, the others its alternatives (§1.8).
			cc.Provider.Incoming = append(cc.Provider.Incoming, urlServer(s))
			continue
		}
		socket, ok := autoconfigSocket[s.Socket]
		if !ok {
			// A cleartext server makes Thunderbird for Android reject the
			// whole document (quirk 8), and RFC 8314 says not to offer it.
			// ActiveSync, CalDAV and CardDAV (no socket) have no form that
			// current clients read (§1.8): Thunderbird finds DAV by itself.
			continue
		}
		ms := mailServer{
			Hostname:   s.Host,
			Port:       s.Port,
			SocketType: socket,
			Username:   s.Login,
		}
		for _, au := range s.Auth {
			ms.Authentication = append(ms.Authentication, serverAuth{Value: string(au)})
		}
		switch s.Kind {
		case policy.IMAP, policy.POP3:
			ms.Type = string(s.Kind)
			cc.Provider.Incoming = append(cc.Provider.Incoming, ms)
		case policy.SMTP:
			ms.Type = "smtp"
			cc.Provider.Outgoing = append(cc.Provider.Outgoing, ms)
		}
	}
	if o := accountOAuth(a); o != nil {
		cc.OAuth2 = &oAuth2{
			Issuer: o.IssuerHost(), Scope: strings.Join(o.Scopes, " "),
			AuthURL: o.AuthURL, TokenURL: o.TokenURL, ClientID: o.ClientID,
		}
	}
	if d.DocumentationURL != "" {
		cc.Provider.Documentation = &documentation{URL: d.DocumentationURL, Descr: descr{Lang: "en", Text: "Mail client settings"}}
	}
	return cc
}

// providerName is the name clients show for the account's provider: the
// destination's when the user's mailbox lives behind one that names
// itself, else the domain's.
func providerName(a *policy.Account) string {
	if a.Destination != nil && a.Destination.Provider != "" {
		return a.Destination.Provider
	}
	return a.Domain.Provider
}

// shortName is the provider's short name: the destination's provider
// name when it names one (destinations have no short name of their own).
func shortName(a *policy.Account) string {
	if a.Destination != nil && a.Destination.Provider != "" {
		return a.Destination.Provider
	}
	return a.Domain.ShortName
}

// accountOAuth is the authorization server of the account's services: the
// destination's (nil when its services take passwords) for a user behind
// one, else the domain's.
func accountOAuth(a *policy.Account) *policy.OAuth {
	if a.Destination != nil {
		return a.Destination.OAuth
	}
	return a.Domain.OAuth
}

// urlServer is the incomingServer of a URL-based service (EWS, Graph:
// <incomingServer type="graph"><url>, CLIENTS.md §1.9). Its
// authentication lists the service's methods, which Thunderbird reads, and
// after a password method the draft's HTTP form of it, Basic.
func urlServer(s policy.Service) mailServer {
	ms := mailServer{Type: string(s.Kind), URL: s.URL, Username: s.Login}
	basic := false
	for _, au := range s.Auth {
		ms.Authentication = append(ms.Authentication, serverAuth{Value: string(au)})
		basic = basic || au == policy.AuthPasswordCleartext
	}
	if basic {
		ms.Authentication = append(ms.Authentication, serverAuth{System: "http", Value: "Basic"})
	}
	return ms
}

// autoconfig serves GET /mail/config-v1.1.xml and the .well-known path.
func (h *Handler) autoconfig(c *call) error {
	var acct *policy.Account
	if raw := queryValue(c.r, "emailaddress"); raw != "" {
		addr, err := policy.ParseAddress(raw)
		if err != nil {
			return errBadAddress
		}
		if acct, err = c.resolve(addr); err != nil {
			return err
		}
	} else {
		d, err := c.hostDomain(policy.AutoconfigPrefix)
		if err != nil {
			return err
		}
		acct = h.cache.placeholder(d)
	}
	ans, err := h.cache.render(acct, formatAutoconfig)
	if err != nil {
		return fmt.Errorf("rendering autoconfig: %w", err)
	}
	c.sendAnswer(http.StatusOK, xmlContentType, privateNoCache, ans)
	return nil
}

// queryValue returns the first value of a query parameter, matching its
// name case-insensitively (an exact match wins). Url-decoding handles the
// %40 that Thunderbird sends for "@" (quirk 2). It reads the raw query
// as url.ParseQuery does (pairs with a semicolon or a bad escape are
// skipped) without building the map: it runs on every request.
func queryValue(r *http.Request, name string) string {
	q := r.URL.RawQuery
	var folded string
	foundFolded := false
	for q != "" {
		var pair string
		pair, q, _ = strings.Cut(q, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			continue
		}
		exact := key == name
		if !exact && (foundFolded || !strings.EqualFold(key, name)) {
			continue
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			continue
		}
		if exact {
			return val
		}
		folded, foundFolded = val, true
	}
	return folded
}
