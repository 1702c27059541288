package main

// No user is locked out through authenticated Autodiscover: wrong
// passwords for one user from many source addresses at once, against a
// real slapd (binds counted by cn=Monitor) and a real Samba DC (its
// badPwdCount and lockout), over a real listener.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// lockoutLimits turns the per-client limits off, so that what stops the
// flood can only be the per-account bound.
const lockoutLimits = `
limits:
  requests_per_second: 0
  unknown_per_minute: 0
  max_per_client: 0
`

// poxClient posts Autodiscover POX requests from one source address.
type poxClient struct {
	c    *http.Client
	base string
}

func newPOXClient(base, source string) *poxClient {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	return &poxClient{base: base, c: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, MaxIdleConnsPerHost: 16,
	}}}
}

// poxAnswer is what a client can tell of a response: status, the headers
// that describe it, and the body. Two refusals must not differ in it.
type poxAnswer struct {
	status                                int
	challenge, contentType, length, cache string
	body                                  string
}

func (a poxAnswer) String() string {
	return fmt.Sprintf("%d WWW-Authenticate=%q Content-Type=%q Content-Length=%q Cache-Control=%q body=%q",
		a.status, a.challenge, a.contentType, a.length, a.cache, a.body)
}

func (p *poxClient) post(addr, password string) (poxAnswer, error) {
	body := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>` +
		addr + `</EMailAddress><AcceptableResponseSchema>` + adOutlookSchema + `</AcceptableResponseSchema></Request></Autodiscover>`
	req, err := http.NewRequest(http.MethodPost, p.base+"/Autodiscover/Autodiscover.xml", strings.NewReader(body))
	if err != nil {
		return poxAnswer{}, err
	}
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	req.SetBasicAuth(addr, password)
	resp, err := p.c.Do(req)
	if err != nil {
		return poxAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return poxAnswer{}, err
	}
	h := resp.Header
	return poxAnswer{status: resp.StatusCode, challenge: h.Get("WWW-Authenticate"), contentType: h.Get("Content-Type"),
		length: h.Get("Content-Length"), cache: h.Get("Cache-Control"), body: string(b)}, nil
}

// floodWrongPasswords sends perSource wrong passwords for the user (by
// each of addrs in turn) from each of sources source addresses
// 127.0.0.2, 127.0.0.3, ..., all at once (workers requests in flight per
// source). The passwords repeat a few common ones and add new ones. It
// returns how many times each distinct answer came, and how long it took.
func floodWrongPasswords(t *testing.T, base string, addrs []string, sources, perSource, workers int) (map[poxAnswer]int, time.Duration) {
	t.Helper()
	var (
		mu      sync.Mutex
		answers = map[poxAnswer]int{}
		errs    []error
		wg      sync.WaitGroup
	)
	start := make(chan struct{})
	for s := range sources {
		c := newPOXClient(base, fmt.Sprintf("127.0.0.%d", 2+s))
		jobs := make(chan int, perSource)
		for i := range perSource {
			jobs <- i
		}
		close(jobs)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range jobs {
					pw := []string{"Summer2026!", "Winter2026!", "Password1", "Welcome1!"}[i%4]
					if i%3 == 0 {
						pw = fmt.Sprintf("guess-%d-%d", s, i) // never seen before
					}
					a, err := c.post(addrs[(s+i)%len(addrs)], pw)
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						answers[a]++
					}
					mu.Unlock()
				}
			}()
		}
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	if len(errs) > 0 {
		t.Fatalf("%d requests failed, first: %v", len(errs), errs[0])
	}
	return answers, took
}

// checkRefusals fails unless every answer was ref, a 401.
func checkRefusals(t *testing.T, answers map[poxAnswer]int, ref poxAnswer, total int) {
	t.Helper()
	if ref.status != http.StatusUnauthorized || !strings.HasPrefix(ref.challenge, `Basic realm="`) {
		t.Fatalf("reference refusal is not a 401 with a Basic challenge: %v", ref)
	}
	if len(answers) != 1 || answers[ref] != total {
		for a, n := range answers {
			t.Errorf("%d× %v", n, a)
		}
		t.Fatalf("want all %d answers to be the reference refusal %v", total, ref)
	}
}

// checkSources fails unless the access log shows requests from each of
// the flood's n source addresses: that is what the server took for the
// client.
func checkSources(t *testing.T, s *serving, n int) {
	t.Helper()
	log := s.stderr.String()
	for i := range n {
		if !strings.Contains(log, fmt.Sprintf("client=127.0.0.%d ", 2+i)) {
			t.Fatalf("the access log shows no request from 127.0.0.%d", 2+i)
		}
	}
}

