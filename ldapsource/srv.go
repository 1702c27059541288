package ldapsource

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// srvScheme starts an ldap.urls entry that stands for the domain
// controllers DNS names for a domain: dns-srv:DOMAIN, or
// dns-srv:DOMAIN?site=SITE to prefer the DCs of an Active Directory site.
const srvScheme = "dns-srv"

// Bounds on how long a list of DCs is used before DNS is asked again,
// whatever the records' TTL says: a TTL of 0 does not cost a query per
// lookup, and a week-long TTL does not keep a DC that left.
const (
	srvMinTTL = 30 * time.Second
	srvMaxTTL = time.Hour
)

// maxSRVTargets bounds the directory servers that DNS can add to a source
// over its life (each has a breaker and metrics of its own).
const maxSRVTargets = 64

// errNoSRV: DNS says the SRV name does not exist, or has no record.
var errNoSRV = errors.New("no SRV record")

// srvSpec is one dns-srv: entry of ldap.urls.
type srvSpec struct {
	key    string // ldap.urls[i], for errors
	domain string
	site   string // "": the domain-wide records only
}

// names returns the SRV names to ask, in order of preference: the site's
// DCs first (RFC 2782 names as Active Directory publishes them), then the
// domain's.
func (sp *srvSpec) names() []string {
	all := "_ldap._tcp.dc._msdcs." + sp.domain + "."
	if sp.site == "" {
		return []string{all}
	}
	return []string{"_ldap._tcp." + sp.site + "._sites.dc._msdcs." + sp.domain + ".", all}
}

// parseSRV reads ldap.urls[i], raw, of the form dns-srv:DOMAIN[?site=SITE].
func (cfg *Config) parseSRV(i int, raw string) (*srvSpec, error) {
	key := fmt.Sprintf("ldap.urls[%d]", i)
	rest := raw[len(srvScheme)+1:]
	domain, query, _ := strings.Cut(rest, "?")
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	if _, ok := dns.IsDomainName(domain); !ok || !strings.Contains(domain, ".") || strings.ContainsAny(domain, "/:@") {
		return nil, fmt.Errorf("%s: %q does not name a DNS domain: write dns-srv:DOMAIN, e.g. dns-srv:corp.example.com (the Active Directory domain's DNS name)", key, raw)
	}
	spec := &srvSpec{key: key, domain: domain}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w: write dns-srv:DOMAIN?site=SITE", key, raw, err)
	}
	for k, v := range q {
		if k != "site" || len(v) != 1 {
			return nil, fmt.Errorf("%s: %q: only one option, site, follows the domain: write dns-srv:DOMAIN?site=SITE", key, raw)
		}
		spec.site = v[0]
		if _, ok := dns.IsDomainName(spec.site); !ok || spec.site == "" || strings.Contains(spec.site, ".") {
			return nil, fmt.Errorf("%s: %q: the site %q is not one DNS label: give the Active Directory site's name, e.g. ?site=Berlin", key, raw, spec.site)
		}
	}
	if !cfg.StartTLS {
		return nil, fmt.Errorf("ldap.start_tls: %s (%s) finds directory servers on the plain LDAP port their SRV records give (389): set ldap.start_tls: true, so that the service password and the lookups travel encrypted", key, raw)
	}
	return spec, nil
}

// checkDNSServer checks ldap.dns_server where it is given.
func (cfg *Config) checkDNSServer() error {
	if cfg.DNSServer == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(cfg.DNSServer)
	if p, perr := strconv.Atoi(port); err != nil || net.ParseIP(host) == nil || perr != nil || p < 1 || p > 65535 {
		return fmt.Errorf("ldap.dns_server: %q is not an IP address and port: write e.g. 192.0.2.53:53 or [2001:db8::53]:53", cfg.DNSServer)
	}
	return nil
}

// resolver asks DNS for SRV records, and gives the dialer a resolver for
// host names that asks the same servers.
type resolver struct {
	servers []string      // host:port, asked in order
	timeout time.Duration // per query
	hosts   *net.Resolver // nil: the system's
}

// newResolver returns the resolver of cfg: ldap.dns_server, or the servers
// of /etc/resolv.conf.
func newResolver(cfg Config) (*resolver, error) {
	r := &resolver{timeout: cfg.DialTimeout}
	if cfg.DNSServer != "" {
		server := cfg.DNSServer
		r.servers = []string{server}
		r.hosts = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
		return r, nil
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cc.Servers) == 0 {
		return nil, fmt.Errorf("ldap.dns_server: not set, and the system names no DNS server to ask for the dns-srv: entries of ldap.urls (/etc/resolv.conf: %v): set ldap.dns_server, e.g. 192.0.2.53:53", err)
	}
	for _, s := range cc.Servers {
		r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
	}
	return r, nil
}

