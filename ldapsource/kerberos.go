package ldapsource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/go-ldap/ldap/v3/gssapi"
	krbclient "github.com/jcmturner/gokrb5/v8/client"
	krbconfig "github.com/jcmturner/gokrb5/v8/config"
	"github.com/jcmturner/gokrb5/v8/keytab"
)

// The values of ldap.bind, and the defaults of a GSSAPI bind.
const (
	BindSimple      = "simple"
	BindGSSAPI      = "gssapi"
	DefaultKeytab   = "/etc/krb5.keytab"
	DefaultKRB5Conf = "/etc/krb5.conf"
)

// defaultRenewLifetime is how long tickets are asked to stay renewable
// when the Kerberos configuration does not say (renew_lifetime): Active
// Directory's default maximum.
const defaultRenewLifetime = 7 * 24 * time.Hour

// kerberos is what a GSSAPI bind as the service account needs: the
// principal and its keys from the keytab, the realm's KDCs, and one
// gokrb5 client per Source. The client keeps the ticket-granting ticket
// and the service tickets it got, and gets new ones before they end
// (gokrb5 renews the TGT when less than a sixth of its life is left, in
// the background and before each ticket request, and asks for a service
// ticket again once the cached one has ended; fetch logs in anew when the
// TGT ended unrenewed), so that a connection the pool dials hours later
// binds with a valid ticket.
type kerberos struct {
	principal string            // without the realm, e.g. HOST$
	realm     string            // e.g. EXAMPLE.COM
	spns      []string          // the LDAP service principal, per target
	login     func() *krbClient // a new client, with no tickets yet

	mu       sync.Mutex
	client   *krbClient
	closed   bool
	fetching map[string]*ticketFetch // by service principal: one request to the KDC at a time
}

// ticketFetch is a request for a service ticket under way; binds that
// need the same ticket wait for it rather than ask again.
type ticketFetch struct {
	done   chan struct{}
	client *krbClient // holding the ticket
	err    error
}

// krbClient is a gokrb5 client that is destroyed (its background renewal
// stopped, its tickets forgotten) only once nothing works with it:
// gokrb5's Destroy races with a request under way.
type krbClient struct {
	*gssapi.Client
	use sync.RWMutex // read-held while the client works
}

// getServiceTicket is GetServiceTicket, the client held in use.
func (c *krbClient) getServiceTicket(spn string) error {
	c.use.RLock()
	defer c.use.RUnlock()
	_, _, err := c.GetServiceTicket(spn)
	return err
}

// destroy destroys the client once the work under way with it has
// ended, without waiting for that. Used afterwards, it fails.
func (c *krbClient) destroy() {
	go func() {
		c.use.Lock()
		defer c.use.Unlock()
		c.Destroy()
	}()
}

// name is the principal with its realm, as errors and logs show it.
func (k *kerberos) name() string { return k.principal + "@" + k.realm }

// kerberos checks the keys of a GSSAPI bind and returns what binds need,
// or nil for a simple bind. It reads the keytab (kept in cfg for the
// refusals' digest) and the Kerberos configuration. Errors name the key.
func (cfg *Config) kerberos(targets []target, log *slog.Logger) (*kerberos, error) {
	if gssapi, err := cfg.checkBindMethod(targets); !gssapi || err != nil {
		return nil, err
	}
	if cfg.Keytab == "" {
		cfg.Keytab = DefaultKeytab
	}
	kt, err := cfg.readKeytab()
	if err != nil {
		return nil, err
	}
	k := &kerberos{}
	if k.principal, k.realm, err = cfg.principal(kt); err != nil {
		return nil, err
	}
	conf, err := cfg.krb5Config(k.realm)
	if err != nil {
		return nil, err
	}
	conf.LibDefaults.DefaultRealm = k.realm
	if conf.LibDefaults.RenewLifetime == 0 {
		// Renewable tickets are renewed with the ticket itself: gokrb5's
		// background renewal then never sends the keytab's key, which
		// only binds do, through the bind gate (a key rotated under a
		// running server is sent once, not once per renewal attempt).
		conf.LibDefaults.RenewLifetime = defaultRenewLifetime
	}
	if k.spns, err = cfg.servicePrincipals(targets); err != nil {
		return nil, err
	}
	// No FAST armour: Active Directory's KDC answers a plain AS-REQ, and
	// gokrb5 has no armour ticket to give without a password.
	settings := []func(*krbclient.Settings){krbclient.DisablePAFXFAST(true)}
	if log.Enabled(context.Background(), slog.LevelDebug) {
		settings = append(settings, krbclient.Logger(slog.NewLogLogger(log.With("component", "kerberos").Handler(), slog.LevelDebug)))
	}
	k.login = func() *krbClient {
		return &krbClient{Client: &gssapi.Client{Client: krbclient.NewWithKeytab(k.principal, k.realm, kt, conf, settings...)}}
	}
	k.client = k.login()
	return k, nil
}

