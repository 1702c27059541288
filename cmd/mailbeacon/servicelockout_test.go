package main

// The service account is never locked out by mailbeacon: credentials the
// directory refused are not sent again - not per request, not on a
// reload, not after a restart - until they change. Against a real Samba
// DC with a lockout policy and a real slapd counting binds in cn=Monitor.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

var lockoutSpan = flag.Duration("lockout-span", 10*time.Minute, "how long TestServiceLockoutSamba serves with a wrong service password (1 request/s, 10 reloads and 10 restarts spread through it); the default needs go test -timeout 15m or more")

// passwordFileRE finds the ldap.bind_password_file line of a configuration.
var passwordFileRE = regexp.MustCompile(`(?m)^  bind_password_file: "?([^"\n]*)"?$`)

// passwordFile returns the file text's ldap.bind_password_file names.
func passwordFile(t *testing.T, text string) string {
	t.Helper()
	m := passwordFileRE.FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no bind_password_file in:\n%s", text)
	}
	return m[1]
}

// fetchLogin asks Thunderbird autoconfig for addr at base and returns the
// first <username>.
func fetchLogin(c *http.Client, base, addr string) (string, error) {
	resp, err := c.Get(base + "/mail/config-v1.1.xml?emailaddress=" + addr)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: HTTP %d: %.200s", addr, resp.StatusCode, body)
	}
	_, rest, ok := bytes.Cut(body, []byte("<username>"))
	login, _, ok2 := bytes.Cut(rest, []byte("</username>"))
	if !ok || !ok2 {
		return "", fmt.Errorf("%s: no <username> in %.300s", addr, body)
	}
	return string(login), nil
}

