// Package protocols speaks to mail clients: the HTTP routes, where each
// request is parsed, and one renderer per client format. Decisions about
// what a user gets are made in policy; this package only asks the Resolver
// and renders the Account it returns.
//
// A request goes through one pipeline (ServeHTTP, then serve), one stage
// per function:
//
//	route      the table in routes; its entry names the request for
//	           metrics, limits and the access log
//	client     who asked (clientIP: the peer, or behind a trusted proxy
//	           the address it forwarded)
//	admit      the client's request bucket and its own concurrency slots
//	readBody   the body, bounded, under its own deadline; a route that
//	           takes none refuses one (413) rather than leave it to
//	           net/http, which reads an unread body before it sends
//	           more than 2 KiB of the answer
//	enter      the shared concurrency slots, taken only once the body is
//	           in, so that a slow sender waits in its own client's slots
//	serve      the route's handler: parse, lookup (call.resolve, with the
//	           unknown-address budget reserved before the directory is
//	           asked), render, write (call.send)
//	fail       one mapping from any stage's error to the answer of the
//	           route's format; a refusal before the body is read ends
//	           the connection with the answer (hangUp)
//	record     metrics and the access log
package protocols

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Resolver is what the handlers need from policy. Domain returns an
// error wrapping policy.ErrUnknownDomain for a domain not served here and
// policy.ErrDirectoryUnavailable when that cannot be known now.
type Resolver interface {
	Resolve(ctx context.Context, addr policy.Address) (*policy.Account, error)
	Domain(ctx context.Context, name string) (*policy.Domain, error)
}

// Options configures the handler.
type Options struct {
	Log          *slog.Logger
	Autodiscover AutodiscoverOptions
	Apple        AppleOptions
	Operations   OperationsOptions // operations.go
	Limits       LimitOptions      // limits.go
	// Ready reports whether the directory can be reached (for /readyz).
	Ready func(context.Context) error
	// AnswersWithoutDirectory says the resolver answers every address
	// while the directory fails, from the cache or with the domain's
	// defaults (cache.on_directory_error: defaults): /readyz/serving then
	// says ready without asking the directory.
	AnswersWithoutDirectory bool
	// Metrics records every request; NewMetrics registers them on a
	// registry. Nil: a registry of the handler's own, served at /metrics.
	Metrics *Metrics
	// Previous is the handler this one replaces on a reload: its
	// per-client state (request and unknown-address budgets) carries over
	// when the limits did not change, and what each client spent when they
	// did, so a reload is no fresh start for a scanner.
	Previous *Handler
	// ReadTimeout is the http.Server's: a body deadline no shorter than it
	// is left to the server (setting one costs a timer per request).
	ReadTimeout time.Duration
}

// Handler serves every client endpoint. Make it with NewHandler.
type Handler struct {
	res    Resolver
	auth   authenticator  // res, when it can check passwords
	cached cachedResolver // res, when it answers from its cache apart; nil when a known address keeps its token
	log    *slog.Logger
	access AccessLogger // log's handler, when it writes access-log lines itself
	opts   Options
	lim    *limiter
	met    *Metrics
	cache  *renderCache // rendered answers and parsed bodies: this handler's own
	ad     autodiscover
	routes []route
	other  route // what no route matches
	// router matches a request to its entry of routes (entries): the
	// table's matchers, registered in the table's order.
	router  *mux.Router
	entries map[*mux.Route]*route
	noVars  map[string]string // empty: the route variables of every route

	calls  sync.Pool // *call: one per request in flight
	bodies sync.Pool // *[]byte of pooledBody bytes: request bodies
}

// pooledBody is the size of the pooled body buffers: a real Autodiscover
// request is well under 1 KiB.
const pooledBody = 4 << 10

// maxDAVBody bounds the body of a request to the RFC 6764 well-known
// URIs: the PROPFIND of iOS and DAVx5 asks for a few properties in a
// few hundred bytes.
const maxDAVBody = pooledBody

// NewHandler returns the handler of every client endpoint, with the
// operations endpoints too unless opts.Operations.Listen moves them to a
// listener of their own (Operations).
func NewHandler(res Resolver, opts Options) *Handler {
	h := newHandler(res, opts)
	h.routes = h.clientRoutes()
	if opts.Operations.Listen == "" {
		h.routes = append(h.routes, h.operationsRoutes()...)
	}
	h.finishRoutes()
	return h
}

