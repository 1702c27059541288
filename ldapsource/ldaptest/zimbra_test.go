package ldaptest_test

import (
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// The Zimbra test directory loads with its schema, its classes of service
// land in the cn=zimbra naming context, and the service account reads both
// trees.
func TestPresetZimbraDirectorySlapd(t *testing.T) {
	s := ldaptest.Slapd(t, ldaptest.Zimbra()...)
	c, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Bind(ldaptest.ServiceDN, ldaptest.ServicePassword); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ base, filter, want string }{
		{"cn=cos,cn=zimbra", "(objectClass=zimbraCOS)", "cn=default,cn=cos,cn=zimbra cn=students,cn=cos,cn=zimbra"},
		{ldaptest.BaseDN, "(zimbraDomainDefaultCOSId=" + ldaptest.ZimbraStudentsCOSID + ")", "dc=school,dc=example,dc=com"},
		{ldaptest.BaseDN, "(zimbraMailAlias=ada.lovelace@example.com)", "uid=ada,ou=people,dc=example,dc=com"},
		{ldaptest.BaseDN, "(zimbraMailDeliveryAddress=carol@school.example.com)", "uid=carol,ou=people,dc=school,dc=example,dc=com"},
	} {
		res, err := c.Search(ldap.NewSearchRequest(tc.base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, tc.filter, []string{"1.1"}, nil))
		if err != nil {
			t.Fatalf("%s under %s: %v", tc.filter, tc.base, err)
		}
		var dns []string
		for _, e := range res.Entries {
			dns = append(dns, e.DN)
		}
		if got := strings.Join(dns, " "); got != tc.want {
			t.Errorf("%s under %s: %q, want %q", tc.filter, tc.base, got, tc.want)
		}
	}
}
