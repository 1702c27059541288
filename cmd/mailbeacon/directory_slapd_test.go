package main

// The directory side under failure, full stack against a real slapd: a
// configuration the directory refuses stops serve at start (unless told to
// start degraded), and a refused service password costs the directory a
// handful of binds however many requests arrive.

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

var floodSpan = flag.Duration("flood-span", 0, "spread TestWrongServicePasswordFloodSlapd's 1,000 requests over this long (e.g. 1m); 0: as fast as they go")

// runServe runs serve with args until it exits or 15s pass, and returns
// its exit code and log.
func runServe(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var stderr syncBuffer
	code := run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0", "--operations-listen", "127.0.0.1:0"}, args...), io.Discard, &stderr)
	if ctx.Err() != nil {
		t.Fatalf("serve did not exit: %s", stderr.String())
	}
	return code, stderr.String()
}

func TestServeRefusesMisconfiguredDirectorySlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	other := ldaptest.Slapd(t) // its CA did not sign srv's certificate
	other.Stop()
	dir := t.TempDir()
	cases := []struct {
		name string
		o    slapdOptions
		key  string // named in the error; "" when serve must start
		why  string
	}{
		{"wrong password", slapdOptions{password: "not-the-password"}, "ldap.bind_password_file", "refused the service account's credentials (LDAP 49"},
		{"wrong CA, StartTLS", slapdOptions{caFile: other.CAFile}, "ldap.ca_file", "not signed by a trusted CA"},
		{"wrong CA, ldaps", slapdOptions{ldaps: true, caFile: other.CAFile}, "ldap.ca_file", "not signed by a trusted CA"},
		{"base DN missing", slapdOptions{baseDN: "ou=nowhere,dc=example,dc=com"}, "ldap.base_dn", "the base DN does not exist"},
		{"valid configuration", slapdOptions{}, "", ""}, // control: it starts
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
			writeFile(t, file, slapdConfigText(t, srv, tc.o))
			if tc.key == "" {
				startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"}).stop()
				return
			}
			code, log := runServe(t, "--config", file)
			if code != exitConfig || !strings.Contains(log, tc.key+": ") || !strings.Contains(log, tc.why) ||
				!strings.Contains(log, "--start-degraded") || strings.Contains(log, "mailbeacon listening") {
				t.Errorf("serve exited %d; want %d, naming %s (%s) and --start-degraded:\n%s", code, exitConfig, tc.key, tc.why, log)
			}
			// The process exits: nothing may promise that it binds again.
			if strings.Contains(log, "binds again") {
				t.Errorf("a refused start says it binds again:\n%s", log)
			}
			// Told to start degraded, by flag or by key, it serves.
			s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0", "--start-degraded"})
			if !strings.Contains(s.stderr.String(), "starting degraded") {
				t.Errorf("log does not say it started degraded:\n%s", s.stderr.String())
			}
			s.stop()
			o := tc.o
			o.ldapExtra += "  start_degraded: true\n"
			writeFile(t, file, slapdConfigText(t, srv, o))
			startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"}).stop()
		})
	}
	// A directory that is down is an outage, not a misconfiguration: serve
	// starts and answers with the domain defaults.
	t.Run("directory down", func(t *testing.T) {
		file := filepath.Join(dir, "down.yaml")
		writeFile(t, file, strings.Replace(slapdConfigText(t, srv, slapdOptions{}), srv.URL, other.URL, 1))
		s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"})
		if !strings.Contains(s.stderr.String(), "kind=transient") {
			t.Errorf("log:\n%s", s.stderr.String())
		}
	})
}

