package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check/checktest"
	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

// serving is a `mailbeacon serve` running in the test process.
type serving struct {
	t      *testing.T
	addrs  map[string]string // listener key (server.listen, ...) -> URL base
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan int
}

var (
	mainListenRE  = regexp.MustCompile(`msg="mailbeacon listening" addr=(\S+)`)
	otherListenRE = regexp.MustCompile(`msg=listening key=(\S+) addr=(\S+)`)
)

// startServe runs serve with args until the test ends, and waits until it
// listens on every key in keys (besides server.listen).
func startServe(t *testing.T, args []string, keys ...string) *serving {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{t: t, addrs: map[string]string{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	// Never the default operations port: another server on this
	// machine, or another test, may hold it.
	go func() {
		s.done <- run(ctx, append([]string{"serve", "--operations-listen", "127.0.0.1:0"}, args...), io.Discard, s.stderr)
	}()
	t.Cleanup(func() { s.stop() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		log := s.stderr.String()
		if m := mainListenRE.FindStringSubmatch(log); m != nil {
			s.addrs["server.listen"] = m[1]
			for _, m := range otherListenRE.FindAllStringSubmatch(log, -1) {
				s.addrs[m[1]] = m[2]
			}
			ok := true
			for _, k := range keys {
				ok = ok && s.addrs[k] != ""
			}
			if ok {
				return s
			}
		}
		select {
		case code := <-s.done:
			t.Fatalf("serve exited %d: %s", code, log)
		default:
		}
	}
	t.Fatalf("serve did not start: %s", s.stderr.String())
	return nil
}

// stop cancels serve and returns its exit code (once).
func (s *serving) stop() int {
	if s.cancel == nil {
		return 0
	}
	s.cancel()
	s.cancel = nil
	select {
	case code := <-s.done:
		return code
	case <-time.After(15 * time.Second):
		s.t.Fatal("serve did not stop")
		return -1
	}
}

// waitLog waits until the log holds n lines containing msg.
func (s *serving) waitLog(msg string, n int) {
	s.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Count(s.stderr.String(), msg) >= n {
			return
		}
	}
	s.t.Fatalf("log never said %q %d times: %s", msg, n, s.stderr.String())
}

// hup sends SIGHUP to this process: serve reloads.
func (s *serving) hup() {
	s.t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		s.t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// touchLater sets a file's mtime a little later, so that a rewrite within
// the file system's timestamp granularity still counts as a change.
func touchLater(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		later := fi.ModTime().Add(2 * time.Second)
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
}

func get(t *testing.T, c *http.Client, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// servingSerial returns the serial of the certificate the HTTPS listener
// presents for name.
func servingSerial(t *testing.T, base string, pool *x509.CertPool, name string) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(base, "https://"), &tls.Config{RootCAs: pool, ServerName: name})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// tlsServeConfig is the demo configuration served over HTTPS from files,
// with plain HTTP and operations listeners; imapPort varies across reloads.
func tlsServeConfig(certFile, keyFile, imapPort string) string {
	return `
server:
  listen: 127.0.0.1:0
  http_listen: 127.0.0.1:0
  tls: {cert_file: "` + certFile + `", key_file: "` + keyFile + `"}
operations:
  listen: 127.0.0.1:0
policy:
  preset: iredmail
  login: "{uid}"
  host_attribute: mailHost
domains:
  - name: example.com
    provider: Example Mail
    services:
      - {type: imap, host: mail.example.com, port: ` + imapPort + `, socket: tls}
      - {type: smtp, host: mail.example.com, port: 465, socket: tls}
  - name: example.org
    services:
      - {type: imap, host: mail.example.org}
`
}

// HTTPS from certificate files, plain HTTP and the operations listener
// beside it; SIGHUP reloads the configuration and the certificate; an
// invalid configuration is refused and the running one keeps serving.
func TestServeTLSReloadAndOperations(t *testing.T) {
	dir := t.TempDir()
	ca := checktest.NewCA(t)
	certFile, keyFile := ca.WriteFiles(t, dir, time.Now().Add(90*24*time.Hour), certNames...)
	cfgFile := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgFile, tlsServeConfig(certFile, keyFile, "993"))
	s := startServe(t, []string{"--demo", "--config", cfgFile}, "server.http_listen", "operations.listen")
	if !strings.HasPrefix(s.addrs["server.listen"], "https://") {
		t.Fatalf("main listener %s is not HTTPS", s.addrs["server.listen"])
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "autoconfig.example.com"}}}
	noRedirect := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	alice := s.addrs["server.listen"] + "/mail/config-v1.1.xml?emailaddress=alice@example.com"
	ops := s.addrs["operations.listen"]

	for _, tc := range []struct {
		name   string
		client *http.Client
		url    string
		host   string
		status int
		has    string
	}{
		{"https autoconfig", client, alice, "", 200, "<port>993</port>"},
		{"plain HTTP redirect probe", noRedirect, s.addrs["server.http_listen"] + "/autodiscover/autodiscover.xml", "autodiscover.example.com", 302, ""},
		{"plain HTTP autoconfig", noRedirect, s.addrs["server.http_listen"] + "/mail/config-v1.1.xml?emailaddress=bob@example.com", "", 200, "bob.login"},
		{"metrics", noRedirect, ops + "/metrics", "", 200, `mailbeacon_http_requests_total{format="autoconfig",outcome="ok"}`},
		{"readyz", noRedirect, ops + "/readyz", "", 200, "ready"},
		{"healthz", noRedirect, ops + "/healthz", "", 200, "ok"},
		{"no metrics on the public listener", client, s.addrs["server.listen"] + "/metrics", "", 404, ""},
		{"pprof on the operations listener", noRedirect, ops + "/debug/pprof/", "", 200, "goroutine"},
		{"no pprof on the public listener", client, s.addrs["server.listen"] + "/debug/pprof/", "", 404, ""},
		{"https POX endpoint answers, no redirect", client, s.addrs["server.listen"] + "/autodiscover/autodiscover.xml", "autodiscover.example.com", 200, "<ErrorCode>600</ErrorCode>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, tc.client, tc.url, tc.host)
			if code != tc.status || !strings.Contains(body, tc.has) {
				t.Errorf("%s: %d %.300q, want %d with %q", tc.url, code, body, tc.status, tc.has)
			}
		})
	}
	first := servingSerial(t, s.addrs["server.listen"], ca.Pool, "autodiscover.example.com")

	// A renewed certificate and a changed port: SIGHUP applies both.
	ca.WriteFiles(t, dir, time.Now().Add(90*24*time.Hour), certNames...)
	touchLater(t, certFile, keyFile)
	writeFile(t, cfgFile, tlsServeConfig(certFile, keyFile, "1993"))
	s.hup()
	s.waitLog("configuration reloaded", 1)
	if code, body := get(t, client, alice, ""); code != 200 || !strings.Contains(body, "<port>1993</port>") {
		t.Errorf("after reload: %d %s", code, body)
	}
	if second := servingSerial(t, s.addrs["server.listen"], ca.Pool, "autodiscover.example.com"); second.Cmp(first) == 0 {
		t.Error("the renewed certificate is not served after SIGHUP")
	}
	if log := s.stderr.String(); !strings.Contains(log, "changed_domains=[example.com]") {
		t.Errorf("reload did not report example.com as changed: %s", log)
	}

	// An invalid configuration: logged with its key, the old one serves on.
	writeFile(t, cfgFile, tlsServeConfig(certFile, keyFile, "70000"))
	s.hup()
	s.waitLog("configuration reload failed", 1)
	if log := s.stderr.String(); !strings.Contains(log, "domains[0].services[0]: port") {
		t.Errorf("the failed reload does not name the key: %s", log)
	}
	if code, body := get(t, client, alice, ""); code != 200 || !strings.Contains(body, "<port>1993</port>") {
		t.Errorf("after a failed reload: %d %s", code, body)
	}
	// Broken certificate files: refused too.
	writeFile(t, cfgFile, tlsServeConfig(filepath.Join(dir, "missing.pem"), keyFile, "993"))
	s.hup()
	s.waitLog("configuration reload failed", 2)
	if code, body := get(t, client, alice, ""); code != 200 || !strings.Contains(body, "<port>1993</port>") {
		t.Errorf("after a reload with a missing certificate: %d %s", code, body)
	}
	if code := s.stop(); code != 0 || !strings.Contains(s.stderr.String(), "stopped") {
		t.Errorf("serve exited %d: %s", code, s.stderr.String())
	}
}

