package protocols

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Per-client limits. An autodiscover server faces the internet and is
// probed by scanners; these limits keep it from becoming a way to overload
// the directory or to enumerate mailboxes:
//
//   - a token bucket of requests per client address (429 with Retry-After);
//   - a separate, stricter bucket of lookups whose answer was "unknown
//     address" (Account.Known false, or policy.ErrRejected); while a
//     client's bucket is empty its further lookups are refused with 429
//     before they reach the resolver, and so the directory;
//   - a bound on requests in progress (503 with Retry-After);
//   - a bound on every request body, behind the per-endpoint bounds.
//
// Everything is in-process. The client is r.RemoteAddr, or, when the peer
// is one of limits.trusted_proxies, the right-most address in the
// forwarding header that is not itself a trusted proxy. IPv6 clients are
// counted per /64, the block one host usually holds.

// LimitOptions configures per-client request limits: the limits section of
// the configuration. The zero value limits nothing but request bodies;
// DefaultLimitOptions holds the defaults of the configuration file.
type LimitOptions struct {
	// RequestsPerSecond is each client's sustained request rate, Burst the
	// requests it may make at once. 0 turns the request limit off.
	RequestsPerSecond float64 `mapstructure:"requests_per_second"`
	Burst             int     `mapstructure:"burst"`
	// UnknownPerMinute is the sustained rate of lookups of addresses the
	// directory does not know (or that are disabled) that a client may
	// make, UnknownBurst how many at once. 0 turns this budget off.
	UnknownPerMinute float64 `mapstructure:"unknown_per_minute"`
	UnknownBurst     int     `mapstructure:"unknown_burst"`
	// TrustedProxies are the addresses or CIDR blocks of reverse proxies
	// whose ClientIPHeader is believed.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
	// ClientIPHeader is the header those proxies set: "X-Forwarded-For"
	// (the default) or "Forwarded" (RFC 7239). Only one is read: a proxy
	// vouches for the header it writes, not for one a client sent along.
	ClientIPHeader string `mapstructure:"client_ip_header"`
	// MaxClients bounds the number of client addresses remembered; the
	// least useful are forgotten first. 0 means 100000.
	MaxClients int `mapstructure:"max_clients"`
	// MaxConcurrent bounds the requests in progress; beyond it requests are
	// refused at once with 503. 0 turns the bound off.
	MaxConcurrent int `mapstructure:"max_concurrent"`
	// MaxBodyBytes bounds every request body. 0 means 64 KiB.
	MaxBodyBytes int64 `mapstructure:"max_body_bytes"`

	trusted  []netip.Prefix
	header   string // canonical form of ClientIPHeader
	prepared bool
}

const (
	defaultMaxClients   = 100_000
	defaultMaxBodyBytes = 64 << 10
)

// DefaultLimitOptions are the defaults documented in config.example.yaml.
// They are meant never to bother a real user: an office behind one NAT
// address where everyone starts Outlook at nine gets a burst of 500
// requests and 50 a second, and 60 lookups of unknown addresses a minute.
func DefaultLimitOptions() LimitOptions {
	return LimitOptions{
		RequestsPerSecond: 50, Burst: 500,
		UnknownPerMinute: 60, UnknownBurst: 60,
		ClientIPHeader: "X-Forwarded-For",
		MaxClients:     defaultMaxClients,
		MaxConcurrent:  512,
		MaxBodyBytes:   defaultMaxBodyBytes,
	}
}

