package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// demoTestConfig loads a configuration text and points it at a fresh
// embedded demo directory, the way `--demo` does.
func demoTestConfig(t testing.TB, configText string) (config, *embedded.Server) {
	t.Helper()
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	cfg, err := loadConfig(strings.NewReader(configText), "test config")
	if err != nil {
		t.Fatal(err)
	}
	cfg.LDAP = demoLDAP(cfg.LDAP, srv.URL)
	return cfg, srv
}

// demoApp builds the app from a configuration text against a fresh embedded
// demo directory, the way `--demo` does, and returns its HTTP handler.
func demoApp(t testing.TB, configText string) (http.Handler, *embedded.Server) {
	t.Helper()
	cfg, srv := demoTestConfig(t, configText)
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.source.Close)
	return protocols.NewHandler(a.resolver, a.handlerOptions(nil)), srv
}

type autoconfigDoc struct {
	Incoming []struct {
		Type     string `xml:"type,attr"`
		Username string `xml:"username"`
	} `xml:"emailProvider>incomingServer"`
	Outgoing []struct {
		Port     int    `xml:"port"`
		Username string `xml:"username"`
	} `xml:"emailProvider>outgoingServer"`
}

func fetchAutoconfig(t testing.TB, h http.Handler, addr string) (int, autoconfigDoc) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress="+addr, nil))
	var doc autoconfigDoc
	if rec.Code == 200 {
		if err := xml.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
	}
	return rec.Code, doc
}

func (d autoconfigDoc) summary() string {
	var parts []string
	for _, s := range d.Incoming {
		parts = append(parts, s.Type+":"+s.Username)
	}
	for _, s := range d.Outgoing {
		parts = append(parts, fmt.Sprintf("smtp%d:%s", s.Port, s.Username))
	}
	return strings.Join(parts, " ")
}

// checkDemoContract checks the answers the README promises for the demo
// directory. The slapd integration test runs the same checks.
func checkDemoContract(t *testing.T, h http.Handler) {
	for _, tc := range []struct {
		addr   string
		status int
		want   string
	}{
		{"bob@example.com", 200, "imap:bob.login smtp465:bob.login smtp587:bob.login"},
		{"alice@example.com", 200, "imap:alice pop3:alice smtp465:alice smtp587:alice"},
		{"a.example@example.com", 200, "imap:alice pop3:alice smtp465:alice smtp587:alice"},
		{"carol@example.com", 200, "imap:carol@example.com pop3:carol@example.com smtp465:carol@example.com smtp587:carol@example.com"},
		{"nobody@example.com", 200, "imap:nobody@example.com pop3:nobody@example.com smtp465:nobody@example.com smtp587:nobody@example.com"},
		{"x@unknown.org", 404, ""},
		{"not-an-address", 400, ""},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			code, doc := fetchAutoconfig(t, h, tc.addr)
			if code != tc.status || doc.summary() != tc.want {
				t.Errorf("got %d %q, want %d %q", code, doc.summary(), tc.status, tc.want)
			}
		})
	}
}

func TestDemoContractEmbedded(t *testing.T) {
	h, _ := demoApp(t, demoConfig)
	checkDemoContract(t, h)
}

// config.example.yaml must stay valid and give the demo's answers.
func TestConfigExampleWorksWithDemo(t *testing.T) {
	b, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := demoApp(t, string(b))
	checkDemoContract(t, h)
}

// 100 concurrent first requests for one address: one directory search,
// counted by the LDAP server itself.
func TestConcurrentFirstRequestsOneSearch(t *testing.T) {
	// 100 requests at once from one client: more than its own slots, and
	// more lookups in flight than its unknown-address budget holds (each
	// holds a token until its address turns out known).
	h, srv := demoApp(t, demoConfig+"limits:\n  max_per_client: 0\n  unknown_per_minute: 0\n")
	before := srv.Searches()
	var wg sync.WaitGroup
	codes := make(chan int, 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, doc := fetchAutoconfig(t, h, "alice@example.com")
			if doc.summary() != "imap:alice pop3:alice smtp465:alice smtp587:alice" {
				code = -1
			}
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("a request failed: %d", c)
		}
	}
	if n := srv.Searches() - before; n != 1 {
		t.Errorf("100 concurrent first requests made %d directory searches, want 1", n)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, errHas string
	}{
		{"unknown key", "server:\n  listen: 127.0.0.1:1\n  lisen: x\n", "lisen"},
		{"unknown section", "ldapp:\n  urls: [ldap://x]\n", "ldapp"},
		{"bad duration", "cache:\n  ttl: ten minutes\n", "ttl"},
		{"not yaml", "server: [\n", "not valid YAML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(strings.NewReader(tc.yaml), "x.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("loadConfig = %v, want error containing %q", err, tc.errHas)
			}
		})
	}
}