// checkBindMethod checks ldap.bind and the keys that go with it, and
// reports whether it is gssapi.
func (cfg *Config) checkBindMethod(targets []target) (gssapi bool, err error) {
	switch cfg.Bind {
	case "", BindSimple:
		for _, k := range []struct{ key, value string }{{"ldap.keytab", cfg.Keytab}, {"ldap.principal", cfg.Principal}, {"ldap.realm", cfg.Realm},
			{"ldap.krb5_conf", cfg.KRB5Conf}, {"ldap.service_principal", cfg.ServicePrincipal}, {"ldap.kdc", strings.Join(cfg.KDC, " ")}} {
			if k.value != "" {
				return false, fmt.Errorf("%s: applies to ldap.bind: gssapi only: set ldap.bind: gssapi, or remove %s", k.key, k.key)
			}
		}
		return false, nil
	case BindGSSAPI:
	default:
		return false, fmt.Errorf("ldap.bind: %q is not a bind method: give simple (ldap.bind_dn and a password) or gssapi (Kerberos, with ldap.keytab)", cfg.Bind)
	}
	for _, k := range []struct{ key, value string }{{"ldap.bind_dn", cfg.BindDN}, {"ldap.bind_password", cfg.BindPassword}, {"ldap.bind_password_file", cfg.BindPasswordFile}} {
		if k.value != "" {
			env := "MAILBEACON_" + strings.ToUpper(strings.ReplaceAll(k.key, ".", "_"))
			return true, fmt.Errorf("%s: ldap.bind: gssapi binds as the keytab's principal (ldap.principal), with no password: remove %s from the configuration and %s from the environment "+
				"(the shipped systemd unit sets MAILBEACON_LDAP_BIND_PASSWORD_FILE: drop it with systemctl edit, as README's Kerberos section shows)", k.key, k.key, env)
		}
	}
	for i, t := range targets {
		if !cfg.usesTLS(t) {
			return true, fmt.Errorf("ldap.start_tls: ldap.urls[%d] %s is not encrypted: a GSSAPI bind negotiates no SASL security layer (signing or sealing), so the connection must be TLS: use ldaps:// or set ldap.start_tls: true", i, t.url)
		}
	}
	return true, nil
}

// readKeytab reads ldap.keytab, and keeps its content for the digest.
func (cfg *Config) readKeytab() (*keytab.Keytab, error) {
	b, err := os.ReadFile(cfg.Keytab)
	if err != nil {
		return nil, keytabFileError(cfg.Keytab, err)
	}
	kt := keytab.New()
	if err := kt.Unmarshal(b); err != nil || len(kt.Entries) == 0 {
		if err == nil {
			err = errors.New("no keys")
		}
		return nil, fmt.Errorf("ldap.keytab: %q is not a keytab holding keys (%v): export it again (samba-tool domain exportkeytab, ktpass, or adcli on a joined host)", cfg.Keytab, err)
	}
	cfg.keytabContent = b
	return kt, nil
}

// servicePrincipals returns the LDAP service principal of each target:
// ldap.service_principal, or ldap/ and the URL's host name.
func (cfg *Config) servicePrincipals(targets []target) ([]string, error) {
	var spns []string
	for i, t := range targets {
		spn := cfg.ServicePrincipal
		if spn == "" {
			if net.ParseIP(t.host) != nil {
				return nil, fmt.Errorf("ldap.service_principal: ldap.urls[%d] %s names the server by its address, and Kerberos needs its host name: "+
					"set ldap.service_principal to the server's LDAP service principal, e.g. ldap/dc1.example.com (setspn -L or samba-tool spn list lists a DC's), or name the server by host name in ldap.urls", i, t.url)
			}
			spn = "ldap/" + t.host
		}
		spns = append(spns, spn)
	}
	return spns, nil
}

