package main

// serve binding to Active Directory with Kerberos (Samba's KDC, package
// sambatest): a keytab and no password anywhere.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"

	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// krbConfigText is the README's Kerberos example pointed at the test DC:
// the DC is named by its address, so its LDAP service principal is given.
func krbConfigText(srv *sambatest.Server, keytabFile, stateDir string) string {
	return fmt.Sprintf(`
state_dir: %q
ldap:
  urls: [%q]
  ca_file: %q
  bind: gssapi
  keytab: %q
  principal: %q
  kdc: [%q]
  service_principal: %s
  base_dn: %q
%s
domains:
  - name: example.test
    services:
      - {type: imap, host: mail.example.test, port: 993, socket: tls}
      - {type: pop3, host: mail.example.test, port: 995, socket: tls}
      - {type: smtp, host: mail.example.test, port: 465, socket: tls}
`, stateDir, srv.LDAPSURL, srv.CAFile, keytabFile, sambatest.MachinePrincipal, srv.KDC, sambatest.ServicePrincipal, sambatest.BaseDN, adPolicy)
}

// TestKerberosServeSamba: serve binds as MAILBEACON$ with a keytab
// exported from the DC and answers autoconfig from the directory (bob's
// login, and no POP3 for his group); with the keytab gone it exits 78
// naming ldap.keytab.
func TestKerberosServeSamba(t *testing.T) {
	srv := sambatest.DC(t)
	dir := t.TempDir()
	kt := filepath.Join(dir, "krb5.keytab")
	if err := os.Rename(srv.ExportKeytab(t, sambatest.MachinePrincipal), kt); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "config.yaml")
	text := krbConfigText(srv, kt, filepath.Join(dir, "state"))
	if strings.Contains(text, "password") {
		t.Fatalf("the configuration speaks of a password:\n%s", text)
	}
	writeFile(t, file, text)

	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"})
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(s.addrs["server.listen"] + "/mail/config-v1.1.xml?emailaddress=bob@example.test")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "<username>bob.login@example.test</username>") || strings.Contains(string(body), `type="pop3"`) {
		t.Errorf("autoconfig for bob: HTTP %d, want his UPN as login and no POP3:\n%s", resp.StatusCode, body)
	}
	if code := s.stop(); code != 0 {
		t.Errorf("serve exited %d", code)
	}
	// Nothing on disk holds a password: the state directory holds the
	// refusals' key only.
	if err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.Contains(strings.ToLower(fi.Name()), "password") {
			t.Errorf("%s: a password file", p)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(kt); err != nil {
		t.Fatal(err)
	}
	code, log := runServe(t, "--config", file)
	if code != exitConfig || !strings.Contains(log, "ldap.keytab: ") || !strings.Contains(log, "exportkeytab") {
		t.Errorf("without the keytab: exit %d, want %d naming ldap.keytab and how to get one:\n%s", code, exitConfig, log)
	}
}

// TestKerberosServeRefusedKeytabSamba: serve with a keytab the KDC
// refuses exits 78 naming ldap.keytab after one try; restarts do not send
// it again (the account's badPwdCount stays 1).
func TestKerberosServeRefusedKeytabSamba(t *testing.T) {
	srv := sambatest.DC(t)
	dir := t.TempDir()
	kt := filepath.Join(dir, "krb5.keytab")
	stale := keytab.New()
	name, realm, _ := strings.Cut(sambatest.MachinePrincipal, "@")
	if err := stale.AddEntry(name, realm, "not-the-machine-password", time.Now(), 2, etypeID.AES256_CTS_HMAC_SHA1_96); err != nil {
		t.Fatal(err)
	}
	b, err := stale.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, kt, string(b))
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, krbConfigText(srv, kt, filepath.Join(dir, "state")))
	for i := range 3 {
		code, log := runServe(t, "--config", file)
		if code != exitConfig || !strings.Contains(log, "ldap.keytab: ") {
			t.Errorf("start %d: exit %d, want %d naming ldap.keytab:\n%s", i, code, exitConfig, log)
		}
		if i > 0 && !strings.Contains(log, "refused these service-account credentials before") {
			t.Errorf("start %d does not say the keytab was refused before:\n%s", i, log)
		}
		if bad, _ := srv.Lockout(t, sambatest.MachineDN); bad != 1 {
			t.Errorf("start %d: badPwdCount %d, want 1", i, bad)
		}
	}
}

// TestKerberosKeysFromEnvironment: the systemd drop-in of the README
// points ldap.keytab at the credential through the environment.
func TestKerberosKeysFromEnvironment(t *testing.T) {
	t.Setenv("MAILBEACON_LDAP_KEYTAB", "/run/credentials/mailbeacon.service/krb5.keytab")
	cfg, err := loadConfig(strings.NewReader("ldap:\n  bind: gssapi\n"), "config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LDAP.Bind != "gssapi" || cfg.LDAP.Keytab != "/run/credentials/mailbeacon.service/krb5.keytab" {
		t.Errorf("bind %q, keytab %q", cfg.LDAP.Bind, cfg.LDAP.Keytab)
	}
}
