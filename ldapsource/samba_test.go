package ldapsource_test

// Integration tests against a real Active Directory domain controller
// (Samba, package sambatest): they skip when Samba is not installed, and
// fail instead when CI=true.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// adFilter is the active-directory preset's filter.
const adFilter = "(&(objectCategory=person)(objectClass=user)(|(mail={email})(proxyAddresses=smtp:{email})))"

var adAttrs = []string{"displayName", "mail", "proxyAddresses", "userPrincipalName", "sAMAccountName",
	"userAccountControl", "msDS-User-Account-Control-Computed", "accountExpires", "memberOf", "protocolSettings"}

func adConfig(srv *sambatest.Server, url string, startTLS bool, bindName string) ldapsource.Config {
	return ldapsource.Config{
		URLs:           []string{url},
		StartTLS:       startTLS,
		CAFile:         srv.CAFile,
		BindDN:         bindName,
		BindPassword:   sambatest.ServicePassword,
		BaseDN:         sambatest.BaseDN,
		Filter:         adFilter,
		DialTimeout:    3 * time.Second,
		RequestTimeout: 5 * time.Second,
		PoolSize:       4,
	}
}

func adSource(t *testing.T, cfg ldapsource.Config) *ldapsource.Source {
	t.Helper()
	src, err := ldapsource.New(cfg, adAttrs, nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(src.Close)
	return src
}

func adLookup(src *ldapsource.Source, email string) (*ldapsource.Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	local, domain, _ := strings.Cut(email, "@")
	return src.Lookup(ctx, ldapsource.Query{Email: email, Local: local, Domain: domain})
}

func TestSambaAD(t *testing.T) {
	srv := sambatest.DC(t)
	ctx := context.Background()

	// AD accepts a UPN, DOMAIN\user and the DN as the service account's
	// bind name; over ldaps:// and over StartTLS.
	for _, tc := range []struct {
		name     string
		url      string
		startTLS bool
		bindName string
	}{
		{"ldaps, UPN", srv.LDAPSURL, false, sambatest.ServiceUPN},
		{"StartTLS, DN", srv.URL, true, sambatest.ServiceDN},
		{`ldaps, DOMAIN\user`, srv.LDAPSURL, false, sambatest.NetBIOS + `\svc-mailbeacon`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := adSource(t, adConfig(srv, tc.url, tc.startTLS, tc.bindName))
			if err := src.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			e, err := adLookup(src, "alice@example.test")
			if err != nil {
				t.Fatal(err)
			}
			if e.DN != sambatest.UserDN("asmith") || e.Values("userPrincipalName")[0] != "asmith@example.test" ||
				e.Values("displayName")[0] != "Alice Smith" || e.Values("userAccountControl")[0] != "512" {
				t.Errorf("alice: %+v", e)
			}
		})
	}

	t.Run("plain LDAP is refused with a clear message", func(t *testing.T) {
		src := adSource(t, adConfig(srv, srv.URL, false, sambatest.ServiceUPN))
		err := src.Ping(ctx)
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultStrongAuthRequired) || ldapsource.ConfigurationError(err).Key != "ldap.urls" ||
			!strings.Contains(err.Error(), "use ldaps:// in ldap.urls, or set ldap.start_tls: true") {
			t.Errorf("Ping over plain LDAP = %v", err)
		}
		if _, err := adLookup(src, "alice@example.test"); err == nil || errors.Is(err, ldapsource.ErrNotFound) ||
			!strings.Contains(err.Error(), "use ldaps:// in ldap.urls, or set ldap.start_tls: true") {
			t.Errorf("Lookup over plain LDAP = %v", err)
		}
	})

	src := adSource(t, adConfig(srv, srv.LDAPSURL, false, sambatest.ServiceUPN))

	t.Run("continuation references are not errors", func(t *testing.T) {
		// The DC answers a subtree search of the domain with a
		// continuation reference to its configuration partition...
		pem, _ := os.ReadFile(srv.CAFile)
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		c, err := ldap.DialURL(srv.LDAPSURL, ldap.DialWithTLSConfig(&tls.Config{RootCAs: roots}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Bind(sambatest.ServiceUPN, sambatest.ServicePassword); err != nil {
			t.Fatal(err)
		}
		res, err := c.Search(ldap.NewSearchRequest(sambatest.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2, 5, false,
			"(mail=nobody@example.test)", []string{"1.1"}, nil))
		if err != nil || len(res.Referrals) == 0 {
			t.Fatalf("expected a continuation reference from the DC: %v, %d referrals", err, len(res.Referrals))
		}
		// ...which a lookup ignores, whether it finds an entry or not.
		if _, err := adLookup(src, "nobody@example.test"); !errors.Is(err, ldapsource.ErrNotFound) {
			t.Errorf("nobody: %v, want ErrNotFound", err)
		}
		if e, err := adLookup(src, "bob@example.test"); err != nil || e.DN != sambatest.UserDN("bob.login") {
			t.Errorf("bob: %v %+v", err, e)
		}
	})

	t.Run("lookups", func(t *testing.T) {
		for _, tc := range []struct {
			email   string
			wantDN  string
			wantErr error
		}{
			{"a.example@example.test", sambatest.UserDN("asmith"), nil},   // smtp: alias
			{"A.Example@EXAMPLE.test", sambatest.UserDN("asmith"), nil},   // any case
			{"alice.smith@example.test", sambatest.UserDN("asmith"), nil}, // another alias
			{"f@example.test", sambatest.UserDN("frank"), nil},            // no mail attribute at all
			{"frank@example.test", sambatest.UserDN("frank"), nil},        // SMTP: primary
			{"carol@example.test", sambatest.UserDN("carol"), nil},        // disabled: found, policy decides
			{"twins@example.test", "", ldapsource.ErrAmbiguous},           // twin1's mail, twin2's alias
			{"svc-mailbeacon@example.test", "", ldapsource.ErrNotFound},   // a UPN is not searched by this filter
			{"a.example*@example.test", "", ldapsource.ErrNotFound},       // escaped, not a wildcard
		} {
			t.Run(tc.email, func(t *testing.T) {
				e, err := adLookup(src, tc.email)
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && e.DN != tc.wantDN) {
					t.Errorf("got %v %+v, want %s %v", err, e, tc.wantDN, tc.wantErr)
				}
			})
		}
		e, _ := adLookup(src, "a.example@example.test")
		if ps := e.Values("proxyAddresses"); !slices.Contains(ps, "SMTP:alice@example.test") {
			t.Errorf("proxyAddresses %q", ps)
		}
	})

	t.Run("nested groups", func(t *testing.T) {
		odd := "CN=Odd (group)*\\, with a comma,OU=Groups,DC=example,DC=test" // escaped in the filter; no such group
		groups := []string{sambatest.POP3DisabledGroup, sambatest.MobileUsersGroup, odd}
		for _, tc := range []struct {
			sam  string
			want []string
		}{
			{"dave", []string{sambatest.POP3DisabledGroup, sambatest.MobileUsersGroup}}, // POP3 through Contractors
			{"bob.login", []string{sambatest.POP3DisabledGroup}},                        // directly
			{"asmith", []string{sambatest.MobileUsersGroup}},
			{"erin", nil},
			{"nobody-here", nil}, // no such entry
		} {
			t.Run(tc.sam, func(t *testing.T) {
				got, err := src.MemberOf(ctx, sambatest.UserDN(tc.sam), groups)
				if err != nil || !slices.Equal(got, tc.want) {
					t.Errorf("MemberOf = %q, %v; want %q", got, err, tc.want)
				}
			})
		}
		// memberOf itself lists direct memberships only.
		e, err := adLookup(src, "dave@example.test")
		if err != nil || slices.Contains(e.Values("memberOf"), sambatest.POP3DisabledGroup) || !slices.Contains(e.Values("memberOf"), sambatest.ContractorsGroup) {
			t.Errorf("dave's memberOf %q (%v)", e.Values("memberOf"), err)
		}
	})

	t.Run("authenticate with the DN found", func(t *testing.T) {
		for _, tc := range []struct {
			name, bindName, password string
			want                     error
		}{
			{"DN", sambatest.UserDN("asmith"), sambatest.UserPassword, nil},
			{"UPN", "asmith@example.test", sambatest.UserPassword, nil},
			{"bare sAMAccountName is no bind name on AD", "asmith", sambatest.UserPassword, ldapsource.ErrInvalidCredentials},
			{"wrong password", sambatest.UserDN("bob.login"), "wrong", ldapsource.ErrInvalidCredentials},
			{"disabled account", sambatest.UserDN("carol"), sambatest.UserPassword, ldapsource.ErrInvalidCredentials},
			{"empty password", sambatest.UserDN("asmith"), "", ldapsource.ErrInvalidCredentials},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if err := src.Authenticate(ctx, tc.bindName, tc.password); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
					t.Errorf("Authenticate(%s) = %v, want %v", tc.bindName, err, tc.want)
				}
			})
		}
		starttls := adSource(t, adConfig(srv, srv.URL, true, sambatest.ServiceUPN))
		if err := starttls.Authenticate(ctx, sambatest.UserDN("dave"), sambatest.UserPassword); err != nil {
			t.Errorf("over StartTLS: %v", err)
		}
		plain := adSource(t, adConfig(srv, srv.URL, false, sambatest.ServiceUPN))
		if err := plain.Authenticate(ctx, sambatest.UserDN("dave"), sambatest.UserPassword); !errors.Is(err, ldapsource.ErrInsecureBind) {
			t.Errorf("over plain LDAP: %v, want ErrInsecureBind", err)
		}
	})

	t.Run("lockout shows in msDS-User-Account-Control-Computed", func(t *testing.T) {
		e, err := adLookup(src, "ivan@example.test")
		if err != nil || e.Values("msDS-User-Account-Control-Computed")[0] != "0" {
			t.Fatalf("ivan before: %v %+v", err, e)
		}
		for range 3 { // the domain's lockout threshold
			_ = src.Authenticate(ctx, e.DN, "wrong")
		}
		e, err = adLookup(src, "ivan@example.test")
		if err != nil || e.Values("msDS-User-Account-Control-Computed")[0] != "16" || e.Values("userAccountControl")[0] != "512" {
			t.Errorf("ivan after three wrong passwords: %v %+v", err, e)
		}
	})
}
