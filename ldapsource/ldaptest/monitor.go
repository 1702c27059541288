package ldaptest

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// BindCount returns how many bind operations the running server has
// begun since it started, successful or not, as its cn=Monitor
// backend counts them, less the binds the counters themselves made. It is
// how a test sees what a directory's lockout policy would see.
func (s *Server) BindCount() int {
	s.t.Helper()
	binds, _, err := s.readOpCounts()
	if err != nil {
		s.t.Fatalf("ldaptest: reading the bind count from cn=Monitor: %v", err)
	}
	return binds
}

// SearchCount returns how many search operations the running server has
// begun since it started, as cn=Monitor counts them, less the
// searches the counters themselves made: what a test's traffic cost the
// directory.
func (s *Server) SearchCount() int {
	s.t.Helper()
	_, searches, err := s.readOpCounts()
	if err != nil {
		s.t.Fatalf("ldaptest: reading the search count from cn=Monitor: %v", err)
	}
	return searches
}

// readOpCounts reads the binds and searches the server has begun, less
// those made by this and earlier calls. Begun, not completed: slapd counts
// an operation completed only after it sent the answer, so a completed
// count read just after an answer arrived may still lack it.
func (s *Server) readOpCounts() (binds, searches int, err error) {
	c, err := ldap.DialURL(s.URL, ldap.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}))
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	c.SetTimeout(2 * time.Second)
	if err := c.Bind(RootDN, s.RootPassword); err != nil {
		return 0, 0, err
	}
	read := func(op string) (int, error) {
		dn := "cn=" + op + ",cn=Operations,cn=Monitor"
		res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
			1, 2, false, "(objectClass=*)", []string{"monitorOpInitiated"}, nil))
		if err != nil {
			return 0, err
		}
		if len(res.Entries) != 1 {
			return 0, fmt.Errorf("%s: %d entries", dn, len(res.Entries))
		}
		n, err := strconv.Atoi(res.Entries[0].GetAttributeValue("monitorOpInitiated"))
		if err != nil {
			return 0, fmt.Errorf("%s monitorOpInitiated: %w", dn, err)
		}
		return n, nil
	}
	searches, err = read("Search")
	if err != nil {
		return 0, 0, err
	}
	binds, err = read("Bind")
	if err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Counted: this call's bind and the search that read the search
	// count, and earlier calls' bind and two searches each.
	earlier := s.monitorCalls
	s.monitorCalls++
	return binds - s.monitorCalls, searches - 2*earlier - 1, nil
}
