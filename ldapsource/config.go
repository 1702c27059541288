// Package ldapsource looks mailboxes up in an LDAP directory (OpenLDAP,
// Active Directory) through a bounded pool of service-account connections,
// with failover across several URLs, TLS verified by default, and deadlines
// on everything that touches the network. It knows nothing of mail clients.
package ldapsource

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"
)

// Config is the ldap section of the configuration.
type Config struct {
	// URLs are tried in order; the first that answers is used until it fails.
	// An entry dns-srv:DOMAIN stands for the domain controllers DNS names
	// for DOMAIN (srv.go).
	URLs []string `mapstructure:"urls"`
	// DNSServer is the DNS server (host:port) asked for the SRV records of
	// dns-srv: entries and for the addresses of every directory host name;
	// empty means the system's (/etc/resolv.conf).
	DNSServer string `mapstructure:"dns_server"`
	// StartTLS upgrades ldap:// connections before binding.
	StartTLS bool `mapstructure:"start_tls"`
	// CAFile holds PEM certificates to verify the directory's certificate;
	// empty means the system roots.
	CAFile string `mapstructure:"ca_file"`
	// ServerName overrides the name the certificate is checked against.
	ServerName string `mapstructure:"tls_server_name"`
	// InsecureSkipVerify turns certificate checks off. Never in production.
	InsecureSkipVerify bool `mapstructure:"insecure_skip_verify"`

	// Bind is how the service account binds: simple (BindDN and a
	// password; the default) or gssapi (Kerberos, with a keytab and no
	// password: kerberos.go).
	Bind             string `mapstructure:"bind"`
	BindDN           string `mapstructure:"bind_dn"`
	BindPassword     string `mapstructure:"bind_password"`
	BindPasswordFile string `mapstructure:"bind_password_file"`

	// Keytab holds the keys of Principal (default /etc/krb5.keytab, a
	// joined host's, whose machine principal HOST$ binds by default).
	Keytab    string `mapstructure:"keytab"`
	Principal string `mapstructure:"principal"`
	Realm     string `mapstructure:"realm"`
	// KRB5Conf names the realm's KDCs (default /etc/krb5.conf); KDC lists
	// them instead, host or host:port.
	KRB5Conf string   `mapstructure:"krb5_conf"`
	KDC      []string `mapstructure:"kdc"`
	// ServicePrincipal is the directory server's LDAP service principal;
	// default ldap/ and the host name of each URL.
	ServicePrincipal string `mapstructure:"service_principal"`
	// keytabContent is the keytab as New read it, for the digest
	// that remembers a refused keytab (refusals.go).
	keytabContent []byte

	BaseDN string `mapstructure:"base_dn"`
	// Filter is the search filter template; {email}, {local} and {domain}
	// are replaced by the escaped parts of the asked address.
	Filter string `mapstructure:"filter"`

	// StartDegraded lets serve start although the directory check at
	// start-up failed on a configuration error (credentials refused,
	// certificate not verified, TLS required): it then answers from the
	// domain defaults until the directory accepts it. Read by serve; the
	// source itself does not use it.
	StartDegraded bool `mapstructure:"start_degraded"`

	// LockedRetryInterval is how often the service account is tried
	// again while the directory reports it locked out (AD 775) and its
	// credentials are not known to be wrong.
	LockedRetryInterval time.Duration `mapstructure:"locked_retry_interval"`

	DialTimeout    time.Duration `mapstructure:"dial_timeout"`
	RequestTimeout time.Duration `mapstructure:"request_timeout"`
	PoolSize       int           `mapstructure:"pool_size"`
}

// DefaultConfig holds the defaults documented in config.example.yaml. The
// request timeout bounds a whole lookup, dialing included, and stays well
// under the 5 seconds Thunderbird waits for an autoconfig answer.
func DefaultConfig() Config {
	return Config{DialTimeout: 2 * time.Second, RequestTimeout: 3 * time.Second, PoolSize: 8, LockedRetryInterval: DefaultLockedRetryInterval}
}

// target is one parsed directory URL.
type target struct {
	url     string
	hostout string // host:port to dial
	host    string // host name for certificate checks
	ldaps   bool
	srv     *srvSpec // a dns-srv: entry, which stands for the targets DNS names
	via     *srvSpec // the dns-srv: entry whose records named this target
}

// validate checks cfg and returns the parsed targets and TLS settings.
// Errors name the configuration key and the fix.
func (cfg *Config) validate() ([]target, *tls.Config, error) { return cfg.check(true) }

