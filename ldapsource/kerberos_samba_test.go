package ldapsource_test

// GSSAPI binds against the Samba DC's KDC (package sambatest): they skip
// when Samba is not installed, and fail instead when CI=true.

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// krbConfig is a GSSAPI configuration for the DC: the keytab, the DC's
// KDC, and its LDAP service principal (the URLs hold its address, which
// names no principal). No bind DN and no password.
func krbConfig(srv *sambatest.Server, keytabFile string) ldapsource.Config {
	return ldapsource.Config{
		URLs:             []string{srv.LDAPSURL},
		CAFile:           srv.CAFile,
		Bind:             ldapsource.BindGSSAPI,
		Keytab:           keytabFile,
		KDC:              []string{srv.KDC},
		Realm:            sambatest.Realm,
		ServicePrincipal: sambatest.ServicePrincipal,
		BaseDN:           sambatest.BaseDN,
		Filter:           adFilter,
		DialTimeout:      5 * time.Second,
		RequestTimeout:   8 * time.Second,
		PoolSize:         4,
	}
}

// wrongKeytab writes a keytab for principal (name@REALM) whose key comes
// from a password the directory never had: a keytab out of date.
func wrongKeytab(t *testing.T, principal string) string {
	t.Helper()
	name, realm, _ := strings.Cut(principal, "@")
	kt := keytab.New()
	if err := kt.AddEntry(name, realm, "not-the-machine-password", time.Now(), 2, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		t.Fatal(err)
	}
	b, err := kt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "stale.keytab")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestKerberosBindSamba binds as the computer account MAILBEACON$ with a
// keytab exported from the DC, over ldaps:// and StartTLS, and finds a
// user. Nothing holds a password: not the configuration, not a file.
func TestKerberosBindSamba(t *testing.T) {
	srv := sambatest.DC(t)
	kt := srv.ExportKeytab(t, sambatest.MachinePrincipal)
	for _, tc := range []struct {
		name      string
		url       string
		startTLS  bool
		principal string
		kdc       bool // ldap.kdc, else a krb5.conf
	}{
		{"ldaps, principal from the keytab, ldap.kdc", srv.LDAPSURL, false, "", true},
		{"StartTLS, ldap.principal, krb5.conf", srv.URL, true, sambatest.MachinePrincipal, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := krbConfig(srv, kt)
			cfg.URLs, cfg.StartTLS, cfg.Principal = []string{tc.url}, tc.startTLS, tc.principal
			if !tc.kdc {
				conf := filepath.Join(t.TempDir(), "krb5.conf")
				text := "[libdefaults]\n default_realm = " + sambatest.Realm + "\n[realms]\n " + sambatest.Realm + " = {\n  kdc = " + srv.KDC + "\n }\n"
				if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				cfg.KDC, cfg.Realm, cfg.KRB5Conf = nil, "", conf
			}
			if cfg.BindDN != "" || cfg.BindPassword != "" || cfg.BindPasswordFile != "" {
				t.Fatal("the configuration holds a bind DN or password")
			}
			src := adSource(t, cfg)
			if err := src.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			e, err := adLookup(src, "alice@example.test")
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			if e.DN != sambatest.UserDN("asmith") {
				t.Errorf("DN %q, want asmith's", e.DN)
			}
		})
	}
	// The keytab is the only secret on disk, and it holds keys, not a
	// password.
	if b, err := os.ReadFile(kt); err != nil || len(b) == 0 || strings.Contains(string(b), sambatest.ServicePassword) {
		t.Errorf("keytab %s: %v", kt, err)
	}
}

