package protocols

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
)

// Connection bounds. Request limits end requests, not connections: an
// idle keep-alive connection costs a file descriptor and some 20 KB, and
// a process out of descriptors accepts nobody (net/http backs off and
// retries, while the idle connections stay). So the public listeners
// share one bound on open connections, kept below the descriptor limit
// (MaxConnections), and within it:
//
//   - a client (an IPv4 address, an IPv6 /64) holds at most
//     max_connections_per_client, and never more than 1/16 of the bound;
//   - an IPv6 /48 holds at most clients_per_48 clients' worth, and never
//     more than 1/4 of the bound, so that neither one allocation nor a
//     handful of addresses can take it all;
//   - at the bound, a new connection closes the one that has waited
//     longest for a request (idle keep-alive, or accepted with no whole
//     request header in yet) to make room; connections serving a request
//     are never closed. Only when every connection is serving one is the
//     new one refused.
//
// Trusted proxies carry many clients: they have no share of their own,
// but count in the bound like anyone else.

const (
	// connShareClient and connShareSite are the parts of the bound one
	// client and one IPv6 /48 may hold at most.
	connShareClient = 16
	connShareSite   = 4
	// connFallbackLimit is the descriptor limit assumed where it cannot
	// be read; maxDerivedConns caps a bound derived from an unlimited one.
	connFallbackLimit = 1024
	maxDerivedConns   = 1 << 20
)

// MaxConnections returns the bound on open connections: limits.max_connections
// when set; otherwise the process's descriptor limit (RLIMIT_NOFILE, its
// soft limit, which the Go runtime raises to the hard one at start) less
// reserve, the descriptors the rest of the process may need (directory
// connections, listeners, files, ACME), and never less than half the
// limit. Where the limit cannot be read it is taken as 1024.
func MaxConnections(o LimitOptions, reserve int) int {
	if o.MaxConns > 0 {
		return o.MaxConns
	}
	limit := descriptorLimit()
	if limit <= 0 {
		limit = connFallbackLimit
	}
	limit = min(limit, 2*maxDerivedConns)
	return min(maxDerivedConns, max(limit/2, limit-reserve))
}

// ConnLimiter bounds the connections open on the listeners it wraps
// (Listener), all of them together. It must see the states of their
// connections (ConnState, set as the http.Server's ConnState): only a
// connection the server says waits for a request is ever closed to make
// room.
type ConnLimiter struct {
	max, perClient, perSite int
	trusted                 []netip.Prefix

	mu      sync.Mutex
	open    int
	clients map[netip.Addr]int // per client key; entries of open connections only
	sites   map[netip.Addr]int // per IPv6 /48
	waiting connQueue          // connections waiting for a request, longest first
}

// NewConnLimiter returns a limiter of bound connections (MaxConnections),
// with the per-client and per-/48 shares of o. o must be prepared.
func NewConnLimiter(o LimitOptions, bound int) *ConnLimiter {
	bound = max(1, bound)
	per := bound / connShareClient
	if o.MaxConnsPerClient > 0 {
		per = min(per, o.MaxConnsPerClient)
	}
	per = max(1, per)
	site := 0
	if o.Clients48 > 0 {
		site = max(per, min(per*o.Clients48, bound/connShareSite))
	}
	return &ConnLimiter{max: bound, perClient: per, perSite: site, trusted: o.trusted,
		clients: map[netip.Addr]int{}, sites: map[netip.Addr]int{}}
}

// Bounds returns the bound on all connections, on one client's and on
// one IPv6 /48's (0: none).
func (l *ConnLimiter) Bounds() (all, perClient, perSite int) {
	return l.max, l.perClient, l.perSite
}

// Open returns the number of connections open.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// Listener returns ln bounded by l.
func (l *ConnLimiter) Listener(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l}
}

type limitedListener struct {
	net.Listener
	l *ConnLimiter
}

// Accept returns the next connection within the bounds, closing those
// over them.
func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := ll.l.admit(c); lc != nil {
			return lc, nil
		}
		c.Close()
	}
}

