package ldapsource

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	// ErrNotFound: no entry matches the address.
	ErrNotFound = errors.New("no directory entry for the address")
	// ErrAmbiguous: more than one entry matches; the caller must not guess.
	ErrAmbiguous = errors.New("several directory entries match the address")
	// ErrClosed: the source was closed.
	ErrClosed = errors.New("directory source closed")
)

// Entry is a directory entry with the attributes asked for.
type Entry struct {
	DN         string
	Attributes map[string][]string // keys lower-case
	// Server is the URL of the directory server that answered, e.g.
	// ldap://dc2.corp.example.com:389 for a server DNS named.
	Server string
}

// Values returns the values of attr, matched case-insensitively.
func (e *Entry) Values(attr string) []string { return e.Attributes[strings.ToLower(attr)] }

// Source is a pool of bound service-account connections to one directory,
// reached through one or more URLs.
type Source struct {
	cfg     Config
	targets []target
	tls     *tls.Config
	filter  filterTemplate
	attrs   []string
	// exactAttrs are attrs and the filter's address attributes, fetched
	// for a non-ASCII address (Lookup).
	exactAttrs []string
	log        *slog.Logger
	// lent: the source has one connection, a Probe's, and never dials
	// (Probe.Source).
	lent bool

	slots     chan struct{} // one per connection checked out or being dialed
	binds     chan struct{} // one per user bind under way (bind.go), outside the pool
	idle      chan *conn
	preferred atomic.Int32 // index into targets of the last URL that worked
	closeOnce sync.Once
	closed    chan struct{}

	metrics    *Metrics
	dialErrors []prometheus.Counter // per target

	// passwordKey names where the service password came from, for error
	// messages: ldap.bind_password_file or ldap.bind_password.
	passwordKey string
	gate        *bindGate // backoff.go; shared through Refusals
	krb         *kerberos // kerberos.go; nil for a simple bind

	breakers []*breaker    // per target (breaker.go)
	cooldown time.Duration // breakerCooldown; shorter in tests

	// listed is how many targets ldap.urls gives; known counts those set,
	// which grow beyond listed as DNS names servers for the dns-srv:
	// entries (srv, nil without any; srv.go).
	listed int
	known  atomic.Int32
	srv    *srvSet
	hosts  *net.Resolver // resolves directory host names; nil: the system's
}

type conn struct {
	*ldap.Conn
	target int
}

