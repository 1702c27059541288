package ldapsource

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// A Probe is one connection to a directory for looking at it before a
// configuration exists (mailbeacon init): it reads the RootDSE and the
// schema, binds at most once, searches, and finally lends its bound
// connection to a Source that never dials. The directory is asked one
// thing at a time; the credentials go to it once, whatever it answers.
type Probe struct {
	cfg    Config
	target target
	tls    *tls.Config
	conn   *ldap.Conn
	nc     net.Conn
	// encryption says how the connection is protected: "ldaps",
	// "StartTLS" or "" (none).
	encryption  string
	passwordKey string
	bindTried   bool
	bound       bool
}

// OIDs a RootDSE lists (RFC 4511 §4.14.1, RFC 4512 §5.1; Active
// Directory's capabilities: [MS-ADTS] 3.1.1.3.4.3,
// https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-adts/).
const (
	OIDStartTLS        = "1.3.6.1.4.1.1466.20037"
	OIDActiveDirectory = "1.2.840.113556.1.4.800"  // LDAP_CAP_ACTIVE_DIRECTORY_OID
	OIDPagedResults    = "1.2.840.113556.1.4.319"  // RFC 2696
	oidADLDS           = "1.2.840.113556.1.4.1851" // LDAP_CAP_ACTIVE_DIRECTORY_ADAM_OID
)

// rootDSEAttributes are the RootDSE attributes a probe reads: operational
// ones are returned only when named.
var rootDSEAttributes = []string{
	"namingContexts", "defaultNamingContext", "rootDomainNamingContext", "configurationNamingContext",
	"schemaNamingContext", "subschemaSubentry", "supportedControl", "supportedExtension",
	"supportedSASLMechanisms", "supportedCapabilities", "supportedLDAPVersion", "vendorName",
	"vendorVersion", "objectClass", "dnsHostName", "isGlobalCatalogReady",
}

// DialProbe connects to the first of cfg.URLs, with TLS verified for
// ldaps:// (ldap:// stays plain until StartTLS), and does not bind. The
// password, if any, is read from ldap.bind_password_file now; passwordKey
// names where it came from in errors, as ldap.bind_password_file does for
// a Source.
func DialProbe(ctx context.Context, cfg Config, passwordKey string) (*Probe, error) {
	d := DefaultConfig()
	if cfg.DialTimeout <= 0 || cfg.RequestTimeout <= 0 {
		cfg.DialTimeout, cfg.RequestTimeout = d.DialTimeout, d.RequestTimeout
	}
	if cfg.PoolSize < 1 {
		cfg.PoolSize = d.PoolSize
	}
	targets, tc, err := cfg.check(false)
	if err != nil {
		return nil, settingsError{err}
	}
	p := &Probe{cfg: cfg, target: targets[0], tls: tc, passwordKey: passwordKey}
	if err := p.dial(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// dial opens the connection: TCP, and TLS for ldaps://.
func (p *Probe) dial(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", p.target.hostout)
	if err != nil {
		return fmt.Errorf("%s: %w", p.target.url, err)
	}
	if p.target.ldaps {
		tlsConn := tls.Client(nc, p.tlsFor())
		if err := tlsConn.HandshakeContext(dctx); err != nil {
			nc.Close()
			return classify(fmt.Errorf("%s: TLS: %w", p.target.url, err), p.passwordKey, p.cfg.BindDN)
		}
		nc, p.encryption = tlsConn, "ldaps"
	}
	p.nc = nc
	p.conn = ldap.NewConn(nc, p.target.ldaps)
	p.conn.Start()
	return nil
}

func (p *Probe) tlsFor() *tls.Config {
	tc := p.tls.Clone()
	if tc.ServerName == "" {
		tc.ServerName = p.target.host
	}
	return tc
}

// URL is the URL the probe connected to.
func (p *Probe) URL() string { return p.target.url }

// Encryption says how the connection is protected: "ldaps", "StartTLS",
// or "" for none.
func (p *Probe) Encryption() string { return p.encryption }

// Loopback reports whether the directory is on this host's loopback.
func (p *Probe) Loopback() bool { return isLoopback(p.target.host) }

// Bound reports whether the probe is bound with the credentials given.
func (p *Probe) Bound() bool { return p.bound }

// ErrProbeClosed: the probe's connection is closed (or lent to a Source).
var ErrProbeClosed = errors.New("the probe's connection is closed")

// errLentConnection: a Probe's Source lost the probe's connection, and
// does not bind again.
var errLentConnection = errors.New("the probe's connection to the directory is gone, and the probe does not bind again")

// deadline bounds one operation by the request timeout.
func (p *Probe) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	deadline, _ := ctx.Deadline()
	_ = p.nc.SetDeadline(deadline)
	p.conn.SetTimeout(time.Until(deadline))
	stop := interruptOn(ctx, p.nc)
	return ctx, func() { stop(); cancel() }
}

// StartTLS upgrades the connection, verifying the certificate. A
// certificate not verified is a configuration error naming ldap.ca_file
// (or ldap.tls_server_name), and the connection is closed. A directory
// that refuses StartTLS leaves go-ldap's connection without its reader:
// the probe connects again, plain, and returns the refusal.
func (p *Probe) StartTLS(ctx context.Context) error {
	if p.conn == nil {
		return ErrProbeClosed
	}
	if p.encryption != "" || p.bindTried {
		return nil
	}
	ctx, done := p.deadline(ctx)
	defer done()
	err := p.conn.StartTLS(p.tlsFor())
	if err == nil {
		p.encryption = "StartTLS"
		return nil
	}
	if strings.Contains(err.Error(), "x509: ") || strings.Contains(err.Error(), "tls: failed to verify") {
		p.Close()
		return classify(fmt.Errorf("%s: StartTLS: %w: %w", p.target.url, errCertificate, err), p.passwordKey, p.cfg.BindDN)
	}
	err = fmt.Errorf("%s: StartTLS: %w", p.target.url, noAnswer(ctx, err))
	p.Close()
	if derr := p.dial(context.WithoutCancel(ctx)); derr != nil {
		return fmt.Errorf("%w; connecting again without it: %w: %w", err, ErrProbeClosed, derr)
	}
	return err
}

// Bind binds with the credentials of the configuration, once: a second
// call does not ask the directory again, whatever the first answer was.
// A refusal is a configuration error with the fix (errors.go).
func (p *Probe) Bind(ctx context.Context) error {
	if p.bindTried {
		return errors.New("the probe binds once: the directory was asked already")
	}
	p.bindTried = true
	if p.cfg.BindDN == "" {
		return errors.New("no bind DN given")
	}
	if p.conn == nil {
		return ErrProbeClosed
	}
	ctx, done := p.deadline(ctx)
	defer done()
	err := p.conn.Bind(p.cfg.BindDN, p.cfg.BindPassword)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		return classify(fmt.Errorf("%s: bind as %s: %w", p.target.url, p.cfg.BindDN, noAnswer(ctx, err)), p.passwordKey, p.cfg.BindDN)
	}
	p.bound = true
	return nil
}