func TestBuildErrorsNameTheKey(t *testing.T) {
	valid := demoConfig + "ldap:\n  urls: [ldaps://ldap.example.com]\n  base_dn: dc=example,dc=com\n"
	for _, tc := range []struct {
		name, extra, errHas string
	}{
		{"valid", "", ""},
		{"bad log level", "log:\n  level: loud\n", "log.level"},
		{"bad log format", "log:\n  format: xml\n", "log.format"},
		{"zero timeout", "server:\n  read_timeout: 0s\n", "server.read_timeout"},
		{"bad cache mode", "cache:\n  on_directory_error: shrug\n", "cache.on_directory_error"},
		// Continues the ldap section valid ends with.
		{"locked retry too often", "  locked_retry_interval: 5s\n", "ldap.locked_retry_interval"},
		{"relative state_dir", "state_dir: var/lib/mailbeacon\n", "state_dir"},
		{"unusable state_dir", "state_dir: /proc/mailbeacon-state\n", "state_dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(strings.NewReader(valid+tc.extra), "x.yaml")
			if err == nil {
				_, err = build(cfg, nil)
			}
			if (err != nil) != (tc.errHas != "") || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("got %v, want error containing %q", err, tc.errHas)
			}
		})
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	t.Setenv("MAILBEACON_LDAP_BIND_PASSWORD", "from-env")
	t.Setenv("MAILBEACON_SERVER_LISTEN", "127.0.0.1:9999")
	t.Setenv("MAILBEACON_CACHE_TTL", "42s")
	cfg, err := loadConfig(strings.NewReader("server:\n  listen: 127.0.0.1:1\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LDAP.BindPassword != "from-env" || cfg.Server.Listen != "127.0.0.1:9999" || cfg.Cache.TTL != 42*time.Second {
		t.Errorf("env not applied: %q %q %v", cfg.LDAP.BindPassword, cfg.Server.Listen, cfg.Cache.TTL)
	}
}

func TestRunCommands(t *testing.T) {
	for _, tc := range []struct {
		name           string
		args           []string
		code           int
		stdout, stderr string
	}{
		{"no args", nil, 2, "", "Usage:"},
		{"help", []string{"help"}, 0, "mailbeacon serve", ""},
		{"version", []string{"version"}, 0, "mailbeacon ", ""},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"serve without config", []string{"serve"}, exitConfig, "", "no configuration: give --config FILE"},
		{"serve missing config file", []string{"serve", "--config", "/nonexistent.yaml"}, exitConfig, "", "--config"},
		{"serve bad flag", []string{"serve", "--bogus"}, 2, "", "flag provided but not defined"},
		{"serve help", []string{"serve", "--help"}, 0, "", "Usage: mailbeacon serve"},
		{"lookup without address", []string{"lookup", "--demo"}, 2, "", "Usage: mailbeacon lookup"},
		{"lookup bad address", []string{"lookup", "--demo", "nope"}, 1, "", "invalid e-mail address"},
		{"lookup unknown domain", []string{"lookup", "--demo", "a@unknown.org"}, 1, "", "domain not configured"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String(), tc.stdout) || !strings.Contains(errOut.String(), tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", code, out.String(), errOut.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// `lookup --demo bob@example.com` shows bob's account and why POP3 is off.
func TestLookupExplainsBob(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"lookup", "--demo", "bob@example.com"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var got lookupOutput
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !got.Account.Known || got.Account.DisplayName != "Bob Builder" || got.Account.Services[0].Login != "bob.login" {
		t.Errorf("account %+v", got.Account)
	}
	for _, s := range got.Account.Services {
		if s.Type == "pop3" || s.Type == "activesync" {
			t.Errorf("bob got %s", s.Type)
		}
	}
	var pop3 string
	for _, d := range got.Explanation.Services {
		if d.Service == "pop3" && !d.Allowed {
			pop3 = d.Rule
		}
	}
	if !strings.Contains(pop3, "pop3secured") {
		t.Errorf("no rule named for pop3: %+v", got.Explanation.Services)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// serve --demo answers over real HTTP and stops cleanly when cancelled.
func TestServeDemoAndShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	done := make(chan int, 1)
	// The operations listener on a free port rather than its default.
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(demoConfig+"operations:\n  listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- run(ctx, []string{"serve", "--demo", "--config", cfgFile, "--listen", "127.0.0.1:0"}, io.Discard, &stderr)
	}()
	addrRE := regexp.MustCompile(`addr=(http://127\.0\.0\.1:\d+)`)
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			base = m[1]
		}
	}
	if base == "" {
		t.Fatalf("server did not start: %s", stderr.String())
	}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(base + "/mail/config-v1.1.xml?emailaddress=bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("<username>bob.login</username>")) || bytes.Contains(body, []byte(`type="pop3"`)) {
		t.Errorf("bob over HTTP: %d %s", resp.StatusCode, body)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 || !strings.Contains(stderr.String(), "stopped") {
			t.Errorf("serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after cancellation")
	}
}

func mustParse(t testing.TB, s string) policy.Address {
	t.Helper()
	a, err := policy.ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// autodiscover.auth_cache_ttl reaches the resolver: with the default a
// polling client binds once, with 0 it binds on every request.
func TestAuthCacheTTLFromConfig(t *testing.T) {
	body := `<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>` +
		`<EMailAddress>alice@example.com</EMailAddress><AcceptableResponseSchema>` +
		`http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	for _, tc := range []struct {
		extra string
		binds int64
	}{
		{"autodiscover:\n  require_auth: true\n", 1},
		{"autodiscover:\n  require_auth: true\n  auth_cache_ttl: 0s\n", 3},
	} {
		h, srv := demoApp(t, demoConfig+tc.extra)
		before := srv.Binds()
		for range 3 {
			req := httptest.NewRequest("POST", "/autodiscover/autodiscover.xml", strings.NewReader(body))
			req.Host = "127.0.0.1"
			req.SetBasicAuth("alice@example.com", "Secret123!")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 || !strings.Contains(rec.Body.String(), "<LoginName>alice</LoginName>") {
				t.Fatalf("%q: %d %s", tc.extra, rec.Code, rec.Body)
			}
		}
		// The service account binds once per pooled connection; the rest
		// are binds as alice.
		if got := srv.Binds() - before - 1; got != tc.binds {
			t.Errorf("%q: %d user binds for 3 requests, want %d", tc.extra, got, tc.binds)
		}
	}
}