// New validates cfg and returns a Source. No connection is made until the
// first lookup (or Ping), so a directory that is down at start-up does not
// stop the server. attrs are the attributes every lookup fetches; m may be
// nil.
func New(cfg Config, attrs []string, log *slog.Logger, m *Metrics) (*Source, error) {
	passwordKey := "ldap.bind_password (or MAILBEACON_LDAP_BIND_PASSWORD)"
	if cfg.BindPasswordFile != "" {
		passwordKey = "ldap.bind_password_file"
	}
	targets, tc, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	krb, err := cfg.kerberos(targets, log)
	if err != nil {
		return nil, err
	}
	if krb != nil {
		passwordKey = "ldap.keytab"
	}
	f, err := parseFilter(cfg.Filter)
	if err != nil {
		return nil, fmt.Errorf("ldap.filter: %w", err)
	}
	if cfg.InsecureSkipVerify {
		log.Warn("ldap.insecure_skip_verify is on: the directory's certificate is NOT checked; anyone on the path can read the service password")
	}
	for _, t := range targets {
		if t.srv == nil && !cfg.usesTLS(t) && cfg.BindDN != "" && !isLoopback(t.host) {
			log.Warn("the service password goes to the directory unencrypted: use ldaps:// or ldap.start_tls", "url", t.url)
		}
	}
	exactAttrs := slices.Clone(attrs)
	for _, a := range f.addressAttrs {
		if !slices.ContainsFunc(attrs, func(x string) bool { return strings.EqualFold(x, a) }) {
			exactAttrs = append(exactAttrs, a)
		}
	}
	if len(attrs) == 0 {
		attrs = []string{"1.1"} // RFC 4511 §4.5.1.8: no attributes
	}
	if len(exactAttrs) == 0 {
		exactAttrs = attrs
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	dialErrs := make([]prometheus.Counter, len(targets))
	breakers := make([]*breaker, len(targets))
	for i, t := range targets {
		dialErrs[i] = m.dialErrors.WithLabelValues(t.url)
		breakers[i] = newBreaker(t.url, log, m.breakerOpen.WithLabelValues(t.url))
	}
	if err := cfg.checkLockedRetry(); err != nil {
		krb.close()
		return nil, err
	}
	s := &Source{
		cfg: cfg, targets: targets, tls: tc, filter: f, attrs: attrs, exactAttrs: exactAttrs, log: log, metrics: m, dialErrors: dialErrs,
		slots:       make(chan struct{}, cfg.PoolSize),
		binds:       make(chan struct{}, cfg.PoolSize),
		idle:        make(chan *conn, cfg.PoolSize),
		closed:      make(chan struct{}),
		passwordKey: passwordKey,
		krb:         krb,
		breakers:    breakers,
		cooldown:    breakerCooldown,
		listed:      len(targets),
	}
	s.known.Store(int32(len(targets)))
	if err := s.useDNS(); err != nil {
		return nil, err
	}
	s.UseRefusals(NewRefusals())
	return s, nil
}

// useDNS sets s up to ask ldap.dns_server (or the system's resolver) for
// the servers of the dns-srv: entries of ldap.urls, and for the addresses
// of directory host names where ldap.dns_server is set.
func (s *Source) useDNS() error {
	hasSRV := slices.ContainsFunc(s.targets, func(t target) bool { return t.srv != nil })
	if !hasSRV && s.cfg.DNSServer == "" {
		return nil
	}
	res, err := newResolver(s.cfg)
	if err != nil {
		return err
	}
	s.hosts = res.hosts
	if hasSRV {
		s.addSRVTargets(res)
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Lookup searches for the one entry matching q. It returns ErrNotFound or
// ErrAmbiguous as answers, and other errors for directory failures.
func (s *Source) Lookup(ctx context.Context, q Query) (*Entry, error) {
	sp := searchSpec{base: s.cfg.BaseDN, scope: ldap.ScopeWholeSubtree, filter: s.filter.expand(q), attrs: s.attrs}
	if q.ascii() {
		return s.findOne(ctx, sp)
	}
	// The directory's matching may fold a non-ASCII address into another
	// account's: fetch the address attributes, and keep the entry only if
	// it holds the address as asked.
	sp.attrs = s.exactAttrs
	e, err := s.findOne(ctx, sp)
	if err == nil && !s.filter.exactMatch(sp.filter, e) {
		s.log.Debug("the directory matched a non-ASCII address to an entry that does not hold it; treated as not found", "dn", e.DN)
		return nil, ErrNotFound
	}
	return e, err
}

// searchSpec is one search findOne runs: where, how deep, what for.
type searchSpec struct {
	base   string
	scope  int
	filter string
	attrs  []string
}

// findOne runs sp on a pooled connection and returns its one entry,
// ErrNotFound or ErrAmbiguous; other errors are directory failures.
func (s *Source) findOne(caller context.Context, sp searchSpec) (_ *Entry, err error) {
	start := time.Now()
	defer func() { s.metrics.observeSearch(time.Since(start).Seconds(), err) }()
	ctx, cancel := context.WithTimeout(caller, s.cfg.RequestTimeout)
	defer cancel()
	var lastErr error
	// A pooled connection may have died since its last use (directory
	// restarted, idle timeout): one retry on a fresh connection, which may
	// be to the next URL.
	for attempt := 0; attempt < 2; attempt++ {
		c, err := s.get(ctx)
		if err != nil {
			return nil, err
		}
		// The search ends early when the server's breaker opens: a
		// server found hung by another request holds nobody up.
		sctx, untrack := s.breakers[c.target].track(ctx)
		entries, err := s.search(sctx, c, sp)
		ended := sctx.Err() != nil
		untrack()
		if err != nil && (isConnError(err) || c.IsClosing() || ended) {
			if timedOut(ctx, err) {
				s.failed(caller, c.target, err)
			}
			s.discard(c)
			// The other idle connections to that server are likely in the
			// same state: a server that hangs closes none of them, and
			// each would cost a lookup its whole request timeout. Drop
			// them, so that the next lookup dials, and fails over if the
			// server does not answer within the dial timeout.
			s.dropIdle(c.target)
			lastErr = err
			if ctx.Err() != nil {
				return nil, fmt.Errorf("ldap search at %s: %w", s.targets[c.target].url, ctx.Err())
			}
			continue
		}
		s.put(c)
		if len(entries) > 1 {
			return nil, &AmbiguousError{Entries: entries, Complete: len(entries) < searchSizeLimit}
		}
		if err != nil {
			return nil, fmt.Errorf("ldap search at %s: %w", s.targets[c.target].url, classifyBaseDN(err))
		}
		if len(entries) == 0 {
			return nil, ErrNotFound
		}
		entries[0].Server = s.targets[c.target].url
		return entries[0], nil
	}
	return nil, fmt.Errorf("ldap search: %w", lastErr)
}

// search runs one search with size limit searchSizeLimit: a second entry
// means the answer is ambiguous, a third that there may be more.
func (s *Source) search(ctx context.Context, c *conn, sp searchSpec) ([]*Entry, error) {
	deadline, _ := ctx.Deadline()
	req := ldap.NewSearchRequest(sp.base, sp.scope, ldap.NeverDerefAliases,
		searchSizeLimit, int(max(1, time.Until(deadline).Seconds())), false, sp.filter, sp.attrs, nil)
	c.SetTimeout(time.Until(deadline))
	resp := c.SearchAsync(ctx, req, 4)
	var out []*Entry
	for resp.Next() {
		// Continuation references (AD answers with them) are not entries.
		if e := resp.Entry(); e != nil {
			out = append(out, toEntry(e))
		}
	}
	err := resp.Err()
	if ctx.Err() != nil {
		// SearchAsync does not report cancellation as an error.
		return out, ctx.Err()
	}
	if err == nil && len(out) == 0 && c.IsClosing() {
		// Nor does it report a connection that closed (directory stopped)
		// before the request was sent: no answer is not "no entry".
		err = ldap.NewError(ldap.ErrorNetwork, errors.New("ldap: connection closed"))
	}
	if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) && len(out) > 1 {
		err = nil
	}
	return out, err
}

func toEntry(e *ldap.Entry) *Entry {
	out := &Entry{DN: e.DN, Attributes: make(map[string][]string, len(e.Attributes))}
	for _, a := range e.Attributes {
		k := strings.ToLower(a.Name)
		if prev, ok := out.Attributes[k]; ok {
			out.Attributes[k] = append(prev, a.Values...)
		} else {
			out.Attributes[k] = a.Values // e is not used after: no copy
		}
	}
	return out
}

func isConnError(err error) bool {
	var ne net.Error
	return ldap.IsErrorWithCode(err, ldap.ErrorNetwork) || errors.As(err, &ne) ||
		ldap.IsErrorWithCode(err, ldap.LDAPResultUnavailable) || ldap.IsErrorWithCode(err, ldap.LDAPResultBusy)
}

// get checks a connection out of the pool, dialing one if none is idle.
// At most cfg.PoolSize connections exist at once; callers beyond that wait
// for a slot until ctx ends.
func (s *Source) get(ctx context.Context) (*conn, error) {
	// Checked first: select picks among ready cases at random, so a free
	// slot would otherwise win half the time after Close.
	select {
	case <-s.closed:
		return nil, ErrClosed
	default:
	}
	select {
	case s.slots <- struct{}{}:
		s.metrics.connectionsInUse.Inc()
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a directory connection: %w", ctx.Err())
	case <-s.closed:
		return nil, ErrClosed
	}
	if s.srv != nil {
		s.srv.refreshExpired(s)
	}
	if c := s.takeIdle(); c != nil {
		return c, nil
	}
	if s.lent {
		s.release()
		return nil, errLentConnection
	}
	c, err := s.gate.dial(ctx, func() (*conn, error) { return s.dial(ctx) })
	if err != nil {
		s.release()
		return nil, err
	}
	return c, nil
}

// takeIdle returns an idle connection that is still open, or nil.
func (s *Source) takeIdle() *conn {
	for {
		select {
		case c := <-s.idle:
			if !c.IsClosing() && !s.breakers[c.target].opened() && s.usable(c.target) {
				return c
			}
			c.Close()
		default:
			return nil
		}
	}
}

// put returns a healthy connection to the pool.
func (s *Source) put(c *conn) {
	select {
	case <-s.closed:
		c.Close()
	default:
		select {
		case s.idle <- c:
		default:
			c.Close()
		}
	}
	s.release()
}

// release gives back the pool slot of a connection that get handed out.
func (s *Source) release() {
	<-s.slots
	s.metrics.connectionsInUse.Dec()
}

func (s *Source) discard(c *conn) {
	c.Close()
	s.release()
}

// dropIdle closes the idle connections to target t.
func (s *Source) dropIdle(t int) {
	var keep []*conn
drain:
	for {
		select {
		case c := <-s.idle:
			if c.target == t {
				c.Close()
			} else {
				keep = append(keep, c)
			}
		default:
			break drain
		}
	}
	for _, c := range keep {
		select {
		case s.idle <- c:
		default:
			c.Close()
		}
	}
}

// dial connects to the preferred URL, then to the others in order, and
// binds as the service account.
func (s *Source) dial(ctx context.Context) (*conn, error) {
	order, err := s.dialOrder(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to the directory: %w", err)
	}
	start := order[0]
	var errs []error
	for _, idx := range order {
		if err := s.skip(idx); err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := s.dialOne(ctx, idx)
		if err == nil {
			if idx != start {
				s.log.Warn("directory failover", "from", s.targets[start].url, "to", s.targets[idx].url)
				s.metrics.failovers.Inc()
				s.preferred.Store(int32(idx))
			}
			return c, nil
		}
		err = s.classifyTarget(idx, err)
		errs = append(errs, err)
		s.dialErrors[idx].Inc()
		s.failed(ctx, idx, err)
		if ctx.Err() != nil {
			break
		}
		// The same credentials go to every URL: trying the next one
		// would only count one more failed bind against the account.
		if ce := ConfigurationError(err); ce != nil && (ce.Key == s.passwordKey || ce.Key == "ldap.bind_dn" || ce.Key == "ldap.principal") {
			break
		}
	}
	return nil, fmt.Errorf("connecting to the directory: %w", errors.Join(errs...))
}

func (s *Source) dialOne(ctx context.Context, idx int) (*conn, error) {
	t := s.targets[idx]
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	dctx, untrack := s.breakers[idx].track(dctx)
	defer untrack()
	lc, nc, err := s.connect(dctx, idx)
	if err != nil {
		return nil, err
	}
	if s.cfg.BindDN != "" || s.krb != nil {
		err := s.gate.bind(dctx, func() error {
			// A breaker that opens meanwhile ends the bind at once.
			stop := interruptOn(dctx, nc)
			var err error
			if s.krb != nil {
				err = s.krb.bind(dctx, lc, s.krb.spns[idx])
			} else {
				err = lc.Bind(s.cfg.BindDN, s.cfg.BindPassword)
			}
			if !stop() && err == nil {
				err = context.Cause(dctx)
			}
			return err
		})
		if err != nil {
			lc.Close()
			return nil, fmt.Errorf("%s: bind as %s: %w", t.url, s.bindName(), err)
		}
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		lc.Close()
		return nil, fmt.Errorf("%s: %w", t.url, err)
	}
	// After StartTLS go-ldap talks through its own tls.Conn wrapping nc;
	// clearing nc's deadline clears it for both.
	return &conn{Conn: lc, target: idx}, nil
}

// connect opens an unbound connection to target idx: TCP, then TLS for
// ldaps:// or StartTLS if configured. The socket carries dctx's deadline,
// which bounds the caller's bind too; the caller clears or replaces it.
func (s *Source) connect(dctx context.Context, idx int) (*ldap.Conn, net.Conn, error) {
	t := s.targets[idx]
	d := net.Dialer{Resolver: s.hosts}
	nc, err := d.DialContext(dctx, "tcp", t.hostout)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", t.url, err)
	}
	tc := s.tls.Clone()
	if tc.ServerName == "" {
		tc.ServerName = t.host
	}
	if t.ldaps {
		tlsConn := tls.Client(nc, tc)
		if err := tlsConn.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, nil, fmt.Errorf("%s: TLS: %w", t.url, err)
		}
		nc = tlsConn
	}
	// go-ldap's StartTLS and Bind wait without a deadline of their own: a
	// deadline on the socket bounds them.
	deadline, _ := dctx.Deadline()
	if err := nc.SetDeadline(deadline); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("%s: %w", t.url, err)
	}
	defer interruptOn(dctx, nc)()
	lc := ldap.NewConn(nc, t.ldaps)
	lc.Start()
	lc.SetTimeout(time.Until(deadline))
	if s.cfg.StartTLS {
		if err := lc.StartTLS(tc); err != nil {
			lc.Close()
			// go-ldap reports the handshake's error as text only.
			if strings.Contains(err.Error(), "x509: ") || strings.Contains(err.Error(), "tls: failed to verify") {
				return nil, nil, fmt.Errorf("%s: StartTLS: %w: %w", t.url, errCertificate, err)
			}
			return nil, nil, fmt.Errorf("%s: StartTLS: %w", t.url, err)
		}
	}
	return lc, nc, nil
}

