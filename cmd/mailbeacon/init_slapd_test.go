package main

// mailbeacon init against real directories: the file it writes passes
// config check --online, and lookup answers the sampled users as their
// entries say and as init's table said.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/policy"
)

func runInit(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"init"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// initPaths is what an init test gives init: a password file holding
// the service account's password, and the file to write (not there yet).
func initPaths(t *testing.T) (pw, file string) {
	t.Helper()
	dir := t.TempDir()
	pw = filepath.Join(dir, "ldap-password")
	writeFile(t, pw, ldaptest.ServicePassword+"\n")
	return pw, filepath.Join(dir, "mailbeacon.yaml")
}

// runInitOK runs init against srv as the service account with srv's CA,
// writing file, with more arguments before the URL, and fails the test
// unless it exits 0. It returns init's standard output.
func runInitOK(t *testing.T, srv *ldaptest.Server, pw, file string, more ...string) string {
	t.Helper()
	args := append([]string{"--bind-dn", ldaptest.ServiceDN, "--bind-password-file", pw, "--ca-file", srv.CAFile, "--out", file}, more...)
	code, stdout, stderr := runInit(t, append(args, srv.URL)...)
	if code != 0 {
		t.Fatalf("init: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	return stdout
}

// initUser is what a sampled user's entry says: the services allowed (in
// the domain's order, as init's table and lookup's explanation list
// them), the login, and whether the account is enabled.
type initUser struct {
	addr, services, login string
	enabled               bool
}

// tableRow matches a row of init's table of sampled accounts.
var tableRow = regexp.MustCompile(`(?m)^  (\S+@\S+) +(\S+) +(.+)$`)

// checkInitFile runs config check --online on the file init wrote, then
// lookup for each user, and compares both lookup's answer and init's
// table (stdout) with what the entries say.
func checkInitFile(t *testing.T, file, stdout string, users []initUser) {
	t.Helper()
	if code, out, errOut := runConfigCheck(t, "--online", file); code != 0 {
		t.Fatalf("config check --online: exit %d\nstdout %s\nstderr %s\nfile:\n%s", code, out, errOut, readText(t, file))
	}
	rows := map[string][]string{}
	for _, m := range tableRow.FindAllStringSubmatch(stdout, -1) {
		rows[m[1]] = m[2:]
	}
	for _, u := range users {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"lookup", "--config", file, u.addr}, &out, &errOut); code != 0 {
			t.Errorf("lookup %s: exit %d: %s", u.addr, code, errOut.String())
			continue
		}
		var got lookupOutput
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("lookup %s: %v\n%s", u.addr, err, out.String())
		}
		ex := got.Explanation
		var allowed []string
		for _, d := range ex.Services {
			if d.Allowed && !strings.Contains(strings.Join(allowed, " "), d.Service) {
				allowed = append(allowed, d.Service)
			}
		}
		if s := strings.Join(allowed, " "); s != u.services || ex.Enabled != u.enabled || (u.enabled && ex.Login != u.login) {
			t.Errorf("lookup %s: services %q enabled %t login %q, the entry says %q %t %q\n%s", u.addr, s, ex.Enabled, ex.Login, u.services, u.enabled, u.login, out.String())
		}
		row, ok := rows[u.addr]
		if !ok {
			t.Errorf("init's table has no row for %s:\n%s", u.addr, stdout)
			continue
		}
		want := u.services
		if !u.enabled {
			want += " (domain defaults: disabled)"
		}
		if row[1] != want || (u.enabled && row[0] != u.login) {
			t.Errorf("init's table says %s: login %q services %q; lookup says %q %q", u.addr, row[0], row[1], u.login, want)
		}
	}
}

func readText(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertGuessed fails unless the first line of the file holding value
// follows a "# guessed:" comment, before it or before the key that opens
// its block.
func assertGuessed(t *testing.T, text, value string) {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.Contains(l, value) && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			for j := i - 1; j >= 0 && (strings.HasPrefix(strings.TrimSpace(lines[j]), "#") || strings.HasSuffix(lines[j], ":")); j-- {
				if strings.HasPrefix(strings.TrimSpace(lines[j]), "# guessed:") {
					return
				}
			}
			t.Errorf("%q is not marked as a guess:\n%s", l, text)
			return
		}
	}
	t.Errorf("no line holds %q:\n%s", value, text)
}

