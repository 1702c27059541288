package ldapsource

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// adRefusal is what Active Directory answers a bind with sub-code code.
func adRefusal(code string) error {
	return ldap.NewError(ldap.LDAPResultInvalidCredentials,
		errors.New("80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data "+code+", v4563"))
}

// gateOn returns the gate of cfg's credentials in r, on a clock the test
// moves, and a dial that binds through the gate as dialOne does, counting
// binds and failing with *fail.
func gateOn(r *Refusals, cfg Config, clock *time.Time) (g *bindGate, dial func() error, binds *atomic.Int32, fail *error) {
	if cfg.LockedRetryInterval == 0 {
		cfg.LockedRetryInterval = DefaultLockedRetryInterval
	}
	g = r.gate(r.identity(&cfg), func() *bindGate {
		return newBindGate(&cfg, r, passwordFileClassifier(cfg.BindDN), slog.New(slog.DiscardHandler), NewMetrics(nil).bindBackoffs)
	})
	g.now = func() time.Time { return *clock }
	binds, fail = new(atomic.Int32), new(error)
	dial = func() error {
		_, err := g.dial(context.Background(), func() (*conn, error) {
			// Classified as Source.dial does.
			return nil, classify(g.bind(context.Background(), func() error { binds.Add(1); return *fail }), "ldap.bind_password_file", "cn=svc,dc=example,dc=com")
		})
		return err
	}
	return g, dial, binds, fail
}

