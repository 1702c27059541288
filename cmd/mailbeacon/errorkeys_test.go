package main

// Each configuration mistake the directory reports (or the loader finds)
// names the key to fix and how, in serve's refusal and in config check
// --online alike, against a real slapd and a real Samba AD DC. The names
// carry "Lockout": these are the refusals a lockout-safe start relies on.

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// keyCase is one configuration mistake: the key that must lead the error
// ("KEY: "), other keys it must name, and words of the fix.
type keyCase struct {
	name   string
	text   string
	key    string
	others []string
	fix    []string
}

// rawControl returns the first control character other than a line feed
// in s, or -1.
func rawControl(s string) rune {
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' {
			return r
		}
	}
	return -1
}

// checkNamesKey asserts that output (serve's log, or config check's
// output) names tc's keys and fix and holds no raw control character.
func checkNamesKey(t *testing.T, what string, tc keyCase, output string) {
	t.Helper()
	if !strings.Contains(output, tc.key+": ") {
		t.Errorf("%s does not lead with %q:\n%s", what, tc.key+": ", output)
	}
	for _, w := range append(append([]string{}, tc.others...), tc.fix...) {
		if !strings.Contains(output, w) {
			t.Errorf("%s does not say %q:\n%s", what, w, output)
		}
	}
	if r := rawControl(output); r >= 0 {
		t.Errorf("%s prints the raw control character %U:\n%q", what, r, output)
	}
}

// runKeyCases runs serve and config check --online on each case: serve
// must refuse to start, config check must call the file invalid (not the
// directory unreachable), and both must name the key.
func runKeyCases(t *testing.T, cases []keyCase) {
	t.Helper()
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
			writeFile(t, file, tc.text)
			code, log := runServe(t, "--config", file)
			if code == 0 || strings.Contains(log, "mailbeacon listening") {
				t.Errorf("serve exited %d; want a refusal:\n%s", code, log)
			}
			checkNamesKey(t, "serve's log", tc, log)
			code, out, errOut := runConfigCheck(t, "--online", file)
			if code == 0 || code == exitDirectory {
				t.Errorf("config check --online exited %d; want a configuration error, not 0 or %d (directory unreachable)", code, exitDirectory)
			}
			checkNamesKey(t, "config check --online", tc, out+errOut)
		})
	}
}

var (
	bindDNLine = regexp.MustCompile(`(?m)^  bind_dn: .*$`)
	baseDNLine = regexp.MustCompile(`(?m)^  base_dn: .*$`)
)

// withLine replaces the first line re matches in text by line.
func withLine(text string, re *regexp.Regexp, line string) string {
	done := false
	return re.ReplaceAllStringFunc(text, func(s string) string {
		if done {
			return s
		}
		done = true
		return line
	})
}

// The hint for a value YAML double quotes turned into a control character.
var quotingFix = []string{`"EXAMPLE\bind-mail" holds the control character U+0008`, "single quotes"}

func TestLockoutSafeErrorsNameKeySlapd(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithReferral("ldap://dc.other.example/"), ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	good := slapdConfigText(t, srv, slapdOptions{})
	const pwKey = "ldap.bind_password_file"
	credentialsFix := []string{"check ldap.bind_dn and " + pwKey + " together", "full DN"}
	runKeyCases(t, []keyCase{
		{"wrong password", slapdConfigText(t, srv, slapdOptions{password: "not-the-password"}),
			pwKey, []string{"ldap.bind_dn"}, credentialsFix},
		{"misspelled bind_dn", withLine(good, bindDNLine, `  bind_dn: "cn=mailbeacn,ou=services,dc=example,dc=com"`),
			pwKey, []string{"ldap.bind_dn"}, credentialsFix},
		{"bare account name", withLine(good, bindDNLine, `  bind_dn: mailbeacon`),
			"ldap.bind_dn", nil, []string{"LDAP 34", "full DN"}},
		{"control character from YAML double quotes", withLine(good, bindDNLine, `  bind_dn: "EXAMPLE\bind-mail"`),
			"ldap.bind_dn", nil, quotingFix},
		{"base DN referral", withLine(good, baseDNLine, `  base_dn: "dc=other,dc=com"`),
			"ldap.base_dn", nil, []string{`refers to "ldap://dc.other.example/dc=other,dc=com`, "LDAP 10, referral"}},
		{"domain_source.base_dn referral", strings.Replace(hostedConfigText(t, srv, time.Minute, time.Minute),
			"base_dn: o=domains,dc=example,dc=com", "base_dn: o=domains,dc=other,dc=com", 1),
			"domain_source.base_dn", nil, []string{`refers to "ldap://dc.other.example/o=domains,dc=other,dc=com`}},
		{"empty base_dn without a global catalog port", withLine(good, baseDNLine, `  base_dn: ""`),
			"ldap.base_dn", nil, []string{"3268 or 3269", srv.URL}},
	})

	// A reload to either mistake is refused, naming the key, and the
	// running configuration keeps answering.
	t.Run("reload", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "c.yaml")
		writeFile(t, file, good)
		s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"})
		for i, tc := range []struct{ text, want string }{
			{withLine(good, baseDNLine, `  base_dn: "dc=other,dc=com"`), `ldap.base_dn: the directory does not hold the base DN and refers to \"ldap://dc.other.example/dc=other,dc=com`},
			{withLine(good, bindDNLine, `  bind_dn: "EXAMPLE\bind-mail"`), `ldap.bind_dn: \"EXAMPLE\\bind-mail\" holds the control character U+0008`},
		} {
			writeFile(t, file, tc.text)
			s.hup()
			s.waitLog("configuration reload failed", i+1)
			log := s.stderr.String()
			if !strings.Contains(log, tc.want) {
				t.Errorf("reload %d: the log does not say %s:\n%s", i, tc.want, log)
			}
			if r := rawControl(log); r >= 0 {
				t.Errorf("the log prints the raw control character %U", r)
			}
			if _, body := get(t, http.DefaultClient, s.addrs["server.listen"]+"/mail/config-v1.1.xml?emailaddress=bob@example.com", ""); !strings.Contains(body, "<username>bob.login</username>") {
				t.Errorf("after the refused reload %d bob gets:\n%s", i, body)
			}
		}
	})

	// Started degraded on a referral, 200 requests at once get the domain
	// defaults, and the log names the key; what they cost slapd is printed.
	t.Run("degraded, 200 at once", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "c.yaml")
		writeFile(t, file, withLine(good, baseDNLine, `  base_dn: "dc=other,dc=com"`)+"limits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n  max_per_client: 256\n")
		s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0", "--start-degraded"})
		if log := s.stderr.String(); !strings.Contains(log, "starting degraded") || !strings.Contains(log, "key=ldap.base_dn") {
			t.Errorf("log:\n%s", log)
		}
		before := srv.SearchCount()
		var bad atomic.Int32
		ldaptest.Together(200, func(i int) {
			addr := fmt.Sprintf("u%d@example.com", i)
			resp, err := http.Get(s.addrs["server.listen"] + "/mail/config-v1.1.xml?emailaddress=" + addr)
			if err != nil {
				if bad.Add(1) == 1 {
					t.Log(err)
				}
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), "<username>"+addr+"</username>") {
				if bad.Add(1) == 1 {
					t.Logf("%s: %d %s", addr, resp.StatusCode, body)
				}
			}
		})
		t.Logf("200 requests at once with a referred base DN: %d searches in slapd", srv.SearchCount()-before)
		if bad.Load() != 0 {
			t.Errorf("%d of 200 requests did not get the domain defaults", bad.Load())
		}
	})
}

