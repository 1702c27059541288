package sambatest

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// The domain the DC holds.
const (
	Realm      = "EXAMPLE.TEST"
	NetBIOS    = "EXAMPLE"
	BaseDN     = "DC=example,DC=test"
	MailDomain = "example.test"

	// ServiceDN, or ServiceUPN, is the account mailbeacon binds as: a
	// plain domain user, with no rights beyond what every user has.
	ServiceDN       = "CN=svc-mailbeacon,CN=Users,DC=example,DC=test"
	ServiceUPN      = "svc-mailbeacon@example.test"
	ServicePassword = "Svc-Passw0rd!mb"
	// UserPassword is every other seeded user's password.
	UserPassword = "User-Passw0rd!mb"
	// MachinePrincipal is the Kerberos principal of the computer account
	// MAILBEACON$, whose key only a keytab holds (Server.ExportKeytab);
	// MachineDN is its entry. ServicePrincipal is the DC's LDAP service.
	MachinePrincipal = "MAILBEACON$@" + Realm
	MachineDN        = "CN=MAILBEACON,CN=Computers," + BaseDN
	ServicePrincipal = "ldap/dc1.example.test"
	// AdminUPN and AdminPassword are the domain administrator's.
	AdminUPN      = "Administrator@example.test"
	AdminPassword = "Admin-Passw0rd!mb"

	// POP3DisabledGroup has bob.login and ContractorsGroup as members;
	// ContractorsGroup has dave.
	POP3DisabledGroup = "CN=Mail-POP3-Disabled,OU=Groups,DC=example,DC=test"
	ContractorsGroup  = "CN=Contractors,OU=Groups,DC=example,DC=test"
	// MobileUsersGroup has asmith and dave.
	MobileUsersGroup = "CN=Mobile-Users,OU=Groups,DC=example,DC=test"
)

// UserDN returns the DN of the seeded user with sAMAccountName sam.
func UserDN(sam string) string { return "CN=" + sam + ",CN=Users," + BaseDN }

// Server is a running domain controller.
type Server struct {
	IP        string // the DC's address, in its own network namespace
	URL       string // ldap://IP: StartTLS; simple binds without it are refused
	LDAPSURL  string // ldaps://IP
	KDC       string // IP:88, the DC's Kerberos KDC (TCP and UDP)
	CAFile    string // PEM of the CA that signed the DC's certificate
	Dir       string // the DC's files: configuration, database, log/
	Namespace string // the network namespace's name
	// Host is a name of this DC alone that its certificate holds
	// (dcN.example.test, N the third octet of IP), for tests that reach
	// several DCs by name; nothing resolves it but the test's own DNS.
	Host string

	stop func()
}

// Stop stops the DC before the test ends: it no longer answers, and its
// address refuses connections.
func (s *Server) Stop() { s.stop() }

// Debian packages that provide what DC needs.
const packages = "samba samba-ad-dc samba-ad-provision iproute2"

// unavailable skips the test, or fails it under CI=true, where a missing
// Samba must not pass silently.
func unavailable(t testing.TB, why string) {
	t.Helper()
	msg := "sambatest: " + why
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Bind returns a connection to the DC over ldaps://, its certificate
// verified, bound as name (a UPN or DN) with password, closed when the
// test ends.
func (s *Server) Bind(t testing.TB, name, password string) *ldap.Conn {
	t.Helper()
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithTLSConfig(&tls.Config{RootCAs: roots}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Bind(name, password); err != nil {
		t.Fatal(err)
	}
	return c
}

// SetLockoutPolicy sets the domain's account lockout policy: threshold
// wrong passwords within window lock an account for window (as Active
// Directory's lockoutThreshold, lockOutObservationWindow and
// lockoutDuration). The seeded domain has threshold 3 and Samba's default
// window of 30 minutes.
func (s *Server) SetLockoutPolicy(t testing.TB, threshold int, window time.Duration) {
	t.Helper()
	c := s.Bind(t, AdminUPN, AdminPassword)
	// Intervals are negative counts of 100 ns.
	interval := strconv.FormatInt(-int64(window/100), 10)
	m := ldap.NewModifyRequest(BaseDN, nil)
	m.Replace("lockoutThreshold", []string{strconv.Itoa(threshold)})
	m.Replace("lockOutObservationWindow", []string{interval})
	m.Replace("lockoutDuration", []string{interval})
	if err := c.Modify(m); err != nil {
		t.Fatalf("sambatest: setting the lockout policy: %v", err)
	}
}

// Lockout returns what the DC counts against the account dn: failed
// logons since its last good one (badPwdCount), and whether it is locked
// out (lockoutTime set).
func (s *Server) Lockout(t testing.TB, dn string) (badPwdCount int, locked bool) {
	t.Helper()
	c := s.Bind(t, AdminUPN, AdminPassword)
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, 5, false,
		"(objectClass=*)", []string{"badPwdCount", "lockoutTime"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("sambatest: reading %s: %v", dn, err)
	}
	e := res.Entries[0]
	badPwdCount, _ = strconv.Atoi(e.GetAttributeValue("badPwdCount"))
	lt := e.GetAttributeValue("lockoutTime")
	return badPwdCount, lt != "" && lt != "0"
}
