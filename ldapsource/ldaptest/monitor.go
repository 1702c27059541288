package ldaptest

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// BindCount returns how many bind operations the running server has
// completed since it started, successful or not, as its cn=Monitor
// backend counts them, less the binds BindCount itself made. It is how a
// test sees what a directory's lockout policy would see.
func (s *Server) BindCount() int {
	s.t.Helper()
	n, err := s.readBindCount()
	if err != nil {
		s.t.Fatalf("ldaptest: reading the bind count from cn=Monitor: %v", err)
	}
	return n
}

func (s *Server) readBindCount() (int, error) {
	c, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetTimeout(2 * time.Second)
	if err := c.Bind(RootDN, s.RootPassword); err != nil {
		return 0, err
	}
	res, err := c.Search(ldap.NewSearchRequest("cn=Bind,cn=Operations,cn=Monitor", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 2, false, "(objectClass=*)", []string{"monitorOpCompleted"}, nil))
	if err != nil {
		return 0, err
	}
	if len(res.Entries) != 1 {
		return 0, fmt.Errorf("cn=Bind,cn=Operations,cn=Monitor: %d entries", len(res.Entries))
	}
	n, err := strconv.Atoi(res.Entries[0].GetAttributeValue("monitorOpCompleted"))
	if err != nil {
		return 0, fmt.Errorf("monitorOpCompleted: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// This call's bind is counted, and so are those of earlier calls.
	s.monitorBinds++
	return n - s.monitorBinds, nil
}
