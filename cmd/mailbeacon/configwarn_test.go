package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

// placeholderLineRE finds a name under an RFC 2606 example domain, as a
// host name or as a DN's dc= components.
var placeholderLineRE = regexp.MustCompile(`(?i)\bexample\.(com|net|org)\b|\bdc=example,\s*dc=(com|net|org)\b`)

// examplePlaceholderLines counts the lines of config.example.yaml that set
// a value naming an example domain (comments and commented-out keys do not
// count): each must get a warning of its own.
func examplePlaceholderLines(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if placeholderLineRE.MatchString(line) {
			n++ // one value a line
		}
	}
	return n
}

// The untouched example, with the password file in place, is valid
// (exit 0) but warned about: one warning per placeholder value, each led
// by its key; --strict turns them into a failure (78).
func TestConfigCheckWarnsAboutEachExamplePlaceholder(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "ldap-password")
	writeFile(t, pw, "secret\n")
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD_FILE", pw)
	const file = "../../config.example.yaml"
	code, out, errOut := runConfigCheck(t, file)
	if code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	for _, want := range []string{
		"ldap.urls[0]: ldap1.example.com is the example's placeholder",
		"ldap.urls[1]: ldap2.example.com is the example's placeholder",
		"ldap.bind_dn: cn=mailbeacon,ou=services,dc=example,dc=com is the example's placeholder",
		"ldap.base_dn: ou=people,dc=example,dc=com is the example's placeholder",
		"domains[0].name: example.com is the example's placeholder",
		"domains[0].services[0].host: mail.example.com is the example's placeholder",
		"domains[0].services[4].url: mail.example.com is the example's placeholder",
	} {
		if !strings.Contains(errOut, file+": warning: "+want) {
			t.Errorf("no warning %q in\n%s", want, errOut)
		}
	}
	lines := examplePlaceholderLines(t)
	if got := strings.Count(errOut, ": warning: "); lines < 10 || got != lines {
		t.Errorf("%d warnings for %d placeholder values in config.example.yaml:\n%s", got, lines, errOut)
	}
	code, out, errOut = runConfigCheck(t, "--strict", file)
	if code != exitConfigInvalid || strings.Contains(out, "valid") || !strings.Contains(errOut, "--strict") {
		t.Errorf("--strict: exit %d (want %d)\nstdout %s\nstderr %s", code, exitConfigInvalid, out, errOut)
	}
	// A file with nothing left from the example has no warnings, and
	// --strict accepts it.
	dir := t.TempDir()
	own := filepath.Join(dir, "own.yaml")
	writeFile(t, own, "ldap:\n  urls: [ldaps://ldap.corp.test]\n  bind_dn: cn=svc,dc=corp,dc=test\n  base_dn: dc=corp,dc=test\n"+
		"domains:\n  - name: corp.test\n    services:\n      - {type: imap, host: imap.corp.test}\n")
	if code, out, errOut := runConfigCheck(t, "--strict", own); code != 0 || strings.Contains(errOut, "warning") {
		t.Errorf("own file: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

func TestPlaceholderNames(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  bool
	}{
		{"ldaps://ldap1.example.com", true},
		{"ldap://EXAMPLE.NET:389", true},
		{"ou=people,DC=example,DC=org", true},
		{"svc@example.com", true},
		{"mail.example.com:993", true},
		{"https://mail.example.com/Microsoft-Server-ActiveSync", true},
		{"example.com.", true},
		{"notexample.com", false},
		{"example.com.evil.test", false},
		{"ou=people,dc=corp,dc=test", false},
		{"Example Mail", false},
		{"{uid}", false},
	} {
		got := false
		for _, n := range namesIn(tc.value) {
			got = got || isPlaceholder(n)
		}
		if got != tc.want {
			t.Errorf("%q: placeholder %v, want %v", tc.value, got, tc.want)
		}
	}
}

// serve logs the same warnings at start (not under --demo, whose domain
// is example.com).
func TestServeLogsPlaceholderWarnings(t *testing.T) {
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, fmt.Sprintf("%sldap:\n  urls: [%s]\n  bind_dn: %q\n  bind_password: %q\n  base_dn: %q\n",
		demoConfig, srv.URL, embedded.DemoBindDN, embedded.DemoPassword, embedded.DemoBaseDN))
	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"})
	s.stop()
	log := s.stderr.String()
	for _, want := range []string{"domains[0].name: example.com is the example's placeholder", "ldap.bind_dn: " + embedded.DemoBindDN} {
		if !strings.Contains(log, want) || !strings.Contains(log, "level=WARN") {
			t.Errorf("serve's log has no warning %q:\n%s", want, log)
		}
	}
	s = startServe(t, []string{"--demo", "--listen", "127.0.0.1:0"})
	s.stop()
	if strings.Contains(s.stderr.String(), "placeholder") {
		t.Errorf("serve --demo warns about its own domain:\n%s", s.stderr.String())
	}
}

