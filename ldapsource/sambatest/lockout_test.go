package sambatest_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// SetLockoutPolicy and Lockout: with a threshold of 2, two wrong passwords
// lock ivan, and the DC says so.
func TestDCLockoutPolicy(t *testing.T) {
	srv := sambatest.DC(t)
	srv.SetLockoutPolicy(t, 2, 30*time.Minute)
	pem, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	dn := sambatest.UserDN("ivan")
	for i := 1; i <= 2; i++ {
		c, err := ldap.DialURL(srv.LDAPSURL, ldap.DialWithTLSConfig(&tls.Config{RootCAs: roots}))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Bind(dn, "wrong"); err == nil {
			t.Fatal("a wrong password opened ivan")
		}
		c.Close()
		bad, locked := srv.Lockout(t, dn)
		if bad != i || locked != (i == 2) {
			t.Errorf("after %d wrong passwords: badPwdCount %d, locked %v", i, bad, locked)
		}
	}
}
