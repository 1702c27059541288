package protocols

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Microsoft Autodiscover: the POX endpoint for Outlook and ActiveSync
// devices (autodiscover_pox.go renders it), the HTTP redirect probe, the
// v2 JSON endpoint (autodiscover_json.go), and optional authenticated
// discovery. protocols/CLIENTS.md §2, §3 and the quirk table in §6.

// AutodiscoverOptions configures Microsoft Autodiscover: the autodiscover
// section of the configuration.
type AutodiscoverOptions struct {
	// RequireAuth makes the POX endpoint answer 401 with a Basic challenge
	// until the client sends the user's password, checked by an LDAP bind
	// as the user, as Exchange does. Off by default.
	RequireAuth bool `mapstructure:"require_auth"`
	// Realm is the realm of the Basic challenge; default "mailbeacon".
	Realm string `mapstructure:"realm"`
	// AuthCacheTTL is how long a successful bind is remembered (an HMAC,
	// never the password) so that an Outlook that polls does not cause a
	// bind per request. Unset means 2m; 0 turns it off; at most 1h.
	AuthCacheTTL *time.Duration `mapstructure:"auth_cache_ttl"`
	// TrustForwardedProto makes "X-Forwarded-Proto: https" count as HTTPS
	// for the redirect probe. Enable it only behind a reverse proxy that
	// terminates TLS and sets (not appends to) that header: otherwise any
	// client can claim HTTPS, and without it such a proxy's requests all
	// look like plain HTTP and get redirected to themselves.
	TrustForwardedProto bool `mapstructure:"trust_forwarded_proto"`

	// OnAuthFailure, when set, is called for every failed authenticated
	// discovery attempt (wrong password, unknown or disabled address), so
	// that per-client limits can count it. Not configurable in YAML.
	OnAuthFailure func(r *http.Request) `mapstructure:"-"`
}

const (
	defaultRealm    = "mailbeacon"
	maxAuthCacheTTL = time.Hour
	// maxPOXBody bounds a request body: a real one is well under 1 KiB.
	maxPOXBody = 16 << 10
)

// BindMemory is how long the resolver should remember a successful bind:
// auth_cache_ttl, or its default when unset.
func (o AutodiscoverOptions) BindMemory() time.Duration {
	if o.AuthCacheTTL != nil {
		return *o.AuthCacheTTL
	}
	return policy.DefaultAuthCacheTTL
}

// Prepare validates the options and loads the files they name, once at
// start-up. Errors name the configuration key at fault.
func (o *AutodiscoverOptions) Prepare() error {
	if o.Realm == "" {
		o.Realm = defaultRealm
	}
	if err := checkRealm(o.Realm); err != nil {
		return fmt.Errorf("autodiscover.realm: %w", err)
	}
	if o.AuthCacheTTL != nil && (*o.AuthCacheTTL < 0 || *o.AuthCacheTTL > maxAuthCacheTTL) {
		return fmt.Errorf("autodiscover.auth_cache_ttl: %s is out of range: 0 (off) up to %s; keep it short, e.g. 2m", *o.AuthCacheTTL, maxAuthCacheTTL)
	}
	return nil
}

// checkRealm accepts printable ASCII without quote or backslash, so the
// realm can go into a quoted-string as is.
func checkRealm(realm string) error {
	if len(realm) > 100 {
		return errors.New("longer than 100 characters")
	}
	for i := 0; i < len(realm); i++ {
		if c := realm[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return fmt.Errorf("%q: use printable ASCII without quotes or backslashes", realm)
		}
	}
	return nil
}

// authenticator is what authenticated discovery needs from the resolver.
// policy.Resolver implements it; a resolver without it cannot serve
// require_auth, which then fails closed.
type authenticator interface {
	Authenticate(ctx context.Context, addr policy.Address, password string) (*policy.Account, error)
}

// autodiscover holds the Autodiscover handlers and their state.
type autodiscover struct {
	s        *Server
	opts     AutodiscoverOptions
	id       string           // error Id: a hash of the host name
	now      func() time.Time // for error Time attributes
	warnOnce sync.Once        // forwarded-proto advice
}