func newHandler(res Resolver, opts Options) *Handler {
	h := &Handler{res: res, log: opts.Log, opts: opts, met: opts.Metrics, cache: newRenderCache()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.met == nil {
		h.met = privateMetrics()
	}
	h.auth, _ = res.(authenticator)
	h.lim = newLimiter(opts.Limits, h.log, opts.Previous)
	if !h.lim.opts.KeepKnownTokens {
		h.cached, _ = res.(cachedResolver)
	}
	h.access, _ = h.log.Handler().(AccessLogger)
	h.calls.New = func() any { return new(call) }
	h.bodies.New = func() any { b := make([]byte, pooledBody); return &b }
	h.opts.Previous = nil // keep no chain of retired handlers alive
	h.ad = newAutodiscover(h)
	return h
}

// route is one entry of the route table: which requests it takes, and
// what the pipeline does with them.
type route struct {
	name    string                     // metrics label and access log "format"
	match   func(r *http.Request) bool // which requests
	methods []string                   // allowed methods; nil: any
	answer  answerStyle                // how fail answers this route's errors
	maxBody int64                      // the body read before serve is at most this long; 0: the route takes none
	ops     bool                       // health and metrics: no concurrency bound, logged at debug
	serve   func(c *call) error        // parse, look up, render, write
	logPath func(path string) string   // the path as logged; nil: as is
	stats   routeStats                 // this handler's metric children
}

// clientRoutes is the route table of the client endpoints. Adding an
// endpoint is adding an entry.
func (h *Handler) clientRoutes() []route {
	get := []string{http.MethodGet, http.MethodHead}
	return []route{
		// Thunderbird autoconfig (CLIENTS.md §1): the autoconfig.<domain>
		// path and the .well-known path on the bare domain.
		{name: "autoconfig", match: paths("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"),
			methods: get, serve: h.autoconfig},
		// Outlook and ActiveSync POX (autodiscover.go); the path is not
		// case sensitive (MS-OXDISCO; quirk 17).
		{name: "autodiscover", match: pathFold(poxPath), methods: []string{http.MethodPost, http.MethodGet, http.MethodHead},
			answer: answerPOX, maxBody: maxPOXBody, serve: h.ad.pox},
		// Autodiscover v2 JSON (autodiscover_json.go).
		{name: "autodiscover_json", match: func(r *http.Request) bool { _, ok := jsonPathEmail(r.URL.Path); return ok },
			methods: get, answer: answerJSON, serve: h.ad.json, logPath: jsonLogPath},
		// Apple profiles and the setup page (apple.go, setup_page.go).
		{name: "apple_profile", match: paths("/mobileconfig"), methods: get, serve: h.mobileconfig},
		{name: "setup_page", match: paths("/"), methods: get, answer: answerPage, serve: h.setupPage},
		{name: "setup_page", match: paths("/setup.css"), methods: get, serve: serveSetupCSS},
		// RFC 6764 §5: clients send PROPFIND (iOS, DAVx5) as well as GET to
		// the well-known URIs and follow the redirect: every method is
		// answered.
		// A PROPFIND carries a small XML body: it is read (and ignored)
		// like any other, within the bound and the body deadline.
		{name: "dav_redirect", match: paths("/.well-known/caldav"), maxBody: maxDAVBody, serve: h.wellKnownDAV(policy.CalDAV)},
		{name: "dav_redirect", match: paths("/.well-known/carddav"), maxBody: maxDAVBody, serve: h.wellKnownDAV(policy.CardDAV)},
		// PACC (pacc.go, CLIENTS.md §7): one document per domain, on
		// ua-auto-config.<domain>.
		{name: "pacc", match: paths(PACCPath), methods: get, serve: h.pacc},
	}
}

// finishRoutes resolves each route's metric children once, so recording
// a request allocates nothing.
func (h *Handler) finishRoutes() {
	for i := range h.routes {
		h.routes[i].stats = h.met.forRoute(h.routes[i].name)
	}
	h.other = route{name: "other", serve: func(*call) error { return errNotFound }}
	h.other.stats = h.met.forRoute(h.other.name)
	// Paths are matched as sent (SkipClean): a path that is not clean
	// matches nothing and is answered 404, never redirected, since a
	// redirect built from an absolute-form request line would name the
	// host the request chose. The router is only asked to match
	// (Router.Match): its ServeHTTP would copy the request into a new
	// context per request, for route variables no handler reads.
	h.router = mux.NewRouter().SkipClean(true)
	h.entries = make(map[*mux.Route]*route, len(h.routes))
	h.noVars = map[string]string{}
	for i := range h.routes {
		rt := &h.routes[i]
		m := h.router.MatcherFunc(func(r *http.Request, _ *mux.RouteMatch) bool { return rt.match(r) })
		h.entries[m] = rt
	}
}

func paths(ps ...string) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		for _, p := range ps {
			if r.URL.Path == p {
				return true
			}
		}
		return false
	}
}

