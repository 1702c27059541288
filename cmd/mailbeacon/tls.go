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
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"github.com/mailbeacon/mailbeacon/policy"
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
}

// newTLSServing prepares HTTPS for cfg; nil when cfg serves plain HTTP.
// notAfter (may be nil) records the expiry of certificate files.
func newTLSServing(cfg config, log *slog.Logger, notAfter prometheus.Gauge) (*tlsServing, error) {
	t := &tlsServing{log: log, notAfter: notAfter}
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
func (t *tlsServing) hostPolicy(ctx context.Context, host string) error {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if (*t.names.Load())[host] {
		return nil
	}
	if t.domain != nil {
		// autoconfig.<d>, autodiscover.<d> or ua-auto-config.<d> of a
		// domain the directory confirms; the name is checked before the
		// directory is asked.
		if _, rest, ok := strings.Cut(host, "."); ok && slices.Contains(httpsHosts(&policy.Domain{Name: rest}), host) {
			if _, err := policy.NormalizeDomain(rest); err == nil {
				d, err := t.domain(ctx, rest)
				if err == nil && slices.Contains(httpsHosts(d), host) {
					return nil
				}
				if err != nil && !errors.Is(err, policy.ErrUnknownDomain) {
					return fmt.Errorf("acme: %q: cannot tell now whether %s is served: %w", host, rest, err)
				}
			}
		}
	}
	return fmt.Errorf("acme: %q is not an autoconfig., autodiscover. or ua-auto-config. name of a configured domain: no certificate requested", host)
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
