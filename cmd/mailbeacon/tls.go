package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// HTTPS served directly: from certificate files that are reloaded when
// they change (server.tls), or from certificates obtained with ACME for
// the autoconfig. and autodiscover. names of the configured domains only
// (server.acme).

// tlsFiles is the server.tls section.
type tlsFiles struct {
	// CertFile holds the certificate chain (PEM, leaf first), KeyFile its
	// private key. Both are checked for changes every minute and on
	// SIGHUP, and reloaded; a broken pair is logged and the previous one
	// keeps serving.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

func (t tlsFiles) enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// acmeConfig is the server.acme section.
type acmeConfig struct {
	// Enabled obtains and renews certificates with ACME (Let's Encrypt by
	// default), which means accepting the ACME CA's terms of service.
	Enabled bool `mapstructure:"enabled"`
	// Email is given to the CA for expiry notices; optional.
	Email string `mapstructure:"email"`
	// DirectoryURL is the ACME directory; default Let's Encrypt production.
	DirectoryURL string `mapstructure:"directory_url"`
	// CacheDir keeps the account key and certificates across restarts
	// (required: without it every restart asks the CA anew).
	CacheDir string `mapstructure:"cache_dir"`
	// CAFile holds PEM roots to trust for the ACME server itself (a
	// private ACME CA, or a test server); empty means the system roots.
	CAFile string `mapstructure:"ca_file"`
	// BareDomains also obtains certificates for each configured domain
	// itself, for when <domain> points at mailbeacon too (Thunderbird's
	// .well-known URL, Outlook's root-domain URL).
	BareDomains bool `mapstructure:"bare_domains"`
}

// certReloadInterval is how often certificate files are checked.
const certReloadInterval = time.Minute

// validateTLS checks the server keys of tls.go and dns.go. Errors name the key.
func (s serverConfig) validateTLS() error {
	if s.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(s.HTTPListen); err != nil {
			return fmt.Errorf("server.http_listen: %q is not host:port, e.g. :80", s.HTTPListen)
		}
	}
	if s.PublicHost != "" {
		if _, err := policy.NormalizeDomain(s.PublicHost); err != nil || !strings.Contains(strings.Trim(s.PublicHost, "."), ".") {
			return fmt.Errorf("server.public_host: %q is not a host name such as mailbeacon.example.net", s.PublicHost)
		}
	}
	for i, a := range s.PublicAddresses {
		if net.ParseIP(a) == nil {
			return fmt.Errorf("server.public_addresses[%d]: %q is not an IP address", i, a)
		}
	}
	t, a := s.TLS, s.ACME
	if t.enabled() && (t.CertFile == "" || t.KeyFile == "") {
		return fmt.Errorf("server.tls: give both cert_file and key_file, or neither")
	}
	if !a.Enabled {
		return nil
	}
	if t.enabled() {
		return fmt.Errorf("server.acme.enabled: certificates come from either server.tls files or ACME: drop one of them")
	}
	if a.CacheDir == "" {
		return fmt.Errorf("server.acme.cache_dir: required with ACME, e.g. /var/lib/mailbeacon/acme (keeps the account key and certificates across restarts)")
	}
	if a.DirectoryURL != "" {
		if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("server.acme.directory_url: %q is not an https:// URL", a.DirectoryURL)
		}
	}
	if a.Email != "" {
		if _, err := policy.ParseAddress(a.Email); err != nil {
			return fmt.Errorf("server.acme.email: %q is not an e-mail address", a.Email)
		}
	}
	return nil
}

