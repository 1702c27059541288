package protocols

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

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
	// BindFailures is how many binds as one account (whichever address
	// names it, whoever asks) the directory may refuse before no new
	// password is tried for that account until BindPause has passed since
	// the last refused one; a password refused once is never tried again
	// for that account meanwhile. 0 means 3; at most 10.
	BindFailures int `mapstructure:"bind_failures"`
	// BindPause is that quiet time: at least the directory's lockout
	// observation window. 0 means 30m; 1s up to 24h.
	BindPause time.Duration `mapstructure:"bind_pause"`
	// RefusalTime is when, after a login began, every refusal is answered,
	// whatever the reason, so that its time tells nothing. 0 means 200ms;
	// 1ms up to 10s.
	RefusalTime time.Duration `mapstructure:"refusal_time"`
	// ProtoProxies are the peers (addresses or CIDR blocks) whose
	// X-Forwarded-Proto or Forwarded proto= is believed by the redirect
	// probe, besides limits.trusted_proxies. Unset: loopback only, where a
	// TLS-terminating proxy on the same host connects from.
	ProtoProxies []string `mapstructure:"proto_proxies"`
	// TrustForwardedProto believes that header from any peer. Only for a
	// server that nothing but its proxy can reach.
	TrustForwardedProto bool `mapstructure:"trust_forwarded_proto"`

	protoProxies []netip.Prefix
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

// BindLockout is the bound on refused binds per account and the refusal
// time: bind_failures, bind_pause and refusal_time, or their defaults
// when unset.
func (o AutodiscoverOptions) BindLockout() policy.LockoutConfig {
	c := policy.DefaultLockoutConfig()
	if o.BindFailures != 0 {
		c.Failures = o.BindFailures
	}
	if o.BindPause != 0 {
		c.Pause = o.BindPause
	}
	if o.RefusalTime != 0 {
		c.RefusalTime = o.RefusalTime
	}
	return c
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
	if err := o.BindLockout().Validate("autodiscover."); err != nil {
		return err
	}
	list := o.ProtoProxies
	if list == nil {
		list = defaultProtoProxies
	}
	o.protoProxies = o.protoProxies[:0]
	for i, s := range list {
		p, err := parsePrefix(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("autodiscover.proto_proxies[%d]: %q is not an IP address or CIDR block such as 127.0.0.1 or 10.0.0.0/8", i, s)
		}
		o.protoProxies = append(o.protoProxies, p)
	}
	return nil
}

// defaultProtoProxies: a proxy on the same host.
var defaultProtoProxies = []string{"127.0.0.0/8", "::1"}

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

// autodiscover holds the Autodiscover handlers' settings.
type autodiscover struct {
	h    *Handler
	opts AutodiscoverOptions
	id   string           // error Id: a hash of the host name
	now  func() time.Time // for error Time attributes
}

func newAutodiscover(h *Handler) autodiscover {
	a := autodiscover{h: h, opts: h.opts.Autodiscover, now: time.Now}
	if a.opts.Realm == "" || checkRealm(a.opts.Realm) != nil {
		a.opts.Realm = defaultRealm
	}
	if a.opts.protoProxies == nil {
		o := a.opts
		if err := o.Prepare(); err == nil {
			a.opts = o
		}
	}
	host, _ := os.Hostname()
	a.id = serverID(strings.ToLower(host))
	if a.opts.RequireAuth && h.auth == nil {
		h.log.Error("autodiscover.require_auth is on but the resolver cannot check passwords: every Autodiscover request will fail")
	}
	return a
}

const poxPath = "/autodiscover/autodiscover.xml"

// autodiscoverURL is the public HTTPS URL of a domain's POX endpoint: the
// target of the redirect probe and of Autodiscover v2's AutodiscoverV1.
func autodiscoverURL(d *policy.Domain) string {
	if d.AutodiscoverURL != "" {
		return d.AutodiscoverURL
	}
	return "https://" + d.AutodiscoverHost() + poxPath
}

// pox serves /autodiscover/autodiscover.xml in any letter case. The
// pipeline has read the body.
func (a *autodiscover) pox(c *call) error {
	// Outlook's HTTP-redirect step sends an unauthenticated GET to
	// http://autodiscover.<domain>/autodiscover/autodiscover.xml and wants
	// a 302 to the HTTPS endpoint; Thunderbird POSTs there (quirks 12, 17).
	// Credentials never travel over that hop: the redirect comes first.
	if a.plainHTTP(c) {
		d, err := c.hostDomain(policy.AutodiscoverPrefix)
		if err == nil {
			c.redirect(http.StatusFound, autodiscoverURL(d), noStore)
			return nil
		}
		var lim *limitError
		if errors.As(err, &lim) {
			return err
		}
		// Another host, or one by IP address: answered directly.
	}
	if c.r.Method != http.MethodPost {
		// Not the probe: a GET carries no request. Exchange answers 600.
		return poxErrorCode(poxErrInvalid)
	}
	var password string
	if a.opts.RequireAuth {
		// Clients that send Basic pre-emptively (Thunderbird) skip the
		// challenge's round trip.
		_, pw, ok := c.r.BasicAuth()
		if !ok || pw == "" {
			return authError{}
		}
		password = pw
	}
	// The request Content-Type is not checked: text/xml (with or without
	// a charset), application/xml, none, or curl's form type all carry
	// the same XML, and the parser is the judge.
	req, err := c.h.cache.parsePOX(c.body)
	if err != nil {
		a.h.log.Debug("autodiscover: invalid request", "err", err)
		return poxErrorCode(poxErrInvalid)
	}
	c.schema = req.responseSchema()
	if c.schema == schemaUnsupported {
		return poxErrorCode(poxErrSchema)
	}
	if req.EMailAddress == "" {
		if req.LegacyDN != "" {
			// MS-OXDSCLI prefers LegacyDN when both are given, but this server
			// hands out no LegacyDNs, so one it is asked about is none of its
			// own: the address is what it can answer for.
			return policy.ErrRejected
		}
		return poxErrorCode(poxErrInvalid)
	}
	addr, err := policy.ParseAddress(req.EMailAddress)
	if err != nil {
		return poxErrorCode(poxErrInvalid)
	}
	var acct *policy.Account
	if a.opts.RequireAuth {
		// The address in the body, not the Basic user name, says whose
		// password this is: the stock Android mail app sends only the local
		// part as user name (quirk 22), others the login name.
		acct, err = c.authenticate(addr, password)
		if errors.Is(err, policy.ErrBadCredentials) || errors.Is(err, policy.ErrRejected) || errors.Is(err, policy.ErrUnknownDomain) {
			return authError{failed: true}
		}
	} else {
		acct, err = c.resolve(addr)
	}
	if err != nil {
		return err
	}
	var out *answer
	switch c.schema {
	case schemaMobilesync:
		out, err = c.h.cache.render(acct, formatMobilesync)
	default:
		out, err = c.h.cache.render(acct, formatOutlook)
		if err == nil && len(out.body) == 0 {
			return poxErrorCode(poxErrNoSettings)
		}
	}
	if err != nil {
		return fmt.Errorf("rendering autodiscover: %w", err)
	}
	c.sendAnswer(http.StatusOK, xmlContentType, privateNoCache, out)
	return nil
}

