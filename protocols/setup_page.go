package protocols

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/mailbeacon/mailbeacon/policy"
)

// The self-service setup page at /: a person types an address and sees the
// settings their mail client needs, with a link to the Apple profile. Plain
// HTML and CSS embedded in the binary, no JavaScript. html/template escapes
// everything taken from the request or the directory.
//
// It shows no more than autoconfig answers for the same address: servers,
// ports, security and login names of the services the user may use. Not
// the display name, and nothing that tells a known address from an unknown
// one, which gets the domain defaults as everywhere else.

//go:embed web/setup.html web/setup.css
var webFS embed.FS

var setupTemplate = template.Must(template.ParseFS(webFS, "web/setup.html"))

var setupCSS = func() []byte {
	b, err := webFS.ReadFile("web/setup.css")
	if err != nil {
		panic(err) // embedded at build time
	}
	return b
}()

// setupView is what web/setup.html renders.
type setupView struct {
	Provider string // page heading: the provider of the domain asked about or served by Host
	Address  string // the form's value, as typed
	Problem  string // a sentence about what went wrong, shown above the form
	Result   *setupResult
}

// setupResult is the settings for one address.
type setupResult struct {
	Address string
	// Provider is where the mailbox lives when that is not the domain's
	// own servers (a destination's provider name); empty otherwise.
	Provider   string
	Incoming   []serverSetting // IMAP, then POP3, each in the domain's order
	Outgoing   []serverSetting // SMTP
	ActiveSync []urlSetting
	EWS        []urlSetting // Exchange Web Services
	Graph      []urlSetting // Microsoft Graph
	CalDAV     []urlSetting
	CardDAV    []urlSetting
	// OAuth is the OAuth issuer of the account's services, for apps that
	// sign in with it: the destination's for a user behind one, else the
	// domain's; nil when there is none.
	OAuth *policy.OAuth
	// ProfileURL and MacProfileURL link to /mobileconfig; empty when the
	// profile would carry nothing.
	ProfileURL    string
	MacProfileURL string
}

type serverSetting struct {
	Protocol string // IMAP, POP3, SMTP
	Host     string
	Port     int
	Security string
	Login    string
	Auth     string
}

type urlSetting struct {
	URL   string
	Host  string
	Login string
}

var securityLabel = map[policy.Socket]string{
	policy.SocketTLS:      "SSL/TLS",
	policy.SocketSTARTTLS: "STARTTLS",
}

var authLabel = map[policy.Auth]string{
	policy.AuthPasswordCleartext: "Normal password",
	policy.AuthPasswordEncrypted: "Encrypted password (CRAM-MD5)",
	policy.AuthOAuth2:            "OAuth2",
	policy.AuthNTLM:              "NTLM",
	policy.AuthGSSAPI:            "Kerberos / GSSAPI",
	policy.AuthClientCert:        "TLS client certificate",
}

// setupPage serves GET / and GET /?emailaddress=….
func (h *Handler) setupPage(c *call) error {
	v := &setupView{Provider: "E-mail"}
	c.page = v
	// The heading only: a Host that names no served domain (or a lookup
	// the limits refuse) keeps the generic one.
	if d, err := c.hostDomain(policy.AutoconfigPrefix, policy.AutodiscoverPrefix); err == nil {
		v.Provider = d.Provider
	}
	v.Address = strings.TrimSpace(queryValue(c.r, "emailaddress"))
	if v.Address == "" {
		return h.renderSetup(c, http.StatusOK, v)
	}
	addr, err := policy.ParseAddress(v.Address)
	if err != nil {
		return errBadAddress
	}
	acct, err := c.resolve(addr)
	if err != nil {
		return err
	}
	v.Provider = acct.Domain.Provider
	v.Result = newSetupResult(acct)
	return h.renderSetup(c, http.StatusOK, v)
}