// principal returns ldap.principal split into name and realm, or by
// default the keytab's first machine principal (NAME$, as a host joined
// to Active Directory holds it), else its first principal; and checks
// that the keytab holds it. cfg.Principal is set to the result.
func (cfg *Config) principal(kt *keytab.Keytab) (name, realm string, err error) {
	name, realm = cfg.Principal, cfg.Realm
	if n, r, ok := strings.Cut(name, "@"); ok {
		name, realm = n, r
		if cfg.Realm != "" && !strings.EqualFold(cfg.Realm, r) {
			return "", "", fmt.Errorf("ldap.realm: %q differs from the realm of ldap.principal %q: give one of them", cfg.Realm, cfg.Principal)
		}
	}
	var held []string
	for _, e := range kt.Entries {
		if p := strings.Join(e.Principal.Components, "/") + "@" + e.Principal.Realm; len(held) < 8 && !containsFold(held, p) {
			held = append(held, p)
		}
	}
	found := false
	for _, e := range kt.Entries {
		n := strings.Join(e.Principal.Components, "/")
		if realm != "" && !strings.EqualFold(realm, e.Principal.Realm) {
			continue
		}
		if cfg.Principal == "" {
			if !found || len(e.Principal.Components) == 1 && strings.HasSuffix(n, "$") && !strings.HasSuffix(name, "$") {
				name, found = n, true
				realm = e.Principal.Realm
			}
			continue
		}
		if strings.EqualFold(n, name) {
			name, found = n, true
			if realm == "" {
				realm = e.Principal.Realm
			}
			break
		}
	}
	if !found {
		want := name
		if realm != "" {
			want += "@" + realm
		}
		if want == "" {
			want = "a principal of realm " + cfg.Realm
		}
		return "", "", fmt.Errorf("ldap.principal: %q is not in ldap.keytab %q, which holds %s: set ldap.principal to one of these, or export the principal's keys into the keytab", want, cfg.Keytab, strings.Join(held, ", "))
	}
	realm = strings.ToUpper(realm)
	cfg.Principal = name + "@" + realm
	return name, realm, nil
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// krb5Config returns the Kerberos configuration: made from ldap.kdc for
// realm when given, else read from ldap.krb5_conf (default
// /etc/krb5.conf).
func (cfg *Config) krb5Config(realm string) (*krbconfig.Config, error) {
	if len(cfg.KDC) > 0 {
		if cfg.KRB5Conf != "" {
			return nil, fmt.Errorf("ldap.kdc: give the KDCs either in ldap.kdc or through ldap.krb5_conf, not both")
		}
		var b strings.Builder
		fmt.Fprintf(&b, "[libdefaults]\n default_realm = %s\n dns_lookup_kdc = false\n[realms]\n %s = {\n", realm, realm)
		for i, kdc := range cfg.KDC {
			host, port, err := net.SplitHostPort(kdc)
			if err != nil {
				host, port = kdc, "88"
			}
			if n, err := strconv.Atoi(port); host == "" || strings.ContainsAny(host, " \t{}=/") || err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("ldap.kdc[%d]: %q is not a KDC address like dc1.example.com or dc1.example.com:88", i, kdc)
			}
			fmt.Fprintf(&b, "  kdc = %s\n", net.JoinHostPort(host, port))
		}
		b.WriteString(" }\n")
		return krbconfig.NewFromString(b.String())
	}
	file := cfg.KRB5Conf
	key := "ldap.krb5_conf"
	if file == "" {
		file = DefaultKRB5Conf
	}
	if _, err := os.Stat(file); err != nil {
		return nil, fmt.Errorf("%s: %q: %w: give the file that names the realm's KDCs, or list them in ldap.kdc", key, file, err)
	}
	conf, err := krbconfig.Load(file)
	var unsupported krbconfig.UnsupportedDirective
	if errors.As(err, &unsupported) {
		err = nil // a directive gokrb5 does not use, e.g. of Kerberos 4
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w: fix the file, or list the KDCs in ldap.kdc", key, file, err)
	}
	return conf, nil
}

// keytabFileError names the key, the file and how to get a keytab.
func keytabFileError(file string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("ldap.keytab: %q does not exist: export the service account's keys into it (samba-tool domain exportkeytab %s --principal=NAME; on Windows ktpass), "+
			"or join this host to the domain (realm join, adcli join), which writes /etc/krb5.keytab with its machine principal HOST$ (%w)", file, file, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("ldap.keytab: %q cannot be read by this user (uid %d): let the user mailbeacon runs as read it, and nobody else (e.g. a copy with chown USER and chmod 0600), or run it as root (%w)", file, os.Getuid(), err)
	}
	return fmt.Errorf("ldap.keytab: %q: %w", file, err)
}