// Every sub-code of LDAP 49 but 775 means the credentials are refused:
// one bind, then none for a day of lookups, across a reload (a new source
// with the same settings) and a restart (the state directory opened
// again), until the password changes.
func TestLockoutRefusedCredentialsNeverBindAgain(t *testing.T) {
	for _, code := range []string{"", "52e", "525", "530", "531", "532", "533", "701", "773"} {
		t.Run("AD "+code, func(t *testing.T) {
			dir := t.TempDir()
			r, err := OpenRefusals(dir)
			if err != nil {
				t.Fatal(err)
			}
			clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			cfg := Config{URLs: []string{"ldaps://dc.example.test"}, BindDN: "svc@example.test", BindPassword: "Wrong-Passw0rd"}
			_, dial, binds, fail := gateOn(r, cfg, &clock)
			*fail = adRefusal(code)
			if code == "" {
				*fail = ldap.NewError(ldap.LDAPResultInvalidCredentials, errors.New("invalid credentials"))
			}
			for range 24 * 60 {
				err := dial()
				if ConfigurationError(err) == nil {
					t.Fatalf("dial = %v; want a configuration error", err)
				}
				clock = clock.Add(time.Minute)
			}
			if err := dial(); !errors.Is(err, ErrRefusedBefore) {
				t.Errorf("dial = %v; want ErrRefusedBefore", err)
			}
			// A reload: a new source, the same settings, the same gate.
			_, dial2, binds2, _ := gateOn(r, cfg, &clock)
			dial2()
			// A restart: the directory opened again.
			r3, err := OpenRefusals(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, dial3, binds3, _ := gateOn(r3, cfg, &clock)
			if err := dial3(); !errors.Is(err, ErrRefusedBefore) || ConfigurationError(err).Key != "ldap.bind_password_file" && ConfigurationError(err).Key != "ldap.bind_dn" {
				t.Errorf("after a restart, dial = %v; want ErrRefusedBefore naming the key", err)
			}
			if n := binds.Load() + binds2.Load() + binds3.Load(); n != 1 {
				t.Errorf("%d binds; want 1", n)
			}
			// Other credentials bind.
			cfg.BindPassword = "Right-Passw0rd"
			_, dial4, binds4, _ := gateOn(r3, cfg, &clock)
			if err := dial4(); err != nil || binds4.Load() != 1 {
				t.Errorf("new password: dial = %v after %d binds; want one bind that works", err, binds4.Load())
			}
		})
	}
}

// A locked account (AD 775) whose credentials are not known to be wrong
// is tried once per interval; a wrong password found then is never tried
// again; a right one clears the record.
func TestLockoutLockedAccountRetriedRarely(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenRefusals(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cfg := Config{URLs: []string{"ldaps://dc.example.test"}, BindDN: "svc@example.test", BindPassword: "pw", LockedRetryInterval: 15 * time.Minute}
	_, dial, binds, fail := gateOn(r, cfg, &clock)
	*fail = adRefusal("775")
	var at []time.Duration
	start := clock
	for range 60 * 60 / 10 { // an hour, every 10s
		before := binds.Load()
		err := dial()
		if ConfigurationError(err) == nil {
			t.Fatalf("dial = %v", err)
		}
		if binds.Load() > before {
			at = append(at, clock.Sub(start))
		}
		clock = clock.Add(10 * time.Second)
	}
	if want := []time.Duration{0, 15 * time.Minute, 30 * time.Minute, 45 * time.Minute}; len(at) != len(want) || at[1] != want[1] || at[3] != want[3] {
		t.Errorf("binds at %v; want %v", at, want)
	}
	dial() // at 60 minutes: the fifth bind
	if err := dial(); !errors.Is(err, ErrLockedOut) {
		t.Errorf("dial = %v; want ErrLockedOut", err)
	}
	// A restart keeps the wait.
	r2, err := OpenRefusals(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, dial2, binds2, fail2 := gateOn(r2, cfg, &clock)
	dial2()
	if binds2.Load() != 0 {
		t.Errorf("a restart bound at once against a locked account")
	}
	// Unlocked, with a wrong password: 52e, and never again.
	clock = clock.Add(15 * time.Minute)
	*fail2 = adRefusal("52e")
	dial2()
	clock = clock.Add(time.Hour)
	if err := dial2(); !errors.Is(err, ErrRefusedBefore) || binds2.Load() != 1 {
		t.Errorf("dial = %v after %d binds; want ErrRefusedBefore after 1", err, binds2.Load())
	}
}

// The state directory holds a keyed digest: neither the password nor its
// plain hash, and files only the service's user can read.
func TestLockoutStateHoldsNoPassword(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenRefusals(dir)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	const password = "Sekrit-Passw0rd!"
	_, dial, _, fail := gateOn(r, Config{URLs: []string{"ldaps://dc"}, BindDN: "svc", BindPassword: password}, &clock)
	*fail = adRefusal("52e")
	dial()
	b, err := os.ReadFile(filepath.Join(dir, refusalsFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(password))
	if s := string(b); strings.Contains(s, password) || strings.Contains(s, hex.EncodeToString(sum[:])) || !strings.Contains(s, `"key": "ldap.bind_password_file"`) {
		t.Errorf("state file:\n%s", s)
	}
	for _, f := range []string{refusalsFile, refusalsKeyFile} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v; want mode 0600", f, fi.Mode(), err)
		}
	}
	// Removing the file and reloading forgets the refusal.
	os.Remove(filepath.Join(dir, refusalsFile))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if err, _ := r.held(r.digest(&Config{URLs: []string{"ldaps://dc"}, BindDN: "svc", BindPassword: password}), clock); err != nil {
		t.Errorf("after removing the file: %v", err)
	}
}

// Hundreds of lookups at once on a source whose binds had worked, after
// the directory stopped accepting the password: one bind refused, not
// one per connection the pool dials.
func TestLockoutParallelDialsBindOnce(t *testing.T) {
	clock := time.Now()
	r := NewRefusals()
	g, _, _, _ := gateOn(r, Config{URLs: []string{"ldaps://dc"}, BindDN: "svc", BindPassword: "pw"}, &clock)
	g.ok = true // binds worked before
	var binds atomic.Int32
	ldaptest.Together(300, func(int) {
		g.dial(context.Background(), func() (*conn, error) {
			return nil, g.bind(context.Background(), func() error {
				binds.Add(1)
				time.Sleep(time.Millisecond)
				return adRefusal("52e")
			})
		})
	})
	if n := binds.Load(); n != 1 {
		t.Errorf("%d binds; want 1", n)
	}
}

// Sources share a gate (and so its state across a reload) exactly when
// they bind alike: the same URLs, bind DN, password (content) and TLS
// settings, CA content included.
func TestLockoutGateSharedWhenBindUnchanged(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, selfSigned(t), 0o600); err != nil {
		t.Fatal(err)
	}
	r := NewRefusals()
	base := DefaultConfig()
	base.URLs, base.BaseDN, base.BindDN, base.BindPassword, base.CAFile = []string{"ldaps://ldap.example.com"}, "dc=example,dc=com", "cn=svc", "pw", ca
	base.Filter = "(mail={email})"
	source := func(cfg Config) *Source {
		s, err := New(cfg, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.UseRefusals(r)
		return s
	}
	a := source(base)
	if !a.SameBind(source(base)) {
		t.Error("the same settings: not the same gate")
	}
	other := base
	other.BindPassword = "pw2"
	if a.SameBind(source(other)) {
		t.Error("another password: the same gate")
	}
	if err := os.WriteFile(ca, selfSigned(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if a.SameBind(source(base)) {
		t.Error("another CA under the same file name: the same gate")
	}
}

// selfSigned returns the PEM of a new self-signed CA certificate.
func selfSigned(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