// Prepare validates the options once at start-up. Errors name the
// configuration key at fault.
func (o *LimitOptions) Prepare() error {
	o.prepared = false
	switch {
	case o.RequestsPerSecond < 0 || math.IsNaN(o.RequestsPerSecond) || math.IsInf(o.RequestsPerSecond, 0):
		return fmt.Errorf("limits.requests_per_second: %v: must be a positive number (0 turns the request limit off)", o.RequestsPerSecond)
	case o.RequestsPerSecond > 0 && o.Burst < 1:
		return fmt.Errorf("limits.burst: %d: must be at least 1 when limits.requests_per_second is set, e.g. 500", o.Burst)
	case o.UnknownPerMinute < 0 || math.IsNaN(o.UnknownPerMinute) || math.IsInf(o.UnknownPerMinute, 0):
		return fmt.Errorf("limits.unknown_per_minute: %v: must be a positive number (0 turns the unknown-address budget off)", o.UnknownPerMinute)
	case o.UnknownPerMinute > 0 && o.UnknownBurst < 1:
		return fmt.Errorf("limits.unknown_burst: %d: must be at least 1 when limits.unknown_per_minute is set, e.g. 60", o.UnknownBurst)
	case o.Burst < 0:
		return fmt.Errorf("limits.burst: %d: must not be negative", o.Burst)
	case o.UnknownBurst < 0:
		return fmt.Errorf("limits.unknown_burst: %d: must not be negative", o.UnknownBurst)
	case o.MaxClients < 0:
		return fmt.Errorf("limits.max_clients: %d: must not be negative (0 means %d)", o.MaxClients, defaultMaxClients)
	case o.MaxConcurrent < 0:
		return fmt.Errorf("limits.max_concurrent: %d: must not be negative (0 turns the bound off)", o.MaxConcurrent)
	case o.MaxBodyBytes < 0:
		return fmt.Errorf("limits.max_body_bytes: %d: must not be negative (0 means %d)", o.MaxBodyBytes, defaultMaxBodyBytes)
	}
	switch {
	case o.ClientIPHeader == "" || strings.EqualFold(o.ClientIPHeader, "X-Forwarded-For"):
		o.header = "X-Forwarded-For"
	case strings.EqualFold(o.ClientIPHeader, "Forwarded"):
		o.header = "Forwarded"
	default:
		return fmt.Errorf("limits.client_ip_header: %q is not one of X-Forwarded-For, Forwarded", o.ClientIPHeader)
	}
	o.trusted = o.trusted[:0]
	for i, s := range o.TrustedProxies {
		p, err := parsePrefix(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("limits.trusted_proxies[%d]: %q is not an IP address or CIDR block such as 10.0.0.0/8 or 2001:db8::/32", i, s)
		}
		o.trusted = append(o.trusted, p)
	}
	o.prepared = true
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(0, p.Bits()-96))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// rateLimited counts refused requests by reason. The operations endpoint
// serves the default registry at /metrics.
var rateLimited = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "mailbeacon_rate_limited_requests_total",
	Help: "Requests refused by the per-client limits, by reason: requests (per-client request rate), unknown_addresses (per-client budget of unknown-address lookups), concurrency (limits.max_concurrent), body_too_large (limits.max_body_bytes).",
}, []string{"reason"})

var (
	limitedRequests    = rateLimited.WithLabelValues("requests")
	limitedUnknown     = rateLimited.WithLabelValues("unknown_addresses")
	limitedConcurrency = rateLimited.WithLabelValues("concurrency")
	limitedBody        = rateLimited.WithLabelValues("body_too_large")
)

// limiterShards splits the client table so that two cores rarely wait for
// one lock.
const limiterShards = 64

// limiter holds the per-client buckets and the request counters.
type limiter struct {
	opts LimitOptions

	reqRate, reqBurst float64 // tokens per nanosecond; bucket size
	unkRate, unkBurst float64
	perShard          int
	epoch             time.Time

	inflight atomic.Int64
	maxBody  int64

	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu        sync.Mutex
	clients   map[netip.Addr]clientBuckets
	lastSweep int64
	_         [32]byte // keep shards on separate cache lines
}

// clientBuckets is one client's state: 32 bytes plus the key.
type clientBuckets struct {
	req, unk bucket
}

// bucket is a token bucket. last == 0 means full (never used).
type bucket struct {
	tokens float64
	last   int64 // nanoseconds since limiter.epoch
}

// level returns the tokens in the bucket at now.
func (b bucket) level(now int64, rate, burst float64) float64 {
	if b.last == 0 {
		return burst
	}
	return min(burst, b.tokens+float64(now-b.last)*rate)
}

// take removes n tokens if at least one is there (so a bucket may go into
// debt when several requests of one client were admitted at once), or
// returns how long until one is.
func (b *bucket) take(now int64, rate, burst, n float64) (ok bool, wait time.Duration) {
	t := b.level(now, rate, burst)
	if t < 1 {
		return false, time.Duration((1 - t) / rate)
	}
	b.tokens, b.last = max(t-n, -burst), now
	return true, 0
}