// challenge answers 401 with a Basic challenge (RFC 7617). Clients are told
// to expect UTF-8 user names and passwords. A failed login is answered
// exactly like a missing one: a wrong password and an unknown or disabled
// address look the same.
func (a *autodiscover) challenge(c *call, failed bool) {
	if failed {
		a.h.log.Info("autodiscover: authentication failed", "client", c.ip.String(), "domain", c.addr.Domain)
	}
	c.w.Header().Set("WWW-Authenticate", `Basic realm="`+a.opts.Realm+`", charset="UTF-8"`)
	c.text(http.StatusUnauthorized, "authentication required")
}

// poxFail answers a lookup error in the protocol's own terms, inside HTTP
// 200.
func (a *autodiscover) poxFail(c *call, err error) {
	switch c.classify(err) {
	case lookupUnknownDomain, lookupRejected:
		if c.schema == schemaMobilesync {
			a.mobilesyncError(c, msgMobilesyncNotFound)
			return
		}
		a.poxError(c, poxErrNotFound)
	default:
		if c.schema == schemaMobilesync {
			a.mobilesyncError(c, msgMobilesyncDirectory)
			return
		}
		a.poxError(c, poxErrInternalError)
	}
}

func (a *autodiscover) mobilesyncError(c *call, msg string) {
	body, err := renderMobilesyncError(msg)
	if err != nil {
		c.text(http.StatusInternalServerError, "internal error")
		return
	}
	c.send(http.StatusOK, xmlContentType, noStore, body)
}

// poxError sends an Autodiscover error document with HTTP 200: clients
// read errors from the payload ("even if you get a 200 (OK) … that
// response might contain an error").
func (a *autodiscover) poxError(c *call, code int) {
	body, err := renderPOXError(code, a.now(), a.id)
	if err != nil {
		c.text(http.StatusInternalServerError, "internal error")
		return
	}
	c.send(http.StatusOK, xmlContentType, noStore, body)
}

// plainHTTP reports whether the request is known to have come over plain
// HTTP: it arrived on a plain-HTTP listener of a server that serves TLS
// itself (OverPlainHTTP), or a proxy trusted to say so says so. Anything
// else is answered, never redirected: a redirect of a request that came
// over HTTPS would send the client to itself.
func (a *autodiscover) plainHTTP(c *call) bool {
	r := c.r
	if r.TLS != nil {
		return false
	}
	if overPlainHTTP(r.Context()) {
		return true
	}
	peer, ok := parseHop(r.RemoteAddr)
	if !ok || !(a.opts.TrustForwardedProto || a.protoProxy(peer) || c.h.lim.trusted(peer)) {
		return false
	}
	return strings.EqualFold(forwardedProto(r.Header), "http")
}

func (a *autodiscover) protoProxy(peer netip.Addr) bool {
	for _, p := range a.opts.protoProxies {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// forwardedProto is the protocol the nearest proxy says the client used:
// the last X-Forwarded-Proto entry, or else the proto= of the last
// Forwarded element.
func forwardedProto(h http.Header) string {
	if vals := h.Values("X-Forwarded-Proto"); len(vals) > 0 {
		v := vals[len(vals)-1]
		if i := strings.LastIndexByte(v, ','); i >= 0 {
			v = v[i+1:]
		}
		return strings.TrimSpace(v)
	}
	vals := h.Values("Forwarded")
	if len(vals) == 0 {
		return ""
	}
	v := vals[len(vals)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	for v != "" {
		var pair string
		pair, v, _ = strings.Cut(v, ";")
		k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && strings.EqualFold(k, "proto") {
			return strings.Trim(val, `"`)
		}
	}
	return ""
}

type plainHTTPKey struct{}

// OverPlainHTTP marks a listener's base context: requests on it came over
// plain HTTP to a server that also serves HTTPS (server.http_listen), so
// the Autodiscover redirect probe answers them with a redirect.
func OverPlainHTTP(ctx context.Context) context.Context {
	return context.WithValue(ctx, plainHTTPKey{}, true)
}

func overPlainHTTP(ctx context.Context) bool {
	v, _ := ctx.Value(plainHTTPKey{}).(bool)
	return v
}