// TestUserLockoutSlapd: hundreds of concurrent wrong passwords, repeated
// and new, for alice through two of her addresses from 20 source
// addresses, cost slapd at most autodiscover.bind_failures binds; a
// repeated wrong password costs none, also after a SIGHUP; and alice's
// password works once the pause has passed.
func TestUserLockoutSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, slapdConfigText(t, srv, slapdOptions{extra: `
server:
  listen: 127.0.0.1:0
autodiscover:
  require_auth: true
  bind_failures: 3
  bind_pause: 4s
` + lockoutLimits}))
	s := startServe(t, []string{"--config", cfgFile}, "operations.listen")
	base := s.addrs["server.listen"]
	one := newPOXClient(base, "")
	// Look the addresses up first (autoconfig, no password), so that
	// what is counted is binds as alice, not the service account's.
	ref, err := one.post("nobody@example.com", "x")
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"alice@example.com", "a.example@example.com"} {
		if code, _ := get(t, one.c, base+"/mail/config-v1.1.xml?emailaddress="+addr, ""); code != http.StatusOK {
			t.Fatalf("autoconfig %s: %d", addr, code)
		}
	}
	before := srv.BindCount()
	answers, took := floodWrongPasswords(t, base, []string{"alice@example.com", "a.example@example.com"}, 20, 30, 10)
	binds := srv.BindCount() - before
	t.Logf("600 wrong passwords from 20 addresses, 200 at a time, in %v: %d binds", took, binds)
	checkRefusals(t, answers, ref, 600)
	checkSources(t, s, 20)
	if binds > 3 || binds < 1 {
		t.Errorf("%d binds as alice during the flood; want 1 to 3 (autodiscover.bind_failures)", binds)
	}

	// A wrong password already refused: no bind, also after a reload.
	before = srv.BindCount()
	for _, addr := range []string{"alice@example.com", "a.example@example.com"} {
		if a, err := one.post(addr, "Summer2026!"); err != nil || a != ref {
			t.Fatalf("repeated password: %v %v", a, err)
		}
	}
	s.hup()
	s.waitLog("configuration reloaded", 1)
	if a, err := one.post("alice@example.com", "Summer2026!"); err != nil || a != ref {
		t.Fatalf("repeated password after SIGHUP: %v %v", a, err)
	}
	if a, err := one.post("alice@example.com", ldaptest.UserPassword); err != nil || a != ref {
		t.Fatalf("right password while paused, after SIGHUP: %v %v", a, err)
	}
	if n := srv.BindCount() - before; n != 0 {
		t.Errorf("%d binds for repeated passwords and a paused account across a reload, want 0", n)
	}
	_, metrics := scrape(t, s.addrs["operations.listen"])
	if v := sample(metrics, "mailbeacon_auth_paused_accounts"); v != 1 {
		t.Errorf("mailbeacon_auth_paused_accounts %v, want 1", v)
	}
	paused := sample(metrics, `mailbeacon_auth_refused_without_bind_total{reason="paused"}`)
	repeated := sample(metrics, `mailbeacon_auth_refused_without_bind_total{reason="repeated"}`)
	t.Logf("refused without a bind: %v paused, %v repeated", paused, repeated)
	// Requests that joined a bind under way for the same password share
	// its answer and are not counted here.
	if paused < 1 || paused+repeated > 600+3 {
		t.Errorf("refused without a bind: %v paused + %v repeated; want some, at most the 603 requests", paused, repeated)
	}

	// Once the pause has passed, a new wrong password binds once (and is
	// refused from memory after), the right password binds and works.
	time.Sleep(4 * time.Second)
	before = srv.BindCount()
	for range 5 {
		if a, err := one.post("a.example@example.com", "After-the-pause-1"); err != nil || a != ref {
			t.Fatalf("wrong password after the pause: %v %v", a, err)
		}
	}
	if a, err := one.post("a.example@example.com", ldaptest.UserPassword); err != nil || a.status != http.StatusOK || !strings.Contains(a.body, "IMAP") {
		t.Fatalf("right password after the pause: %v %v", a, err)
	}
	if n := srv.BindCount() - before; n != 2 {
		t.Errorf("%d binds for one wrong password sent 5 times and the right one, want 2", n)
	}
	if n := strings.Count(s.stderr.String(), "reached autodiscover.bind_failures"); n != 1 {
		t.Errorf("the pause was logged %d times, want once", n)
	}
	if strings.Contains(s.stderr.String(), "Summer2026") || strings.Contains(s.stderr.String(), "guess-") {
		t.Error("a password is in the log")
	}
}