func (s *Server) autodiscoverRoutes(r *mux.Router) {
	a := &autodiscover{s: s, opts: s.opts.Autodiscover, now: time.Now}
	if a.opts.Realm == "" || checkRealm(a.opts.Realm) != nil {
		a.opts.Realm = defaultRealm
	}
	host, _ := os.Hostname()
	a.id = serverID(strings.ToLower(host))
	if a.opts.RequireAuth {
		if _, ok := s.res.(authenticator); !ok {
			s.log.Error("autodiscover.require_auth is on but the resolver cannot check passwords: every Autodiscover request will fail")
		}
	}
	// The path is not case sensitive (MS-OXDISCO; quirk 17): clients send
	// /autodiscover/autodiscover.xml, /Autodiscover/Autodiscover.xml and
	// /AutoDiscover/AutoDiscover.xml.
	r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool {
		return strings.EqualFold(req.URL.Path, poxPath)
	}).HandlerFunc(a.pox)
	r.MatcherFunc(func(req *http.Request, _ *mux.RouteMatch) bool {
		_, ok := jsonPathEmail(req.URL.Path)
		return ok
	}).HandlerFunc(a.json)
}

const poxPath = "/autodiscover/autodiscover.xml"

// autodiscoverURL is the public HTTPS URL of a domain's POX endpoint: the
// target of the redirect probe and of Autodiscover v2's AutodiscoverV1.
func autodiscoverURL(d *policy.Domain) string {
	if d.AutodiscoverURL != "" {
		return d.AutodiscoverURL
	}
	return "https://autodiscover." + d.Name + poxPath
}

// pox serves /autodiscover/autodiscover.xml in any letter case.
func (a *autodiscover) pox(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost, http.MethodGet, http.MethodHead:
	default:
		methodNotAllowed(http.MethodPost, http.MethodGet, http.MethodHead)(w, r)
		return
	}
	// Outlook's HTTP-redirect step sends an unauthenticated GET to
	// http://autodiscover.<domain>/autodiscover/autodiscover.xml and wants
	// a 302 to the HTTPS endpoint; Thunderbird POSTs there (quirks 12, 17).
	// Credentials never travel over that hop: the redirect comes first.
	if d, ok := a.redirectDomain(r); ok {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, autodiscoverURL(d), http.StatusFound)
		return
	}
	if r.Method != http.MethodPost {
		// Not the probe: a GET carries no request. Exchange answers 600.
		a.poxError(w, r, poxErrInvalid)
		return
	}
	var password string
	if a.opts.RequireAuth {
		// Challenge before reading the body, as Exchange does. Clients
		// that send Basic pre-emptively (Thunderbird) skip this round trip.
		_, pw, ok := r.BasicAuth()
		if !ok || pw == "" {
			a.challenge(w)
			return
		}
		password = pw
	}
	if r.ContentLength > maxPOXBody {
		textError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	// The request Content-Type is not checked: text/xml (with or without
	// a charset), application/xml, none, or curl's form type all carry
	// the same XML, and the parser is the judge.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPOXBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			textError(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		textError(w, http.StatusBadRequest, "could not read the request body")
		return
	}
	req, err := parsePOXRequestCached(body)
	if err != nil {
		a.s.log.Debug("autodiscover: invalid request", "err", err)
		a.poxError(w, r, poxErrInvalid)
		return
	}
	schema := req.responseSchema()
	if schema == schemaUnsupported {
		a.poxError(w, r, poxErrSchema)
		return
	}
	if req.EMailAddress == "" {
		if req.LegacyDN != "" {
			// MS-OXDSCLI prefers LegacyDN when both are given, but this server
			// hands out no LegacyDNs, so one it is asked about is none of its
			// own: the address is what it can answer for.
			a.notFound(w, r, schema)
			return
		}
		a.poxError(w, r, poxErrInvalid)
		return
	}
	addr, err := policy.ParseAddress(req.EMailAddress)
	if err != nil {
		a.poxError(w, r, poxErrInvalid)
		return
	}
	noteAddress(w, addr) // operations.go: the access log's domain
	var acct *policy.Account
	if a.opts.RequireAuth {
		// The address in the body, not the Basic user name, says whose
		// password this is: the stock Android mail app sends only the local
		// part as user name (quirk 22), others the login name.
		acct, err = a.authenticate(r, addr, password)
		if errors.Is(err, policy.ErrBadCredentials) || errors.Is(err, policy.ErrRejected) || errors.Is(err, policy.ErrUnknownDomain) {
			a.authFailed(w, r, addr)
			return
		}
	} else {
		acct, err = a.s.res.Resolve(r.Context(), addr)
	}
	if err != nil {
		a.resolveFailed(w, r, schema, err)
		return
	}
	var out []byte
	switch schema {
	case schemaMobilesync:
		out, err = renderMobilesyncCached(acct)
	default:
		var ok bool
		out, ok, err = renderOutlookCached(acct)
		if err == nil && !ok {
			a.poxError(w, r, poxErrNoSettings)
			return
		}
	}
	if err != nil {
		a.s.log.Error("rendering autodiscover", "err", err)
		a.poxError(w, r, poxErrInternalError)
		return
	}
	writeXML(w, r, out)
}