// setupLimits builds the limiter from s.opts.Limits and wraps the resolver
// so that unknown-address lookups are counted per client. NewHandler calls
// it before the routes are made.
func (s *Server) setupLimits() {
	o := s.opts.Limits
	if !o.prepared {
		if err := o.Prepare(); err != nil {
			s.log.Error("limits: invalid options; limiting request bodies only", "err", err)
			o = LimitOptions{}
			_ = o.Prepare()
		}
	}
	l := &limiter{opts: o, epoch: time.Now().Add(-time.Second), maxBody: o.MaxBodyBytes}
	if l.maxBody == 0 {
		l.maxBody = defaultMaxBodyBytes
	}
	if o.RequestsPerSecond > 0 {
		l.reqRate, l.reqBurst = o.RequestsPerSecond/1e9, float64(o.Burst)
	}
	if o.UnknownPerMinute > 0 {
		l.unkRate, l.unkBurst = o.UnknownPerMinute/60e9, float64(o.UnknownBurst)
	}
	maxClients := o.MaxClients
	if maxClients == 0 {
		maxClients = defaultMaxClients
	}
	l.perShard = max(1, maxClients/limiterShards)
	for i := range l.shards {
		l.shards[i].clients = make(map[netip.Addr]clientBuckets)
	}
	s.lim = l
	if s.opts.Operations.ClientAddr == nil {
		// The access log names the client as the limits see it.
		s.opts.Operations.ClientAddr = s.clientAddr
	}
	if l.unkRate > 0 {
		s.res = limitResolver(s.res, l)
	}
}

func (l *limiter) now() int64 { return int64(time.Since(l.epoch)) }

// clientKey is the table key of a client address: the address itself, or
// its /64 for IPv6.
func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (l *limiter) shard(key netip.Addr) *limiterShard {
	b := key.As16()
	h := binary.LittleEndian.Uint64(b[:8]) ^ binary.LittleEndian.Uint64(b[8:])
	h *= 0x9E3779B97F4A7C15
	return &l.shards[h>>(64-6)]
}

// lock returns the client's shard, locked, and the client's buckets,
// making room for a new entry if needed. The caller stores the buckets
// back and unlocks.
func (l *limiter) lock(key netip.Addr, now int64) (*limiterShard, clientBuckets) {
	sh := l.shard(key)
	sh.mu.Lock()
	c, ok := sh.clients[key]
	if !ok && len(sh.clients) >= l.perShard {
		l.makeRoom(sh, now)
	}
	return sh, c
}

// makeRoom forgets clients whose buckets are full again (they are as good
// as new), at most once a second per shard, and then, if the shard is
// still full, an arbitrary one: Go's map iteration starts at random. A
// scanner with a million source addresses thus costs at most max_clients
// entries.
func (l *limiter) makeRoom(sh *limiterShard, now int64) {
	if now-sh.lastSweep > int64(time.Second) {
		sh.lastSweep = now
		for k, c := range sh.clients {
			if c.req.level(now, l.reqRate, l.reqBurst) >= l.reqBurst && c.unk.level(now, l.unkRate, l.unkBurst) >= l.unkBurst {
				delete(sh.clients, k)
			}
		}
	}
	for k := range sh.clients {
		if len(sh.clients) < l.perShard {
			break
		}
		delete(sh.clients, k)
	}
}

// allowRequest takes a token from the client's request bucket.
func (l *limiter) allowRequest(key netip.Addr) (ok bool, wait time.Duration) {
	now := l.now()
	sh, c := l.lock(key, now)
	ok, wait = c.req.take(now, l.reqRate, l.reqBurst, 1)
	sh.clients[key] = c
	sh.mu.Unlock()
	return ok, wait
}

// unknownAllowed reports whether the client may make a lookup that might
// turn out to be of an unknown address, without taking a token.
func (l *limiter) unknownAllowed(key netip.Addr) (ok bool, wait time.Duration) {
	sh := l.shard(key)
	now := l.now()
	sh.mu.Lock()
	c := sh.clients[key]
	sh.mu.Unlock()
	t := c.unk.level(now, l.unkRate, l.unkBurst)
	if t < 1 {
		return false, time.Duration((1 - t) / l.unkRate)
	}
	return true, 0
}