// bind gets a service ticket for spn, then binds lc with it.
func (k *kerberos) bind(ctx context.Context, lc *ldap.Conn, spn string) error {
	cl, err := k.ticket(ctx, spn)
	if err != nil {
		return err
	}
	// The ticket is cached: GSSAPIBind takes it from there.
	cl.use.RLock()
	defer cl.use.RUnlock()
	return lc.GSSAPIBind(cl.Client, spn, "")
}

// ticket makes sure a client holds a valid service ticket for spn, asking
// the KDC if it does not, and returns that client. gokrb5 waits for a KDC
// up to its own timeouts, which ctx cannot shorten: the request runs on,
// one per service principal, and the caller stops waiting when ctx ends.
func (k *kerberos) ticket(ctx context.Context, spn string) (*krbClient, error) {
	k.mu.Lock()
	f := k.fetching[spn]
	if f == nil {
		f = &ticketFetch{done: make(chan struct{})}
		if k.fetching == nil {
			k.fetching = map[string]*ticketFetch{}
		}
		k.fetching[spn] = f
		cl := k.client
		go func() {
			f.client, f.err = k.fetch(cl, spn)
			k.mu.Lock()
			delete(k.fetching, spn)
			k.mu.Unlock()
			close(f.done)
		}()
	}
	k.mu.Unlock()
	select {
	case <-f.done:
		if f.err != nil {
			return nil, &kdcError{principal: k.name(), spn: spn, err: f.err}
		}
		return f.client, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("asking the KDC of %s for a ticket to %s: %w", k.realm, spn, context.Cause(ctx))
	}
}

// fetch gets a service ticket for spn with cl. A ticket-granting ticket
// that ended before it was renewed (the KDC did not answer in time) is
// one gokrb5 would try to renew at every request, in vain: then a new
// client logs in with the keytab, once, within the caller's bind.
func (k *kerberos) fetch(cl *krbClient, spn string) (*krbClient, error) {
	err := cl.getServiceTicket(spn)
	if code, _ := krbCode(err); code != krbTktExpired {
		return cl, err
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return cl, err
	}
	if k.client == cl {
		k.client = k.login()
		cl.destroy()
	}
	cl = k.client
	k.mu.Unlock()
	err = cl.getServiceTicket(spn)
	return cl, err
}

// close ends the client's background renewal and forgets its tickets.
func (k *kerberos) close() {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	k.client.destroy()
}

// kdcError is a failure to get a ticket from the KDC.
type kdcError struct {
	principal, spn string
	err            error
}

func (e *kdcError) Error() string {
	return fmt.Sprintf("getting a ticket to %s as %s: %v", e.spn, e.principal, e.err)
}

func (e *kdcError) Unwrap() error { return e.err }

// krbErrorCode finds a Kerberos error code and name in gokrb5's text,
// e.g. "KRB Error: (24) KDC_ERR_PREAUTH_FAILED": gokrb5 keeps the KDC's
// error as text only.
var krbErrorCode = regexp.MustCompile(`KRB Error: \((\d+)\) ([A-Z0-9_]+)`)

// Kerberos error codes (RFC 4120 §7.5.9) that mean something to the
// service account's configuration.
const (
	krbCPrincipalUnknown = 6
	krbSPrincipalUnknown = 7
	krbETypeNoSupp       = 14
	krbClientRevoked     = 18
	krbPreauthFailed     = 24
	krbTktExpired        = 32
	krbSkew              = 37
	krbWrongRealm        = 68
)

// krbCode returns the Kerberos error code and name in err, if any.
func krbCode(err error) (int, string) {
	var ke *kdcError
	if err == nil || !errors.As(err, &ke) && !strings.Contains(err.Error(), "KRB Error") {
		return 0, ""
	}
	m := krbErrorCode.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, ""
	}
	n, _ := strconv.Atoi(m[1])
	return n, m[2]
}

// kerberosRefusal sorts a failed GSSAPI bind as kindOfRefusal does a
// simple one: the KDC refused the keytab's key or does not know the
// principal (never asked again with the same keytab), or the account may
// not log on now (disabled, expired or locked out: Active Directory does
// not tell these apart in KDC_ERR_CLIENT_REVOKED; asked again once per
// ldap.locked_retry_interval).
func kerberosRefusal(err error) refusalKind {
	switch code, _ := krbCode(err); code {
	case krbPreauthFailed, krbCPrincipalUnknown:
		return credentialsRefused
	case krbClientRevoked:
		return accountLocked
	}
	var ke *kdcError
	if errors.As(err, &ke) && strings.Contains(err.Error(), "client password/keytab incorrect") {
		return credentialsRefused // a KDC that asks no pre-authentication
	}
	return notRefused
}