// admit counts c in, closing the connection that has waited longest
// when the bound is reached; nil when c is refused.
func (l *ConnLimiter) admit(c net.Conn) *limitedConn {
	lc := &limitedConn{Conn: c, l: l}
	peer, ok := parseHop(c.RemoteAddr().String())
	if ok && !slices.ContainsFunc(l.trusted, func(p netip.Prefix) bool { return p.Contains(peer) }) {
		lc.key, lc.bounded = clientKey(peer), true
		if lc.key.Is6() && l.perSite > 0 {
			p, _ := lc.key.Prefix(48)
			lc.site = p.Addr()
		}
	}
	var victim *limitedConn
	l.mu.Lock()
	switch {
	case lc.bounded && l.clients[lc.key] >= l.perClient:
		l.mu.Unlock()
		return nil
	case lc.site.IsValid() && l.sites[lc.site] >= l.perSite:
		l.mu.Unlock()
		return nil
	case l.open >= l.max:
		victim = l.waiting.head
		if victim == nil {
			l.mu.Unlock()
			return nil // every connection is serving a request
		}
		l.releaseLocked(victim)
	}
	l.open++
	if lc.bounded {
		l.clients[lc.key]++
	}
	if lc.site.IsValid() {
		l.sites[lc.site]++
	}
	l.mu.Unlock()
	if victim != nil {
		victim.Conn.Close()
	}
	return lc
}

// releaseLocked gives c's places back, once. l.mu is held.
func (l *ConnLimiter) releaseLocked(c *limitedConn) {
	if c.released {
		return
	}
	c.released = true
	l.open--
	if c.bounded {
		if l.clients[c.key] <= 1 {
			delete(l.clients, c.key)
		} else {
			l.clients[c.key]--
		}
	}
	if c.site.IsValid() {
		if l.sites[c.site] <= 1 {
			delete(l.sites, c.site)
		} else {
			l.sites[c.site]--
		}
	}
	l.waiting.remove(c)
}

// ConnState follows the connections of l's listeners through their
// states: set it as http.Server.ConnState. A new connection (no request
// header in yet: a TLS handshake, a slow header) and an idle keep-alive
// one wait for a request, at the back of the queue; one whose request
// header is in is serving it and is never closed to make room.
func (l *ConnLimiter) ConnState(c net.Conn, st http.ConnState) {
	lc := unwrapLimited(c)
	if lc == nil || lc.l != l {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.released {
		return
	}
	switch st {
	case http.StateNew, http.StateIdle:
		l.waiting.remove(lc)
		l.waiting.pushBack(lc)
	case http.StateActive, http.StateHijacked:
		l.waiting.remove(lc)
	case http.StateClosed:
		l.releaseLocked(lc)
	}
}

// unwrapLimited finds the limitedConn under c: c itself, or under the
// TLS connection the server made of it.
func unwrapLimited(c net.Conn) *limitedConn {
	for range 4 {
		switch v := c.(type) {
		case *limitedConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// limitedConn gives its places back when closed.
type limitedConn struct {
	net.Conn
	l       *ConnLimiter
	key     netip.Addr // client key; valid when bounded
	site    netip.Addr // IPv6 /48; valid when the /48 is bounded
	bounded bool       // not a trusted proxy

	// Under l.mu:
	released   bool
	queued     bool         // in l.waiting
	prev, next *limitedConn // in l.waiting
}

// connQueue is a list of connections linked through their own fields:
// a connection goes in and out of it twice per request (ConnState), which
// allocates nothing this way.
type connQueue struct{ head, tail *limitedConn }

func (q *connQueue) pushBack(c *limitedConn) {
	c.prev, c.next, c.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = c
	} else {
		q.head = c
	}
	q.tail = c
}

func (q *connQueue) remove(c *limitedConn) {
	if !c.queued {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		q.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		q.tail = c.prev
	}
	c.prev, c.next, c.queued = nil, nil, false
}

func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	c.l.releaseLocked(c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite lets net/http half-close the connection after an answer to
// a request whose body it did not read, as it does with a bare TCP
// connection, so that the client gets the answer rather than a reset.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