// countUnknown takes a token from the client's unknown-address bucket,
// into debt if needed: concurrent lookups all passed unknownAllowed.
func (l *limiter) countUnknown(key netip.Addr) {
	now := l.now()
	sh, c := l.lock(key, now)
	t := c.unk.level(now, l.unkRate, l.unkBurst)
	c.unk.tokens, c.unk.last = max(t-1, -l.unkBurst), now
	sh.clients[key] = c
	sh.mu.Unlock()
}

// clients returns how many client addresses are remembered.
func (l *limiter) clients() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.clients)
		sh.mu.Unlock()
	}
	return n
}

// clientIP returns the address of the client that made r: the peer, or,
// when the peer is a trusted proxy, the right-most address in the
// forwarding header that is not a trusted proxy. An entry that is not an
// address (RFC 7239 "unknown", an obfuscated identifier, garbage) stops
// the walk at the last trusted hop. ok is false when r.RemoteAddr is not
// an IP address (e.g. a Unix socket).
func (l *limiter) clientIP(r *http.Request) (ip netip.Addr, ok bool) {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if len(l.opts.trusted) == 0 || !l.trusted(peer) {
		return peer, true
	}
	hop := peer
	vals := r.Header[l.opts.header]
	for i := len(vals) - 1; i >= 0; i-- {
		v := vals[i]
		for v != "" {
			var entry string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				entry, v = v[j+1:], v[:j]
			} else {
				entry, v = v, ""
			}
			if l.opts.header == "Forwarded" {
				var found bool
				if entry, found = forwardedFor(entry); !found {
					continue // an element without for=: says nothing of the client
				}
			}
			a, ok := parseHop(entry)
			if !ok {
				return hop, true
			}
			if !l.trusted(a) {
				return a, true
			}
			hop = a
		}
	}
	return hop, true
}

func (l *limiter) trusted(a netip.Addr) bool {
	for _, p := range l.opts.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forwardedFor returns the value of the for= parameter of one RFC 7239
// forwarded-element.
func forwardedFor(elem string) (string, bool) {
	for elem != "" {
		var pair string
		pair, elem, _ = strings.Cut(elem, ";")
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && strings.EqualFold(k, "for") {
			return v, true
		}
	}
	return "", false
}

// parseHop parses an address as it appears in RemoteAddr, X-Forwarded-For
// or a Forwarded for= value: "192.0.2.1", "192.0.2.1:443", "2001:db8::1",
// "[2001:db8::1]:443", optionally quoted.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return netip.Addr{}, false
	}
	var a netip.Addr
	var err error
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 || (end+1 < len(s) && s[end+1] != ':') {
			return netip.Addr{}, false
		}
		a, err = netip.ParseAddr(s[1:end])
	} else if strings.Count(s, ":") == 1 {
		var ap netip.AddrPort
		if ap, err = netip.ParseAddrPort(s); err == nil { // 192.0.2.1:443
			a = ap.Addr()
		}
	} else {
		a, err = netip.ParseAddr(s)
	}
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// clientAddr returns the address of the client that made r, as the limits
// see it (behind a trusted proxy, the address the proxy forwarded), for
// the access log. It is "unknown" when the peer has no IP address.
func (s *Server) clientAddr(r *http.Request) string {
	l := s.lim
	if l == nil {
		l = &limiter{}
	}
	ip, ok := l.clientIP(r)
	if !ok {
		return "unknown"
	}
	return ip.String()
}

// opsPaths are the health and metrics endpoints: never refused for
// concurrency, so that a busy server is not restarted as a dead one.
var opsPaths = map[string]bool{"/healthz": true, "/livez": true, "/readyz": true, "/metrics": true}

// limit applies the per-client limits.
func (s *Server) limit(h http.Handler) http.Handler {
	l := s.lim
	if l == nil {
		s.setupLimits()
		l = s.lim
	}
	perClient := l.reqRate > 0 || l.unkRate > 0
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var key netip.Addr
		if perClient {
			ip, _ := l.clientIP(r)
			key = clientKey(ip)
		}
		if l.reqRate > 0 {
			if ok, wait := l.allowRequest(key); !ok {
				limitedRequests.Inc()
				tooMany(w, wait)
				return
			}
		}
		if limit := int64(l.opts.MaxConcurrent); limit > 0 && !opsPaths[r.URL.Path] {
			if l.inflight.Add(1) > limit {
				l.inflight.Add(-1)
				limitedConcurrency.Inc()
				w.Header().Set("Retry-After", "1")
				textError(w, http.StatusServiceUnavailable, "server busy, try again later")
				return
			}
			defer l.inflight.Add(-1)
		}
		if r.ContentLength > l.maxBody {
			limitedBody.Inc()
			w.Header().Set("Connection", "close")
			textError(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, l.maxBody)
		}
		if l.unkRate == 0 {
			h.ServeHTTP(w, r)
			return
		}
		lw := &limitWriter{ResponseWriter: w, Context: r.Context(), key: key}
		h.ServeHTTP(lw, r.WithContext(lw))
		if lw.refused && !lw.wroteHeader {
			lw.WriteHeader(http.StatusOK) // replaced by the 429
		}
	})
}