// RootDSE reads the directory's root entry. A directory that does not let
// this client read it (anonymous reads refused) answers with an error or
// an empty entry: both are ErrRootDSEHidden.
func (p *Probe) RootDSE(ctx context.Context) (*Entry, error) {
	entries, err := p.Search(ctx, "", ldap.ScopeBaseObject, "(objectClass=*)", rootDSEAttributes, 1)
	if errors.Is(err, ErrNoAnswer) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRootDSEHidden, err)
	}
	if len(entries) == 0 || len(entries[0].Attributes) == 0 {
		return nil, ErrRootDSEHidden
	}
	return entries[0], nil
}

// ErrRootDSEHidden: the directory did not show its RootDSE to the client.
var ErrRootDSEHidden = errors.New("the directory does not show its RootDSE")

// ErrSettings marks an error of DialProbe in the settings it was given
// (a URL, a CA or password file), found before connecting.
var ErrSettings = errors.New("settings not usable")

type settingsError struct{ error }

func (e settingsError) Is(target error) bool { return target == ErrSettings }
func (e settingsError) Unwrap() error        { return e.error }

// ErrNoAnswer: the directory took the connection but did not answer a
// request within the request timeout (a server that hangs).
var ErrNoAnswer = errors.New("the directory did not answer within the request timeout")

// noAnswer marks err as ErrNoAnswer when the request's time ran out: the
// socket's deadline (the same) may end the read a moment before ctx's
// timer fires, so the deadline is what tells.
func noAnswer(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if dl, ok := ctx.Deadline(); ctx.Err() == nil && (!ok || time.Now().Before(dl)) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNoAnswer, err)
}

// Search runs one search of scope (ldap.ScopeBaseObject, ...) and returns
// at most limit entries; a size limit reached is no error. It waits for
// the whole answer (go-ldap's Search, not SearchAsync, whose message may
// still be open when it returns, and a StartTLS after it fail).
func (p *Probe) Search(ctx context.Context, base string, scope int, filter string, attrs []string, limit int) ([]*Entry, error) {
	if p.conn == nil {
		return nil, ErrProbeClosed
	}
	ctx, done := p.deadline(ctx)
	defer done()
	deadline, _ := ctx.Deadline()
	req := ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, limit,
		int(max(1, time.Until(deadline).Seconds())), false, filter, attrs, nil)
	res, err := p.conn.Search(req)
	var out []*Entry
	if res != nil {
		for _, e := range res.Entries {
			if len(out) < limit {
				out = append(out, toEntry(e))
			}
		}
	}
	switch {
	case ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		return out, nil
	case err != nil:
		return out, fmt.Errorf("%s: search under %q: %w", p.target.url, base, noAnswer(ctx, classifyBaseDN(err)))
	}
	return out, nil
}

// Schema is what a probe read of the directory's schema: the names of its
// object classes and attribute types.
type Schema struct {
	DN string
	// lower-case name -> the name as the schema spells it
	classes, types map[string]string
}