// Shutdown drains requests in flight, over TLS too.
func TestServeShutdownDrainsTLS(t *testing.T) {
	dir := t.TempDir()
	ca := checktest.NewCA(t)
	certFile, keyFile := ca.WriteFiles(t, dir, time.Now().Add(24*time.Hour), "127.0.0.1")
	cfg, _ := demoTestConfig(t, demoConfig)
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Server.TLS = tlsFiles{CertFile: certFile, KeyFile: keyFile}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	a, err := build(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(a, log)
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	s.cur.store(&generation{app: a, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "finished")
	})})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- s.run(ctx) }()
	var base string
	for deadline := time.Now().Add(10 * time.Second); base == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := mainListenRE.FindStringSubmatch(logs.String()); m != nil {
			base = m[1]
		}
	}
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("not listening on HTTPS: %s", logs.String())
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client.Get(base + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{string(b), err}
	}()
	<-entered
	cancel()
	s.waitShutdownStarted(t, &logs)
	select {
	case err := <-runErr:
		t.Fatalf("serve returned before the request in flight finished: %v", err)
	default:
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "finished" {
		t.Errorf("request in flight: %q, %v", r.body, r.err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("run: %v", err)
	}
	s.close()
}

func (s *server) waitShutdownStarted(t *testing.T, logs *syncBuffer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(logs.String(), "shutting down") {
			return
		}
	}
	t.Fatal("shutdown did not start")
}

