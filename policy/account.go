package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Kind is a way into a mailbox. Renderers pick the kinds their format knows.
type Kind string

const (
	IMAP       Kind = "imap"
	POP3       Kind = "pop3"
	SMTP       Kind = "smtp"
	ActiveSync Kind = "activesync"
	CalDAV     Kind = "caldav"
	CardDAV    Kind = "carddav"
	// EWS is Exchange Web Services: Outlook's EXCH/EXPR in Autodiscover,
	// <incomingServer type="ews"> for Thunderbird.
	EWS Kind = "ews"
	// Graph is Microsoft Graph's mail API, <incomingServer type="graph">
	// for Thunderbird; no other format has a place for it.
	Graph Kind = "graph"
)

// Kinds lists every kind in a stable order, for validation and help texts.
var Kinds = []Kind{IMAP, POP3, SMTP, ActiveSync, CalDAV, CardDAV, EWS, Graph}

// HTTPBased reports whether the service is reached by a URL rather than a
// host and port.
func (k Kind) HTTPBased() bool {
	return k == ActiveSync || k == CalDAV || k == CardDAV || k == EWS || k == Graph
}

// Socket is how a connection is secured.
type Socket string

const (
	SocketTLS      Socket = "tls"      // implicit TLS on a dedicated port (RFC 8314)
	SocketSTARTTLS Socket = "starttls" // plain connect, then STARTTLS
	SocketPlain    Socket = "plain"    // no TLS at all
)

// Auth is an authentication mechanism family, named as in Thunderbird's
// config-v1.1.xml vocabulary; renderers translate it for other formats.
type Auth string

const (
	AuthPasswordCleartext Auth = "password-cleartext"
	AuthPasswordEncrypted Auth = "password-encrypted"
	AuthOAuth2            Auth = "OAuth2"
	AuthNTLM              Auth = "NTLM"
	AuthGSSAPI            Auth = "GSSAPI"
	AuthClientCert        Auth = "TLS-client-cert"
)

var auths = []Auth{AuthPasswordCleartext, AuthPasswordEncrypted, AuthOAuth2, AuthNTLM, AuthGSSAPI, AuthClientCert}

func parseAuth(s string) (Auth, error) {
	for _, a := range auths {
		if strings.EqualFold(s, string(a)) {
			return a, nil
		}
	}
	return "", fmt.Errorf("unknown authentication %q (one of %s)", s, joinStrings(auths))
}

// Service is one way in for one user: where to connect and how to log in.
type Service struct {
	Kind   Kind
	Host   string // mail protocols: host name
	Port   int    // mail protocols: TCP port
	Socket Socket // mail protocols
	Auth   []Auth // in order of preference; never empty
	Login  string // the user name to log in with
	URL    string // HTTP-based services
}

// Account is what one address gets: the contract between policy and the
// renderers in protocols. It holds only the services this user may use, in
// the domain's order of preference.
type Account struct {
	Address     Address // as asked (normalised)
	Primary     string  // primary address; differs from Address when an alias was asked
	DisplayName string
	Known       bool // the directory knows the address and the account is enabled
	Domain      *Domain
	Services    []Service

	// DN is the directory entry's distinguished name when Known, for
	// checking the user's password with a bind (Resolver.Authenticate).
	// Never rendered.
	DN string

	// Destination is where the user's mailbox lives when a destination
	// rule chose one (a migration's Microsoft 365 tenant, a second site):
	// Services are then the destination's, entitlements applied. nil: the
	// domain's own services. Only a Known account has one.
	Destination *Destination
}

// Destination is a named set of services that a user's mailbox may live
// behind instead of the domain's own: policy.destinations.
type Destination struct {
	Name string
	// Provider is the name clients show for the account's provider; empty:
	// the domain's.
	Provider string
	// OAuth is the destination's authorization server, nil when its
	// services take passwords.
	OAuth *OAuth
	// RedirectAddr, when set, is the address Autodiscover (POX) sends
	// Outlook to instead of answering with settings (Action redirectAddr,
	// MS-OXDSCLI), expanded from the user's entry, e.g. the tenant address
	// of a user moved to Microsoft 365.
	RedirectAddr string
	// RedirectURL, when set and RedirectAddr is not, is the Autodiscover
	// URL Outlook is sent to (Action redirectUrl).
	RedirectURL string
}

// Has reports whether the account holds a service of kind k.
func (a *Account) Has(k Kind) bool {
	for _, s := range a.Services {
		if s.Kind == k {
			return true
		}
	}
	return false
}