// The demo directory in OpenLDAP: iRedMail's layout (mailUser,
// accountStatus, enabledService), mailHost on one user.
func TestInitSlapdIRedMail(t *testing.T) {
	srv := ldaptest.Slapd(t)
	pw, file := initPaths(t)
	before := srv.BindCount()
	stdout := runInitOK(t, srv, pw, file)
	t.Logf("init:\n%s", stdout)
	if n := srv.BindCount() - before; n != 1 {
		t.Errorf("init bound %d times, want once", n)
	}
	text := readText(t, file)
	// iredmail where this mailbeacon has it, else its older name.
	preset := "iredmail"
	if _, err := policy.Preset(preset); err != nil {
		preset = "openldap"
	}
	for _, want := range []string{`preset: "` + preset + `"`, "start_tls: true", `ca_file: "` + srv.CAFile, `bind_password_file: "` + pw,
		`base_dn: "dc=example,dc=com"`, `host_attribute: "mailHost"`, `- name: "example.com"`, "type: activesync"} {
		if !strings.Contains(text, want) {
			t.Errorf("the file lacks %s:\n%s", want, text)
		}
	}
	assertGuessed(t, text, "base_dn:")
	assertGuessed(t, text, "host_attribute:")
	assertGuessed(t, text, "provider:")
	// dave's mailHost is the only host in the directory, and not the
	// domain's.
	assertGuessed(t, text, `{type: imap, host: "mail.example.com"`)
	for _, want := range []string{"Directory: " + srv.URL + ": OpenLDAP", "StartTLS: the directory takes it, and its certificate verified with ca_file",
		"Mail schema: iRedMail (object class mailUser", "Bound once as " + ldaptest.ServiceDN,
		"mailbeacon config check --online " + file, "mailbeacon lookup --config " + file + " alice@example.com\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("init's output lacks %q:\n%s", want, stdout)
		}
	}
	checkInitFile(t, file, stdout, []initUser{
		{addr: "alice@example.com", services: "imap pop3 smtp activesync", login: "alice@example.com", enabled: true},
		{addr: "bob@example.com", services: "imap smtp", login: "bob@example.com", enabled: true},
		{addr: "carol@example.com", services: "imap pop3 smtp activesync"},
		{addr: "dave@example.com", services: "imap smtp", login: "dave@example.com", enabled: true},
	})

	// A second run refuses the file before it asks the directory anything.
	before = srv.BindCount()
	code, _, stderr := runInit(t, "--bind-dn", ldaptest.ServiceDN, "--bind-password-file", pw, "--out", file, srv.URL)
	if code != 1 || !strings.Contains(stderr, file+" exists: init never overwrites a file") || srv.BindCount() != before {
		t.Errorf("second run: exit %d, %d binds: %s", code, srv.BindCount()-before, stderr)
	}
	if readText(t, file) != text {
		t.Error("the second run changed the file")
	}
}

// What init says when it cannot do its work: each in words with the fix,
// with the exit status of config check (78: the configuration must
// change, 3: the directory is not there), no file written, and never a
// second bind.
func TestInitSlapdRefusals(t *testing.T) {
	srv := ldaptest.Slapd(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "ldap-password")
	writeFile(t, pw, ldaptest.ServicePassword+"\n")
	wrong := filepath.Join(dir, "wrong-password")
	writeFile(t, wrong, "not-the-password\n")
	closed := fmt.Sprintf("ldap://127.0.0.1:%d", freePort(t))
	creds := []string{"--bind-dn", ldaptest.ServiceDN, "--bind-password-file", pw}
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		binds int
		want  []string
	}{
		{"nothing listening", append(creds, closed), exitDirectory, 0,
			[]string{"connecting: " + closed, "connection refused", "is the directory running, and are the URL's host and port right?"}},
		{"ldaps not verified", append(creds, srv.LDAPSURL), exitConfig, 0,
			[]string{"--ca-file: the directory's certificate is not signed by a trusted CA", "set --ca-file to the PEM file of the CA"}},
		{"StartTLS not verified", append(creds, srv.URL), exitConfig, 0,
			[]string{"StartTLS: --ca-file: the directory's certificate is not signed by a trusted CA", "set --ca-file to the PEM file of the CA"}},
		{"wrong password", []string{"--bind-dn", ldaptest.ServiceDN, "--bind-password-file", wrong, "--ca-file", srv.CAFile, srv.URL}, exitConfig, 1,
			[]string{"binding: --bind-password-file: the directory refused the service account's credentials (LDAP 49", "check --bind-dn and --bind-password-file together"}},
		{"wrong bind DN form", []string{"--bind-dn", "mailbeacon", "--bind-password-file", pw, "--ca-file", srv.CAFile, srv.URL}, exitConfig, 1,
			[]string{"binding: --bind-dn: the directory does not take --bind-dn as a name to bind with (LDAP 34"}},
		{"CA file missing", append(creds, "--ca-file", filepath.Join(dir, "no-ca.pem"), srv.URL), exitConfig, 0,
			[]string{"connecting: --ca-file: open " + filepath.Join(dir, "no-ca.pem") + ": no such file or directory"}},
		{"password file missing", []string{"--bind-dn", ldaptest.ServiceDN, "--bind-password-file", filepath.Join(dir, "no-password"), srv.URL}, exitConfig, 0,
			[]string{"connecting: --bind-password-file: " + `"` + filepath.Join(dir, "no-password") + `" does not exist: create it, mode 0600`}},
		{"password on the command line", []string{"--bind-dn", ldaptest.ServiceDN, srv.URL}, 1, 0,
			[]string{"--bind-dn: no password: give --bind-password-file FILE, or set MAILBEACON_LDAP_BIND_PASSWORD (never on the command line)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "mailbeacon.yaml")
			before := srv.BindCount()
			code, stdout, stderr := runInit(t, append([]string{"--out", file}, tc.args...)...)
			t.Logf("stderr: %s", stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout %s\nstderr %s", code, tc.code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if n := srv.BindCount() - before; n != tc.binds {
				t.Errorf("%d binds, want %d", n, tc.binds)
			}
			if _, err := os.Stat(file); err == nil {
				t.Errorf("%s written", file)
			}
		})
	}
}

