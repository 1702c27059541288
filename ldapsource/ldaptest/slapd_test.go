package ldaptest_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// TestSlapdLifecycle checks what other tests rely on: the server answers
// over ldap, StartTLS and ldaps with the CA it hands out, Stop takes it
// away, Start brings it back on the same ports, and nothing is left
// running when the test ends.
func TestSlapdLifecycle(t *testing.T) {
	var pid int
	var dir string
	t.Run("server", func(t *testing.T) {
		s := ldaptest.Slapd(t)
		pid, dir = s.PID(), s.Dir
		if pid == 0 {
			t.Fatal("no pid for a running server")
		}
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			t.Fatal("CAFile holds no certificate")
		}
		tc := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}

		bindAndRead := func(t *testing.T, c *ldap.Conn) {
			t.Helper()
			defer c.Close()
			c.SetTimeout(5 * time.Second)
			if err := c.Bind(ldaptest.ServiceDN, ldaptest.ServicePassword); err != nil {
				t.Fatalf("bind as the service account: %v", err)
			}
			res, err := c.Search(ldap.NewSearchRequest(ldaptest.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
				0, 0, false, "(shadowAddress=a.example@example.com)", []string{"uid"}, nil))
			if err != nil || len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("uid") != "alice" {
				t.Fatalf("search by shadowAddress: %v %v", res, err)
			}
		}
		t.Run("ldap+StartTLS", func(t *testing.T) {
			c, err := ldap.DialURL(s.URL)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.StartTLS(tc); err != nil {
				c.Close()
				t.Fatal(err)
			}
			bindAndRead(t, c)
		})
		t.Run("ldaps", func(t *testing.T) {
			c, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithTLSConfig(tc))
			if err != nil {
				t.Fatal(err)
			}
			bindAndRead(t, c)
		})
		t.Run("anonymous reads nothing", func(t *testing.T) {
			c, err := ldap.DialURL(s.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Search(ldap.NewSearchRequest(ldaptest.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
				0, 0, false, "(objectClass=*)", nil, nil))
			if err == nil && len(res.Entries) > 0 {
				t.Fatalf("anonymous search found %d entries", len(res.Entries))
			}
		})
		t.Run("user binds", func(t *testing.T) {
			c, err := ldap.DialURL(s.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Bind("uid=alice,ou=people,dc=example,dc=com", ldaptest.UserPassword); err != nil {
				t.Fatal(err)
			}
		})

		addr := strings.TrimPrefix(s.URL, "ldap://")
		s.Stop()
		if s.PID() != 0 || processAlive(pid) {
			t.Fatalf("slapd pid %d still running after Stop", pid)
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts connections after Stop", addr)
		}
		s.Start()
		pid = s.PID()
		c, err := ldap.DialURL(s.URL)
		if err != nil {
			t.Fatalf("after Start: %v", err)
		}
		c.Close()
	})
	if processAlive(pid) {
		t.Fatalf("slapd pid %d (%s) still running after the test ended", pid, dir)
	}
}

// processAlive: running and not a zombie (a daemonized slapd's parent is
// init, which in a container may never reap it).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