// A retired generation closes its directory connections only after the
// requests it was serving finished.
func TestGenerationRetireWaitsForRequests(t *testing.T) {
	cfg, _ := demoTestConfig(t, demoConfig)
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.source.Close()
	entered, release, served := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	old := &generation{app: a, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		// The directory is still open for the request's last lookups.
		served <- a.source.Ping(r.Context())
	})}
	var live liveHandler
	live.store(old)
	go live.ServeHTTP(httpRecorder{}, mustRequest(t))
	<-entered
	live.store(&generation{app: b, handler: http.NotFoundHandler()})
	retired := make(chan struct{})
	go func() { old.retire(); close(retired) }()
	select {
	case <-retired:
		t.Fatal("retire returned while a request was in flight")
	default:
	}
	close(release)
	if err := <-served; err != nil {
		t.Errorf("the request in flight lost its directory: %v", err)
	}
	<-retired
	if err := a.source.Ping(context.Background()); !errors.Is(err, ldapsource.ErrClosed) {
		t.Errorf("after retire: Ping = %v, want ErrClosed", err)
	}
	// New requests reach the new generation.
	rec := &recordingWriter{header: http.Header{}}
	live.ServeHTTP(rec, mustRequest(t))
	if rec.code != 404 {
		t.Errorf("after the swap: %d, want the new handler's 404", rec.code)
	}
}

type httpRecorder struct{}

func (httpRecorder) Header() http.Header         { return http.Header{} }
func (httpRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (httpRecorder) WriteHeader(int)             {}

type recordingWriter struct {
	header http.Header
	code   int
}

func (r *recordingWriter) Header() http.Header         { return r.header }
func (r *recordingWriter) Write(b []byte) (int, error) { return len(b), nil }
func (r *recordingWriter) WriteHeader(code int)        { r.code = code }

func mustRequest(t *testing.T) *http.Request {
	t.Helper()
	r, err := http.NewRequest("GET", "http://127.0.0.1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCarryCacheAcrossReloads(t *testing.T) {
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	base := demoConfig + "\n  - name: example.org\n    services: [{type: imap, host: mail.example.org}]\n"
	mk := func(t *testing.T, text string) *app {
		t.Helper()
		cfg, err := loadConfig(strings.NewReader(text), "test")
		if err != nil {
			t.Fatal(err)
		}
		cfg.LDAP = demoLDAP(cfg.LDAP, srv.URL)
		a, err := build(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.source.Close)
		return a
	}
	for _, tc := range []struct {
		name    string
		text    string
		changed string
		kept    int
	}{
		{"same configuration", base, "[]", 2},
		{"one domain changed", strings.Replace(base, "mail.example.org", "imap.example.org", 1), "[example.org]", 1},
		{"a domain removed", demoConfig, "[example.org]", 1},
		{"policy changed", strings.Replace(base, `login: "{uid}"`, `login: "{mail}"`, 1), "[*]", 0},
		{"cache settings changed", base + "cache:\n  ttl: 5m\n", "[*]", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := mk(t, base)
			for _, addr := range []string{"alice@example.com", "someone@example.org"} {
				if _, err := old.resolver.Resolve(context.Background(), mustParse(t, addr)); err != nil {
					t.Fatal(err)
				}
			}
			kept, changed := carryCache(old, mk(t, tc.text))
			if got := "[" + strings.Join(changed, " ") + "]"; got != tc.changed || kept != tc.kept {
				t.Errorf("kept %d, changed %s; want %d, %s", kept, got, tc.kept, tc.changed)
			}
		})
	}
}

func TestValidateServerKeys(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, errHas string
	}{
		{"plain", "", ""},
		{"tls files", "server:\n  tls: {cert_file: /c.pem, key_file: /k.pem}\n", ""},
		{"tls half", "server:\n  tls: {cert_file: /c.pem}\n", "server.tls: give both"},
		{"acme and files", "server:\n  tls: {cert_file: /c.pem, key_file: /k.pem}\n  acme: {enabled: true, cache_dir: /tmp/x}\n", "server.acme.enabled"},
		{"acme without cache", "server:\n  acme: {enabled: true}\n", "server.acme.cache_dir"},
		{"acme http directory", "server:\n  acme: {enabled: true, cache_dir: /x, directory_url: \"http://ca/dir\"}\n", "server.acme.directory_url"},
		{"acme bad email", "server:\n  acme: {enabled: true, cache_dir: /x, email: nope}\n", "server.acme.email"},
		{"bad public host", "server:\n  public_host: localhost\n", "server.public_host"},
		{"bad public address", "server:\n  public_addresses: [1.2.3]\n", "server.public_addresses[0]"},
		{"bad http listen", "server:\n  http_listen: \"80\"\n", "server.http_listen"},
		{"bad operations listen", "operations:\n  listen: nowhere\n", "operations.listen"},
		{"bad ready timeout", "operations:\n  ready_timeout: -1s\n", "operations.ready_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(strings.NewReader(demoConfig+"ldap:\n  urls: [ldaps://ldap.example.com]\n  base_dn: dc=example,dc=com\n"+tc.yaml), "x.yaml")
			if err == nil {
				var a *app
				if a, err = build(cfg, nil); err == nil {
					a.source.Close()
				}
			}
			if (err != nil) != (tc.errHas != "") || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("got %v, want error containing %q", err, tc.errHas)
			}
		})
	}
}

