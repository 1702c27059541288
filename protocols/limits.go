package protocols

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Per-client limits. An autodiscover server faces the internet and is
// probed by scanners; these limits keep it from becoming a way to overload
// the directory or to enumerate mailboxes:
//
//   - a token bucket of requests per client address (429 with Retry-After);
//   - a separate, stricter bucket of lookups of unknown addresses: each
//     request takes a token before its first directory work and gets it
//     back when the address turns out known (Account.Known), so however
//     many lookups a client starts at once, no more than the bucket holds
//     reach the directory; an empty bucket is answered 429. The server
//     names of TLS handshakes that only the directory can confirm pay
//     from the same bucket (ReserveLookup); limits.exempt spends none;
//   - a bound on each client's requests in progress (429), so that a
//     client with many slow requests holds only its own slots;
//   - a bound on all requests in progress (503 with Retry-After), taken
//     only once a request's body is in;
//   - above each client, an IPv6 /48 shares clients_per_48 clients'
//     worth of unknown-address budget, and all clients together at most
//     unknown_total_per_second unknown lookups a second, so that many
//     addresses of one allocation, or many allocations, cannot multiply
//     the budget;
//   - a bound on all open connections, derived from RLIMIT_NOFILE, and on
//     each client's and each IPv6 /48's share of it; near the bound the
//     connections waiting longest for a request are closed to make room
//     (ConnLimiter, on the listeners);
//   - a bound on every request body (413 at once when the declared length
//     is over it) and a deadline for reading it (408).
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
	// Exempt are the addresses or CIDR blocks of clients that spend no
	// unknown-address budget (monitoring probes that ask for an unknown
	// address every few seconds): their lookups are never refused for
	// it, so each may cost a directory search. The request rate and the
	// other bounds still apply to them.
	Exempt []string `mapstructure:"exempt"`
	// ClientIPHeader is the header those proxies set: "X-Forwarded-For"
	// (the default) or "Forwarded" (RFC 7239). Only one is read: a proxy
	// vouches for the header it writes, not for one a client sent along.
	ClientIPHeader string `mapstructure:"client_ip_header"`
	// MaxClients bounds the number of client addresses remembered; the
	// least useful are forgotten first. 0 means 100000.
	MaxClients int `mapstructure:"max_clients"`
	// MaxConcurrent bounds the requests in progress whose body is in;
	// beyond it requests are refused at once with 503. 0 turns the bound
	// off.
	MaxConcurrent int `mapstructure:"max_concurrent"`
	// MaxPerClient bounds one client's requests in progress, body read or
	// not; beyond it that client's requests are refused at once with 429.
	// 0 turns the bound off.
	MaxPerClient int `mapstructure:"max_per_client"`
	// MaxConnsPerClient bounds the connections one client holds open on
	// the listeners of a ConnLimiter, idle keep-alive ones too; beyond it
	// a new connection is closed at once. Trusted proxies are not
	// bounded. 0 leaves only the share of MaxConns (1/16).
	MaxConnsPerClient int `mapstructure:"max_connections_per_client"`
	// MaxConns bounds the connections open on all the listeners a
	// ConnLimiter wraps together. 0 derives it from RLIMIT_NOFILE
	// (MaxConnections). Whatever max_connections_per_client says, a client
	// holds at most 1/16 of it, and an IPv6 /48 at most 1/4.
	MaxConns int `mapstructure:"max_connections"`
	// Clients48 is how many clients' worth an IPv6 /48 gets together: of
	// the unknown-address budget (rate and burst) and of the connections
	// per client. 0 turns the /48 aggregate off.
	Clients48 int `mapstructure:"clients_per_48"`
	// UnknownTotalPerSecond bounds the lookups of unknown addresses of all
	// clients together, a second's worth at once. 0 turns it off, as does
	// UnknownPerMinute 0.
	UnknownTotalPerSecond float64 `mapstructure:"unknown_total_per_second"`
	// MaxBodyBytes bounds every request body. 0 means 64 KiB.
	MaxBodyBytes int64 `mapstructure:"max_body_bytes"`
	// BodyTimeout bounds the time a request body may take to arrive once
	// the headers are in (408 after it). 0 means 5s.
	BodyTimeout time.Duration `mapstructure:"body_timeout"`
	// KeepKnownTokens: a lookup that finds a known address keeps the
	// token of the unknown-address budget it took. Set under
	// policy.privacy strict: the giving back shows a client with a spent
	// budget which addresses exist, by whether its next lookup is refused.
	KeepKnownTokens bool `mapstructure:"-"`

	trusted  []netip.Prefix
	exempt   []netip.Prefix
	header   string // canonical form of ClientIPHeader
	prepared bool
}

