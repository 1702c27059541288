//go:build linux

package sambatest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ExportKeytab writes the keys of principal (e.g. MachinePrincipal) into a
// new keytab file in the test's temporary directory and returns its path,
// as samba-tool domain exportkeytab does on a domain controller. The DC's
// database is read directly: the DC may be running.
func (s *Server) ExportKeytab(t testing.TB, principal string) string {
	t.Helper()
	tl, err := findTools()
	if err != nil {
		t.Fatalf("sambatest: %v", err)
	}
	path := filepath.Join(t.TempDir(), "krb5.keytab")
	out, err := exec.Command(tl.sambaTool, "domain", "exportkeytab", path, "--principal="+principal,
		"-s", filepath.Join(s.Dir, "etc", "smb.conf")).CombinedOutput()
	if err != nil {
		t.Fatalf("sambatest: samba-tool domain exportkeytab --principal=%s: %v: %s", principal, err, strings.TrimSpace(string(out)))
	}
	return path
}