// classifyKerberos turns a failed GSSAPI bind into an *Error naming the
// key at fault when it is a configuration error; a KDC that does not
// answer is transient, and its error names where the KDCs come from.
func classifyKerberos(err error, principal, keytabFile string) error {
	if err == nil || ConfigurationError(err) != nil {
		return err
	}
	cfg := func(key, reason, fix string) error {
		return &Error{Kind: Configuration, Key: key, Reason: reason, Fix: fix, Err: err}
	}
	code, name := krbCode(err)
	switch code {
	case krbPreauthFailed:
		return cfg("ldap.keytab", fmt.Sprintf("the KDC refused the key of %s in %s (%s: the keytab is out of date, e.g. the account's password or the machine's key changed since it was exported)", principal, keytabFile, name),
			"export the account's current keys into ldap.keytab (samba-tool domain exportkeytab, ktpass; on a joined host adcli update or realm join again); mailbeacon does not try this keytab again until its content changes")
	case krbCPrincipalUnknown:
		return cfg("ldap.principal", fmt.Sprintf("the KDC does not know %s (%s)", principal, name),
			"set ldap.principal to an account the directory holds (a computer account is NAME$), with ldap.realm its realm")
	case krbClientRevoked:
		return cfg("ldap.principal", fmt.Sprintf("the KDC says %s may not log on: disabled, expired or locked out (%s)", principal, name),
			"enable or unlock the account in the directory")
	case krbSkew:
		return cfg("ldap.bind", fmt.Sprintf("this host's clock and the KDC's differ by more than Kerberos allows (%s, 5 minutes by default)", name),
			"synchronise this host's clock with the domain controllers (chrony, systemd-timesyncd, ntpd)")
	case krbSPrincipalUnknown:
		return cfg("ldap.service_principal", fmt.Sprintf("the KDC knows no service principal by that name (%s)", name),
			"set ldap.service_principal to the directory server's LDAP service principal, e.g. ldap/dc1.example.com (setspn -L or samba-tool spn list lists a DC's), or name the server in ldap.urls by the host name its principal has")
	case krbETypeNoSupp:
		return cfg("ldap.keytab", fmt.Sprintf("the KDC takes none of the encryption types of the keys in %s (%s)", keytabFile, name),
			"export the keys again with AES types (aes256-cts-hmac-sha1-96)")
	case krbWrongRealm:
		return cfg("ldap.realm", fmt.Sprintf("the KDC serves another realm (%s)", name), "set ldap.realm, or the realm of ldap.principal, to the realm of the directory's domain, in capitals")
	}
	var ke *kdcError
	text := err.Error()
	switch {
	case errors.As(err, &ke) && strings.Contains(text, "client password/keytab incorrect"):
		return cfg("ldap.keytab", fmt.Sprintf("the KDC's answer does not open with the key of %s in %s: the keytab is out of date", principal, keytabFile),
			"export the account's current keys into ldap.keytab; mailbeacon does not try this keytab again until its content changes")
	case errors.As(err, &ke) && strings.Contains(text, "no KDCs defined") || strings.Contains(text, "no KDC SRV records"):
		return cfg("ldap.kdc", "no KDC is known for the realm", "list the realm's KDCs in ldap.kdc, or in the [realms] section of ldap.krb5_conf, or set dns_lookup_kdc = true there")
	case errors.As(err, &ke) && strings.Contains(text, "Networking_Error"):
		return fmt.Errorf("no KDC of the realm answered (ldap.kdc, or the realm's kdc in ldap.krb5_conf): %w", err)
	case ldap.IsErrorWithCode(err, ldap.LDAPResultStrongAuthRequired):
		return cfg("ldap.bind", "the directory requires a SASL security layer (signing or sealing) even over TLS, which mailbeacon's GSSAPI bind does not negotiate",
			"let the directory take GSSAPI binds over TLS without one: Active Directory does; on Samba set \"ldap server require strong auth = allow_sasl_over_tls\"")
	case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
		return cfg("ldap.service_principal", "the directory server refused the service ticket (LDAP 49): the ticket is for another server's principal, or the server's own keys changed",
			"set ldap.service_principal to this server's LDAP service principal (ldap/ its host name)")
	}
	return err
}