// Every value the decoder cannot read is named with its key, the value as
// written, and how to write it.
func TestConfigDecodeErrorsNameKeyValueAndFix(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"duration", "cache:\n  ttl: 10 minutes\n", `f.yaml: cache.ttl: "10 minutes" is not a duration: write e.g. 10m or 1h30m`},
		{"duration in server", "server:\n  read_timeout: soon\n", `server.read_timeout: "soon" is not a duration: write e.g. 10m`},
		{"int", "ldap:\n  pool_size: lots\n", `ldap.pool_size: "lots" is not a whole number: write digits only`},
		{"bool", "ldap:\n  start_tls: maybe\n", `ldap.start_tls: "maybe" is not true or false: write true or false`},
		{"list item", "domains:\n  - name: corp.test\n    services:\n      - {type: imap, port: x}\n", `domains[0].services[0].port: "x" is not a whole number`},
		{"unknown key", "ldap:\n  bogus: 1\n", "ldap.bogus: unknown key: check its spelling and section (every key is documented in config.example.yaml)"},
		{"unknown top-level key", "bogus: 1\n", "f.yaml: bogus: unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(strings.NewReader(tc.text), "f.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\nwant %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "'") {
				t.Errorf("error quotes the key the decoder's way: %v", err)
			}
		})
	}
	// Two mistakes: both named, one line each.
	_, err := loadConfig(strings.NewReader("cache:\n  ttl: 10 minutes\nldap:\n  pool_size: lots\n"), "f.yaml")
	if err == nil || !strings.Contains(err.Error(), "\ncache.ttl: ") && !strings.Contains(err.Error(), "\nldap.pool_size: ") {
		t.Errorf("two mistakes: %v", err)
	}
}

// A fresh install: the packaged configuration before the password file
// exists. The refusal gives the commands that create it.
func TestConfigCheckMissingPasswordFileGivesCommands(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "ldap-password")
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD_FILE", missing)
	code, _, errOut := runConfigCheck(t, "../../config.example.yaml")
	if code != exitConfigInvalid || !strings.Contains(errOut, "ldap.bind_password_file: \""+missing+"\" does not exist") ||
		!strings.Contains(errOut, "install -m 0600 -o root -g root /dev/null "+missing) {
		t.Errorf("exit %d, stderr:\n%s", code, errOut)
	}
}

// policy.preset and domain_source.preset still take the old name of the
// iredmail preset, and config check and serve say to write the new one;
// --strict refuses it.
func TestPresetOpenLDAPDeprecationWarning(t *testing.T) {
	b, err := os.ReadFile("testdata/configcheck/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "old.yaml")
	writeFile(t, file, strings.Replace(string(b), "preset: iredmail", "preset: openldap", 1))
	const want = "policy.preset: openldap is deprecated, the old name of the iredmail preset (the same rules): write iredmail"
	code, out, errOut := runConfigCheck(t, file)
	if code != 0 || !strings.Contains(out, "valid") || !strings.Contains(errOut, file+": warning: "+want) {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	if code, _, errOut := runConfigCheck(t, "--strict", file); code != exitConfigInvalid {
		t.Errorf("--strict: exit %d, want %d\n%s", code, exitConfigInvalid, errOut)
	}
	if _, _, errOut := runConfigCheck(t, "testdata/configcheck/valid.yaml"); strings.Contains(errOut, "deprecated") {
		t.Errorf("iredmail warned about:\n%s", errOut)
	}

	var cfg config
	cfg.Policy.Preset, cfg.DomainSource.Preset = "openldap", "openldap"
	got := deprecated(cfg)
	if len(got) != 2 || got[0] != want || !strings.HasPrefix(got[1], "domain_source.preset: openldap is deprecated") || !strings.HasSuffix(got[1], "write iredmail") {
		t.Errorf("deprecated: %q", got)
	}
	cfg.Policy.Preset, cfg.DomainSource.Preset = "iredmail", ""
	if got := deprecated(cfg); len(got) != 0 {
		t.Errorf("deprecated(iredmail): %q", got)
	}

	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	conf := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, conf, fmt.Sprintf("%sldap:\n  urls: [%s]\n  bind_dn: %q\n  bind_password: %q\n  base_dn: %q\n",
		strings.Replace(demoConfig, "preset: iredmail", "preset: openldap", 1), srv.URL, embedded.DemoBindDN, embedded.DemoPassword, embedded.DemoBaseDN))
	s := startServe(t, []string{"--config", conf, "--listen", "127.0.0.1:0"})
	s.stop()
	if log := s.stderr.String(); !strings.Contains(log, want) {
		t.Errorf("serve's log has no warning %q:\n%s", want, log)
	}
}