// TestUserLockoutSamba: a DC that locks an account after 5 bad passwords
// in 30 minutes; 20 source addresses send 100 wrong passwords each for
// alice, all at once, through three of her addresses. Her badPwdCount
// stays at most autodiscover.bind_failures (3), she is never locked, every
// poxAnswer is the same 401, and her password works once the pause ends.
func TestUserLockoutSamba(t *testing.T) {
	srv := sambatest.DC(t)
	srv.SetLockoutPolicy(t, 5, 30*time.Minute)
	dn := sambatest.UserDN("asmith")
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, adConfigText(t, srv, adPolicy+`
server:
  listen: 127.0.0.1:0
autodiscover:
  require_auth: true
  bind_pause: 10s
`+lockoutLimits))
	s := startServe(t, []string{"--config", cfgFile}, "operations.listen")
	base := s.addrs["server.listen"]
	one := newPOXClient(base, "")
	ref, err := one.post("nobody@example.test", "x")
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{"alice@example.test", "a.example@example.test", "alice.smith@example.test"}
	answers, took := floodWrongPasswords(t, base, addrs, 20, 100, 5)
	bad, locked := srv.Lockout(t, dn)
	t.Logf("2000 wrong passwords from 20 addresses in %v: badPwdCount %d, locked %t", took, bad, locked)
	checkRefusals(t, answers, ref, 2000)
	checkSources(t, s, 20)
	if bad > 3 || locked {
		t.Fatalf("badPwdCount %d, locked %t; want at most 3 and not locked", bad, locked)
	}
	// An unknown address refused by the same bytes after the flood too.
	if a, err := one.post("nobody@example.test", "y"); err != nil || a != ref {
		t.Errorf("unknown address after the flood: %v %v", a, err)
	}
	// Her password has never bound here: while paused it is not tried.
	if a, err := one.post("alice@example.test", sambatest.UserPassword); err != nil || a != ref {
		t.Errorf("right password while paused: %v %v", a, err)
	}
	if b, _ := srv.Lockout(t, dn); b != bad {
		t.Errorf("badPwdCount %d after a request while paused, want still %d", b, bad)
	}
	time.Sleep(10 * time.Second)
	a, err := one.post("a.example@example.test", sambatest.UserPassword)
	if err != nil || a.status != http.StatusOK || !strings.Contains(a.body, "<AutoDiscoverSMTPAddress>alice@example.test</AutoDiscoverSMTPAddress>") {
		t.Fatalf("right password after the pause: %v %v", a, err)
	}
	bad, locked = srv.Lockout(t, dn)
	t.Logf("after the right password: badPwdCount %d, locked %t", bad, locked)
	if locked {
		t.Error("alice is locked")
	}
	if !bytes.Contains([]byte(s.stderr.String()), []byte(dn)) {
		t.Errorf("the pause log does not name %s", dn)
	}
}

// autodiscover.bind_failures, bind_pause and refusal_time: defaults when unset, errors
// naming the key when out of range.
func TestLockoutConfigKeys(t *testing.T) {
	for _, tc := range []struct{ yaml, err string }{
		{"", ""},
		{"  bind_failures: 5\n  bind_pause: 45m\n", ""},
		{"  bind_failures: 11\n", "autodiscover.bind_failures: 11 is out of range"},
		{"  bind_failures: -1\n", "autodiscover.bind_failures: -1 is out of range"},
		{"  bind_pause: 500ms\n", "autodiscover.bind_pause: 500ms is out of range"},
		{"  bind_pause: 48h\n", "autodiscover.bind_pause: 48h0m0s is out of range"},
		{"  refusal_time: 1s\n", ""},
		{"  refusal_time: -1s\n", "autodiscover.refusal_time: -1s is out of range"},
		{"  refusal_time: 11s\n", "autodiscover.refusal_time: 11s is out of range"},
	} {
		cfg, err := loadConfig(strings.NewReader(demoConfig+"autodiscover:\n  require_auth: true\n"+tc.yaml), "test")
		if err == nil {
			err = cfg.Autodiscover.Prepare()
		}
		if (tc.err == "") != (err == nil) || (err != nil && !strings.HasPrefix(err.Error(), tc.err)) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.err)
		}
	}
	cfg, err := loadConfig(strings.NewReader(demoConfig+"autodiscover:\n  bind_failures: 5\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	if c := cfg.Autodiscover.BindLockout(); c.Failures != 5 || c.Pause != 30*time.Minute || c.RefusalTime != 200*time.Millisecond {
		t.Errorf("bind_failures 5 alone: %+v, want 5 and the defaults 30m, 200ms", c)
	}
}