// TestKerberosErrorsSamba: each way a GSSAPI configuration goes wrong is
// told in words that name the key at fault, at New or at the first bind.
func TestKerberosErrorsSamba(t *testing.T) {
	srv := sambatest.DC(t)
	kt := srv.ExportKeytab(t, sambatest.MachinePrincipal)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.keytab")
	if err := os.WriteFile(corrupt, []byte("\x05\x02not a keytab at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*ldapsource.Config)
		atNew  bool   // refused by New, before any bind
		key    string // the key the error names
		words  string
		kind   ldapsource.Kind
	}{
		{"keytab missing", func(c *ldapsource.Config) { c.Keytab = filepath.Join(dir, "absent.keytab") }, true, "ldap.keytab", "samba-tool domain exportkeytab", ldapsource.Configuration},
		{"keytab corrupt", func(c *ldapsource.Config) { c.Keytab = corrupt }, true, "ldap.keytab", "is not a keytab", ldapsource.Configuration},
		{"principal not in the keytab", func(c *ldapsource.Config) { c.Principal = "nobody$@" + sambatest.Realm }, true, "ldap.principal", "MAILBEACON$@EXAMPLE.TEST", ldapsource.Configuration},
		{"principal unknown to the KDC", func(c *ldapsource.Config) { c.Keytab = wrongKeytab(t, "ghost$@"+sambatest.Realm) }, false, "ldap.principal", "KDC_ERR_C_PRINCIPAL_UNKNOWN", ldapsource.Configuration},
		{"service principal unknown", func(c *ldapsource.Config) { c.ServicePrincipal = "ldap/nowhere.example.test" }, false, "ldap.service_principal", "KDC_ERR_S_PRINCIPAL_UNKNOWN", ldapsource.Configuration},
		{"service principal missing for an address", func(c *ldapsource.Config) { c.ServicePrincipal = "" }, true, "ldap.service_principal", "host name", ldapsource.Configuration},
		{"no TLS", func(c *ldapsource.Config) { c.URLs = []string{srv.URL} }, true, "ldap.start_tls", "security layer", ldapsource.Configuration},
		{"KDC unreachable", func(c *ldapsource.Config) { c.KDC = []string{strings.TrimPrefix(closedPortURL(t), "ldap://")} }, false, "ldap.kdc", "no KDC of the realm answered", ldapsource.Transient},
		{"bind DN beside gssapi", func(c *ldapsource.Config) { c.BindDN = sambatest.ServiceDN }, true, "ldap.bind_dn", "binds as the keytab's principal", ldapsource.Configuration},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := krbConfig(srv, kt)
			tc.change(&cfg)
			src, err := ldapsource.New(cfg, adAttrs, nil, nil)
			if tc.atNew {
				if err == nil {
					src.Close()
					t.Fatal("New accepted the configuration")
				}
			} else {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer src.Close()
				err = src.Ping(context.Background())
				if err == nil {
					t.Fatal("Ping worked")
				}
				if got := ldapsource.KindOf(err); got != tc.kind {
					t.Errorf("kind %v, want %v: %v", got, tc.kind, err)
				}
				if ce := ldapsource.ConfigurationError(err); tc.kind == ldapsource.Configuration && (ce == nil || ce.Key != tc.key) {
					t.Errorf("configuration error %+v, want key %s", ce, tc.key)
				}
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.words) {
				t.Errorf("error does not name %s with %q: %v", tc.key, tc.words, err)
			}
		})
	}
}

