package sambatest_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// The DC holds what the package documentation promises, and leaves nothing
// behind: no process, no namespace.
func TestDC(t *testing.T) {
	var srv *sambatest.Server
	var pid int
	t.Run("running", func(t *testing.T) {
		srv = sambatest.DC(t)
		pem, err := os.ReadFile(srv.CAFile)
		if err != nil {
			t.Fatal(err)
		}
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
		res, err := c.Search(ldap.NewSearchRequest(sambatest.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 10, false,
			"(&(objectCategory=person)(objectClass=user)(proxyAddresses=smtp:A.Example@Example.TEST))",
			[]string{"sAMAccountName", "userPrincipalName", "displayName", "proxyAddresses"}, nil))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Entries) != 1 || res.Entries[0].DN != sambatest.UserDN("asmith") ||
			res.Entries[0].GetAttributeValue("userPrincipalName") != "asmith@example.test" ||
			!slices.Contains(res.Entries[0].GetAttributeValues("proxyAddresses"), "SMTP:alice@example.test") {
			t.Errorf("alias search: %d entries", len(res.Entries))
			for _, e := range res.Entries {
				e.PrettyPrint(2)
			}
		}
		res, err = c.Search(ldap.NewSearchRequest(sambatest.UserDN("erin"), ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 10, false,
			"(objectClass=*)", []string{"protocolSettings", "msExchHideFromAddressLists"}, nil))
		if err != nil {
			t.Fatal(err)
		}
		if ps := res.Entries[0].GetAttributeValues("protocolSettings"); !slices.Contains(ps, "IMAP4§0§1§4§ISO-8859-1§0§1§0§0") {
			t.Errorf("erin's protocolSettings %q", ps)
		}
		res, err = c.Search(ldap.NewSearchRequest(sambatest.UserDN("dave"), ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 10, false,
			"(memberOf:1.2.840.113556.1.4.1941:="+ldap.EscapeFilter(sambatest.POP3DisabledGroup)+")", []string{"memberOf"}, nil))
		if err != nil || len(res.Entries) != 1 || slices.Contains(res.Entries[0].GetAttributeValues("memberOf"), sambatest.POP3DisabledGroup) {
			t.Errorf("dave should be a nested, not a direct, member of %s: %v", sambatest.POP3DisabledGroup, err)
		}
		b, _ := os.ReadFile(srv.Dir + "/run/samba.pid")
		if pid = atoi(strings.TrimSpace(string(b))); pid == 0 {
			t.Errorf("no pid in %s/run/samba.pid", srv.Dir)
		}
	})
	if srv == nil || t.Skipped() {
		return
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), srv.Namespace) {
		t.Errorf("namespace %s left behind", srv.Namespace)
	}
	if pid > 0 && syscall.Kill(pid, 0) == nil {
		t.Errorf("samba %d still running", pid)
	}
	if _, err := os.Stat(srv.Dir); err == nil {
		t.Errorf("%s left behind", srv.Dir)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}
