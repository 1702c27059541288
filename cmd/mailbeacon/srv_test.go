package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// TestSRVConfigCheckUnknownDomain: a dns-srv: domain DNS does not know
// makes config check --online fail as a configuration error naming the
// ldap.urls entry, not as an unreachable directory.
func TestSRVConfigCheckUnknownDomain(t *testing.T) {
	d := ldaptest.NewDNS(t, "example.com. 60 IN A 127.0.0.1")
	dir := t.TempDir()
	pw := filepath.Join(dir, "ldap-password")
	writeFile(t, pw, "secret\n")
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, fmt.Sprintf(`
ldap:
  urls: ["dns-srv:example.com"]
  dns_server: %s
  start_tls: true
  bind_dn: cn=mailbeacon,ou=services,dc=example,dc=com
  bind_password_file: %q
  base_dn: ou=people,dc=example,dc=com
policy:
  preset: openldap
domains:
  - name: example.com
    services:
      - {type: imap, host: mail.example.com, port: 993, socket: tls}
`, d.Addr, pw))
	code, out, errOut := runConfigCheck(t, "--online", file)
	if code != exitConfigInvalid || !strings.Contains(errOut, "ldap.urls[0]: DNS names no directory server: no SRV record _ldap._tcp.dc._msdcs.example.com.") {
		t.Errorf("exit %d, want %d naming ldap.urls[0]\nstdout %s\nstderr %s", code, exitConfigInvalid, out, errOut)
	}
	if d.Queries() == 0 {
		t.Error("the DNS server was never asked")
	}
}