// tlsNames are the names clients reach mailbeacon by over HTTPS: for
// each configured domain autoconfig.<d>, autodiscover.<d> and
// ua-auto-config.<d> (PACC; and <d> when bare is set), and the public
// host, which is the _autodiscover SRV target (dns.go).
func tlsNames(cfg config, bare bool) []string {
	var names []string
	for _, d := range cfg.Domains {
		name, err := policy.NormalizeDomain(d.Name)
		if err != nil {
			continue // build rejected it already
		}
		names = append(names, httpsHosts(&policy.Domain{Name: name})...)
		if bare {
			names = append(names, name)
		}
	}
	if h, err := policy.NormalizeDomain(cfg.Server.PublicHost); err == nil && cfg.Server.PublicHost != "" {
		names = append(names, h)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// tlsServing is how the main listener gets its certificates.
type tlsServing struct {
	log   *slog.Logger
	files atomic.Pointer[certFiles] // server.tls
	acme  *autocert.Manager         // server.acme
	names atomic.Pointer[map[string]bool]
	mode  string // "", "files" or "acme"

	notAfter prometheus.Gauge // of the certificate files; nil: not recorded
	// domain asks the current configuration whether a domain is served,
	// for names of the directory's domains (domain_source); nil: none.
	domain func(ctx context.Context, name string) (*policy.Domain, error)
	// budget takes a token of the unknown-address budget of the client at
	// peer before domain is asked (protocols.Handler.ReserveLookup of the
	// current generation); nil: no budget.
	budget func(peer netip.Addr) (settle func(served bool), ok bool)
	// refusedNames holds the directory names found not served, for the
	// domain source's negative TTL: asked again, they cost neither a
	// search nor a token. servedNames holds those found served, which the
	// host policy lets through without asking again.
	refusedNames, servedNames *nameSet
	negativeTTL               atomic.Int64 // cache.negative_ttl
	refusals                  *refusalLog
	refused                   *prometheus.CounterVec // by reason; nil: not counted
}

// Bounds of the name sets and of the refusal log.
const (
	maxRefusedNames = 10_000 // ~300 bytes each at most
	maxServedNames  = 4096
	servedNameTTL   = time.Minute // the retry after the directory said yes
	refusalPeriod   = time.Minute
	maxRefusalLines = 30 // per refusalPeriod, all clients together
)

// newTLSServing prepares HTTPS for cfg; nil when cfg serves plain HTTP.
// notAfter (may be nil) records the expiry of certificate files.
func newTLSServing(cfg config, log *slog.Logger, notAfter prometheus.Gauge) (*tlsServing, error) {
	t := &tlsServing{log: log, notAfter: notAfter,
		refusedNames: newNameSet(maxRefusedNames), servedNames: newNameSet(maxServedNames)}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.refusals = newRefusalLog(t.log)
	t.negativeTTL.Store(int64(cfg.Cache.NegativeTTL))
	switch {
	case cfg.Server.TLS.enabled():
		t.mode = "files"
		f, err := loadCertFiles(cfg.Server.TLS, tlsNames(cfg, false), log, notAfter)
		if err != nil {
			return nil, err
		}
		t.files.Store(f)
	case cfg.Server.ACME.Enabled:
		t.mode = "acme"
		m, err := t.newACME(cfg.Server.ACME)
		if err != nil {
			return nil, err
		}
		t.acme = m
		t.setNames(cfg)
	default:
		return nil, nil
	}
	return t, nil
}

func (t *tlsServing) newACME(a acmeConfig) (*autocert.Manager, error) {
	if err := os.MkdirAll(a.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("server.acme.cache_dir: %w", err)
	}
	client := &acme.Client{DirectoryURL: a.DirectoryURL, UserAgent: "mailbeacon/" + versionString()}
	if client.DirectoryURL == "" {
		client.DirectoryURL = autocert.DefaultACMEDirectory
	}
	if a.CAFile != "" {
		pem, err := os.ReadFile(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("server.acme.ca_file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server.acme.ca_file: %s holds no PEM certificate", a.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		client.HTTPClient = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(a.CacheDir),
		HostPolicy: t.hostPolicy,
		Email:      a.Email,
		Client:     client,
	}, nil
}

// hostPolicy lets ACME ask for certificates of configured names only: a
// client cannot make mailbeacon request one for any name it sends as SNI.
// It never asks the directory itself, for it does not know which client
// asked: a name of a directory domain not yet confirmed is handed back to
// getCertificate (errAskDirectory), which asks within the client's budget.
func (t *tlsServing) hostPolicy(ctx context.Context, host string) error {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if (*t.names.Load())[host] {
		return nil
	}
	if t.domain != nil {
		if rest, ok := directoryName(host); ok {
			if t.servedNames.has(host, time.Now()) {
				return nil
			}
			return &errAskDirectory{host: host, domain: rest}
		}
	}
	return fmt.Errorf("acme: %q is not an autoconfig., autodiscover. or ua-auto-config. name of a configured domain: no certificate requested", host)
}

// directoryName returns the domain of host when host is the
// autoconfig.<d>, autodiscover.<d> or ua-auto-config.<d> name of a valid
// domain d: the only names the directory's domain source is asked about.
func directoryName(host string) (string, bool) {
	_, rest, ok := strings.Cut(host, ".")
	if !ok || !slices.Contains(httpsHosts(&policy.Domain{Name: rest}), host) {
		return "", false
	}
	if _, err := policy.NormalizeDomain(rest); err != nil {
		return "", false
	}
	return rest, true
}

// errAskDirectory is hostPolicy's answer for a name only the directory
// can confirm.
type errAskDirectory struct{ host, domain string }

func (e *errAskDirectory) Error() string {
	return fmt.Sprintf("acme: %q: not yet known whether the directory serves %s", e.host, e.domain)
}

// getCertificate is autocert's, with the directory asked for names of
// domains the configuration lacks only within the budget of the client
// that sent the name: a certificate already obtained is served as
// before, without asking anything.
func (t *tlsServing) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if _, err := policy.NormalizeDomain(hello.ServerName); err != nil && hello.ServerName != "" {
		// Not a name any certificate is for; refused before autocert,
		// whose own reading of it might differ from directoryName's.
		return nil, fmt.Errorf("acme: server name %q: %w", hello.ServerName, err)
	}
	cert, err := t.acme.GetCertificate(hello)
	var ask *errAskDirectory
	if !errors.As(err, &ask) {
		return cert, err
	}
	ctx, cancel := context.WithTimeout(hello.Context(), time.Minute)
	defer cancel()
	if err := t.askDirectory(ctx, peerAddr(hello), ask.host, ask.domain); err != nil {
		return nil, err
	}
	return t.acme.GetCertificate(hello)
}

// peerAddr is the client of a handshake: its connection's peer. A peer
// that is no IP address is the zero address: all such share one budget.
func peerAddr(hello *tls.ClientHelloInfo) netip.Addr {
	if hello.Conn == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(hello.Conn.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// askDirectory asks whether domain, named by host in a handshake from
// peer, is served: a name found not served before is refused at once;
// otherwise the question takes a token of peer's unknown-address budget
// first (given back when the domain is served), and is refused without
// asking when none is left.
func (t *tlsServing) askDirectory(ctx context.Context, peer netip.Addr, host, domain string) error {
	now := time.Now()
	if t.refusedNames.has(host, now) {
		t.count("not_served")
		return fmt.Errorf("acme: %q: %s is not served (cached): no certificate requested", host, domain)
	}
	settle := func(bool) {}
	if t.budget != nil {
		var ok bool
		if settle, ok = t.budget(peer); !ok {
			t.count("budget")
			t.refusals.note(peer, host, now)
			return fmt.Errorf("acme: %q: the client's unknown-address budget is spent: the directory is not asked", host)
		}
	}
	d, err := t.domain(ctx, domain)
	served := err == nil && slices.Contains(httpsHosts(d), host)
	settle(served)
	switch {
	case served:
		t.servedNames.add(host, now.Add(servedNameTTL))
		return nil
	case err != nil && !errors.Is(err, policy.ErrUnknownDomain):
		return fmt.Errorf("acme: %q: cannot tell now whether %s is served: %w", host, domain, err)
	}
	t.count("not_served")
	t.refusedNames.add(host, now.Add(time.Duration(t.negativeTTL.Load())))
	return fmt.Errorf("acme: %q is not an autoconfig., autodiscover. or ua-auto-config. name of a served domain: no certificate requested", host)
}

func (t *tlsServing) count(reason string) {
	if t.refused != nil {
		t.refused.WithLabelValues(reason).Inc()
	}
}

// nameSet is a bounded set of names, each until its expiry; the least
// recently added go first when it is full.
type nameSet struct {
	mu    sync.Mutex
	names *simplelru.LRU[string, time.Time]
}

func newNameSet(size int) *nameSet {
	l, _ := simplelru.NewLRU[string, time.Time](size, nil) // size > 0
	return &nameSet{names: l}
}

func (s *nameSet) has(name string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.names.Peek(name)
	if ok && !now.Before(until) {
		s.names.Remove(name)
		return false
	}
	return ok
}

func (s *nameSet) add(name string, until time.Time) {
	s.mu.Lock()
	s.names.Add(name, until)
	s.mu.Unlock()
}

// refusalLog logs handshakes refused for a spent budget once per client
// and refusalPeriod, with how many were refused since, and at most
// maxRefusalLines a period in all: a flood from many addresses fills the
// metric, not the log.
type refusalLog struct {
	log *slog.Logger

	mu      sync.Mutex
	clients *simplelru.LRU[netip.Addr, refusals]
	period  time.Time // start of the current period
	lines   int       // logged in it
}

type refusals struct {
	logged time.Time
	since  int // refused since logged
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	l, _ := simplelru.NewLRU[netip.Addr, refusals](4*maxRefusalLines, nil)
	return &refusalLog{log: log, clients: l}
}

func (r *refusalLog) note(peer netip.Addr, host string, now time.Time) {
	key := protocols.ClientKey(peer)
	r.mu.Lock()
	c, ok := r.clients.Get(key)
	if ok && now.Sub(c.logged) < refusalPeriod {
		c.since++
		r.clients.Add(key, c)
		r.mu.Unlock()
		return
	}
	if now.Sub(r.period) >= refusalPeriod {
		r.period, r.lines = now, 0
	}
	if r.lines >= maxRefusalLines {
		r.mu.Unlock()
		return
	}
	r.lines++
	r.clients.Add(key, refusals{logged: now})
	r.mu.Unlock()
	r.log.Warn("TLS handshakes refused: the client's unknown-address budget is spent, so the directory is not asked about the names it sends; logged once a minute per client (limits.unknown_per_minute, limits.exempt)",
		"client", peer.String(), "name", host, "refused_since_last_line", c.since)
}

// httpsHosts are the names of d that clients reach over HTTPS: the
// discovery hosts and PACC's (protocols/pacc.go).
func httpsHosts(d *policy.Domain) []string {
	return append(d.ClientHosts(), d.PACCHost())
}

func (t *tlsServing) setNames(cfg config) {
	names := map[string]bool{}
	for _, n := range tlsNames(cfg, cfg.Server.ACME.BareDomains) {
		names[n] = true
	}
	t.names.Store(&names)
}

// config is the main listener's TLS configuration.
func (t *tlsServing) config() *tls.Config {
	if t.mode == "acme" {
		c := t.acme.TLSConfig() // answers TLS-ALPN-01 challenges too
		c.MinVersion = tls.VersionTLS12
		c.GetCertificate = t.getCertificate
		return c
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return t.files.Load().current(), nil },
	}
}

// httpHandler wraps the plain-HTTP listener's handler: with ACME it
// answers HTTP-01 challenges first.
func (t *tlsServing) httpHandler(h http.Handler) http.Handler {
	if t != nil && t.mode == "acme" {
		return t.acme.HTTPHandler(h)
	}
	return h
}

// update applies a reloaded configuration: new certificate files are
// loaded before anything changes (an error rejects the reload), ACME's
// names follow the domains. Switching between files, ACME and plain HTTP
// needs a restart.
func (t *tlsServing) update(cfg config) error {
	mode := ""
	switch {
	case cfg.Server.TLS.enabled():
		mode = "files"
	case cfg.Server.ACME.Enabled:
		mode = "acme"
	}
	if t == nil {
		if mode != "" {
			return fmt.Errorf("server.tls / server.acme: switching from plain HTTP to HTTPS needs a restart")
		}
		return nil
	}
	if mode != t.mode {
		return fmt.Errorf("server.tls / server.acme: switching between certificate files, ACME and plain HTTP needs a restart")
	}
	switch mode {
	case "files":
		cur := t.files.Load()
		if cur.cfg == cfg.Server.TLS {
			cur.mu.Lock()
			cur.names = tlsNames(cfg, false)
			cur.mu.Unlock()
			_, err := cur.reloadIfChanged()
			if err != nil {
				t.log.Error("certificate reload failed; the previous certificate keeps serving", "err", err)
			}
			return nil
		}
		f, err := loadCertFiles(cfg.Server.TLS, tlsNames(cfg, false), t.log, t.notAfter)
		if err != nil {
			return err
		}
		t.files.Store(f)
	case "acme":
		t.setNames(cfg)
		t.negativeTTL.Store(int64(cfg.Cache.NegativeTTL))
	}
	return nil
}

// watch checks the certificate files every certReloadInterval until ctx ends.
func (t *tlsServing) watch(ctx context.Context) {
	if t == nil || t.mode != "files" {
		return
	}
	tick := time.NewTicker(certReloadInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := t.files.Load().reloadIfChanged(); err != nil {
				t.log.Error("certificate reload failed; the previous certificate keeps serving", "err", err)
			}
		}
	}
}

// certFiles is a certificate and key loaded from files, reloaded when
// either file changes.
type certFiles struct {
	cfg   tlsFiles
	log   *slog.Logger
	names []string // names the certificate should cover (warnings only)

	notAfter prometheus.Gauge // nil: not recorded

	mu    sync.Mutex // serialises reloads
	stamp string     // size and mtime of both files at the last load
	cert  atomic.Pointer[tls.Certificate]
}

func loadCertFiles(cfg tlsFiles, names []string, log *slog.Logger, notAfter prometheus.Gauge) (*certFiles, error) {
	f := &certFiles{cfg: cfg, log: log, names: names, notAfter: notAfter}
	if _, err := f.reloadIfChanged(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *certFiles) current() *tls.Certificate { return f.cert.Load() }

// reloadIfChanged loads the pair if either file changed since the last
// load. On error the previous certificate stays.
func (f *certFiles) reloadIfChanged() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	stamp, err := fileStamp(f.cfg.CertFile, f.cfg.KeyFile)
	if err != nil {
		return false, err
	}
	if stamp == f.stamp && f.cert.Load() != nil {
		return false, nil
	}
	cert, err := tls.LoadX509KeyPair(f.cfg.CertFile, f.cfg.KeyFile)
	if err != nil {
		return false, fmt.Errorf("server.tls: loading %s and %s: %w", f.cfg.CertFile, f.cfg.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return false, fmt.Errorf("server.tls.cert_file: %w", err)
		}
		cert.Leaf = leaf
	}
	first := f.cert.Load() == nil
	f.cert.Store(&cert)
	f.stamp = stamp
	if f.notAfter != nil {
		f.notAfter.Set(float64(leaf.NotAfter.Unix()))
	}
	if !first {
		f.log.Info("certificate reloaded", "file", f.cfg.CertFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	f.warn(leaf)
	return true, nil
}

// warn logs what would make clients refuse the certificate.
func (f *certFiles) warn(leaf *x509.Certificate) {
	if left := time.Until(leaf.NotAfter); left < 14*24*time.Hour {
		f.log.Warn("server.tls.cert_file: the certificate expires soon: renew it", "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	var missing []string
	for _, n := range f.names {
		if leaf.VerifyHostname(n) != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		f.log.Warn("server.tls.cert_file: the certificate does not cover names clients use: they will refuse it there", "names", missing)
	}
}

func fileStamp(paths ...string) (string, error) {
	var b strings.Builder
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("server.tls: %w", err)
		}
		fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}