// TestKerberosRefusedKeytabSamba: a keytab whose key the KDC refuses is
// sent once; the refusal is remembered by the keytab's digest, so neither
// the next lookup nor a restart asks the KDC again (badPwdCount stays 1),
// and the current keytab binds at once.
func TestKerberosRefusedKeytabSamba(t *testing.T) {
	srv := sambatest.DC(t)
	state := t.TempDir()
	cfg := krbConfig(srv, wrongKeytab(t, sambatest.MachinePrincipal))
	ctx := context.Background()
	for restart := range 2 {
		refusals, err := ldapsource.OpenRefusals(state)
		if err != nil {
			t.Fatal(err)
		}
		src, err := ldapsource.New(cfg, adAttrs, nil, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		src.UseRefusals(refusals)
		for range 3 {
			err = src.Ping(ctx)
			ce := ldapsource.ConfigurationError(err)
			if ce == nil || ce.Key != "ldap.keytab" {
				t.Fatalf("restart %d: Ping: %v, want a configuration error naming ldap.keytab", restart, err)
			}
			if _, err := adLookup(src, "alice@example.test"); err == nil {
				t.Fatal("a lookup worked with a refused keytab")
			}
		}
		if restart == 1 && !errors.Is(err, ldapsource.ErrRefusedBefore) {
			t.Errorf("after a restart: %v, want ErrRefusedBefore", err)
		}
		src.Close()
		if bad, _ := srv.Lockout(t, sambatest.MachineDN); bad != 1 {
			t.Errorf("restart %d: badPwdCount %d, want 1: the refused keytab was sent again", restart, bad)
		}
	}
	// Exported again, the keytab is new credentials: it binds.
	cfg.Keytab = srv.ExportKeytab(t, sambatest.MachinePrincipal)
	refusals, err := ldapsource.OpenRefusals(state)
	if err != nil {
		t.Fatal(err)
	}
	src, err := ldapsource.New(cfg, adAttrs, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	src.UseRefusals(refusals)
	if err := src.Ping(ctx); err != nil {
		t.Fatalf("the current keytab: %v", err)
	}
}

// kerberosLog collects what gokrb5 logs through the source's logger.
type kerberosLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *kerberosLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *kerberosLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, r.Message)
	return nil
}
func (l *kerberosLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *kerberosLog) WithGroup(string) slog.Handler      { return l }

// count returns how many lines hold s.
func (l *kerberosLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// krbMinLifetime is the shortest ticket life the Samba KDC hands out
// that it also takes back: with less, it answers the request for a
// service ticket with KRB_AP_ERR_TKT_EXPIRED.
const krbMinLifetime = 5 * time.Minute

// TestKerberosTicketRenewalSamba: with tickets that live 5 minutes (the
// least the KDC serves), a connection dialed after they ended binds with
// a new service ticket. The KDC does not renew tickets this short (it
// answers KRB_AP_ERR_TKT_EXPIRED, as it does to a ticket issued for less
// than 5 minutes), so here the ticket-granting ticket ends unrenewed and
// the bind logs in again with the keytab: the path of a server whose KDC
// did not answer while its ticket could be renewed. It waits out the
// tickets' life, in parallel with the other tests.
func TestKerberosTicketRenewalSamba(t *testing.T) {
	t.Parallel()
	srv := sambatest.DC(t)
	conf := filepath.Join(t.TempDir(), "krb5.conf")
	text := "[libdefaults]\n default_realm = " + sambatest.Realm + "\n ticket_lifetime = " + krbMinLifetime.String() +
		"\n[realms]\n " + sambatest.Realm + " = {\n  kdc = " + srv.KDC + "\n }\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := krbConfig(srv, srv.ExportKeytab(t, sambatest.MachinePrincipal))
	cfg.KDC, cfg.KRB5Conf = nil, conf
	klog := &kerberosLog{}
	src, err := ldapsource.New(cfg, adAttrs, slog.New(klog), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first := time.Now()
	if _, err := adLookup(src, "alice@example.test"); err != nil {
		t.Fatalf("first lookup: %v", err)
	}
	if n := klog.count("ticket added to cache"); n != 1 {
		t.Fatalf("%d service tickets after the first bind, want 1: %q", n, klog.lines)
	}
	time.Sleep(time.Until(first.Add(krbMinLifetime + 10*time.Second)))
	ldapsource.DropIdle(src)
	if _, err := adLookup(src, "bob@example.test"); err != nil {
		t.Fatalf("a connection dialed after the tickets ended: %v", err)
	}
	t.Logf("gokrb5: %q", klog.lines)
	if n := klog.count("ticket added to cache"); n != 2 {
		t.Errorf("%d service tickets, want 2: the bind after the first one ended used it", n)
	}
}