func pathFold(p string) func(r *http.Request) bool {
	return func(r *http.Request) bool { return len(r.URL.Path) == len(p) && equalFoldASCII(r.URL.Path, p) }
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x|0x20 != y|0x20 || (x|0x20 < 'a' || x|0x20 > 'z') && x != y {
			return false
		}
	}
	return true
}

// find returns the route of a request: the table entry the router
// matches, or other. m is the call's, so that matching allocates nothing:
// no route has path variables, and the router fills an empty Vars map
// only when it finds none.
func (h *Handler) find(r *http.Request, m *mux.RouteMatch) *route {
	m.Vars = h.noVars
	if h.router.Match(r, m) {
		if rt, ok := h.entries[m.Route]; ok {
			return rt
		}
	}
	return &h.other
}

// call is one request on its way through the pipeline.
type call struct {
	h      *Handler
	w      http.ResponseWriter
	r      *http.Request
	rt     *route
	match  mux.RouteMatch // the router's answer for rt
	start  time.Time
	client netip.Addr // the client's key in the limits (clientKey)
	peerOK bool       // r.RemoteAddr was an IP address
	ip     netip.Addr // the client's address, for the access log
	body   []byte
	buf    *[]byte // body's pooled buffer
	read   bool    // readBody has read the whole body (or there was none)
	status int

	addr    policy.Address // the address asked about, for the access log
	hasAddr bool
	schema  poxSchema  // POX: the answer the client wants, for error documents
	page    *setupView // setup page: the view an error is shown on

	reserved bool // holds a token of the client's unknown-address budget
	known    bool // the lookup found a known account (or a served domain)

	entry AccessEntry // the access log's line, for an AccessLogger
}

// ServeHTTP runs the pipeline for one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := h.calls.Get().(*call)
	*c = call{h: h, w: w, r: r, start: time.Now()}
	c.rt = h.find(r, &c.match)
	if err := h.serve(c); err != nil {
		c.fail(err)
	}
	h.record(c)
	if c.buf != nil {
		h.bodies.Put(c.buf)
	}
	*c = call{}
	h.calls.Put(c)
}

// serve runs the stages up to the route's handler; the first error ends
// the request.
func (h *Handler) serve(c *call) error {
	c.ip, c.peerOK = h.lim.clientIP(c.r)
	c.client = clientKey(c.ip)
	if err := h.lim.admit(c.client, !c.rt.ops, c.start); err != nil {
		return err
	}
	if !c.rt.ops {
		defer h.lim.leave(c.client)
	}
	if !c.rt.allows(c.r.Method) {
		return &methodError{allowed: c.rt.methods}
	}
	if c.rt == &h.other {
		return errNotFound // before its body, and without a shared slot
	}
	if err := c.readBody(); err != nil {
		return err
	}
	if !c.rt.ops {
		if err := h.lim.enter(); err != nil {
			return err
		}
		defer h.lim.exit()
	}
	defer c.settle()
	return c.rt.serve(c)
}

func (rt *route) allows(method string) bool {
	if rt.methods == nil {
		return true
	}
	for _, m := range rt.methods {
		if m == method {
			return true
		}
	}
	return false
}

// resolve looks addr up, within the client's unknown-address budget.
func (c *call) resolve(addr policy.Address) (*policy.Account, error) {
	c.note(addr)
	if acct, ok := c.cachedKnown(addr); ok {
		if err := c.holds(); err != nil {
			return nil, err
		}
		return acct, nil
	}
	if err := c.reserve(); err != nil {
		return nil, err
	}
	acct, err := c.h.res.Resolve(c.r.Context(), addr)
	c.known = err == nil && acct.Known
	return acct, err
}

// cachedResolver is a Resolver that answers a known address from its
// cache without Resolve: policy.Resolver implements it.
type cachedResolver interface {
	ResolveCached(addr policy.Address) (*policy.Account, bool)
}

// cachedKnown is a known address's cached answer, when the request has
// not reserved a token already.
func (c *call) cachedKnown(addr policy.Address) (*policy.Account, bool) {
	if c.h.cached == nil || c.reserved {
		return nil, false
	}
	acct, ok := c.h.cached.ResolveCached(addr)
	c.known = ok
	return acct, ok
}

// holds refuses, as reserve does, a client whose budget is spent, for a
// lookup answered from the cache with a known address: taking a token
// and giving it back at once would leave the same budget, at twice the
// locks.
func (c *call) holds() error {
	if err := c.h.lim.holdsUnknown(c.ip, c.client); err != nil {
		c.h.log.Debug("lookup refused: unknown-address budget spent", "client", c.ip.String())
		return err
	}
	return nil
}