// With a wrong service password, 1,000 requests for distinct addresses
// cost the directory one bind (counted by slapd itself): refused
// credentials are never sent again. The log says why in words, once, and
// the answers are the domain defaults.
// go test -run FloodSlapd -flood-span 1m shows it over a minute.
func TestWrongServicePasswordFloodSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, slapdConfigText(t, srv, slapdOptions{
		password: "not-the-password",
		// Per-client budgets would refuse most of the flood before the
		// directory: turn them off to ask the directory every time.
		extra: "limits:\n  requests_per_second: 0\n  unknown_per_minute: 0\n",
	}))
	before := srv.BindCount()
	start := time.Now()
	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0", "--start-degraded"})
	base := s.addrs["server.listen"]

	const requests = 1000
	if err := floodUnknown(base, "example.com", requests, start, *floodSpan); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	binds := srv.BindCount() - before
	t.Logf("%d requests in %v: the directory saw %d binds", requests, elapsed.Round(time.Millisecond), binds)
	if binds != 1 {
		t.Errorf("the directory saw %d binds in %v; want 1", binds, elapsed)
	}
	log := s.stderr.String()
	const why = `reason="the directory refused the service account's credentials (LDAP 49, invalid credentials)"`
	if n := strings.Count(log, why); n != 1 {
		t.Errorf("the log says why %d times, want once:\n%s", n, log)
	}
	if n := strings.Count(log, "directory lookups fail"); n != 1 {
		t.Errorf("the failing directory logged %d times, want once", n)
	}
}

// floodUnknown asks Thunderbird autoconfig for n distinct addresses of
// domain, 16 at a time, spread from start over span (0: at once), and
// checks each gets the domain defaults with the typed address as login.
func floodUnknown(base, domain string, n int, start time.Time, span time.Duration) error {
	const workers = 16
	var next atomic.Int32
	var wg sync.WaitGroup
	var bad atomic.Value
	client := &http.Client{Timeout: 10 * time.Second}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || bad.Load() != nil {
					return
				}
				if span > 0 {
					time.Sleep(time.Until(start.Add(span * time.Duration(i) / time.Duration(n))))
				}
				addr := fmt.Sprintf("user%d@%s", i, domain)
				resp, err := client.Get(base + "/mail/config-v1.1.xml?emailaddress=" + addr)
				if err != nil {
					bad.Store(err)
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !bytes.Contains(body, []byte("<username>"+addr+"</username>")) || !bytes.Contains(body, []byte(`type="pop3"`)) {
					bad.Store(fmt.Errorf("%s: %d %s", addr, resp.StatusCode, body))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := bad.Load().(error); err != nil {
		return err
	}
	return nil
}

// A domain where POP3 is the exception: default_services leaves it out,
// and unknown, disabled and (during an outage) uncached addresses all get
// that one answer, while alice, whom the directory allows POP3, keeps it,
// from the cache, through the outage.
func TestDefaultServicesThroughOutageSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	text := strings.Replace(slapdConfigText(t, srv, slapdOptions{}), "    short_name: Example\n",
		"    short_name: Example\n    default_services: [imap, smtp, activesync]\n", 1)
	a := buildText(t, text)
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	defaults := func(addr string) string {
		return fmt.Sprintf("imap:%[1]s smtp465:%[1]s smtp587:%[1]s", addr)
	}
	check := func(when, addr, want string) {
		t.Helper()
		if code, doc := fetchAutoconfig(t, h, addr); code != 200 || doc.summary() != want {
			t.Errorf("%s, %s: %d %q, want %q", when, addr, code, doc.summary(), want)
		}
	}
	check("up", "alice@example.com", "imap:alice pop3:alice smtp465:alice smtp587:alice")
	check("up", "nobody@example.com", defaults("nobody@example.com"))
	check("up", "carol@example.com", defaults("carol@example.com"))
	srv.Stop()
	check("down", "someone@example.com", defaults("someone@example.com"))
	check("down", "alice@example.com", "imap:alice pop3:alice smtp465:alice smtp587:alice")
}

// A reload to a configuration the directory refuses (a mistyped new
// password) is refused: the running one keeps serving real answers.
func TestReloadRefusesMisconfiguredDirectorySlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	file := filepath.Join(t.TempDir(), "c.yaml")
	writeFile(t, file, slapdConfigText(t, srv, slapdOptions{}))
	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"})
	writeFile(t, file, slapdConfigText(t, srv, slapdOptions{password: "mistyped"}))
	s.hup()
	s.waitLog("configuration reload failed", 1)
	if log := s.stderr.String(); !strings.Contains(log, "ldap.bind_password_file: the directory refused the service account's credentials") {
		t.Errorf("the reload error does not name the key:\n%s", log)
	}
	resp, err := http.Get(s.addrs["server.listen"] + "/mail/config-v1.1.xml?emailaddress=bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte("<username>bob.login</username>")) {
		t.Errorf("after the refused reload bob gets:\n%s", body)
	}
}
