package ldapsource_test

// Integration tests against a real OpenLDAP slapd (package ldaptest): they
// skip when slapd is not installed, and fail instead when CI=true.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

const slapdFilter = "(&(objectClass=mailUser)(|(mail={email})(shadowAddress={email})))"

const aliceDN = "uid=alice,ou=people,dc=example,dc=com"

// Two entries sharing one address, for ErrAmbiguous.
const twinsLDIF = `dn: uid=twin1,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: twin1
cn: Twin One
sn: One
mail: twins@example.com

dn: uid=twin2,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: twin2
cn: Twin Two
sn: Two
shadowAddress: twins@example.com
`

// markerLDIF is an entry only one server of a failover pair holds, so a
// lookup of it tells which server answered.
func markerLDIF(name string) string {
	return fmt.Sprintf(`dn: uid=%[1]s,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: %[1]s
cn: %[1]s
sn: %[1]s
mail: %[1]s@example.com
`, name)
}

func slapdConfig(caFile string, startTLS bool, urls ...string) ldapsource.Config {
	return ldapsource.Config{
		URLs:           urls,
		StartTLS:       startTLS,
		CAFile:         caFile,
		BindDN:         ldaptest.ServiceDN,
		BindPassword:   ldaptest.ServicePassword,
		BaseDN:         ldaptest.BaseDN,
		Filter:         slapdFilter,
		DialTimeout:    2 * time.Second,
		RequestTimeout: 5 * time.Second,
		PoolSize:       4,
	}
}

func slapdSource(t *testing.T, cfg ldapsource.Config, attrs ...string) *ldapsource.Source {
	t.Helper()
	src, err := ldapsource.New(cfg, attrs, nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(src.Close)
	return src
}

func slapdQuery(email string) ldapsource.Query {
	local, domain, _ := strings.Cut(email, "@")
	return ldapsource.Query{Email: email, Local: local, Domain: domain}
}

func lookup(src *ldapsource.Source, email string) (*ldapsource.Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return src.Lookup(ctx, slapdQuery(email))
}

func ping(src *ldapsource.Source) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return src.Ping(ctx)
}

func TestSlapdLookup(t *testing.T) {
	t.Parallel()
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(twinsLDIF))

	aliceServices := []string{"mail", "imap", "imapsecured", "pop3", "pop3secured", "smtp", "smtpsecured", "activesync"}
	cases := []struct {
		name, email string
		wantErr     error
		wantDN      string
		wantAttrs   map[string][]string
	}{
		{name: "mail", email: "alice@example.com", wantDN: aliceDN, wantAttrs: map[string][]string{
			"displayName": {"Alice Example"}, "uid": {"alice"}, "enabledService": aliceServices,
		}},
		{name: "alias", email: "a.example@example.com", wantDN: aliceDN, wantAttrs: map[string][]string{"uid": {"alice"}}},
		{name: "case-insensitive", email: "Alice@EXAMPLE.com", wantDN: aliceDN},
		{name: "other user", email: "bob@example.com", wantDN: "uid=bob.login,ou=people,dc=example,dc=com",
			wantAttrs: map[string][]string{"uid": {"bob.login"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}}},
		{name: "special characters", email: "dave@example.com", wantDN: "uid=dave,ou=people,dc=example,dc=com",
			wantAttrs: map[string][]string{"displayName": {`Dave <Ops> & "Smith" *) Über`}}},
		{name: "unknown", email: "nobody@example.com", wantErr: ldapsource.ErrNotFound},
		{name: "unknown domain", email: "alice@example.org", wantErr: ldapsource.ErrNotFound},
		{name: "ambiguous", email: "twins@example.com", wantErr: ldapsource.ErrAmbiguous},
		// Filter injection: the address is escaped, so these are searched
		// for literally and match nothing.
		{name: "inject wildcard", email: "*@example.com", wantErr: ldapsource.ErrNotFound},
		{name: "inject star", email: "*", wantErr: ldapsource.ErrNotFound},
		{name: "inject alice wildcard", email: "a*@example.com", wantErr: ldapsource.ErrNotFound},
		{name: "inject close filter", email: "alice@example.com)(uid=*", wantErr: ldapsource.ErrNotFound},
		{name: "inject or", email: "x)(|(mail=*", wantErr: ldapsource.ErrNotFound},
		{name: "inject escape", email: `\2a@example.com`, wantErr: ldapsource.ErrNotFound},
	}
	transports := []struct {
		name string
		cfg  ldapsource.Config
	}{
		{"ldap+StartTLS", slapdConfig(srv.CAFile, true, srv.URL)},
		{"ldaps", slapdConfig(srv.CAFile, false, srv.LDAPSURL)},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			src := slapdSource(t, tr.cfg, "displayName", "uid", "enabledService", "mail")
			if err := ping(src); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					e, err := lookup(src, tc.email)
					if tc.wantErr != nil {
						if !errors.Is(err, tc.wantErr) {
							t.Fatalf("Lookup(%q) = %+v, %v; want %v", tc.email, e, err, tc.wantErr)
						}
						return
					}
					if err != nil {
						t.Fatalf("Lookup(%q): %v", tc.email, err)
					}
					if !strings.EqualFold(e.DN, tc.wantDN) {
						t.Errorf("DN = %q, want %q", e.DN, tc.wantDN)
					}
					for attr, want := range tc.wantAttrs {
						if got := e.Values(attr); !slices.Equal(got, want) {
							t.Errorf("%s = %q, want %q", attr, got, want)
						}
					}
					if v := e.Values("userPassword"); v != nil {
						t.Errorf("userPassword was returned: %q", v)
					}
				})
			}
		})
	}
}