// query returns the SRV records of name and the lowest of their TTLs,
// errNoSRV when DNS says there are none, or why no server answered.
func (r *resolver) query(ctx context.Context, name string) ([]*dns.SRV, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	var errs []error
	for _, server := range r.servers {
		in, err := r.exchange(ctx, m, server)
		if err != nil {
			errs = append(errs, fmt.Errorf("DNS server %s: %w", server, err))
			continue
		}
		switch in.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		default:
			errs = append(errs, fmt.Errorf("DNS server %s answered %s for %s", server, dns.RcodeToString[in.Rcode], name))
			continue
		}
		var out []*dns.SRV
		ttl := srvMaxTTL
		for _, rr := range in.Answer {
			if srv, ok := rr.(*dns.SRV); ok && strings.EqualFold(srv.Hdr.Name, name) && srv.Target != "." {
				out = append(out, srv)
				ttl = min(ttl, time.Duration(srv.Hdr.Ttl)*time.Second)
			}
		}
		if len(out) == 0 {
			return nil, 0, fmt.Errorf("%s at DNS server %s: %w (%s)", name, server, errNoSRV, dns.RcodeToString[in.Rcode])
		}
		return out, ttl, nil
	}
	return nil, 0, errors.Join(errs...)
}

// exchange sends m to server over UDP, and over TCP when the answer did
// not fit, each within the resolver's timeout.
func (r *resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	c := &dns.Client{Timeout: r.timeout}
	qctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	in, _, err := c.ExchangeContext(qctx, m, server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(qctx, m, server)
	}
	return in, err
}

// discover returns the directory servers of spec, in the order to try
// them, and how long the list holds.
func (r *resolver) discover(ctx context.Context, spec *srvSpec, rnd *rand.Rand) ([]*dns.SRV, time.Duration, error) {
	var out []*dns.SRV
	ttl := srvMaxTTL
	var lastErr error
	seen := make(map[string]bool)
	for _, name := range spec.names() {
		rrs, t, err := r.query(ctx, name)
		if err != nil {
			// A site without DCs of its own falls back on the domain's.
			lastErr = err
			continue
		}
		ttl = min(ttl, t)
		for _, rr := range orderSRV(rrs, rnd) {
			if k := srvKey(rr); !seen[k] {
				seen[k] = true
				out = append(out, rr)
			}
		}
	}
	if len(out) == 0 {
		return nil, 0, lastErr
	}
	return out, ttl, nil
}

func srvKey(rr *dns.SRV) string {
	return net.JoinHostPort(strings.ToLower(strings.TrimSuffix(rr.Target, ".")), strconv.Itoa(int(rr.Port)))
}

// orderSRV orders records as RFC 2782 says: lowest priority first; among
// records of one priority, each next one drawn at random with a chance
// proportional to its weight (a weight of 0 has a small chance).
func orderSRV(rrs []*dns.SRV, rnd *rand.Rand) []*dns.SRV {
	left := slices.Clone(rrs)
	slices.SortStableFunc(left, func(a, b *dns.SRV) int {
		if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
			return c
		}
		// Weight 0 first, as the RFC's selection walks them.
		return cmp.Compare(min(a.Weight, 1), min(b.Weight, 1))
	})
	out := make([]*dns.SRV, 0, len(left))
	for len(left) > 0 {
		n := 1
		for n < len(left) && left[n].Priority == left[0].Priority {
			n++
		}
		group := left[:n]
		for len(group) > 0 {
			total := 0
			for _, rr := range group {
				total += int(rr.Weight)
			}
			pick, sum := rnd.IntN(total+1), 0
			i := 0
			for ; i < len(group)-1; i++ {
				if sum += int(group[i].Weight); sum >= pick {
					break
				}
			}
			out = append(out, group[i])
			group = slices.Delete(group, i, i+1)
		}
		left = left[n:]
	}
	return out
}

// srvSet keeps the directory servers that the dns-srv: entries of
// ldap.urls found: each entry's list in the order to try, refreshed when
// its TTL runs out, the last good list kept while DNS fails.
type srvSet struct {
	res            *resolver
	log            *slog.Logger
	minTTL, maxTTL time.Duration
	now            func() time.Time

	mu      sync.Mutex
	rnd     *rand.Rand
	entries map[int]*srvEntry // by index into ldap.urls
	index   map[string]int    // host:port -> target index
	full    bool              // maxSRVTargets reached (logged once)
	live    []atomic.Bool     // by target index: in some entry's current list
}

// srvEntry is the state of one dns-srv: entry.
type srvEntry struct {
	spec       *srvSpec
	list       []int // target indices, in order; nil before DNS answered
	expires    time.Time
	err        error         // the last failure, while list is nil
	retry      time.Time     // while list is nil, DNS is not asked before
	pending    chan struct{} // closed when the resolution under way ends
	refreshing bool
	failing    bool // DNS failed since the last answer (logged once)
}

