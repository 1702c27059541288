package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

// A bare directory (the embedded demo server): no StartTLS, no RootDSE
// for anyone, no schema. init goes on without TLS on the loopback, needs
// --base-dn, falls back on the generic preset and says what it could not
// find; the password comes from the environment and stays there.
func TestInitBareDirectory(t *testing.T) {
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD", embedded.DemoPassword)
	dir := t.TempDir()
	file := filepath.Join(dir, "mailbeacon.yaml")

	code, stdout, stderr := runInit(t, "--bind-dn", embedded.DemoBindDN, "--out", file, srv.URL)
	if code != exitConfig || !strings.Contains(stderr, "the directory does not show its RootDSE to this client") ||
		!strings.HasSuffix(strings.TrimSpace(stderr), "so init cannot find the naming context: give --base-dn") {
		t.Errorf("without --base-dn: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatalf("%s written", file)
	}

	code, stdout, stderr = runInit(t, "--bind-dn", embedded.DemoBindDN, "--base-dn", embedded.DemoBaseDN, "--sample", "3", "--out", file, srv.URL)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	text := readText(t, file)
	for _, want := range []string{"start_tls: false", "# no TLS: the directory offers no StartTLS; on the loopback the password", `preset: "generic"`,
		"# The password: MAILBEACON_LDAP_BIND_PASSWORD in the environment", "# from --base-dn", "# not found: schema: "} {
		if !strings.Contains(text, want) {
			t.Errorf("the file lacks %q:\n%s", want, text)
		}
	}
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); !strings.HasPrefix(l, "#") && strings.Contains(l, "bind_password") || strings.Contains(l, embedded.DemoPassword) {
			t.Errorf("the password, or a key for it, is in the file: %q", l)
		}
	}
	for _, want := range []string{"\nNot found:\n  StartTLS: the directory refused it (", "\n  vendor: the RootDSE names none\n",
		"Preset: generic (no mail schema init knows", "Sampled accounts (3)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("init's output lacks %q:\n%s", want, stdout)
		}
	}
	// generic: every entry found gets every service, carol too.
	checkInitFile(t, file, stdout, []initUser{
		{addr: "alice@example.com", services: "imap pop3 smtp", login: "alice@example.com", enabled: true},
		{addr: "bob@example.com", services: "imap pop3 smtp", login: "bob@example.com", enabled: true},
		{addr: "carol@example.com", services: "imap pop3 smtp", login: "carol@example.com", enabled: true},
	})
}

// --preset, --domain and --sample replace what init would find.
func TestInitFlagsOverride(t *testing.T) {
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD", embedded.DemoPassword)
	file := filepath.Join(t.TempDir(), "mailbeacon.yaml")
	code, stdout, stderr := runInit(t, "--bind-dn", embedded.DemoBindDN, "--base-dn", "ou=people,"+embedded.DemoBaseDN,
		"--preset", "openldap", "--domain", "example.com", "--domain", "Example.NET", "--sample", "2", "--out", file, srv.URL)
	if code != 0 {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	text := readText(t, file)
	for _, want := range []string{`preset: "openldap"`, "# from --preset", `- name: "example.com"`, `- name: "example.net"`,
		"# The domains: from --domain.", `base_dn: "ou=people,dc=example,dc=com"`} {
		if !strings.Contains(text, want) {
			t.Errorf("the file lacks %q:\n%s", want, text)
		}
	}
	if n := len(tableRow.FindAllString(stdout, -1)); n != 2 {
		t.Errorf("%d sampled accounts, want 2:\n%s", n, stdout)
	}
	for _, args := range [][]string{
		{"--preset", "nosuch", srv.URL},
		{"--sample", "0", srv.URL},
		{"--domain", "not a domain", srv.URL},
		{"--start-tls", "ldaps://127.0.0.1:1"},
		{srv.URL, srv.URL},
		{"--out", "/nonexistent/dir/mailbeacon.yaml", srv.URL},
	} {
		if code, _, stderr := runInit(t, append([]string{"--out", filepath.Join(t.TempDir(), "x.yaml")}, args...)...); code == 0 {
			t.Errorf("%q: exit 0: %s", args, stderr)
		}
	}
}
