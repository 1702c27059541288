package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Full-stack checks of issue 10's findings: serve --demo as a user runs it.

// demoServeConfig is the demo configuration on free loopback ports, plus
// extra YAML.
func demoServeConfig(t *testing.T, extra string) string {
	t.Helper()
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfgFile, demoConfig+`
server:
  listen: 127.0.0.1:0
operations:
  listen: 127.0.0.1:0
`+extra)
	return cfgFile
}

// Finding 8: the demo behind nginx terminating TLS (deploy/nginx.conf, no
// mailbeacon key changed) answers Outlook's POX POST with settings, not
// with a redirect to itself; nginx's plain-HTTP side still gets the
// redirect probe's 302.
func TestDemoBehindTLSProxy(t *testing.T) {
	nginx := needTool(t, "nginx")
	s := startServe(t, []string{"--demo", "--config", demoServeConfig(t, "")}, "operations.listen")
	httpPort, tlsPort, ca := startNginx(t, nginx, strings.TrimPrefix(s.addrs["server.listen"], "http://"))
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: noRedirect, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "autodiscover.example.com"},
	}}
	for _, path := range []string{"/Autodiscover/Autodiscover.xml", "/autodiscover/autodiscover.xml"} {
		req, _ := http.NewRequest("POST", fmt.Sprintf("https://127.0.0.1:%d%s", tlsPort, path), strings.NewReader(adXMLBody("alice@example.com")))
		req.Host = "autodiscover.example.com"
		req.Header.Set("Content-Type", "text/xml")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "<Server>mail.example.com</Server>") || strings.Contains(string(body), "<ErrorCode>") {
			t.Errorf("POX POST over HTTPS through nginx: %d Location %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/autodiscover/autodiscover.xml", httpPort), nil)
	req.Host = "autodiscover.example.com"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://autodiscover.example.com/autodiscover/autodiscover.xml"; resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != want {
		t.Errorf("redirect probe over nginx's plain HTTP: %d %q, want 302 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

// Finding 4: a SIGHUP with unchanged limits leaves every client's budget
// as it was; changed limits keep what each client spent.
func TestReloadKeepsClientBudgets(t *testing.T) {
	limits := "limits:\n  unknown_per_minute: 0.001\n  unknown_burst: %d\n"
	cfgFile := demoServeConfig(t, fmt.Sprintf(limits, 3))
	s := startServe(t, []string{"--demo", "--config", cfgFile}, "operations.listen")
	c := &http.Client{Timeout: 5 * time.Second}
	n := 0
	ask := func() int {
		n++
		code, _ := get(t, c, fmt.Sprintf("%s/mail/config-v1.1.xml?emailaddress=guess%d@example.com", s.addrs["server.listen"], n), "")
		return code
	}
	for i := range 3 {
		if code := ask(); code != 200 {
			t.Fatalf("unknown address %d within the budget: %d", i, code)
		}
	}
	if code := ask(); code != 429 {
		t.Fatalf("over the budget: %d", code)
	}
	s.hup()
	s.waitLog("configuration reloaded", 1)
	if code := ask(); code != 429 {
		t.Errorf("after a reload with the same file: %d, want the budget still spent (429)", code)
	}
	writeFile(t, cfgFile, demoConfig+"server:\n  listen: 127.0.0.1:0\noperations:\n  listen: 127.0.0.1:0\n"+fmt.Sprintf(limits, 4))
	s.hup()
	s.waitLog("configuration reloaded", 2)
	if code := ask(); code != 200 {
		t.Errorf("after a reload with new limits: %d, want the token the raised burst adds", code)
	}
}

// Finding 6: by default the metrics (which move with every lookup, and so
// tell whether an address exists) are not on the public listener, and the
// operations listener is on loopback.
func TestMetricsNotPublicByDefault(t *testing.T) {
	host, _, err := net.SplitHostPort(defaultConfig().Operations.Listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		t.Errorf("operations.listen defaults to %q; want a loopback address", defaultConfig().Operations.Listen)
	}
	h, _ := demoApp(t, demoConfig)
	for _, p := range []string{"/metrics", "/debug/pprof/", "/readyz"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
		if rec.Code != 404 || strings.Contains(rec.Body.String(), "mailbeacon_") {
			t.Errorf("public %s with the default configuration: %d %.200s", p, rec.Code, rec.Body)
		}
	}
}

// Under policy.privacy strict, known addresses keep the unknown-address
// token they took: the give-back would tell a client with a spent budget
// which addresses exist (protocols.TestKeepKnownTokensClosesTheBudgetOracle).
func TestStrictPrivacyKeepsKnownTokens(t *testing.T) {
	for _, privacy := range []string{"standard", "strict"} {
		cfg, _ := demoTestConfig(t, strings.Replace(demoConfig, "policy:\n", "policy:\n  privacy: "+privacy+"\n", 1))
		a, err := build(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.source.Close)
		if got, want := a.handlerOptions(nil).Limits.KeepKnownTokens, privacy == "strict"; got != want {
			t.Errorf("privacy %s: KeepKnownTokens %v, want %v", privacy, got, want)
		}
	}
}