// bindName is the service account as errors name it: ldap.bind_dn, or
// the Kerberos principal.
func (s *Source) bindName() string {
	if s.krb != nil {
		return s.krb.name()
	}
	return s.cfg.BindDN
}

// classify turns a failed dial and bind as the service account into a
// configuration error naming the key, where it is one.
func (s *Source) classify(err error) error {
	if s.krb != nil {
		return classifyKerberos(err, s.krb.name(), s.cfg.Keytab)
	}
	return classify(err, s.passwordKey, s.cfg.BindDN)
}

// Ping checks that the directory can be reached, the service account can
// bind, and the base DN can be read.
func (s *Source) Ping(ctx context.Context) error {
	_, err := s.Check(ctx)
	return err
}

// Check is Ping, and returns the URL of the server that answered.
func (s *Source) Check(ctx context.Context) (server string, err error) {
	// Connections bound before the directory refused the credentials
	// still work, but the configuration does not: not ready.
	if err := s.gate.held(); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	c, err := s.get(ctx)
	if err != nil {
		return "", err
	}
	deadline, _ := ctx.Deadline()
	c.SetTimeout(time.Until(deadline))
	_, err = c.Search(ldap.NewSearchRequest(s.cfg.BaseDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 0, false, "(objectClass=*)", []string{"1.1"}, nil))
	if err != nil {
		s.discard(c)
		return "", fmt.Errorf("reading ldap.base_dn %q at %s: %w", s.cfg.BaseDN, s.targets[c.target].url, classifyBaseDN(err))
	}
	server = s.targets[c.target].url
	s.put(c)
	return server, nil
}

// Close closes idle connections and makes further lookups fail.
// Connections checked out at the time are closed when they are returned.
func (s *Source) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.krb.close()
		for _, b := range s.breakers[:s.knownTargets()] {
			b.close()
		}
		for {
			select {
			case c := <-s.idle:
				c.Close()
			default:
				return
			}
		}
	})
}