func TestLockoutSafeErrorsNameKeySamba(t *testing.T) {
	srv := sambatest.DC(t)
	// Above the handful of refused binds this test makes as the service
	// account: a lockout here is another test's business.
	srv.SetLockoutPolicy(t, 20, 30*time.Minute)
	good := adConfigText(t, srv, adPolicy)
	const pwKey = "ldap.bind_password_file"
	adFix := []string{"(AD 52e", "check ldap.bind_dn and " + pwKey + " together", `DOMAIN\user`, `'EXAMPLE\svc-mailbeacon'`, "single quotes", "a UPN"}
	wrongPW := filepath.Join(t.TempDir(), "wrong-password")
	writeFile(t, wrongPW, "not-the-password\n")
	runKeyCases(t, []keyCase{
		{"wrong password", regexp.MustCompile(`(?m)^  bind_password_file: .*$`).ReplaceAllString(good, fmt.Sprintf("  bind_password_file: %q", wrongPW)),
			pwKey, []string{"ldap.bind_dn"}, adFix},
		{"misspelled bind_dn", withLine(good, bindDNLine, `  bind_dn: "CN=svc-mailbeacn,CN=Users,DC=example,DC=test"`),
			pwKey, []string{"ldap.bind_dn"}, adFix},
		{"bare sAMAccountName", withLine(good, bindDNLine, `  bind_dn: svc-mailbeacon`),
			pwKey, []string{"ldap.bind_dn"}, append([]string{`ldap.bind_dn "svc-mailbeacon" is a bare account name: give it as one of the forms below`}, adFix...)},
		{"control character from YAML double quotes", withLine(good, bindDNLine, `  bind_dn: "EXAMPLE\bind-mail"`),
			"ldap.bind_dn", nil, quotingFix},
		// Samba answers a DN outside its naming contexts with noSuchObject
		// where Windows refers (the slapd test has the referral).
		{"base DN of another domain", withLine(good, baseDNLine, `  base_dn: "DC=other,DC=test"`),
			"ldap.base_dn", nil, []string{"the base DN does not exist"}},
		{"empty base_dn without a global catalog port", withLine(good, baseDNLine, `  base_dn: ""`),
			"ldap.base_dn", nil, []string{"3268 or 3269", srv.LDAPSURL}},
	})

	// On the global catalog port the empty base DN searches the forest:
	// serve starts and answers alice from her entry (login her UPN).
	t.Run("empty base_dn on the global catalog", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "gc.yaml")
		writeFile(t, file, strings.Replace(withLine(good, baseDNLine, `  base_dn: ""`), fmt.Sprintf("%q", srv.LDAPSURL), fmt.Sprintf("%q", srv.LDAPSURL+":3269"), 1))
		if code, out, errOut := runConfigCheck(t, "--online", file); code != 0 {
			t.Errorf("config check --online: exit %d\n%s%s", code, out, errOut)
		}
		s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"})
		resp, err := http.Get(s.addrs["server.listen"] + "/mail/config-v1.1.xml?emailaddress=alice@example.test")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), "<username>asmith@example.test</username>") {
			t.Errorf("alice through the global catalog: %d\n%s\nlog:\n%s", resp.StatusCode, body, s.stderr.String())
		}
	})
	bad, locked := srv.Lockout(t, sambatest.ServiceDN)
	t.Logf("svc-mailbeacon after the refused cases: badPwdCount=%d locked=%t", bad, locked)
}