// A certificate file pair: loaded, reloaded when it changes, and kept when
// the new pair is broken.
func TestCertFilesReload(t *testing.T) {
	dir := t.TempDir()
	ca := checktest.NewCA(t)
	certFile, keyFile := ca.WriteFiles(t, dir, time.Now().Add(24*time.Hour), "autoconfig.example.com")
	var logs syncBuffer
	notAfter := prometheus.NewGauge(prometheus.GaugeOpts{Name: "not_after"})
	f, err := loadCertFiles(tlsFiles{CertFile: certFile, KeyFile: keyFile}, []string{"autoconfig.example.com", "autodiscover.example.com"}, slog.New(slog.NewTextHandler(&logs, nil)), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	// The expiry gauge follows the certificate that serves.
	checkNotAfter := func(step string) {
		t.Helper()
		if got, want := testutil.ToFloat64(notAfter), float64(f.current().Leaf.NotAfter.Unix()); got != want {
			t.Errorf("%s: not-after gauge %v, want %v", step, got, want)
		}
	}
	checkNotAfter("loaded")
	if !strings.Contains(logs.String(), "does not cover") || !strings.Contains(logs.String(), "autodiscover.example.com") {
		t.Errorf("no warning about the missing name: %s", logs.String())
	}
	first := f.current().Leaf.SerialNumber
	if changed, err := f.reloadIfChanged(); changed || err != nil {
		t.Errorf("unchanged files reloaded: %v %v", changed, err)
	}
	ca.WriteFiles(t, dir, time.Now().Add(48*time.Hour), "autoconfig.example.com", "autodiscover.example.com")
	touchLater(t, certFile, keyFile)
	if changed, err := f.reloadIfChanged(); !changed || err != nil || f.current().Leaf.SerialNumber.Cmp(first) == 0 {
		t.Errorf("changed files: reloaded %v, %v", changed, err)
	}
	checkNotAfter("reloaded")
	second := f.current().Leaf.SerialNumber
	writeFile(t, keyFile, "not a key")
	touchLater(t, keyFile)
	if _, err := f.reloadIfChanged(); err == nil || !strings.Contains(err.Error(), "server.tls") {
		t.Errorf("broken key: %v", err)
	}
	if f.current().Leaf.SerialNumber.Cmp(second) != 0 {
		t.Error("a broken pair replaced the working certificate")
	}
	checkNotAfter("broken pair")
}

// --operations-listen wins over operations.listen (here its default,
// 127.0.0.1:9734), as --listen does over server.listen: the tests' serve
// never takes the default port another server may hold.
func TestServeOperationsListenFlag(t *testing.T) {
	s := startServe(t, []string{"--demo", "--listen", "127.0.0.1:0"}, "operations.listen")
	if ops := s.addrs["operations.listen"]; ops == "" || strings.HasSuffix(ops, ":9734") {
		t.Errorf("operations listener on %q; want the flag's free port", ops)
	}
	resp, err := http.Get(s.addrs["operations.listen"] + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz on the flag's listener: %d", resp.StatusCode)
	}
}