func newSRVSet(res *resolver, log *slog.Logger, targets []target) *srvSet {
	st := &srvSet{
		res: res, log: log, minTTL: srvMinTTL, maxTTL: srvMaxTTL, now: time.Now,
		rnd:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		entries: make(map[int]*srvEntry),
		index:   make(map[string]int),
		live:    make([]atomic.Bool, len(targets)+maxSRVTargets),
	}
	for i, t := range targets {
		if t.srv != nil {
			st.entries[i] = &srvEntry{spec: t.srv}
		} else {
			st.live[i].Store(true)
		}
	}
	return st
}

// addSRVTargets makes room for the targets DNS may add to s.
func (s *Source) addSRVTargets(res *resolver) {
	listed := len(s.targets)
	s.srv = newSRVSet(res, s.log, s.targets)
	s.targets = slices.Grow(s.targets, maxSRVTargets)[:listed+maxSRVTargets]
	s.breakers = slices.Grow(s.breakers, maxSRVTargets)[:listed+maxSRVTargets]
	s.dialErrors = slices.Grow(s.dialErrors, maxSRVTargets)[:listed+maxSRVTargets]
}

// knownTargets returns how many of s.targets are set: the configured URLs,
// and the servers DNS added. Those below it never change.
func (s *Source) knownTargets() int { return int(s.known.Load()) }

// dialOrder returns the targets to try, in order: ldap.urls's, a dns-srv:
// entry standing for the servers DNS names, starting with the one that
// worked last.
func (s *Source) dialOrder(ctx context.Context) ([]int, error) {
	var order []int
	var errs []error
	for i := range s.listed {
		if s.targets[i].srv == nil {
			order = append(order, i)
			continue
		}
		list, err := s.srv.targetsOf(ctx, s, i)
		if err != nil {
			errs = append(errs, err)
		}
		order = append(order, list...)
	}
	if len(order) == 0 {
		return nil, errors.Join(errs...)
	}
	if p := slices.Index(order, int(s.preferred.Load())); p > 0 {
		order = append(order[p:], order[:p]...)
	}
	return order, nil
}

// usable reports whether target idx is configured, or in a list DNS gives
// now: a connection to a server that left the list is not reused.
func (s *Source) usable(idx int) bool { return s.srv == nil || s.srv.live[idx].Load() }

// targetsOf returns the servers of the dns-srv: entry ldap.urls[i]. A list
// whose TTL ran out is still used while a refresh runs in the background.
// Before the first list, callers wait for the one DNS resolution under way
// (which a caller that gives up does not cut short), or get the last
// failure for a breaker cooldown after it.
func (st *srvSet) targetsOf(ctx context.Context, s *Source, i int) ([]int, error) {
	e := st.entries[i]
	for {
		st.mu.Lock()
		if e.list != nil {
			list := e.list
			st.refreshDue(s, e)
			st.mu.Unlock()
			return list, nil
		}
		if e.pending == nil && e.err != nil && st.now().Before(e.retry) {
			err := e.err
			st.mu.Unlock()
			return nil, err
		}
		if e.pending == nil {
			e.pending = make(chan struct{})
			go st.first(s, e, e.pending)
		}
		pending := e.pending
		st.mu.Unlock()
		select {
		case <-pending:
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: waiting for DNS: %w", e.spec.key, ctx.Err())
		}
	}
}

// first resolves e while it has no list, and closes pending when done.
func (st *srvSet) first(s *Source, e *srvEntry, pending chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), st.budget(e))
	defer cancel()
	st.resolve(ctx, s, e)
	st.mu.Lock()
	e.pending = nil
	st.mu.Unlock()
	close(pending)
}

// budget bounds one resolution of e: each of its names asked of each
// server, over UDP and maybe TCP, each query within the timeout.
func (st *srvSet) budget(e *srvEntry) time.Duration {
	return 2 * st.res.timeout * time.Duration(len(e.spec.names())*len(st.res.servers))
}

// refreshExpired starts the refresh of every list whose TTL ran out: a
// source that keeps its connections dials no new one, and would otherwise
// never learn that DNS names other servers now.
func (st *srvSet) refreshExpired(s *Source) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, e := range st.entries {
		st.refreshDue(s, e)
	}
}

// refreshDue starts the refresh of e in the background if its list's TTL
// ran out and none is under way. The mutex is held.
func (st *srvSet) refreshDue(s *Source, e *srvEntry) {
	if e.list != nil && !e.refreshing && !st.now().Before(e.expires) {
		e.refreshing = true
		go st.refresh(s, e)
	}
}