// authenticate checks addr's password, within the same budget: a wrong
// password counts as an unknown address.
func (c *call) authenticate(addr policy.Address, password string) (*policy.Account, error) {
	c.note(addr)
	if c.h.auth == nil {
		return nil, errNoAuthenticator
	}
	if err := c.reserve(); err != nil {
		return nil, err
	}
	acct, err := c.h.auth.Authenticate(c.r.Context(), addr, password)
	c.known = err == nil && acct.Known
	return acct, err
}

// domain looks a domain up by name, within the budget: a served domain
// gives the token back (unless a later lookup of the request finds an
// unknown address).
func (c *call) domain(name string) (*policy.Domain, error) {
	if err := c.reserve(); err != nil {
		return nil, err
	}
	d, err := c.h.res.Domain(c.r.Context(), name)
	c.known = err == nil
	return d, err
}

// hostDomain returns the served domain the Host header names, as
// <prefix><domain> or directly. A Host with one of the prefixes is read
// as <prefix><domain> only: each name asked of the directory's domain
// source costs a search, and asking for autoconfig.<d> as a domain of its
// own too would make every autoconfig.<random> cost two for the one
// token of the client's budget.
func (c *call) hostDomain(prefixes ...string) (*policy.Domain, error) {
	host := hostName(c.r.Host)
	if _, err := netip.ParseAddr(host); err == nil {
		// By address: no domain, and nothing to ask the directory.
		return nil, policy.ErrUnknownDomain
	}
	name, err := policy.NormalizeDomain(host)
	if err != nil {
		return nil, policy.ErrUnknownDomain
	}
	for _, p := range prefixes {
		rest, ok := strings.CutPrefix(name, p)
		if !ok || rest == "" {
			continue
		}
		return c.domain(rest) // one prefix at most can match
	}
	return c.domain(name)
}

// reserve takes a token of the client's unknown-address budget before the
// request's first directory work; settle gives it back when the work
// found a known answer. Reserving first is what makes the budget hold
// under concurrency: lookups in flight have already paid.
func (c *call) reserve() error {
	if c.reserved {
		return nil
	}
	took, err := c.h.lim.reserveUnknown(c.ip, c.client)
	if err != nil {
		c.h.log.Debug("lookup refused: unknown-address budget spent", "client", c.ip.String())
		return err
	}
	c.reserved = took
	return nil
}

func (c *call) settle() {
	if c.reserved && c.known {
		c.h.lim.refundUnknown(c.client)
	}
}

// note tells the access log which address the request asked about.
func (c *call) note(a policy.Address) { c.addr, c.hasAddr = a, true }

// readBody reads the body of a route that takes one, bounded and under
// the body deadline. A declared length over the bound (any length, on a
// route that takes no body) is refused before anything is read: a GET
// with a body is no client's, and reading one would keep a slot of the
// client's for as long as the sender trickles it. A chunked body on such
// a route is read up to its first byte, so that an empty one (a client
// that always chunks) is answered; a byte of data is refused.
func (c *call) readBody() error {
	r := c.r
	max := min(c.rt.maxBody, c.h.lim.maxBody)
	if r.ContentLength > max {
		return &limitError{reason: limitBody}
	}
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		c.read = true
		return nil
	}
	if rt := c.h.opts.ReadTimeout; rt == 0 || c.h.lim.bodyTimeout < rt {
		rc := http.NewResponseController(c.w)
		if rc.SetReadDeadline(time.Now().Add(c.h.lim.bodyTimeout)) == nil {
			defer rc.SetReadDeadline(time.Time{}) //nolint:errcheck // the connection is being read by nobody else
		}
	}
	var err error
	if n := r.ContentLength; n >= 0 && n <= pooledBody {
		// The usual case: a declared small body, into a pooled buffer.
		c.buf = c.h.bodies.Get().(*[]byte)
		c.body = (*c.buf)[:n]
		_, err = io.ReadFull(r.Body, c.body)
	} else {
		var buf bytes.Buffer
		_, err = buf.ReadFrom(io.LimitReader(r.Body, max+1))
		c.body = buf.Bytes()
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &limitError{reason: limitBodyTimeout}
	case err != nil:
		return &limitError{reason: limitBodyRead}
	case int64(len(c.body)) > max:
		return &limitError{reason: limitBody}
	}
	c.read = true
	return nil
}

// unread reports whether the request has a body the pipeline has not
// read: net/http would read it before it sends the answer.
func (c *call) unread() bool {
	r := c.r
	return !c.read && r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
}