func (a *autodiscover) authenticate(r *http.Request, addr policy.Address, password string) (*policy.Account, error) {
	au, ok := a.s.res.(authenticator)
	if !ok {
		return nil, errors.New("autodiscover.require_auth: the resolver cannot check passwords")
	}
	return au.Authenticate(r.Context(), addr, password)
}

// challenge answers 401 with a Basic challenge (RFC 7617). Clients are told
// to expect UTF-8 user names and passwords.
func (a *autodiscover) challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="`+a.opts.Realm+`", charset="UTF-8"`)
	textError(w, http.StatusUnauthorized, "authentication required")
}

// authFailed answers a failed login exactly like a missing one: a wrong
// password and an unknown or disabled address look the same.
func (a *autodiscover) authFailed(w http.ResponseWriter, r *http.Request, addr policy.Address) {
	a.s.log.Info("autodiscover: authentication failed", "client", r.RemoteAddr, "domain", addr.Domain)
	if a.opts.OnAuthFailure != nil {
		a.opts.OnAuthFailure(r)
	}
	a.challenge(w)
}

// resolveFailed answers a resolver error in the protocol's own terms,
// inside HTTP 200.
func (a *autodiscover) resolveFailed(w http.ResponseWriter, r *http.Request, schema poxSchema, err error) {
	switch {
	case errors.Is(err, policy.ErrUnknownDomain), errors.Is(err, policy.ErrRejected):
		a.notFound(w, r, schema)
		return
	case errors.Is(err, policy.ErrDirectoryUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		a.s.log.Warn("autodiscover: directory unavailable", "err", err)
	default:
		a.s.log.Error("autodiscover: resolve failed", "err", err)
	}
	if schema == schemaMobilesync {
		a.mobilesyncError(w, r, msgMobilesyncDirectory)
		return
	}
	a.poxError(w, r, poxErrInternalError)
}

func (a *autodiscover) notFound(w http.ResponseWriter, r *http.Request, schema poxSchema) {
	if schema == schemaMobilesync {
		a.mobilesyncError(w, r, msgMobilesyncNotFound)
		return
	}
	a.poxError(w, r, poxErrNotFound)
}

func (a *autodiscover) mobilesyncError(w http.ResponseWriter, r *http.Request, msg string) {
	body, err := renderMobilesyncError(msg)
	if err != nil {
		textError(w, http.StatusInternalServerError, "internal error")
		return
	}
	writeXML(w, r, body)
}

// poxError sends an Autodiscover error document with HTTP 200: clients
// read errors from the payload ("even if you get a 200 (OK) … that
// response might contain an error").
func (a *autodiscover) poxError(w http.ResponseWriter, r *http.Request, code int) {
	body, err := renderPOXError(code, a.now(), a.id)
	if err != nil {
		textError(w, http.StatusInternalServerError, "internal error")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeXML(w, r, body)
}

// redirectDomain reports whether r is Outlook's HTTP-redirect probe: plain
// HTTP to autodiscover.<domain> or <domain> of a configured domain. A
// request by IP address, or for any other host, is answered directly.
func (a *autodiscover) redirectDomain(r *http.Request) (*policy.Domain, bool) {
	if !a.plainHTTP(r) {
		return nil, false
	}
	return a.s.hostDomain(r, "autodiscover.")
}

// plainHTTP reports whether the client's request came over plain HTTP.
func (a *autodiscover) plainHTTP(r *http.Request) bool {
	if r.TLS != nil {
		return false
	}
	proto := r.Header.Get("X-Forwarded-Proto")
	if first, _, _ := strings.Cut(proto, ","); strings.EqualFold(strings.TrimSpace(first), "https") {
		if a.opts.TrustForwardedProto {
			return false
		}
		a.warnOnce.Do(func() {
			a.s.log.Warn("autodiscover: a request says X-Forwarded-Proto: https, which is not trusted; behind a TLS-terminating proxy that sets it, set autodiscover.trust_forwarded_proto: true, or the redirect probe answers HTTPS requests with redirects to themselves")
		})
	}
	return true
}