// A directory that shows nothing, not even its RootDSE, to a client that
// has not bound: without credentials init says what it needs; with them
// it reads the RootDSE after its one bind.
func TestInitSlapdAnonymousRefused(t *testing.T) {
	srv := ldaptest.Slapd(t)
	srv.RequireAuthentication()
	pw, file := initPaths(t)

	code, stdout, stderr := runInit(t, "--ca-file", srv.CAFile, "--out", file, srv.URL)
	if code != exitConfig || !strings.Contains(stderr, "the directory does not show its RootDSE to this client") ||
		!strings.Contains(stderr, "give --base-dn, or --bind-dn and --bind-password-file") {
		t.Errorf("anonymous: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if _, err := os.Stat(file); err == nil {
		t.Errorf("%s written", file)
	}

	before := srv.BindCount()
	code, stdout, stderr = runInit(t, "--bind-dn", ldaptest.ServiceDN, "--bind-password-file", pw, "--ca-file", srv.CAFile, "--out", file, srv.URL)
	if code != 0 || !strings.Contains(stdout, "RootDSE: not shown to anonymous clients") || !strings.Contains(stdout, "Mail schema: iRedMail") {
		t.Fatalf("with credentials: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if n := srv.BindCount() - before; n != 1 {
		t.Errorf("init bound %d times, want once", n)
	}
	checkInitFile(t, file, stdout, []initUser{
		{addr: "alice@example.com", services: "imap pop3 smtp activesync", login: "alice@example.com", enabled: true},
		{addr: "bob@example.com", services: "imap smtp", login: "bob@example.com", enabled: true},
		{addr: "carol@example.com", services: "imap pop3 smtp activesync"},
	})
}

// A directory that takes the connection and never answers (SIGSTOP):
// init gives up after --request-timeout, says so, and sends no password.
func TestInitSlapdHang(t *testing.T) {
	srv := ldaptest.Slapd(t)
	pw, file := initPaths(t)
	before := srv.BindCount()
	resume := srv.Hang()
	start := time.Now()
	code, stdout, stderr := runInit(t, "--bind-dn", ldaptest.ServiceDN, "--bind-password-file", pw, "--ca-file", srv.CAFile,
		"--request-timeout", "500ms", "--out", file, srv.URL)
	took := time.Since(start)
	t.Logf("stderr: %s", stderr)
	resume()
	// Its first request, StartTLS, goes unanswered.
	if code != exitDirectory || !strings.Contains(stderr, "StartTLS: "+srv.URL+": StartTLS: ") ||
		!strings.Contains(stderr, "the directory did not answer within the request timeout") ||
		!strings.Contains(stderr, "(--request-timeout 500ms): the server took the connection but does not answer") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if took > 5*time.Second {
		t.Errorf("init took %v against a hung directory with --request-timeout 500ms", took)
	}
	if n := srv.BindCount() - before; n != 0 {
		t.Errorf("%d binds to a hung directory", n)
	}
	if _, err := os.Stat(file); err == nil {
		t.Errorf("%s written", file)
	}
}

// iRedMail's hosted domains (mailDomain entries): written, less the one
// turned off, and with the domain of the sampled users who have none.
func TestInitSlapdIRedMailDomains(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	pw, file := initPaths(t)
	stdout := runInitOK(t, srv, pw, file)
	want := "Domains: hosted.example nopop.example relay.example example.com (the iRedMail domain entries in the directory, (objectClass=mailDomain); the domains of the 6 sampled addresses)"
	if !strings.Contains(stdout, want) || !strings.Contains(stdout, "mail domains turned off in the directory, left out: off.example (accountStatus disabled)") {
		t.Errorf("init's output lacks %q, or off.example left out:\n%s", want, stdout)
	}
	if text := readText(t, file); strings.Contains(text, `name: "off.example"`) {
		t.Errorf("off.example written:\n%s", text)
	}
	checkInitFile(t, file, stdout, []initUser{
		{addr: "hanna@hosted.example", services: "imap pop3 smtp", login: "hanna@hosted.example", enabled: true},
		{addr: "nora@nopop.example", services: "imap pop3 smtp", login: "nora@nopop.example", enabled: true},
		{addr: "bob@example.com", services: "imap smtp", login: "bob@example.com", enabled: true},
	})
}
