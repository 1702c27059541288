package ldaptest

import (
	"fmt"

	"github.com/go-ldap/ldap/v3"
)

// RequireAuthentication makes the running server refuse every operation
// but a bind (and StartTLS) from a client that has not bound, the RootDSE
// and the schema included (slapd's "require authc", set live through
// cn=config). A restart forgets it.
func (s *Server) RequireAuthentication() {
	s.t.Helper()
	if err := s.modifyConfig("cn=config", "olcRequires", "authc"); err != nil {
		s.t.Fatalf("ldaptest: requiring authentication: %v", err)
	}
}

// modifyConfig replaces attr of the cn=config entry dn, as root over
// ldapi:// with SASL EXTERNAL.
func (s *Server) modifyConfig(dn, attr string, values ...string) error {
	c, err := ldap.DialURL(s.LDAPIURL)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.ExternalBind(); err != nil {
		return fmt.Errorf("SASL EXTERNAL bind over %s: %w", s.LDAPIURL, err)
	}
	m := ldap.NewModifyRequest(dn, nil)
	m.Replace(attr, values)
	return c.Modify(m)
}
