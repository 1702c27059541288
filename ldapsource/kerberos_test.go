package ldapsource

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"
)

// kdcSays is a failure to get a ticket as gokrb5 reports the KDC's error.
func kdcSays(text string) error {
	return &kdcError{principal: "HOST$@EXAMPLE.COM", spn: "ldap/dc1.example.com",
		err: errors.New("[Root cause: KDC_Error] KDC_Error: AS Exchange Error: kerberos error response from KDC: " + text)}
}

// TestKerberosErrorWords: every Kerberos failure the KDC or the directory
// reports is told in words naming the key at fault, with its kind and
// whether the keytab is remembered as refused. Clock skew is produced
// here only: gokrb5 takes the time from the system clock, which a test
// does not move.
func TestKerberosErrorWords(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		kind    Kind
		key     string // "" for transient errors: the text names where to look
		words   string
		refusal refusalKind
	}{
		{"clock skew", kdcSays("KRB Error: (37) KRB_AP_ERR_SKEW Clock skew too great"), Configuration, "ldap.bind", "clock", notRefused},
		{"preauth failed", kdcSays("KRB Error: (24) KDC_ERR_PREAUTH_FAILED Pre-authentication information was invalid"), Configuration, "ldap.keytab", "out of date", credentialsRefused},
		{"principal unknown", kdcSays("KRB Error: (6) KDC_ERR_C_PRINCIPAL_UNKNOWN Client not found in Kerberos database"), Configuration, "ldap.principal", "does not know HOST$@EXAMPLE.COM", credentialsRefused},
		{"account revoked", kdcSays("KRB Error: (18) KDC_ERR_CLIENT_REVOKED Clients credentials have been revoked"), Configuration, "ldap.principal", "may not log on", accountLocked},
		{"service principal unknown", kdcSays("KRB Error: (7) KDC_ERR_S_PRINCIPAL_UNKNOWN Server not found in Kerberos database"), Configuration, "ldap.service_principal", "no service principal", notRefused},
		{"encryption types", kdcSays("KRB Error: (14) KDC_ERR_ETYPE_NOSUPP KDC has no support for encryption type"), Configuration, "ldap.keytab", "encryption types", notRefused},
		{"wrong realm", kdcSays("KRB Error: (68) KDC_ERR_WRONG_REALM Reserved for future use"), Configuration, "ldap.realm", "another realm", notRefused},
		{"key does not open the answer", kdcSays("AS Exchange Error: AS_REP is not valid or client password/keytab incorrect"), Configuration, "ldap.keytab", "out of date", credentialsRefused},
		{"no KDC known", &kdcError{err: errors.New("[Root cause: Networking_Error] no KDCs defined in configuration for realm EXAMPLE.COM")}, Configuration, "ldap.kdc", "no KDC", notRefused},
		{"KDC unreachable", &kdcError{err: errors.New("[Root cause: Networking_Error] Networking_Error: AS Exchange Error: failed sending AS_REQ to KDC")}, Transient, "", "ldap.kdc", notRefused},
		{"sign or seal required", ldap.NewError(ldap.LDAPResultStrongAuthRequired, errors.New("SASL:[GSSAPI]: Sign or Seal are required.")), Configuration, "ldap.bind", "allow_sasl_over_tls", notRefused},
		{"service ticket refused", ldap.NewError(ldap.LDAPResultInvalidCredentials, errors.New("80090308: LdapErr")), Configuration, "ldap.service_principal", "refused the service ticket", credentialsRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyKerberos(tc.err, "HOST$@EXAMPLE.COM", "/etc/krb5.keytab")
			if got := KindOf(err); got != tc.kind {
				t.Errorf("kind %v, want %v: %v", got, tc.kind, err)
			}
			if ce := ConfigurationError(err); tc.key != "" && (ce == nil || ce.Key != tc.key) {
				t.Errorf("key of %v, want %s", err, tc.key)
			}
			if !strings.Contains(err.Error(), tc.words) || !strings.Contains(err.Error(), "ldap.") {
				t.Errorf("%v: want words %q and a key", err, tc.words)
			}
			if got := kindOfRefusal(tc.err); got != tc.refusal {
				t.Errorf("refusal kind %v, want %v", got, tc.refusal)
			}
		})
	}
}

