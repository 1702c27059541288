package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check/checktest"
)

// The examples in deploy/ are checked with the tools that read them. A
// missing tool skips its test, or fails it under CI=true (.ci/deps
// installs them).

const deployDir = "../../deploy"

func needTool(t *testing.T, name string, alternatives ...string) string {
	t.Helper()
	for _, n := range append([]string{name}, alternatives...) {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		if p := "/usr/sbin/" + n; fileExists(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (Debian: apt-get install %s)", name, map[string]string{
		"systemd-analyze": "systemd", "nginx": "nginx", "apache2": "apache2", "caddy": "caddy",
	}[name])
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// rewrite copies a deploy/ file into dir with replacements applied.
func rewrite(t *testing.T, name, dir string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	writeFile(t, out, strings.NewReplacer(repl...).Replace(string(b)))
	return out
}

func runTool(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "mailbeacon.service"))
	if err != nil {
		t.Fatal(err)
	}
	// The hardening the unit promises, as active lines.
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadOnlyPaths=/etc/mailbeacon",
		"CapabilityBoundingSet=", "PrivateTmp=yes", "ProtectHome=yes", "StateDirectory=mailbeacon",
		"ExecReload=/bin/kill -HUP $MAINPID", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"ExecStartPre=/usr/bin/mailbeacon config check /etc/mailbeacon/config.yaml",
		"Environment=MAILBEACON_LDAP_BIND_PASSWORD_FILE=%d/ldap-password",
		"Restart=on-failure", "RestartPreventExitStatus=78", "Type=notify", "WatchdogSec=30s",
	} {
		if !lines[want] {
			t.Errorf("mailbeacon.service lacks %q", want)
		}
	}
	sa := needTool(t, "systemd-analyze")
	dir := t.TempDir()
	// verify wants ExecStart's program to exist.
	unit := rewrite(t, "mailbeacon.service", dir, "/usr/bin/mailbeacon", "/bin/true")
	if out := runTool(t, nil, sa, "verify", unit); strings.Contains(out, "mailbeacon.service:") {
		t.Errorf("systemd-analyze verify complains:\n%s", out)
	}
	// Exposure at most 2.0 ("OK") on systemd's own scale.
	runTool(t, nil, sa, "security", "--offline=true", "--threshold=20", unit)
}

func testCert(t *testing.T, dir string) (certFile, keyFile string, ca *checktest.CA) {
	ca = checktest.NewCA(t)
	certFile, keyFile = ca.WriteFiles(t, dir, time.Now().Add(24*time.Hour), "autoconfig.example.com", "autodiscover.example.com")
	return certFile, keyFile, ca
}

func TestApacheConfig(t *testing.T) {
	apache := needTool(t, "apache2", "httpd")
	dir := t.TempDir()
	certFile, keyFile, _ := testCert(t, dir)
	site := rewrite(t, "apache.conf", dir,
		"/etc/letsencrypt/live/autoconfig.example.com/fullchain.pem", certFile,
		"/etc/letsencrypt/live/autoconfig.example.com/privkey.pem", keyFile)
	main := filepath.Join(dir, "httpd.conf")
	writeFile(t, main, fmt.Sprintf(`ServerRoot %q
ServerName localhost
PidFile %q
ErrorLog %q
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
Listen 127.0.0.1:1
Include %q
`, dir, filepath.Join(dir, "httpd.pid"), filepath.Join(dir, "error.log"), site))
	if out := runTool(t, nil, apache, "-t", "-f", main); !strings.Contains(out, "Syntax OK") {
		t.Errorf("apache2 -t: %s", out)
	}
}

func TestCaddyfile(t *testing.T) {
	caddy := needTool(t, "caddy")
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	if out := runTool(t, env, caddy, "validate", "--config", filepath.Join(deployDir, "Caddyfile"), "--adapter", "caddyfile"); !strings.Contains(out, "Valid configuration") {
		t.Errorf("caddy validate: %s", out)
	}
}

// nginx.conf passes nginx -t, and, run for real on loopback in front of a
// backend, keeps the Host header, replaces a client's X-Forwarded-For
// with the client's address, says https, and hides the metrics.
func TestNginxConfig(t *testing.T) {
	nginx := needTool(t, "nginx")
	seen := make(chan http.Header, 4)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		seen <- h
		_, _ = io.WriteString(w, "backend")
	}))
	t.Cleanup(backend.Close)
	_, tlsPort, ca := startNginx(t, nginx, strings.TrimPrefix(backend.URL, "http://"))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool, ServerName: "autoconfig.example.com"},
	}}
	url := fmt.Sprintf("https://127.0.0.1:%d", tlsPort)
	var resp *http.Response
	for _, tc := range []struct {
		path    string
		status  int
		proxied bool
	}{
		{"/mail/config-v1.1.xml?emailaddress=bob%40example.com", 200, true},
		{"/metrics", 404, false},
	} {
		req, _ := http.NewRequest("GET", url+tc.path, nil)
		req.Host = "autoconfig.example.com"
		req.Header.Set("X-Forwarded-For", "203.0.113.66") // a client's lie
		req.Header.Set("X-Forwarded-Proto", "http")
		var err error
		if resp, err = client.Do(req); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.path, resp.StatusCode, tc.status)
		}
		if !tc.proxied {
			continue
		}
		h := <-seen
		for k, want := range map[string]string{"Host": "autoconfig.example.com", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "https"} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: backend saw %s %q, want %q", tc.path, k, got, want)
			}
		}
	}
}

// startNginx runs deploy/nginx.conf on free loopback ports, proxying to
// backend (host:port), with a certificate for autoconfig. and
// autodiscover.example.com; it stops when the test ends.
func startNginx(t *testing.T, nginx, backend string) (httpPort, tlsPort int, ca *checktest.CA) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile, ca := testCert(t, dir)
	httpPort, tlsPort = freePort(t), freePort(t)
	proxyConf := rewrite(t, "nginx-proxy.conf", dir)
	site := rewrite(t, "nginx.conf", dir,
		"/etc/nginx/mailbeacon_proxy.conf", proxyConf,
		"/etc/letsencrypt/live/autoconfig.example.com/fullchain.pem", certFile,
		"/etc/letsencrypt/live/autoconfig.example.com/privkey.pem", keyFile,
		"server 127.0.0.1:8080;", "server "+backend+";",
		"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", httpPort),
		"listen [::]:80;", "",
		"listen 443 ssl http2;", fmt.Sprintf("listen 127.0.0.1:%d ssl http2;", tlsPort),
		"listen [::]:443 ssl http2;", "")
	main := filepath.Join(dir, "nginx-main.conf")
	writeFile(t, main, fmt.Sprintf("pid %s;\nerror_log stderr;\nevents {}\nhttp {\n  access_log off;\n  client_body_temp_path %s;\n  proxy_temp_path %s;\n  include %s;\n}\n",
		filepath.Join(dir, "nginx.pid"), dir, dir, site))
	runTool(t, nil, nginx, "-t", "-q", "-p", dir, "-c", main, "-e", "stderr")

	cmd := exec.Command(nginx, "-p", dir, "-c", main, "-e", "stderr", "-g", "daemon off; master_process off;")
	var out lockedWriter
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tlsPort)); err == nil {
			c.Close()
			return httpPort, tlsPort, ca
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not start:\n%s", out.String())
		}
	}
}