func TestSlapdBindAndTLSErrors(t *testing.T) {
	t.Parallel()
	srv := ldaptest.Slapd(t)
	other := ldaptest.Slapd(t) // its CA did not sign srv's certificate
	other.Stop()

	wrongPassword := slapdConfig(srv.CAFile, true, srv.URL)
	wrongPassword.BindPassword = "not-the-password"
	wrongName := slapdConfig(srv.CAFile, true, srv.URL)
	wrongName.ServerName = "ldap.example.net"

	cases := []struct {
		name string
		cfg  ldapsource.Config
		want []string // substrings of the error
		code uint16   // LDAP result code the error carries, if any
		key  string   // configuration key the error names
	}{
		{"wrong bind password", wrongPassword, []string{"bind as " + ldaptest.ServiceDN, "refused the service account's credentials"}, ldap.LDAPResultInvalidCredentials, "ldap.bind_password (or MAILBEACON_LDAP_BIND_PASSWORD)"},
		{"StartTLS, system roots", slapdConfig("", true, srv.URL), []string{"StartTLS", "certificate"}, 0, "ldap.ca_file"},
		{"ldaps, system roots", slapdConfig("", false, srv.LDAPSURL), []string{"TLS", "certificate"}, 0, "ldap.ca_file"},
		{"StartTLS, other CA", slapdConfig(other.CAFile, true, srv.URL), []string{"StartTLS", "certificate"}, 0, "ldap.ca_file"},
		{"ldaps, other CA", slapdConfig(other.CAFile, false, srv.LDAPSURL), []string{"TLS", "certificate"}, 0, "ldap.ca_file"},
		{"StartTLS, wrong server name", wrongName, []string{"StartTLS", "ldap.example.net"}, 0, "ldap.tls_server_name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := slapdSource(t, tc.cfg, "uid")
			e, err := lookup(src, "alice@example.com")
			if err == nil {
				t.Fatalf("Lookup succeeded (%s); want an error", e.DN)
			}
			if errors.Is(err, ldapsource.ErrNotFound) || errors.Is(err, ldapsource.ErrAmbiguous) {
				t.Fatalf("Lookup: %v; want a connection error, not an answer", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.code != 0 && !ldap.IsErrorWithCode(err, tc.code) {
				t.Errorf("error %q does not carry LDAP result code %d", err, tc.code)
			}
			ce := ldapsource.ConfigurationError(err)
			if ldapsource.KindOf(err) != ldapsource.Configuration || ce == nil || ce.Key != tc.key || ce.Fix == "" {
				t.Errorf("error %q: kind %v, %+v; want a configuration error naming %s", err, ldapsource.KindOf(err), ce, tc.key)
			}
			// The next attempt waits for the backoff interval, or, for
			// refused credentials, for them to change: no connection, no
			// bind, the same error.
			held := ldapsource.ErrBackoff
			if tc.code == ldap.LDAPResultInvalidCredentials {
				held = ldapsource.ErrRefusedBefore
			}
			if err := ping(src); !errors.Is(err, held) || ldapsource.ConfigurationError(err) == nil {
				t.Errorf("Ping = %v; want %v and the configuration error", err, held)
			}
		})
	}
	t.Run("missing base DN", func(t *testing.T) {
		cfg := slapdConfig(srv.CAFile, true, srv.URL)
		cfg.BaseDN = "ou=nowhere,dc=example,dc=com"
		src := slapdSource(t, cfg, "uid")
		if _, err := lookup(src, "alice@example.com"); ldapsource.ConfigurationError(err) == nil || ldapsource.ConfigurationError(err).Key != "ldap.base_dn" {
			t.Errorf("Lookup = %v; want a configuration error naming ldap.base_dn", err)
		}
		err := ping(src)
		if ce := ldapsource.ConfigurationError(err); ce == nil || ce.Key != "ldap.base_dn" {
			t.Errorf("Ping = %v; want a configuration error naming ldap.base_dn", err)
		}
	})
}

// A directory that refuses the service account's password sees one bind,
// not one per lookup, however many lookups arrive: the first failure holds
// binds back for a backoff interval, and concurrent lookups share it.
func TestSlapdWrongPasswordBindsOnce(t *testing.T) {
	t.Parallel()
	srv := ldaptest.Slapd(t)
	cfg := slapdConfig(srv.CAFile, true, srv.URL)
	cfg.BindPassword = "not-the-password"
	src := slapdSource(t, cfg, "uid")
	before := srv.BindCount()

	const workers, each = 100, 10
	ldaptest.Together(workers, func(w int) {
		for i := range each {
			_, err := lookup(src, fmt.Sprintf("u%d-%d@example.com", w, i))
			if ldapsource.ConfigurationError(err) == nil {
				t.Errorf("lookup: %v; want the configuration error", err)
				return
			}
		}
	})
	// 1,000 lookups well within the first backoff interval (5s): one bind.
	if got := srv.BindCount() - before; got != 1 {
		t.Errorf("the directory saw %d binds for %d lookups; want 1", got, workers*each)
	}
}

func TestSlapdFailover(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(markerLDIF("on-first")))
	s2 := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(markerLDIF("on-second")))
	// One CA file trusting both servers' CAs.
	bundle := filepath.Join(t.TempDir(), "cas.pem")
	var pems []byte
	for _, f := range []string{s1.CAFile, s2.CAFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, b...)
	}
	if err := os.WriteFile(bundle, pems, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("closed port first", func(t *testing.T) {
		src := slapdSource(t, slapdConfig(bundle, true, closedPortURL(t), s1.URL), "uid")
		for range 3 {
			if e, err := lookup(src, "alice@example.com"); err != nil || e.DN != aliceDN {
				t.Fatalf("Lookup: %v, %v", e, err)
			}
		}
		if err := ping(src); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})

	t.Run("server stops and starts", func(t *testing.T) {
		src := slapdSource(t, slapdConfig(bundle, true, s1.URL, s2.URL), "uid")
		ldapsource.SetBreakerCooldown(src, 50*time.Millisecond)
		// servedBy asks for both markers: exactly one is found, and that
		// names the server in use. Alice is on both.
		servedBy := func(t *testing.T) string {
			t.Helper()
			if e, err := lookup(src, "alice@example.com"); err != nil || e.DN != aliceDN {
				t.Fatalf("Lookup(alice): %v, %v", e, err)
			}
			var found []string
			for _, m := range []string{"on-first", "on-second"} {
				_, err := lookup(src, m+"@example.com")
				switch {
				case err == nil:
					found = append(found, m)
				case !errors.Is(err, ldapsource.ErrNotFound):
					t.Fatalf("Lookup(%s): %v", m, err)
				}
			}
			if len(found) != 1 {
				t.Fatalf("markers found: %v; want exactly one", found)
			}
			return found[0]
		}

		if got := servedBy(t); got != "on-first" {
			t.Fatalf("served by %s; want the first URL while it is up", got)
		}
		s1.Stop()
		if got := servedBy(t); got != "on-second" {
			t.Fatalf("after stopping the first server: served by %s", got)
		}
		s1.Start()
		if got := servedBy(t); got != "on-second" {
			t.Fatalf("after the first server is back: served by %s; want to stay on the second until it fails", got)
		}
		// The first server refused connections: its breaker stays open
		// until its probe finds it again.
		waitBreaker(t, src, 0, false)
		s2.Stop()
		if got := servedBy(t); got != "on-first" {
			t.Fatalf("after stopping the second server: served by %s", got)
		}

		s1.Stop()
		if err := ping(src); err == nil {
			t.Fatal("Ping succeeded with every server down")
		}
		e, err := lookup(src, "alice@example.com")
		if err == nil || errors.Is(err, ldapsource.ErrNotFound) {
			t.Fatalf("Lookup with every server down: %v, %v; want a connection error", e, err)
		}
		s2.Start()
		waitBreaker(t, src, 1, false)
		if err := ping(src); err != nil {
			t.Fatalf("Ping after a server came back: %v", err)
		}
		if got := servedBy(t); got != "on-second" {
			t.Fatalf("served by %s; want the server that came back", got)
		}
	})

	t.Run("no false answers during a restart", func(t *testing.T) {
		s1.Start()
		s2.Start()
		src := slapdSource(t, slapdConfig(bundle, true, s1.URL, s2.URL), "uid")
		// Lookups run while the server in use goes away: each one must
		// either find alice or fail with a connection error, never claim
		// she does not exist.
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		var ok, failed int
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					e, err := lookup(src, "alice@example.com")
					mu.Lock()
					switch {
					case err == nil && e.DN == aliceDN:
						ok++
					case errors.Is(err, ldapsource.ErrNotFound), errors.Is(err, ldapsource.ErrAmbiguous), err == nil:
						t.Errorf("Lookup during a restart: %v, %v", e, err)
					default:
						failed++
					}
					mu.Unlock()
				}
			}()
		}
		for _, s := range []*ldaptest.Server{s1, s2, s1, s2} {
			time.Sleep(50 * time.Millisecond)
			s.Stop()
			time.Sleep(50 * time.Millisecond)
			s.Start()
		}
		time.Sleep(50 * time.Millisecond)
		cancel()
		wg.Wait()
		t.Logf("%d lookups succeeded, %d failed with a connection error", ok, failed)
		if ok == 0 {
			t.Error("no lookup succeeded")
		}
	})
}

// closedPortURL is an ldap:// URL on 127.0.0.1 where nothing listens.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "ldap://" + addr
}

func TestSlapdPoolBound(t *testing.T) {
	t.Parallel()
	srv := ldaptest.Slapd(t)
	// A TCP relay in front of slapd counts the connections open at once
	// (StartTLS passes through it untouched).
	relay := ldaptest.NewProxy(t, strings.TrimPrefix(srv.URL, "ldap://"))
	cfg := slapdConfig(srv.CAFile, true, "ldap://"+relay.Addr)
	cfg.PoolSize = 2
	src := slapdSource(t, cfg, "uid")

	const n = 50
	errs := make(chan error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			email := []string{"alice@example.com", "a.example@example.com", "bob@example.com"}[i%3]
			e, err := lookup(src, email)
			if err != nil {
				errs <- fmt.Errorf("Lookup(%s): %w", email, err)
			} else if e.DN == "" {
				errs <- fmt.Errorf("Lookup(%s): entry without DN", email)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d lookups over at most %d connections at once", n, relay.MaxOpen())
	if got := relay.MaxOpen(); got < 1 || got > cfg.PoolSize {
		t.Errorf("at most %d connections were open at once; want 1..%d", got, cfg.PoolSize)
	}
}
