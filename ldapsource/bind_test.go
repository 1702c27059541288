package ldapsource_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

const (
	bindBobDN   = "uid=bob.login,ou=people,dc=example,dc=com"
	bindCarolDN = "uid=carol,ou=people,dc=example,dc=com"
)

func bindSource(t *testing.T, startTLS bool, caFile string, urls ...string) *ldapsource.Source {
	t.Helper()
	src, err := ldapsource.New(ldapsource.Config{
		URLs: urls, StartTLS: startTLS, CAFile: caFile,
		BindDN: embedded.DemoBindDN, BindPassword: embedded.DemoPassword, BaseDN: embedded.DemoBaseDN,
		Filter:      "(&(objectClass=mailUser)(|(mail={email})(shadowAddress={email})))",
		DialTimeout: 2 * time.Second, RequestTimeout: 5 * time.Second, PoolSize: 2,
	}, []string{"uid"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	return src
}

func deadPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "ldap://" + addr
}

// checkBinds runs the bind cases every directory must answer the same way.
func checkBinds(t *testing.T, src *ldapsource.Source) {
	t.Helper()
	ctx := context.Background()
	for _, tc := range []struct {
		name, dn, password string
		want               error
	}{
		{"right password", bindBobDN, ldaptest.UserPassword, nil},
		{"wrong password", bindBobDN, "Secret124!", ldapsource.ErrInvalidCredentials},
		{"empty password is no unauthenticated bind", bindBobDN, "", ldapsource.ErrInvalidCredentials},
		{"empty DN", "", ldaptest.UserPassword, ldapsource.ErrInvalidCredentials},
		{"no such entry", "uid=nobody,ou=people,dc=example,dc=com", ldaptest.UserPassword, ldapsource.ErrInvalidCredentials},
		{"disabled in mail terms, still binds in LDAP", bindCarolDN, ldaptest.UserPassword, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := src.Authenticate(ctx, tc.dn, tc.password)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("Authenticate = %v, want %v", err, tc.want)
			}
		})
	}
	// The pooled service connection is untouched by user binds: lookups
	// still run as the service account, which may read entries.
	if e, err := src.Lookup(ctx, ldapsource.Query{Email: "bob@example.com", Local: "bob", Domain: "example.com"}); err != nil || e.DN != bindBobDN {
		t.Errorf("lookup after binds: %v %v", e, err)
	}
}

func TestAuthenticateEmbedded(t *testing.T) {
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	t.Run("binds", func(t *testing.T) { checkBinds(t, bindSource(t, false, "", srv.URL)) })
	t.Run("failover", func(t *testing.T) {
		src := bindSource(t, false, "", deadPortURL(t), srv.URL)
		if err := src.Authenticate(context.Background(), bindBobDN, ldaptest.UserPassword); err != nil {
			t.Errorf("first URL down: %v", err)
		}
		if err := src.Authenticate(context.Background(), bindBobDN, "wrong"); !errors.Is(err, ldapsource.ErrInvalidCredentials) {
			t.Errorf("wrong password with failover: %v", err)
		}
	})
	t.Run("directory down is not a wrong password", func(t *testing.T) {
		src := bindSource(t, false, "", deadPortURL(t))
		err := src.Authenticate(context.Background(), bindBobDN, ldaptest.UserPassword)
		if err == nil || errors.Is(err, ldapsource.ErrInvalidCredentials) {
			t.Errorf("Authenticate = %v, want a connection error", err)
		}
	})
	t.Run("no cleartext passwords to other hosts", func(t *testing.T) {
		// 192.0.2.0/24 is TEST-NET-1: never dialed, refused before.
		src := bindSource(t, false, "", "ldap://192.0.2.1:389")
		start := time.Now()
		err := src.Authenticate(context.Background(), bindBobDN, ldaptest.UserPassword)
		if !errors.Is(err, ldapsource.ErrInsecureBind) || time.Since(start) > time.Second {
			t.Errorf("Authenticate = %v after %s, want ErrInsecureBind at once", err, time.Since(start))
		}
	})
	t.Run("closed source", func(t *testing.T) {
		src := bindSource(t, false, "", srv.URL)
		src.Close()
		if err := src.Authenticate(context.Background(), bindBobDN, ldaptest.UserPassword); !errors.Is(err, ldapsource.ErrClosed) {
			t.Errorf("Authenticate = %v, want ErrClosed", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		src := bindSource(t, false, "", srv.URL)
		if err := src.Authenticate(ctx, bindBobDN, ldaptest.UserPassword); err == nil {
			t.Error("a cancelled bind succeeded")
		}
	})
}

// The same cases against a real OpenLDAP, over StartTLS and ldaps.
func TestAuthenticateSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	t.Run("starttls", func(t *testing.T) { checkBinds(t, bindSource(t, true, srv.CAFile, srv.URL)) })
	t.Run("ldaps", func(t *testing.T) { checkBinds(t, bindSource(t, false, srv.CAFile, srv.LDAPSURL)) })
	// (The embedded demo server compares passwords case-insensitively;
	// a real directory does not.)
	t.Run("password case matters", func(t *testing.T) {
		err := bindSource(t, true, srv.CAFile, srv.URL).Authenticate(context.Background(), bindBobDN, "secret123!")
		if !errors.Is(err, ldapsource.ErrInvalidCredentials) {
			t.Errorf("Authenticate = %v, want ErrInvalidCredentials", err)
		}
	})
}