// A Samba DC locking accounts after 3 failed logons in 30 minutes, and a
// wrong service password: serve --start-degraded, asked once a second for
// 10 minutes (-lockout-span), reloaded 10 times and restarted 10 times
// (same state_dir) in between, costs the account one failed logon, and it
// is never locked. The right password and one SIGHUP then bring alice's
// own answer within 5 seconds.
func TestServiceLockoutSamba(t *testing.T) {
	t.Parallel()
	// The default 10 minutes outlast go test's default -timeout (10m):
	// say so at once rather than panic at the end.
	if d, ok := t.Deadline(); ok && time.Until(d) < *lockoutSpan+2*time.Minute {
		t.Fatalf("-lockout-span=%v needs go test -timeout %v or more (make test gives 30m); or shorten it, e.g. -lockout-span=1m", *lockoutSpan, *lockoutSpan+2*time.Minute)
	}
	srv := sambatest.DC(t)
	srv.SetLockoutPolicy(t, 3, 30*time.Minute)
	dir := t.TempDir()
	text := adConfigText(t, srv, adPolicy)
	pw := passwordFile(t, text)
	writeFile(t, pw, "not-the-password\n")
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, text+fmt.Sprintf("state_dir: %q\nlimits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n", filepath.Join(dir, "state")))

	maxBad, checks, everLocked := 0, 0, false
	check := func(when string) {
		t.Helper()
		bad, locked := srv.Lockout(t, sambatest.ServiceDN)
		maxBad, checks, everLocked = max(maxBad, bad), checks+1, everLocked || locked
		if bad > 1 || locked {
			t.Errorf("%s: svc-mailbeacon badPwdCount=%d locked=%v; want at most 1, not locked", when, bad, locked)
		}
	}
	args := []string{"--config", file, "--listen", "127.0.0.1:0", "--start-degraded"}
	s := startServe(t, args)
	check("after the degraded start")

	// 10 reloads and 10 restarts, alternating, evenly through the span.
	span := *lockoutSpan
	const events = 20
	c := &http.Client{Timeout: 10 * time.Second}
	start := time.Now()
	requests, hups, restarts := 0, 0, 0
	hupsHere := 0 // SIGHUPs the running process got: its log counts them
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * time.Second)
		if at.After(start.Add(span)) {
			break
		}
		time.Sleep(time.Until(at))
		if done := hups + restarts; done < events && at.Sub(start) >= span*time.Duration(done+1)/(events+1) {
			if done%2 == 0 {
				s.hup()
				hups++
				hupsHere++
				s.waitLog("configuration reloaded", hupsHere)
				check(fmt.Sprintf("after SIGHUP %d", hups))
			} else {
				if code := s.stop(); code != 0 {
					t.Fatalf("serve exited %d: %s", code, s.stderr.String())
				}
				s = startServe(t, args)
				restarts++
				hupsHere = 0
				check(fmt.Sprintf("after restart %d", restarts))
			}
		}
		login, err := fetchLogin(c, s.addrs["server.listen"], "alice@example.test")
		requests++
		if err != nil || login != "alice@example.test" {
			t.Fatalf("request %d: %q %v; want the domain defaults (login alice@example.test)", requests, login, err)
		}
	}
	check("at the end")
	t.Logf("%d requests over %v, %d SIGHUPs, %d restarts: the DC was checked %d times: badPwdCount at most %d, locked %v",
		requests, time.Since(start).Round(time.Second), hups, restarts, checks, maxBad, everLocked)
	if n := strings.Count(s.stderr.String(), "msg=\"not binding as the service account"); n != 1 {
		t.Errorf("the last process logged the held credentials %d times, want once:\n%s", n, s.stderr.String())
	}

	// Fixed: the right password in the file and one SIGHUP.
	writeFile(t, pw, sambatest.ServicePassword+"\n")
	fixed := time.Now()
	s.hup()
	for {
		login, err := fetchLogin(c, s.addrs["server.listen"], "alice@example.test")
		if err == nil && login == "asmith@example.test" {
			break
		}
		if time.Since(fixed) > 5*time.Second {
			t.Fatalf("5s after the fix alice still gets %q (%v):\n%s", login, err, s.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the right password and one SIGHUP: alice's own answer after %v", time.Since(fixed).Round(time.Millisecond))
	if bad, locked := srv.Lockout(t, sambatest.ServiceDN); bad != 0 || locked {
		t.Errorf("after the fix: badPwdCount=%d locked=%v; want 0 (a good logon resets it)", bad, locked)
	}
}

// A reload after a typo in the password file (same file name, new
// content) asks the directory before it swaps: one refused bind, the old
// password keeps serving (alice, never asked before, gets her own
// answer), the failure is logged with the key and counted; further
// SIGHUPs and requests with the same typo bind no more.
func TestReloadPasswordTypoLockoutSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	dir := t.TempDir()
	text := slapdConfigText(t, srv, slapdOptions{extra: fmt.Sprintf("state_dir: %q\n", filepath.Join(dir, "state"))})
	pw := passwordFile(t, text)
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, text)
	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"}, "operations.listen")
	c := &http.Client{Timeout: 5 * time.Second}
	base := s.addrs["server.listen"]
	if login, err := fetchLogin(c, base, "bob@example.com"); err != nil || login != "bob.login" {
		t.Fatalf("bob: %q %v", login, err)
	}

	before := srv.BindCount()
	writeFile(t, pw, ldaptest.ServicePassword+"x\n")
	const hups = 5
	for i := 1; i <= hups; i++ {
		s.hup()
		s.waitLog("configuration reload failed", i)
		if got := srv.BindCount() - before; got != 1 {
			t.Errorf("after SIGHUP %d with the typo: %d binds; want 1 (the refused one)", i, got)
		}
		for _, addr := range []string{"alice@example.com", fmt.Sprintf("nobody%d@example.com", i)} {
			if _, err := fetchLogin(c, base, addr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if login, err := fetchLogin(c, base, "alice@example.com"); err != nil || login != "alice" {
		t.Errorf("alice after the refused reloads: %q %v; want her own login, from the old password", login, err)
	}
	log := s.stderr.String()
	if !regexp.MustCompile(`configuration reload failed.*ldap\.bind_password_file`).MatchString(log) {
		t.Errorf("the reload failure does not name ldap.bind_password_file:\n%s", log)
	}
	if got := srv.BindCount() - before; got != 1 {
		t.Errorf("%d SIGHUPs and %d requests with the typo cost %d binds; want 1", hups, 2*hups+1, got)
	}
	_, body := scrape(t, s.addrs["operations.listen"])
	if got := sample(body, `mailbeacon_config_reloads_total{result="failed"}`); got != hups {
		t.Errorf("reloads failed = %v, want %d", got, hups)
	}
	if got := sample(body, "mailbeacon_directory_service_credentials_refused"); got != 0 {
		t.Errorf("the serving credentials are reported refused (%v); the refused ones never served", got)
	}

	// The typo fixed: the running credentials again, nothing to ask.
	writeFile(t, pw, ldaptest.ServicePassword+"\n")
	s.hup()
	s.waitLog("configuration reloaded", 1)
	if got := srv.BindCount() - before; got != 1 {
		t.Errorf("the fixed reload bound: %d binds, want still 1", got)
	}
}

// Credentials refused once are remembered in state_dir: a restart does
// not bind with them (cn=Monitor's bind count does not move) and exits 78
// naming the key; config check --online says so without binding; served
// degraded, /readyz and the metric say so, and the log says it once.
func TestRestartKnownRefusedLockoutSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	text := slapdConfigText(t, srv, slapdOptions{password: "not-the-password", extra: fmt.Sprintf("state_dir: %q\n", filepath.Join(dir, "state"))})
	writeFile(t, file, text)
	const key = "ldap.bind_password_file"

	before := srv.BindCount()
	code, log := runServe(t, "--config", file)
	if code != exitConfig || !strings.Contains(log, key+": ") || srv.BindCount()-before != 1 {
		t.Errorf("first start: exit %d after %d binds; want %d naming %s after 1:\n%s", code, srv.BindCount()-before, exitConfig, key, log)
	}
	if strings.Contains(log, "backoff interval") {
		t.Errorf("a start that exits promises to bind again:\n%s", log)
	}
	binds := srv.BindCount()
	for i := range 3 {
		code, log = runServe(t, "--config", file)
		if code != exitConfig || !strings.Contains(log, key+": ") || !strings.Contains(log, "refused these service-account credentials before") {
			t.Errorf("restart %d: exit %d; want %d naming %s and the earlier refusal:\n%s", i+1, code, exitConfig, key, log)
		}
	}
	code, out, errOut := runConfigCheck(t, "--online", file)
	if code != exitConfig || !strings.Contains(out, "not binding as the service account") || !strings.Contains(errOut, key+": ") {
		t.Errorf("config check --online: exit %d; want %d saying it does not bind, naming %s:\n%s%s", code, exitConfig, key, out, errOut)
	}
	if got := srv.BindCount() - binds; got != 0 {
		t.Errorf("3 restarts and config check --online bound %d times with the refused credentials; want 0", got)
	}

	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0", "--start-degraded"}, "operations.listen")
	c := &http.Client{Timeout: 5 * time.Second}
	for i := range 20 {
		if login, err := fetchLogin(c, s.addrs["server.listen"], fmt.Sprintf("u%d@example.com", i)); err != nil || login != fmt.Sprintf("u%d@example.com", i) {
			t.Fatalf("%q %v; want the defaults", login, err)
		}
	}
	for range 3 {
		code, body := get(t, c, s.addrs["operations.listen"]+"/readyz", "")
		if code != 503 || !strings.Contains(body, "refused the service account's credentials") || !strings.Contains(body, key) {
			t.Errorf("/readyz: %d %q; want 503 saying the credentials are refused, naming %s", code, body, key)
		}
	}
	_, body := scrape(t, s.addrs["operations.listen"])
	if got := sample(body, "mailbeacon_directory_service_credentials_refused"); got != 1 {
		t.Errorf("mailbeacon_directory_service_credentials_refused = %v, want 1", got)
	}
	if got := srv.BindCount() - binds; got != 0 {
		t.Errorf("the degraded server bound %d times; want 0", got)
	}
	log = s.stderr.String()
	if n := strings.Count(log, `msg="not binding as the service account`); n != 1 || !regexp.MustCompile(`not binding as the service account.* key=`+regexp.QuoteMeta(key)+` .*fix=`).MatchString(log) {
		t.Errorf("the held credentials are logged %d times (want once, with key and fix):\n%s", n, log)
	}
	if !strings.Contains(log, "does not bind with these credentials again") || strings.Contains(log, "backoff interval") {
		t.Errorf("the degraded start does not say how it goes on:\n%s", log)
	}
	s.stop()

	// Other credentials (the right password) are tried at once.
	writeFile(t, passwordFile(t, text), ldaptest.ServicePassword+"\n")
	s = startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"}, "operations.listen")
	if login, err := fetchLogin(c, s.addrs["server.listen"], "bob@example.com"); err != nil || login != "bob.login" {
		t.Errorf("bob with the right password: %q %v", login, err)
	}
	if code, _ := get(t, c, s.addrs["operations.listen"]+"/readyz", ""); code != 200 {
		t.Errorf("/readyz %d with the right password", code)
	}
	_, body = scrape(t, s.addrs["operations.listen"])
	if got := sample(body, "mailbeacon_directory_service_credentials_refused"); got != 0 {
		t.Errorf("mailbeacon_directory_service_credentials_refused = %v with the right password, want 0", got)
	}
}

// The service account's password changed in the directory under a
// running server, the directory restarted (the pooled connections gone),
// and 200 lookups at once for distinct addresses: the pool dials in
// parallel, but its binds go one at a time, so the directory sees one
// refused bind, not one per connection; a SIGHUP with the same file binds
// no more.
func TestRotatedPasswordLockoutSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, slapdConfigText(t, srv, slapdOptions{
		// The per-client limits would refuse most of the burst before
		// the directory: all 200 must reach it.
		extra: fmt.Sprintf("state_dir: %q\nlimits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n  max_per_client: 256\n", filepath.Join(dir, "state")),
	}))
	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"}, "operations.listen")
	c := &http.Client{Timeout: 10 * time.Second}
	if login, err := fetchLogin(c, s.addrs["server.listen"], "bob@example.com"); err != nil || login != "bob.login" {
		t.Fatalf("bob: %q %v", login, err)
	}
	m := ldap.NewModifyRequest(ldaptest.ServiceDN, nil)
	m.Replace("userPassword", []string{"rotated-elsewhere"})
	if err := ldapRoot(t, srv).Modify(m); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Start()
	before := srv.BindCount()
	ldaptest.Together(200, func(i int) {
		addr := fmt.Sprintf("burst%d@example.com", i)
		if login, err := fetchLogin(c, s.addrs["server.listen"], addr); err != nil || login != addr {
			t.Errorf("%s: %q %v; want the defaults", addr, login, err)
		}
	})
	s.hup()
	s.waitLog("configuration reloaded", 1)
	for i := range 20 {
		fetchLogin(c, s.addrs["server.listen"], fmt.Sprintf("after%d@example.com", i))
	}
	if got := srv.BindCount() - before; got != 1 {
		t.Errorf("200 concurrent lookups, a SIGHUP and 20 lookups after the password changed cost %d binds; want 1", got)
	}
	_, body := scrape(t, s.addrs["operations.listen"])
	if got := sample(body, "mailbeacon_directory_service_credentials_refused"); got != 1 {
		t.Errorf("mailbeacon_directory_service_credentials_refused = %v, want 1", got)
	}
}