// refresh asks DNS again for e's servers, in the background.
func (st *srvSet) refresh(s *Source, e *srvEntry) {
	defer func() {
		st.mu.Lock()
		e.refreshing = false
		st.mu.Unlock()
	}()
	select {
	case <-s.closed:
		return
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), st.budget(e))
	defer cancel()
	st.resolve(ctx, s, e)
}

// resolve asks DNS for e's servers and keeps the answer; when DNS fails,
// e keeps its last list, and DNS is asked again after the minimum TTL.
func (st *srvSet) resolve(ctx context.Context, s *Source, e *srvEntry) {
	st.mu.Lock()
	rnd := rand.New(rand.NewPCG(st.rnd.Uint64(), st.rnd.Uint64()))
	st.mu.Unlock()
	rrs, ttl, err := st.res.discover(ctx, e.spec, rnd)
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		st.failure(s, e, err)
		return
	}
	var list []int
	for _, rr := range rrs {
		if idx := st.add(s, rr, e.spec); idx >= 0 {
			list = append(list, idx)
		}
	}
	if len(list) == 0 {
		st.failure(s, e, fmt.Errorf("DNS named %d servers, none of them among the %d a source keeps", len(rrs), maxSRVTargets))
		return
	}
	if e.failing {
		st.log.Info("DNS answers again for the directory servers", "url", e.spec.key, "servers", len(list))
	}
	old := e.list
	e.list, e.err, e.failing = list, nil, false
	st.retire(old)
	e.expires = st.now().Add(min(max(ttl, st.minTTL), st.maxTTL))
}

// failure records that DNS failed for e: a list e has stays in use, and DNS
// is asked again after the minimum TTL; without one, e keeps the error for
// the callers, and DNS is asked again after a breaker cooldown. The mutex
// is held.
func (st *srvSet) failure(s *Source, e *srvEntry, err error) {
	names := strings.Join(e.spec.names(), " and ")
	e.expires = st.now().Add(st.minTTL)
	e.retry = st.now().Add(s.cooldown)
	if e.list != nil {
		if !e.failing {
			st.log.Warn("DNS fails for the directory servers: the last list stays in use, and DNS is asked again every "+st.minTTL.String(),
				"url", e.spec.key, "names", names, "err", err)
		}
		e.failing = true
		return
	}
	if errors.Is(err, errNoSRV) {
		err = &Error{Kind: Configuration, Key: e.spec.key,
			Reason: "DNS names no directory server: no SRV record " + names,
			Fix:    "write the Active Directory domain's DNS name after dns-srv: (e.g. dns-srv:corp.example.com), and check ldap.dns_server (empty: the system's resolver) asks the DNS servers of that domain",
			Err:    err}
	} else {
		err = fmt.Errorf("%s: asking DNS for %s: %w", e.spec.key, names, err)
	}
	e.err = err
}

// add returns the target index of rr's server, adding it to s if it is
// new, or -1 when s holds maxSRVTargets already. The mutex is held.
func (st *srvSet) add(s *Source, rr *dns.SRV, via *srvSpec) int {
	k := srvKey(rr)
	if idx, ok := st.index[k]; ok {
		return idx
	}
	n := s.knownTargets()
	if n == len(s.targets) {
		if !st.full {
			st.log.Warn("DNS named more directory servers than one source keeps: the others are not used", "max", maxSRVTargets, "server", k)
			st.full = true
		}
		return -1
	}
	host := strings.TrimSuffix(rr.Target, ".")
	url := "ldap://" + k
	s.targets[n] = target{url: url, hostout: k, host: host, via: via}
	s.breakers[n] = newBreaker(url, s.log, s.metrics.breakerOpen.WithLabelValues(url))
	s.dialErrors[n] = s.metrics.dialErrors.WithLabelValues(url)
	st.index[k] = n
	s.known.Store(int32(n + 1))
	return n
}

// retire marks the targets of old that no entry's list holds now as no
// longer live. The mutex is held.
func (st *srvSet) retire(old []int) {
	for _, idx := range old {
		st.live[idx].Store(false)
	}
	for _, e := range st.entries {
		for _, idx := range e.list {
			st.live[idx].Store(true)
		}
	}
}

// classifyTarget is classify for an error of target idx: a certificate
// that does not name a server DNS found is the record's or the
// certificate's fault, which ldap.tls_server_name does not mend.
func (s *Source) classifyTarget(idx int, err error) error {
	err = s.classify(err)
	t := s.targets[idx]
	if ce := ConfigurationError(err); ce != nil && t.via != nil && ce.Key == "ldap.tls_server_name" {
		return &Error{Kind: Configuration, Key: t.via.key, Reason: fmt.Sprintf("the DC's certificate does not name %s, the host name its SRV record gives", t.host),
			Fix: "give the DC a certificate that names its host name as DNS publishes it, or correct the SRV record's target; keep ldap.tls_server_name empty", Err: ce.Err}
	}
	return err
}
