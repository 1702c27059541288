package ldapsource_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// FindLinked against the Zimbra test directory: found, not found,
// ambiguous, a fixed DN, a missing base (misconfiguration), an outage
// and a hang.
func TestPresetFindLinkedSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.Zimbra()...)
	cfg := slapdConfig(srv.CAFile, true, srv.URL)
	cfg.RequestTimeout = time.Second
	src := slapdSource(t, cfg)
	ctx := context.Background()
	scope := func(s string) int {
		n, err := ldapsource.ParseScope(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	cos := func(filter string) ldapsource.LinkedQuery {
		return ldapsource.LinkedQuery{Key: "policy.linked[1]", BaseDN: "cn=cos,cn=zimbra", Scope: scope("one"), Filter: filter}
	}
	attrs := []string{"zimbraPop3Enabled"}
	for _, tc := range []struct {
		name string
		q    ldapsource.LinkedQuery
		dn   string // the entry found
		err  error
	}{
		{"by filter", cos("(zimbraId=" + ldaptest.ZimbraStudentsCOSID + ")"), ldaptest.ZimbraStudentsCOSDN, nil},
		{"not found", cos("(zimbraId=gone)"), "", ldapsource.ErrNotFound},
		{"ambiguous", cos("(objectClass=zimbraCOS)"), "", ldapsource.ErrAmbiguous},
		{"fixed dn", ldapsource.LinkedQuery{Key: "policy.linked[1]", BaseDN: ldaptest.ZimbraDefaultCOSDN}, ldaptest.ZimbraDefaultCOSDN, nil},
		{"fixed dn missing", ldapsource.LinkedQuery{Key: "policy.linked[1]", BaseDN: "cn=gone,cn=cos,cn=zimbra"}, "", ldapsource.ErrNotFound},
		{"domain under ldap.base_dn", ldapsource.LinkedQuery{Key: "policy.linked[0]", Scope: scope("sub"), Filter: "(zimbraDomainName=school.example.com)"}, "dc=school,dc=example,dc=com", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := src.FindLinked(ctx, tc.q, attrs)
			if !errors.Is(err, tc.err) || (tc.dn != "" && (e == nil || e.DN != tc.dn)) {
				t.Fatalf("got %+v, %v; want %s, %v", e, err, tc.dn, tc.err)
			}
			if tc.dn == ldaptest.ZimbraStudentsCOSDN && len(e.Values("zimbraPop3Enabled")) != 1 {
				t.Errorf("attributes %v", e.Attributes)
			}
		})
	}

	t.Run("missing base", func(t *testing.T) {
		q := cos("(zimbraId=x)")
		q.BaseDN = "cn=cos,cn=nowhere"
		_, err := src.FindLinked(ctx, q, attrs)
		ce := ldapsource.ConfigurationError(err)
		if ce == nil || ce.Key != "policy.linked[1].base_dn" {
			t.Fatalf("got %v, want a configuration error naming policy.linked[1].base_dn", err)
		}
	})
	t.Run("hang", func(t *testing.T) {
		resume := srv.Hang()
		start := time.Now()
		_, err := src.FindLinked(ctx, cos("(zimbraId=x)"), attrs)
		resume()
		if err == nil || errors.Is(err, ldapsource.ErrNotFound) || ldapsource.ConfigurationError(err) != nil {
			t.Errorf("hung directory: %v, want a transient failure", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("hung directory held the search %v", d)
		}
	})
	t.Run("outage", func(t *testing.T) {
		srv.Stop()
		defer srv.Start()
		_, err := src.FindLinked(ctx, cos("(zimbraId=x)"), attrs)
		if err == nil || errors.Is(err, ldapsource.ErrNotFound) || ldapsource.ConfigurationError(err) != nil {
			t.Errorf("stopped directory: %v, want a transient failure", err)
		}
	})
}