// writeKeytab writes a keytab holding a key for each principal.
func writeKeytab(t *testing.T, principals ...string) string {
	t.Helper()
	kt := keytab.New()
	for _, p := range principals {
		name, realm, _ := strings.Cut(p, "@")
		if err := kt.AddEntry(name, realm, "secret", time.Now(), 1, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
			t.Fatal(err)
		}
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "krb5.keytab")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestKerberosConfig: the keys of a GSSAPI bind, checked before any bind,
// with the defaults: the keytab's machine principal, ldap/ and the URL's
// host name.
// testKerberos validates c, as New does, and makes its Kerberos client,
// closed when the test ends.
func testKerberos(t *testing.T, c *Config) *kerberos {
	t.Helper()
	targets, _, err := c.validate()
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.kerberos(targets, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.close)
	return k
}

func TestKerberosConfig(t *testing.T) {
	kt := writeKeytab(t, "HTTP/web.example.com@EXAMPLE.COM", "WEB$@EXAMPLE.COM")
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	if err := os.WriteFile(conf, []byte("[libdefaults]\n default_realm = EXAMPLE.COM\n[realms]\n EXAMPLE.COM = {\n  kdc = dc1.example.com\n }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	base := func() Config {
		c := DefaultConfig()
		c.URLs, c.BaseDN, c.Bind, c.Keytab, c.KDC = []string{"ldaps://dc1.example.com", "ldaps://dc2.example.com:636"}, "dc=example,dc=com", BindGSSAPI, kt, []string{"dc1.example.com"}
		return c
	}
	t.Run("defaults", func(t *testing.T) {
		c := base()
		k := testKerberos(t, &c)
		if k.name() != "WEB$@EXAMPLE.COM" || strings.Join(k.spns, " ") != "ldap/dc1.example.com ldap/dc2.example.com" {
			t.Errorf("principal %s, service principals %v", k.name(), k.spns)
		}
		if c.Principal != "WEB$@EXAMPLE.COM" || len(c.keytabContent) == 0 {
			t.Errorf("Principal %q, keytab read %d bytes", c.Principal, len(c.keytabContent))
		}
	})
	for _, tc := range []struct {
		name   string
		change func(*Config)
		key    string
		words  string
	}{
		{"simple bind with a gssapi key", func(c *Config) { c.Bind, c.BindDN, c.BindPassword = "", "cn=svc", "pw" }, "ldap.keytab", "ldap.bind: gssapi only"},
		{"unknown method", func(c *Config) { c.Bind = "kerberos" }, "ldap.bind", "simple"},
		{"principal elsewhere", func(c *Config) { c.Principal = "WEB$@OTHER.COM" }, "ldap.principal", "WEB$@EXAMPLE.COM"},
		{"realms differ", func(c *Config) { c.Principal, c.Realm = "WEB$@EXAMPLE.COM", "OTHER.COM" }, "ldap.realm", "differs"},
		{"kdc and krb5_conf", func(c *Config) { c.KRB5Conf = conf }, "ldap.kdc", "not both"},
		{"kdc malformed", func(c *Config) { c.KDC = []string{"dc1 example com"} }, "ldap.kdc[0]", "not a KDC address"},
		{"krb5_conf missing", func(c *Config) { c.KDC, c.KRB5Conf = nil, filepath.Join(t.TempDir(), "absent.conf") }, "ldap.krb5_conf", "ldap.kdc"},
		{"keytab unreadable", func(c *Config) { c.Keytab = t.TempDir() }, "ldap.keytab", "is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(&c)
			_, err := New(c, nil, nil, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tc.key+":") || !strings.Contains(err.Error(), tc.words) {
				t.Errorf("New: %v, want %s: ... %s", err, tc.key, tc.words)
			}
		})
	}
}

// TestKerberosDigest: a keytab exported again is new credentials; the
// same keytab under another name is not.
func TestKerberosDigest(t *testing.T) {
	r := NewRefusals()
	a := Config{URLs: []string{"ldaps://dc1.example.com"}, Bind: BindGSSAPI, Principal: "WEB$@EXAMPLE.COM", keytabContent: []byte("key one")}
	b := a
	b.Keytab = "/elsewhere/krb5.keytab"
	c := a
	c.keytabContent = []byte("key two")
	if r.digest(&a) != r.digest(&b) {
		t.Error("the keytab's file name changed the digest")
	}
	if r.digest(&a) == r.digest(&c) {
		t.Error("a new keytab has the digest of the old one")
	}
}

// TestKerberosKDCHang: a KDC that takes requests and never answers holds
// no bind beyond its deadline, and concurrent binds share one request
// to it rather than each sending their own.
func TestKerberosKDCHang(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var requests atomic.Int32
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			requests.Add(1) // and no answer
		}
	}()
	c := DefaultConfig()
	c.URLs, c.BaseDN, c.Bind, c.ServicePrincipal = []string{"ldaps://dc1.example.com"}, "dc=example,dc=com", BindGSSAPI, "ldap/dc1.example.com"
	c.Keytab, c.KDC = writeKeytab(t, "WEB$@EXAMPLE.COM"), []string{pc.LocalAddr().String()}
	k := testKerberos(t, &c)
	var wg sync.WaitGroup
	start := time.Now()
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if _, err := k.ticket(ctx, "ldap/dc1.example.com"); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("ticket from a KDC that does not answer: %v", err)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("20 binds waited %v for a KDC that does not answer, past their 300ms deadline", d)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("the KDC got %d requests from 20 concurrent binds, want 1", n)
	}
}
