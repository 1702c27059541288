package protocols

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
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
	Address    string
	Incoming   []serverSetting // IMAP, then POP3, each in the domain's order
	Outgoing   []serverSetting // SMTP
	ActiveSync []urlSetting
	EWS        []urlSetting // Exchange Web Services
	CalDAV     []urlSetting
	CardDAV    []urlSetting
	// OAuth is the domain's OAuth issuer, for apps that sign in with it;
	// nil unless the domain configures one.
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
func (s *Server) setupPage(w http.ResponseWriter, r *http.Request) {
	v := setupView{Provider: "E-mail"}
	if d, ok := s.hostDomain(r, "autoconfig.", "autodiscover."); ok {
		v.Provider = d.Provider
	}
	v.Address = strings.TrimSpace(queryValue(r, "emailaddress"))
	if v.Address == "" {
		s.renderSetup(w, r, http.StatusOK, v)
		return
	}
	addr, err := policy.ParseAddress(v.Address)
	if err != nil {
		v.Problem = "That is not an e-mail address. Type it as name@example.com."
		s.renderSetup(w, r, http.StatusBadRequest, v)
		return
	}
	acct, err := s.res.Resolve(r.Context(), addr)
	if err != nil {
		status, problem := s.setupError(err)
		v.Problem = problem
		s.renderSetup(w, r, status, v)
		return
	}
	v.Provider = acct.Domain.Provider
	v.Result = newSetupResult(acct)
	s.renderSetup(w, r, http.StatusOK, v)
}

// setupError turns a resolver error into a status and a sentence for a
// person, with the same statuses resolveError gives the other endpoints.
func (s *Server) setupError(err error) (int, string) {
	switch {
	case errors.Is(err, policy.ErrUnknownDomain):
		return http.StatusNotFound, "This service does not set up addresses of that domain. Check the part after the @, or ask your e-mail provider."
	case errors.Is(err, policy.ErrRejected):
		return http.StatusNotFound, "There are no settings for that address. Check it for typing mistakes, or ask your e-mail provider."
	case errors.Is(err, policy.ErrDirectoryUnavailable),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "The settings cannot be looked up right now. Please try again in a minute."
	}
	s.log.Error("resolve failed", "err", err)
	return http.StatusInternalServerError, "Something went wrong on our side. Please try again later."
}

func newSetupResult(a *policy.Account) *setupResult {
	res := &setupResult{Address: a.Address.String(), OAuth: a.Domain.OAuth}
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

func (s *Server) renderSetup(w http.ResponseWriter, r *http.Request, status int, v setupView) {
	var b bytes.Buffer
	if err := setupTemplate.Execute(&b, v); err != nil {
		s.log.Error("rendering setup page", "err", err)
		textError(w, http.StatusInternalServerError, "internal error")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	// No script at all; styles only from this server; forms only to it.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	// The address is in the URL: never hand it to another site.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "private, no-store")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bytes())
	}
}

// serveSetupCSS serves the page's stylesheet.
func serveSetupCSS(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/css; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("Content-Length", strconv.Itoa(len(setupCSS)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(setupCSS)
	}
}