// tooMany answers 429 with the seconds until the client may try again.
func tooMany(w http.ResponseWriter, wait time.Duration) {
	secs := int64(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.FormatInt(max(1, secs), 10))
	textError(w, http.StatusTooManyRequests, "too many requests, try again later")
}

type limitKey struct{}

// limitWriter carries the client's key to the resolver (it is also the
// request's context: one allocation instead of two) and, when the
// resolver refused a lookup for this client, replaces whatever the
// handler answers with 429: the handlers need not know about the limits.
type limitWriter struct {
	http.ResponseWriter
	context.Context
	key                       netip.Addr
	wait                      time.Duration
	refused, wroteHeader, off bool
}

// Value makes the limitWriter findable from the request's context.
func (w *limitWriter) Value(key any) any {
	if key == (limitKey{}) {
		return w
	}
	return w.Context.Value(key)
}

func (w *limitWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	if !w.refused {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.off = true
	clear(w.ResponseWriter.Header())
	limitedUnknown.Inc()
	tooMany(w.ResponseWriter, w.wait)
}

func (w *limitWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.off {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *limitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errLookupRefused is what the resolver returns for a client out of
// unknown-address budget. It matches context.Canceled, so that every
// handler treats it as a request given up (no error log); limitWriter
// then turns the answer into 429.
var errLookupRefused error = lookupRefused{}

type lookupRefused struct{}

func (lookupRefused) Error() string {
	return "lookup refused: too many unknown addresses from this client"
}
func (lookupRefused) Is(target error) bool { return target == context.Canceled }

// limitedResolver counts, per client, lookups that found no account, and
// refuses lookups of a client whose budget for them is spent.
type limitedResolver struct {
	Resolver
	l *limiter
}

// limitedAuthResolver is a limitedResolver over a resolver that can also
// check passwords (Autodiscover's require_auth): failed checks count
// against the same budget.
type limitedAuthResolver struct {
	limitedResolver
	au authenticator
}

func limitResolver(res Resolver, l *limiter) Resolver {
	lr := limitedResolver{Resolver: res, l: l}
	if au, ok := res.(authenticator); ok {
		return limitedAuthResolver{lr, au}
	}
	return lr
}

// admit checks the budget of the request's client before a lookup.
func (lr limitedResolver) admit(ctx context.Context) (*limitWriter, error) {
	lw, _ := ctx.Value(limitKey{}).(*limitWriter)
	if lw == nil {
		return nil, nil
	}
	if lw.refused {
		return lw, errLookupRefused
	}
	if ok, wait := lr.l.unknownAllowed(lw.key); !ok {
		lw.refused, lw.wait = true, wait
		return lw, errLookupRefused
	}
	return lw, nil
}

func (lr limitedResolver) Resolve(ctx context.Context, addr policy.Address) (*policy.Account, error) {
	lw, err := lr.admit(ctx)
	if err != nil {
		return nil, err
	}
	acct, err := lr.Resolver.Resolve(ctx, addr)
	if lw != nil && ((err == nil && !acct.Known) || errors.Is(err, policy.ErrRejected)) {
		lr.l.countUnknown(lw.key)
	}
	return acct, err
}

func (la limitedAuthResolver) Authenticate(ctx context.Context, addr policy.Address, password string) (*policy.Account, error) {
	lw, err := la.admit(ctx)
	if err != nil {
		return nil, err
	}
	acct, err := la.au.Authenticate(ctx, addr, password)
	if lw != nil && (errors.Is(err, policy.ErrBadCredentials) || errors.Is(err, policy.ErrRejected)) {
		la.l.countUnknown(lw.key)
	}
	return acct, err
}
