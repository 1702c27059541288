package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

func runConfigCheck(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"config", "check"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestConfigCheckValid(t *testing.T) {
	code, out, errOut := runConfigCheck(t, "testdata/configcheck/valid.yaml")
	if code != 0 || !strings.Contains(out, "valid: 1 domain(s) [example.com], HTTPS from files, Apple profiles signed") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	// The packaged /etc/mailbeacon/config.yaml, with the password file the
	// unit hands over.
	pw := filepath.Join(t.TempDir(), "ldap-password")
	writeFile(t, pw, "secret\n")
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD_FILE", pw)
	if code, out, errOut := runConfigCheck(t, "../../config.example.yaml"); code != 0 {
		t.Errorf("config.example.yaml: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

// Each file in testdata/configcheck/broken is valid.yaml with one mistake;
// its first line says which key the message must name.
func TestConfigCheckRejectsBrokenExamples(t *testing.T) {
	files, err := filepath.Glob("testdata/configcheck/broken/*.yaml")
	if err != nil || len(files) < 20 {
		t.Fatalf("broken examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			want := wantLine(t, f)
			code, out, errOut := runConfigCheck(t, f)
			if code != exitConfigInvalid {
				t.Errorf("exit %d, want %d; stdout %q", code, exitConfigInvalid, out)
			}
			if strings.Count(errOut, f+": ") != 1 || !strings.Contains(errOut, want) {
				t.Errorf("stderr does not name %s in %s:\n%s", want, f, errOut)
			}
		})
	}
}

func wantLine(t *testing.T, file string) string {
	t.Helper()
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Scan()
	want, ok := strings.CutPrefix(sc.Text(), "# want: ")
	if !ok {
		t.Fatalf("%s: first line must be '# want: KEY'", file)
	}
	return want
}

func TestConfigCheckUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"a.yaml", "b.yaml"}, {"--bogus", "a.yaml"}} {
		if code, _, errOut := runConfigCheck(t, args...); code != 2 || !strings.Contains(errOut, "Usage: mailbeacon config check") && !strings.Contains(errOut, "flag provided") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"config", "verify"}, &out, &errOut); code != 2 {
		t.Errorf("config verify: exit %d", code)
	}
	if code, _, errOut := runConfigCheck(t, "/nonexistent/config.yaml"); code != exitConfigInvalid || !strings.Contains(errOut, "stat /nonexistent/config.yaml: no such file") {
		t.Errorf("missing file: exit %d, stderr %q", code, errOut)
	}
}

// --online against the demo directory on loopback: a bind and one search
// per domain; a wrong password and a directory that is not there exit 3
// naming what to look at.
func TestConfigCheckOnline(t *testing.T) {
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	dir := t.TempDir()
	conf := func(name, url, password string) string {
		p := filepath.Join(dir, name+".yaml")
		writeFile(t, p, fmt.Sprintf("%sldap:\n  urls: [%s]\n  bind_dn: %q\n  bind_password: %q\n  base_dn: %q\n  dial_timeout: 500ms\n  request_timeout: 1s\n",
			demoConfig, url, embedded.DemoBindDN, password, embedded.DemoBaseDN))
		return p
	}
	closed := fmt.Sprintf("ldap://127.0.0.1:%d", freePort(t))
	for _, tc := range []struct {
		name, url, password string
		code                int
		want                string
	}{
		{"ok", srv.URL, embedded.DemoPassword, 0, "domain example.com: searched: no entry for postmaster@example.com"},
		{"wrong password", srv.URL, "wrong", exitConfigInvalid, "ldap.bind_password"},
		{"no directory", closed, embedded.DemoPassword, exitDirectory, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runConfigCheck(t, "--online", conf(strings.ReplaceAll(tc.name, " ", "-"), tc.url, tc.password))
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Errorf("exit %d (want %d), want %q in\nstdout %s\nstderr %s", code, tc.code, tc.want, out, errOut)
			}
			// Offline, the same file is valid: the directory is not asked.
			if code, _, errOut := runConfigCheck(t, conf("offline", tc.url, tc.password)); code != 0 {
				t.Errorf("without --online: exit %d: %s", code, errOut)
			}
		})
	}
}