// setupFail shows the page again with a sentence for a person, with the
// statuses the other endpoints give.
func (h *Handler) setupFail(c *call, err error) {
	v := c.page
	if v == nil {
		v = &setupView{Provider: "E-mail"}
	}
	status := http.StatusBadRequest
	if errors.Is(err, errBadAddress) {
		v.Problem = "That is not an e-mail address. Type it as name@example.com."
	} else {
		switch c.classify(err) {
		case lookupUnknownDomain:
			status, v.Problem = http.StatusNotFound, "This service does not set up addresses of that domain. Check the part after the @, or ask your e-mail provider."
		case lookupRejected:
			status, v.Problem = http.StatusNotFound, "There are no settings for that address. Check it for typing mistakes, or ask your e-mail provider."
		case lookupUnavailable:
			status, v.Problem = http.StatusServiceUnavailable, "The settings cannot be looked up right now. Please try again in a minute."
		default:
			status, v.Problem = http.StatusInternalServerError, "Something went wrong on our side. Please try again later."
		}
	}
	if err := h.renderSetup(c, status, v); err != nil {
		h.log.Error("rendering setup page", "err", err)
		c.text(http.StatusInternalServerError, "internal error")
	}
}

func newSetupResult(a *policy.Account) *setupResult {
	res := &setupResult{Address: a.Address.String(), OAuth: accountOAuth(a)}
	if p := providerName(a); p != a.Domain.Provider {
		res.Provider = p
	}
	for _, k := range []policy.Kind{policy.IMAP, policy.POP3, policy.SMTP} {
		for _, svc := range a.Services {
			sec, ok := securityLabel[svc.Socket]
			if svc.Kind != k || !ok {
				// Cleartext servers are left out, as in autoconfig (RFC 8314).
				continue
			}
			st := serverSetting{
				Protocol: strings.ToUpper(string(svc.Kind)), Host: svc.Host, Port: svc.Port,
				Security: sec, Login: svc.Login,
			}
			if len(svc.Auth) > 0 {
				st.Auth = authLabel[svc.Auth[0]]
			}
			if k == policy.SMTP {
				res.Outgoing = append(res.Outgoing, st)
			} else {
				res.Incoming = append(res.Incoming, st)
			}
		}
	}
	for _, svc := range a.Services {
		var dst *[]urlSetting
		switch svc.Kind {
		case policy.ActiveSync:
			dst = &res.ActiveSync
		case policy.EWS:
			dst = &res.EWS
		case policy.Graph:
			dst = &res.Graph
		case policy.CalDAV:
			dst = &res.CalDAV
		case policy.CardDAV:
			dst = &res.CardDAV
		default:
			continue
		}
		host := ""
		if u, err := url.Parse(svc.URL); err == nil {
			host = u.Host
		}
		*dst = append(*dst, urlSetting{URL: svc.URL, Host: host, Login: svc.Login})
	}
	q := url.Values{"emailaddress": {res.Address}}
	if len(buildProfile(a, profileOptions{}).PayloadContent) > 0 {
		res.ProfileURL = "/mobileconfig?" + q.Encode()
	}
	if len(buildProfile(a, profileOptions{Platform: platformMac}).PayloadContent) > 0 {
		q.Set("platform", "mac")
		res.MacProfileURL = "/mobileconfig?" + q.Encode()
	}
	return res
}

var (
	htmlContentType = []string{"text/html; charset=utf-8"}
	cssContentType  = []string{"text/css; charset=utf-8"}
	publicHour      = []string{"public, max-age=3600"}
	// No script at all; styles only from this server; forms only to it.
	setupCSP = []string{"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"}
	// The address is in the URL: never hand it to another site.
	noReferrer = []string{"no-referrer"}
)

func (h *Handler) renderSetup(c *call, status int, v *setupView) error {
	var b bytes.Buffer
	if err := setupTemplate.Execute(&b, v); err != nil {
		return fmt.Errorf("rendering setup page: %w", err)
	}
	hdr := c.w.Header()
	hdr["Content-Security-Policy"] = setupCSP
	hdr["Referrer-Policy"] = noReferrer
	c.send(status, htmlContentType, privateNoStore, b.Bytes())
	return nil
}

// serveSetupCSS serves the page's stylesheet.
func serveSetupCSS(c *call) error {
	c.send(http.StatusOK, cssContentType, publicHour, setupCSS)
	return nil
}