// Class reports whether the schema defines an object class of this name
// (any case), and returns its spelling.
func (s *Schema) Class(name string) (string, bool) {
	n, ok := s.classes[strings.ToLower(name)]
	return n, ok
}

// Type reports whether the schema defines an attribute type of this name
// (any case), and returns its spelling.
func (s *Schema) Type(name string) (string, bool) {
	n, ok := s.types[strings.ToLower(name)]
	return n, ok
}

// Size returns the number of object classes and attribute types.
func (s *Schema) Size() (classes, types int) { return len(s.classes), len(s.types) }

// schemaName finds the NAME of an RFC 4512 definition: NAME 'x' or
// NAME ( 'x' 'y' ).
var schemaName = regexp.MustCompile(`\bNAME\s+(?:'([^']+)'|\(\s*((?:'[^']+'\s*)+)\))`)

// Schema reads the subschema subentry dn (RootDSE's subschemaSubentry).
func (p *Probe) Schema(ctx context.Context, dn string) (*Schema, error) {
	entries, err := p.Search(ctx, dn, ldap.ScopeBaseObject, "(objectClass=*)", []string{"objectClasses", "attributeTypes"}, 1)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no schema entry %q", p.target.url, dn)
	}
	s := &Schema{DN: dn, classes: map[string]string{}, types: map[string]string{}}
	add := func(names map[string]string, defs []string) {
		for _, d := range defs {
			m := schemaName.FindStringSubmatch(d)
			if m == nil {
				continue
			}
			ns := []string{m[1]}
			if m[1] == "" {
				ns = strings.Fields(strings.ReplaceAll(m[2], "'", " "))
			}
			for _, n := range ns {
				names[strings.ToLower(n)] = n
			}
		}
	}
	add(s.classes, entries[0].Values("objectClasses"))
	add(s.types, entries[0].Values("attributeTypes"))
	if len(s.classes)+len(s.types) == 0 {
		return nil, fmt.Errorf("%s: the schema entry %q shows no object classes or attribute types to this client", p.target.url, dn)
	}
	return s, nil
}

// Source returns a Source that looks up over the probe's connection, bound
// as it is, and never dials: a lookup after the connection broke fails
// instead of binding again. cfg must name the probe's URL first; the
// connection passes to the Source, which closes it.
func (p *Probe) Source(cfg Config, attrs []string, log *slog.Logger, m *Metrics) (*Source, error) {
	if p.conn == nil {
		return nil, ErrProbeClosed
	}
	if len(cfg.URLs) == 0 || cfg.URLs[0] != p.target.url {
		return nil, fmt.Errorf("ldap.urls: the probe is connected to %s, not %v", p.target.url, cfg.URLs)
	}
	cfg.URLs, cfg.PoolSize = cfg.URLs[:1], 1
	if cfg.BindPasswordFile == "" && cfg.BindPassword == "" {
		cfg.BindPassword = p.cfg.BindPassword
	}
	s, err := New(cfg, attrs, log, m)
	if err != nil {
		return nil, err
	}
	_ = p.nc.SetDeadline(time.Time{})
	s.lent = true
	s.idle <- &conn{Conn: p.conn, target: 0}
	p.conn = nil
	return s, nil
}

// Close closes the connection, unless a Source has it.
func (p *Probe) Close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// RootDSE facts, read from an entry RootDSE returned.

// Vendor names the directory server from its RootDSE: "Active Directory",
// "Samba Active Directory", "Active Directory LDS", "OpenLDAP", "389
// Directory Server", the RootDSE's vendorName, or "".
func Vendor(root *Entry) string {
	vendor := strings.Join(root.Values("vendorName"), " ")
	caps := root.Values("supportedCapabilities")
	switch {
	case slices.Contains(caps, oidADLDS):
		return "Active Directory LDS"
	case slices.Contains(caps, OIDActiveDirectory) && strings.Contains(strings.ToLower(vendor), "samba"):
		return "Samba Active Directory"
	case slices.Contains(caps, OIDActiveDirectory):
		return "Active Directory"
	case slices.ContainsFunc(root.Values("objectClass"), func(c string) bool { return strings.EqualFold(c, "OpenLDAProotDSE") }):
		return "OpenLDAP"
	case strings.Contains(vendor, "389 Project"), strings.Contains(vendor, "Fedora Project"), strings.Contains(vendor, "Red Hat"):
		return "389 Directory Server"
	}
	return vendor
}

// IsActiveDirectory reports whether the RootDSE is an Active Directory
// domain controller's (Samba's included).
func IsActiveDirectory(root *Entry) bool {
	return slices.Contains(root.Values("supportedCapabilities"), OIDActiveDirectory)
}

// NamingContexts returns the directory's naming contexts, the default one
// (Active Directory's defaultNamingContext) first, without OpenLDAP's
// cn=config and the monitor.
func NamingContexts(root *Entry) []string {
	var out []string
	out = append(out, root.Values("defaultNamingContext")...)
	for _, nc := range root.Values("namingContexts") {
		l := strings.ToLower(nc)
		if l == "cn=config" || l == "cn=monitor" || slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, nc) }) {
			continue
		}
		out = append(out, nc)
	}
	return out
}
