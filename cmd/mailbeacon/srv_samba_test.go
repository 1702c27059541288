package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
	"github.com/mailbeacon/mailbeacon/policy"
)

// TestSRVSambaFailover: two domain controllers of one domain, found
// through their SRV records from a DNS server the test runs: with the
// preferred DC stopped, lookup and config check --online are answered by
// the other, and name it.
func TestSRVSambaFailover(t *testing.T) {
	dcA, dcB := sambatest.DC(t), sambatest.DC(t)
	srvName := "_ldap._tcp.dc._msdcs." + sambatest.MailDomain + "."
	d := ldaptest.NewDNS(t,
		fmt.Sprintf("%s 600 IN SRV 0 100 389 %s.", srvName, dcA.Host),
		fmt.Sprintf("%s 600 IN SRV 10 100 389 %s.", srvName, dcB.Host),
		fmt.Sprintf("%s. 600 IN A %s", dcA.Host, dcA.IP),
		fmt.Sprintf("%s. 600 IN A %s", dcB.Host, dcB.IP))

	dir := t.TempDir()
	pw := filepath.Join(dir, "ldap-password")
	cas := filepath.Join(dir, "cas.pem")
	var pems []byte
	for _, dc := range []*sambatest.Server{dcA, dcB} {
		b, err := os.ReadFile(dc.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, b...)
	}
	writeFile(t, cas, string(pems))
	writeFile(t, pw, sambatest.ServicePassword+"\n")
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, fmt.Sprintf(`
ldap:
  urls: ["dns-srv:%s"]
  dns_server: %s
  start_tls: true
  ca_file: %q
  bind_dn: %s
  bind_password_file: %q
  base_dn: %q
  dial_timeout: 1s
policy:
  preset: active-directory
domains:
  - name: example.test
    services:
      - {type: imap, host: mail.example.test, port: 993, socket: tls}
`, sambatest.MailDomain, d.Addr, cas, sambatest.ServiceUPN, pw, sambatest.BaseDN))

	lookupServer := func(t *testing.T) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{"lookup", "--config", file, "alice@example.test"}, &stdout, &stderr); code != 0 {
			t.Fatalf("lookup: exit %d: %s", code, stderr.String())
		}
		var out struct {
			Explanation policy.Explanation `json:"explanation"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("lookup output: %v\n%s", err, stdout.String())
		}
		if out.Explanation.DN != sambatest.UserDN("asmith") {
			t.Fatalf("lookup alice: found %q; want %s\n%s", out.Explanation.DN, sambatest.UserDN("asmith"), stdout.String())
		}
		return out.Explanation.Server
	}
	wantA := "ldap://" + dcA.Host + ":389"
	wantB := "ldap://" + dcB.Host + ":389"
	if got := lookupServer(t); got != wantA {
		t.Fatalf("lookup with both DCs up: answered by %q; want %s, the priority-0 DC", got, wantA)
	}

	dcA.Stop()
	if got := lookupServer(t); got != wantB {
		t.Errorf("lookup with %s stopped: answered by %q; want %s", dcA.Host, got, wantB)
	}
	code, out, errOut := runConfigCheck(t, "--online", file)
	t.Logf("config check --online:\n%s", out)
	if code != 0 || !strings.Contains(out, "read ldap.base_dn at "+wantB) {
		t.Errorf("config check --online with %s stopped: exit %d; want 0 and the DC that answered, %s\nstdout %s\nstderr %s", dcA.Host, code, wantB, out, errOut)
	}
}