// First returns the first (most preferred) service of kind k.
func (a *Account) First(k Kind) (Service, bool) {
	for _, s := range a.Services {
		if s.Kind == k {
			return s, true
		}
	}
	return Service{}, false
}

// Domain is a configured mail domain: the provider's name and the services
// it offers, which are the ceiling of what any of its users gets.
type Domain struct {
	Name             string // lower-case A-label
	Provider         string // shown by clients, e.g. "Example Mail"
	ShortName        string
	DocumentationURL string
	Services         []Service // Login left empty: filled per user
	// EWSURL is the URL of the domain's first EWS service (a {type: ews}
	// service, or the ews_url shorthand), empty when it offers none; for
	// answers that are per domain, not per user. OOFURL defaults to it, as
	// Exchange has it.
	EWSURL string
	OOFURL string
	// OAuth is the domain's OAuth issuer for public clients, nil unless
	// configured.
	OAuth *OAuth
	// AutodiscoverURL is the public HTTPS URL of this domain's POX
	// Autodiscover endpoint; empty means
	// https://autodiscover.<domain>/autodiscover/autodiscover.xml.
	AutodiscoverURL string
	// DefaultServices are the kinds an unknown or disabled address gets,
	// and an address not cached while the directory fails; nil: all the
	// domain's services.
	DefaultServices []Kind
	// Origin says which configuration entry or directory entry made the
	// domain, and how each service came about; for `lookup`.
	Origin *DomainOrigin
	// AliasOf is the primary domain of an alias domain (a directory
	// domain found by another name than its own), empty otherwise. Its
	// addresses are the primary domain's users: they are looked up, and
	// log in, as under AliasOf.
	AliasOf string
}

// OffersByDefault reports whether unknown and disabled addresses get the
// domain's services of kind k (default_services).
func (d *Domain) OffersByDefault(k Kind) bool {
	return d.DefaultServices == nil || slices.Contains(d.DefaultServices, k)
}

// The prefixes clients put before a domain to find its settings:
// Thunderbird asks autoconfig.<d>, Outlook and Apple autodiscover.<d>,
// PACC clients ua-auto-config.<d>. Every name of that convention is
// spelled with them.
const (
	AutoconfigPrefix   = "autoconfig."
	AutodiscoverPrefix = "autodiscover."
	PACCPrefix         = "ua-auto-config."
)

// ClientHosts are the host names clients ask for the domain's settings:
// autoconfig.<d> and autodiscover.<d>. They need DNS records and
// certificates.
func (d *Domain) ClientHosts() []string {
	return []string{AutoconfigPrefix + d.Name, AutodiscoverPrefix + d.Name}
}

// AutodiscoverHost is autodiscover.<d>, Autodiscover's host of the domain.
func (d *Domain) AutodiscoverHost() string { return AutodiscoverPrefix + d.Name }

// PACCHost is the host name PACC clients ask for the domain's document
// (draft-ietf-mailmaint-pacc): published when the domain has one.
func (d *Domain) PACCHost() string { return PACCPrefix + d.Name }

// kinds lists the kinds of the domain's services once each, in order.
func (d *Domain) kinds() []Kind {
	var ks []Kind
	for _, s := range d.Services {
		if !slices.Contains(ks, s.Kind) {
			ks = append(ks, s.Kind)
		}
	}
	return ks
}

// accountFor builds an account from the domain's services, keeping those
// that allow(kind) accepts, with login and per-user host override applied.
func (d *Domain) accountFor(addr Address, login string, allow func(Kind) bool, hostOverride func(Kind) string) []Service {
	out := make([]Service, 0, len(d.Services))
	for _, s := range d.Services {
		if allow != nil && !allow(s.Kind) {
			continue
		}
		s.Login = login
		if hostOverride != nil {
			if h := hostOverride(s.Kind); h != "" {
				s.Host = h
			}
		}
		out = append(out, s)
	}
	return out
}

// DefaultAccount is the answer for an address the directory does not know,
// that is disabled, or that cannot be looked up while the directory fails:
// the domain's default services with the typed address as login, the same
// shape as a real user's answer so the server is no oracle. login may be a
// client placeholder such as Thunderbird's %EMAILADDRESS%.
func (d *Domain) DefaultAccount(addr Address, login string) *Account {
	return &Account{
		Address:  addr,
		Primary:  addr.String(),
		Domain:   d,
		Services: d.accountFor(addr, login, d.OffersByDefault, nil),
	}
}

func joinStrings[S ~string](xs []S) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = string(x)
	}
	return strings.Join(parts, ", ")
}