// check is validate; without needBase, an empty base DN is no error (a
// Probe is there to find it).
func (cfg *Config) check(needBase bool) ([]target, *tls.Config, error) {
	if len(cfg.URLs) == 0 {
		return nil, nil, fmt.Errorf("ldap.urls: no directory URL: give e.g. [\"ldaps://ldap.example.com\"]")
	}
	var targets []target
	for i, raw := range cfg.URLs {
		if strings.HasPrefix(strings.ToLower(raw), srvScheme+":") {
			spec, err := cfg.parseSRV(i, raw)
			if err != nil {
				return nil, nil, err
			}
			targets = append(targets, target{url: raw, srv: spec})
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return nil, nil, fmt.Errorf("ldap.urls[%d]: %q is not an LDAP URL like ldaps://host:636", i, raw)
		}
		t := target{url: raw, host: u.Hostname()}
		switch u.Scheme {
		case "ldap":
			t.hostout = hostPort(u, "389")
		case "ldaps":
			t.ldaps, t.hostout = true, hostPort(u, "636")
			if cfg.StartTLS {
				return nil, nil, fmt.Errorf("ldap.start_tls: StartTLS does not apply to %s, which is TLS already: drop one of them", raw)
			}
		default:
			return nil, nil, fmt.Errorf("ldap.urls[%d]: scheme %q not supported: use ldap:// (with start_tls) or ldaps://", i, u.Scheme)
		}
		targets = append(targets, t)
	}
	for _, k := range []struct{ key, value string }{{"ldap.bind_dn", cfg.BindDN}, {"ldap.base_dn", cfg.BaseDN}} {
		if err := noControlCharacter(k.key, k.value); err != nil {
			return nil, nil, err
		}
	}
	if cfg.BaseDN == "" && needBase {
		// The empty DN is the root of the whole forest, which only an
		// Active Directory global catalog searches.
		for i, t := range targets {
			if _, port, _ := net.SplitHostPort(t.hostout); t.srv != nil || port != "3268" && port != "3269" {
				return nil, nil, fmt.Errorf("ldap.base_dn: missing: the subtree to search, e.g. ou=people,dc=example,dc=com "+
					"(empty means the whole forest, which only a global catalog searches: ldap.urls[%d] %s is not on its port 3268 or 3269)", i, t.url)
			}
		}
	}
	if cfg.BindPassword != "" && cfg.BindPasswordFile != "" {
		return nil, nil, fmt.Errorf("ldap.bind_password_file: give the password either in a file or in ldap.bind_password (or MAILBEACON_LDAP_BIND_PASSWORD), not both")
	}
	if cfg.BindPasswordFile != "" {
		b, err := os.ReadFile(cfg.BindPasswordFile)
		if err != nil {
			return nil, nil, passwordFileError(cfg.BindPasswordFile, err)
		}
		cfg.BindPassword = strings.TrimRight(string(b), "\r\n")
		cfg.BindPasswordFile = ""
	}
	if cfg.BindDN != "" && cfg.BindPassword == "" && cfg.Bind != BindGSSAPI {
		return nil, nil, fmt.Errorf("ldap.bind_dn is set but no password: set ldap.bind_password_file or MAILBEACON_LDAP_BIND_PASSWORD")
	}
	if cfg.DialTimeout <= 0 {
		return nil, nil, fmt.Errorf("ldap.dial_timeout: must be positive, e.g. 3s")
	}
	if cfg.RequestTimeout <= 0 {
		return nil, nil, fmt.Errorf("ldap.request_timeout: must be positive, e.g. 5s")
	}
	if err := cfg.checkDNSServer(); err != nil {
		return nil, nil, err
	}
	if cfg.PoolSize < 1 || cfg.PoolSize > 1000 {
		return nil, nil, fmt.Errorf("ldap.pool_size: %d is out of range 1..1000", cfg.PoolSize)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("ldap.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("ldap.ca_file: %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	return targets, tc, nil
}

// noControlCharacter refuses a value with a control character, the trace
// of a YAML double-quoted string: there "EXAMPLE\bind" holds a backspace.
// The value is shown quoted, so that the character is seen, not obeyed.
func noControlCharacter(key, value string) error {
	for i, r := range value {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s: %q holds the control character %U at byte %d: in YAML double quotes a backslash starts an escape "+
				"(\\b is a backspace, \\t a tab, \\n a new line): write the value in single quotes, e.g. 'EXAMPLE\\svc-mailbeacon', or double the backslash", key, value, r, i)
		}
	}
	return nil
}

func hostPort(u *url.URL, defPort string) string {
	port := u.Port()
	if port == "" {
		port = defPort
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// usesTLS reports whether connections to t are encrypted.
func (cfg *Config) usesTLS(t target) bool { return t.ldaps || cfg.StartTLS }

// passwordFileError names the key, the file and the commands that make it
// right: root-owned, mode 0600 (the shipped systemd unit reads it as root
// and hands it to the service as a credential).
func passwordFileError(file string, err error) error {
	create := fmt.Sprintf("install -m 0600 -o root -g root /dev/null %[1]s && printf '%%s\\n' 'the-service-password' > %[1]s", file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("ldap.bind_password_file: %q does not exist: create it, mode 0600 owned by root, holding the service account's password as its first line: %s (the systemd unit reads it as root and hands it to the service as a credential; without the unit, make it readable by the user mailbeacon runs as only) (%w)", file, create, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("ldap.bind_password_file: %q cannot be read by this user (uid %d): run mailbeacon under the systemd unit, which reads it as root, or as root; or make it readable by the user mailbeacon runs as only (chown USER %s; chmod 0600 %s) (%w)", file, os.Getuid(), file, file, err)
	}
	return fmt.Errorf("ldap.bind_password_file: %q: %w", file, err)
}
