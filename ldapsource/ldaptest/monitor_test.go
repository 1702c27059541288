package ldaptest

import (
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestMonitorCountsSearches(t *testing.T) {
	s := Slapd(t)
	b0, s0 := s.BindCount(), s.SearchCount()
	c, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Bind(ServiceDN, ServicePassword); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.Search(ldap.NewSearchRequest(BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(mail=nobody@example.com)", []string{"1.1"}, nil)); err != nil {
			t.Fatal(err)
		}
	}
	b1, s1 := s.BindCount(), s.SearchCount()
	if b1-b0 != 1 || s1-s0 != 3 {
		t.Errorf("binds %d→%d, searches %d→%d; want +1, +3", b0, b1, s0, s1)
	}
}