// An account the DC has locked out (AD 775), with the right password in
// the file: its credentials are not known to be wrong, so mailbeacon waits
// ldap.locked_retry_interval before trying again, across a restart too;
// /readyz and the gauge say it is locked, not refused.
func TestLockedServiceAccountLockoutSamba(t *testing.T) {
	srv := sambatest.DC(t)
	srv.SetLockoutPolicy(t, 3, 30*time.Minute)
	// Someone else locks the account.
	pem, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	for range 3 {
		c, err := ldap.DialURL(srv.LDAPSURL, ldap.DialWithTLSConfig(&tls.Config{RootCAs: roots}))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Bind(sambatest.ServiceUPN, "guessed-wrong"); err == nil {
			t.Fatal("a wrong password bound")
		}
		c.Close()
	}
	if _, locked := srv.Lockout(t, sambatest.ServiceDN); !locked {
		t.Fatal("the DC did not lock the account after 3 wrong passwords")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	writeFile(t, file, adConfigText(t, srv, adPolicy)+fmt.Sprintf("state_dir: %q\n", filepath.Join(dir, "state")))
	args := []string{"--config", file, "--listen", "127.0.0.1:0", "--start-degraded"}
	for i := range 2 { // a start, and a restart
		s := startServe(t, args, "operations.listen")
		c := &http.Client{Timeout: 5 * time.Second}
		code, body := get(t, c, s.addrs["operations.listen"]+"/readyz", "")
		if code != 503 || !strings.Contains(body, "locked out") {
			t.Errorf("start %d: /readyz %d %q; want 503 saying the account is locked out", i+1, code, body)
		}
		_, metrics := scrape(t, s.addrs["operations.listen"])
		if l, r := sample(metrics, "mailbeacon_directory_service_account_locked"), sample(metrics, "mailbeacon_directory_service_credentials_refused"); l != 1 || r != 0 {
			t.Errorf("start %d: locked gauge %v, refused gauge %v; want 1 and 0", i+1, l, r)
		}
		log := s.stderr.String()
		want := "locked out (AD 775)"
		if i == 1 {
			want = "not binding as the service account: the directory reported it locked out"
		}
		if !strings.Contains(log, want) || !strings.Contains(log, "once per ldap.locked_retry_interval") {
			t.Errorf("start %d: the log does not say %q and when it tries again:\n%s", i+1, want, log)
		}
		s.stop()
	}
	if bad, _ := srv.Lockout(t, sambatest.ServiceDN); bad > 3 {
		t.Errorf("badPwdCount %d after mailbeacon's starts; the 3 wrong guesses only", bad)
	}
}