const (
	defaultMaxClients   = 100_000
	defaultMaxBodyBytes = 64 << 10
	defaultBodyTimeout  = 5 * time.Second
)

// DefaultLimitOptions are the defaults documented in config.example.yaml.
// They are meant never to bother a real user: an office behind one NAT
// address where everyone starts Outlook at nine gets a burst of 500
// requests and 50 a second, and 60 lookups of unknown addresses a minute.
func DefaultLimitOptions() LimitOptions {
	return LimitOptions{
		RequestsPerSecond: 50, Burst: 500,
		UnknownPerMinute: 60, UnknownBurst: 60,
		ClientIPHeader:    "X-Forwarded-For",
		MaxClients:        defaultMaxClients,
		MaxConcurrent:     512,
		MaxPerClient:      32,
		MaxConnsPerClient: 1024,
		Clients48:         8,
		// Well above what real users' typos cost, well below what a
		// directory answers: a ceiling for floods from many addresses.
		UnknownTotalPerSecond: 500,
		MaxBodyBytes:          defaultMaxBodyBytes,
		BodyTimeout:           defaultBodyTimeout,
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
	case o.MaxPerClient < 0:
		return fmt.Errorf("limits.max_per_client: %d: must not be negative (0 turns the bound off)", o.MaxPerClient)
	case o.MaxConnsPerClient < 0:
		return fmt.Errorf("limits.max_connections_per_client: %d: must not be negative (0 leaves only the share of limits.max_connections, 1/16)", o.MaxConnsPerClient)
	case o.MaxConns < 0:
		return fmt.Errorf("limits.max_connections: %d: must not be negative (0 derives it from the file descriptor limit)", o.MaxConns)
	case o.Clients48 < 0:
		return fmt.Errorf("limits.clients_per_48: %d: must not be negative (0 turns the /48 aggregate off)", o.Clients48)
	case o.UnknownTotalPerSecond < 0 || math.IsNaN(o.UnknownTotalPerSecond) || math.IsInf(o.UnknownTotalPerSecond, 0):
		return fmt.Errorf("limits.unknown_total_per_second: %v: must be a positive number (0 turns the ceiling off)", o.UnknownTotalPerSecond)
	case o.MaxBodyBytes < 0:
		return fmt.Errorf("limits.max_body_bytes: %d: must not be negative (0 means %d)", o.MaxBodyBytes, defaultMaxBodyBytes)
	case o.BodyTimeout < 0 || o.BodyTimeout > time.Minute:
		return fmt.Errorf("limits.body_timeout: %s: give a short positive duration up to 1m, e.g. 5s (0 means %s)", o.BodyTimeout, defaultBodyTimeout)
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
	o.exempt = nil
	for i, s := range o.Exempt {
		p, err := parsePrefix(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("limits.exempt[%d]: %q is not an IP address or CIDR block such as 192.0.2.10 or 2001:db8::/64", i, s)
		}
		o.exempt = append(o.exempt, p)
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

// limitReason names why a request was refused: a metric label.
type limitReason uint8

const (
	limitRequests limitReason = iota
	limitUnknown
	limitClientConcurrency
	limitConcurrency
	limitBody
	limitBodyTimeout
	limitBodyRead
	numLimitReasons
)

var limitReasonNames = [numLimitReasons]string{
	limitRequests: "requests", limitUnknown: "unknown_addresses", limitClientConcurrency: "client_concurrency",
	limitConcurrency: "concurrency", limitBody: "body_too_large", limitBodyTimeout: "body_timeout",
	limitBodyRead: "body_unreadable",
}

// limiterShards splits the client table so that two cores rarely wait for
// one lock.
const limiterShards = 64

// limiter holds the per-client buckets and the request counters.
type limiter struct {
	opts LimitOptions

	reqRate, reqBurst   float64 // tokens per nanosecond; bucket size
	unkRate, unkBurst   float64
	siteRate, siteBurst float64 // an IPv6 /48's unknown-address budget
	totRate, totBurst   float64 // every client's together
	perClient           int32
	perShard            int
	epoch               time.Time

	inflight    atomic.Int64
	maxBody     int64
	bodyTimeout time.Duration

	totMu sync.Mutex
	tot   bucket // the ceiling on all unknown lookups

	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu        sync.Mutex
	clients   map[netip.Addr]clientState
	sites     map[netip.Addr]bucket // IPv6 /48s: their unknown-address budget
	lastSweep int64
	_         [24]byte // keep shards on separate cache lines
}

// clientState is one client's buckets and requests in progress.
type clientState struct {
	req, unk bucket
	active   int32
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

// take removes a token if one is there, or returns how long until one is.
func (b *bucket) take(now int64, rate, burst float64) (ok bool, wait time.Duration) {
	t := b.level(now, rate, burst)
	if t < 1 {
		return false, time.Duration((1 - t) / rate)
	}
	b.tokens, b.last = t-1, now
	return true, 0
}

// give puts a token back.
func (b *bucket) give(now int64, rate, burst float64) {
	b.tokens, b.last = min(burst, b.level(now, rate, burst)+1), now
}

// newLimiter builds the limiter of a handler, or keeps prev's when the
// limits did not change: a reload leaves every client's state as it was.
// Changed limits carry what each client has spent (carry).
func newLimiter(o LimitOptions, log *slog.Logger, prev *Handler) *limiter {
	if !o.prepared {
		if err := o.Prepare(); err != nil {
			log.Error("limits: invalid options; limiting request bodies only", "err", err)
			o = LimitOptions{}
			_ = o.Prepare()
		}
	}
	if prev != nil && prev.lim != nil && sameLimits(prev.lim.opts, o) {
		return prev.lim
	}
	l := &limiter{opts: o, epoch: time.Now().Add(-time.Second), maxBody: o.MaxBodyBytes, bodyTimeout: o.BodyTimeout}
	if l.maxBody == 0 {
		l.maxBody = defaultMaxBodyBytes
	}
	if l.bodyTimeout == 0 {
		l.bodyTimeout = defaultBodyTimeout
	}
	if o.RequestsPerSecond > 0 {
		l.reqRate, l.reqBurst = o.RequestsPerSecond/1e9, float64(o.Burst)
	}
	if o.UnknownPerMinute > 0 {
		l.unkRate, l.unkBurst = o.UnknownPerMinute/60e9, float64(o.UnknownBurst)
		if o.Clients48 > 0 {
			f := float64(o.Clients48)
			l.siteRate, l.siteBurst = l.unkRate*f, l.unkBurst*f
		}
	}
	// The budgets above the client's are part of it: with
	// unknown_per_minute 0 none is kept.
	if o.UnknownPerMinute > 0 && o.UnknownTotalPerSecond > 0 {
		l.totRate, l.totBurst = o.UnknownTotalPerSecond/1e9, max(1, math.Ceil(o.UnknownTotalPerSecond))
	}
	l.perClient = int32(min(o.MaxPerClient, math.MaxInt32))
	maxClients := o.MaxClients
	if maxClients == 0 {
		maxClients = defaultMaxClients
	}
	l.perShard = max(1, maxClients/limiterShards)
	for i := range l.shards {
		l.shards[i].clients = make(map[netip.Addr]clientState)
		l.shards[i].sites = make(map[netip.Addr]bucket)
	}
	if prev != nil && prev.lim != nil {
		l.carry(prev.lim)
	}
	return l
}

// carry takes over what each client has spent of the buckets of the
// limiter a reload replaces: changed limits must not hand every client,
// a scanner too, a fresh budget (nor does tightening them under attack).
// A client that spent n tokens has spent n of the new burst. Requests in
// progress stay counted by the old limiter, which they leave.
func (l *limiter) carry(old *limiter) {
	l.epoch = old.epoch
	now := l.now()
	for i := range old.shards {
		sh := &old.shards[i]
		sh.mu.Lock()
		for k, c := range sh.clients {
			n := clientState{
				req: carryBucket(c.req, now, old.reqRate, old.reqBurst, l.reqBurst),
				unk: carryBucket(c.unk, now, old.unkRate, old.unkBurst, l.unkBurst),
			}
			if n.req.last == 0 && n.unk.last == 0 {
				continue // as good as new
			}
			if dst := l.shard(k); len(dst.clients) < l.perShard {
				dst.clients[k] = n
			}
		}
		for k, b := range sh.sites {
			n := carryBucket(b, now, old.siteRate, old.siteBurst, l.siteBurst)
			if n.last == 0 {
				continue
			}
			if dst := l.shard(k); len(dst.sites) < l.perShard {
				dst.sites[k] = n
			}
		}
		sh.mu.Unlock()
	}
	old.totMu.Lock()
	l.tot = carryBucket(old.tot, now, old.totRate, old.totBurst, l.totBurst)
	old.totMu.Unlock()
}

// carryBucket is b, spent under rate and burst, with as much spent of
// newBurst. A bucket that was unused or unlimited starts full.
func carryBucket(b bucket, now int64, rate, burst, newBurst float64) bucket {
	if b.last == 0 || rate == 0 {
		return bucket{}
	}
	spent := burst - b.level(now, rate, burst)
	if spent <= 0 {
		return bucket{}
	}
	return bucket{tokens: max(0, newBurst-spent), last: now}
}

// sameLimits compares the configured fields of two prepared options.
func sameLimits(a, b LimitOptions) bool {
	a.trusted, a.exempt, a.header, a.prepared = nil, nil, "", false
	b.trusted, b.exempt, b.header, b.prepared = nil, nil, "", false
	return reflect.DeepEqual(a, b)
}

func (l *limiter) now() int64 { return int64(time.Since(l.epoch)) }

// ClientKey is the client a limit counts for an address: the address
// itself, or its /64 for IPv6.
func ClientKey(a netip.Addr) netip.Addr { return clientKey(a) }

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

// lock returns the client's shard, locked, and the client's state, making
// room for a new entry if needed. The caller stores the state back and
// unlocks.
func (l *limiter) lock(key netip.Addr, now int64) (*limiterShard, clientState) {
	sh := l.shard(key)
	sh.mu.Lock()
	c, ok := sh.clients[key]
	if !ok && len(sh.clients) >= l.perShard {
		l.makeRoom(sh, now)
	}
	return sh, c
}

// makeRoom forgets clients whose buckets are full again and that have no
// request in progress (they are as good as new), at most once a second
// per shard, and then, if the shard is still full, arbitrary idle ones:
// Go's map iteration starts at random. A scanner with a million source
// addresses thus costs at most max_clients entries (plus those with a
// request in progress).
func (l *limiter) makeRoom(sh *limiterShard, now int64) {
	if now-sh.lastSweep > int64(time.Second) {
		sh.lastSweep = now
		for k, c := range sh.clients {
			if c.active == 0 && c.req.level(now, l.reqRate, l.reqBurst) >= l.reqBurst && c.unk.level(now, l.unkRate, l.unkBurst) >= l.unkBurst {
				delete(sh.clients, k)
			}
		}
	}
	for k, c := range sh.clients {
		if len(sh.clients) < l.perShard {
			break
		}
		if c.active == 0 {
			delete(sh.clients, k)
		}
	}
}

// siteKey is the IPv6 /48 of a client key, whose clients share an
// aggregate unknown-address budget. ok is false for IPv4, or when the
// aggregate is off.
func (l *limiter) siteKey(key netip.Addr) (site netip.Addr, ok bool) {
	if l.siteRate == 0 || !key.Is6() {
		return netip.Addr{}, false
	}
	p, _ := key.Prefix(48)
	return p.Addr(), true
}

// lockSite returns the site's shard, locked, and its bucket, making room
// as lock does: the /48s remembered are bounded as the clients are.
// Their table is apart from the clients', whose keys a /48 could equal.
func (l *limiter) lockSite(site netip.Addr, now int64) (*limiterShard, bucket) {
	sh := l.shard(site)
	sh.mu.Lock()
	b, ok := sh.sites[site]
	if !ok && len(sh.sites) >= l.perShard {
		for k, v := range sh.sites {
			if v.level(now, l.siteRate, l.siteBurst) >= l.siteBurst {
				delete(sh.sites, k)
			}
		}
		for k := range sh.sites {
			if len(sh.sites) < l.perShard {
				break
			}
			delete(sh.sites, k)
		}
	}
	return sh, b
}

// admit takes a token from the client's request bucket and, when slot is
// set, one of the client's own concurrency slots (given back by leave).
// at is when the request came, read from the clock just before.
func (l *limiter) admit(key netip.Addr, slot bool, at time.Time) error {
	slot = slot && l.perClient > 0
	if l.reqRate == 0 && !slot {
		return nil
	}
	now := int64(at.Sub(l.epoch))
	sh, c := l.lock(key, now)
	defer sh.mu.Unlock()
	if l.reqRate > 0 {
		if ok, wait := c.req.take(now, l.reqRate, l.reqBurst); !ok {
			return &limitError{reason: limitRequests, wait: wait}
		}
	}
	if slot {
		if c.active >= l.perClient {
			sh.clients[key] = c
			return &limitError{reason: limitClientConcurrency, wait: time.Second}
		}
		c.active++
	}
	sh.clients[key] = c
	return nil
}

// leave gives back the client's concurrency slot taken by admit.
func (l *limiter) leave(key netip.Addr) {
	if l.perClient == 0 {
		return
	}
	sh := l.shard(key)
	sh.mu.Lock()
	if c, ok := sh.clients[key]; ok && c.active > 0 {
		c.active--
		sh.clients[key] = c
	}
	sh.mu.Unlock()
}

// enter takes one of the shared concurrency slots.
func (l *limiter) enter() error {
	limit := int64(l.opts.MaxConcurrent)
	if limit == 0 {
		return nil
	}
	if l.inflight.Add(1) > limit {
		l.inflight.Add(-1)
		return &limitError{reason: limitConcurrency}
	}
	return nil
}

func (l *limiter) exit() {
	if l.opts.MaxConcurrent > 0 {
		l.inflight.Add(-1)
	}
}

// exempt reports whether the client at a spends no unknown-address
// budget (limits.exempt).
func (l *limiter) exempt(a netip.Addr) bool {
	for _, p := range l.opts.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reserveUnknown takes a token from the unknown-address bucket of the
// client at ip (key is its clientKey), of its IPv6 /48 and of the ceiling
// on all clients, each under its lock: of any number of concurrent
// requests, no more get one than each bucket holds. A refusal by a later
// bucket gives back what the earlier ones gave. ok is false when the
// client is exempt or nothing is limited: there is no token to give back.
func (l *limiter) reserveUnknown(ip, key netip.Addr) (ok bool, err error) {
	if l.unkRate == 0 || l.exempt(ip) {
		return false, nil
	}
	now := l.now()
	sh, c := l.lock(key, now)
	took, wait := c.unk.take(now, l.unkRate, l.unkBurst)
	sh.clients[key] = c
	sh.mu.Unlock()
	if !took {
		return false, &limitError{reason: limitUnknown, wait: wait}
	}
	site, perSite := l.siteKey(key)
	if perSite {
		sh, b := l.lockSite(site, now)
		took, wait := b.take(now, l.siteRate, l.siteBurst)
		sh.sites[site] = b
		sh.mu.Unlock()
		if !took {
			l.giveClient(key, now)
			return false, &limitError{reason: limitUnknown, wait: wait}
		}
	}
	if l.totRate > 0 {
		l.totMu.Lock()
		took, wait := l.tot.take(now, l.totRate, l.totBurst)
		l.totMu.Unlock()
		if !took {
			l.giveClient(key, now)
			if perSite {
				l.giveSite(site, now)
			}
			return false, &limitError{reason: limitUnknown, wait: wait}
		}
	}
	return true, nil
}

// holdsUnknown refuses, as reserveUnknown would, a client at ip whose
// unknown-address budget, its /48's or the ceiling's is spent, and takes
// nothing: for a lookup already answered by a known address, whose token
// would be given back at once (the state left is the same).
func (l *limiter) holdsUnknown(ip, key netip.Addr) error {
	if l.unkRate == 0 || l.exempt(ip) {
		return nil
	}
	now := l.now()
	sh := l.shard(key)
	sh.mu.Lock()
	t := sh.clients[key].unk.level(now, l.unkRate, l.unkBurst)
	sh.mu.Unlock()
	if t < 1 {
		return &limitError{reason: limitUnknown, wait: time.Duration((1 - t) / l.unkRate)}
	}
	if site, ok := l.siteKey(key); ok {
		sh := l.shard(site)
		sh.mu.Lock()
		t := sh.sites[site].level(now, l.siteRate, l.siteBurst)
		sh.mu.Unlock()
		if t < 1 {
			return &limitError{reason: limitUnknown, wait: time.Duration((1 - t) / l.siteRate)}
		}
	}
	if l.totRate > 0 {
		l.totMu.Lock()
		t := l.tot.level(now, l.totRate, l.totBurst)
		l.totMu.Unlock()
		if t < 1 {
			return &limitError{reason: limitUnknown, wait: time.Duration((1 - t) / l.totRate)}
		}
	}
	return nil
}

func (l *limiter) giveClient(key netip.Addr, now int64) {
	if l.unkRate == 0 {
		return
	}
	sh, c := l.lock(key, now)
	c.unk.give(now, l.unkRate, l.unkBurst)
	sh.clients[key] = c
	sh.mu.Unlock()
}

func (l *limiter) giveSite(site netip.Addr, now int64) {
	sh, b := l.lockSite(site, now)
	b.give(now, l.siteRate, l.siteBurst)
	sh.sites[site] = b
	sh.mu.Unlock()
}

// ReserveLookup takes a token of the unknown-address budget of the client
// at peer for a directory question that comes in no HTTP request: the
// server name (SNI) of a TLS handshake, whose client is the connection's
// peer. ok is false when that client's budget is spent: the question must
// not be asked. Otherwise settle must be called once it is answered, with
// served set when the name turned out served, which gives the token back
// as a known address does. Exempt clients (limits.exempt) spend nothing.
func (h *Handler) ReserveLookup(peer netip.Addr) (settle func(served bool), ok bool) {
	peer = peer.Unmap().WithZone("")
	l, key := h.lim, clientKey(peer)
	took, err := l.reserveUnknown(peer, key)
	if err != nil {
		return nil, false
	}
	return func(served bool) {
		if took && served {
			l.refundUnknown(key)
		}
	}, true
}

// refundUnknown gives back a token the request did not need: its address
// was known. Every bucket reserveUnknown took from gets it back.
func (l *limiter) refundUnknown(key netip.Addr) {
	if l.unkRate == 0 || l.opts.KeepKnownTokens {
		return
	}
	now := l.now()
	l.giveClient(key, now)
	if site, ok := l.siteKey(key); ok {
		l.giveSite(site, now)
	}
	if l.totRate > 0 {
		l.totMu.Lock()
		l.tot.give(now, l.totRate, l.totBurst)
		l.totMu.Unlock()
	}
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
