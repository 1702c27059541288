package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check/checktest"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/policy"
)

// pebbleModule is Let's Encrypt's ACME test server, built from the Go
// module proxy at a pinned version.
const pebbleModule = "github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1"

// buildPebble builds pebble into a temporary directory. Without a Go
// toolchain or the module proxy the test is skipped, or fails under CI=true.
func buildPebble(t *testing.T) string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		unavailable("pebble: no go command to build it: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", pebbleModule)
	cmd.Dir = dir
	// Module mode outside this module; no -mod or -race from the caller.
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		unavailable("pebble: go install %s: %v\n%s", pebbleModule, err, out)
	}
	return filepath.Join(dir, "pebble")
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lockedWriter collects a process's output.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// acmeRig is mailbeacon serving HTTPS with certificates from pebble, on
// loopback; pebble's DNS is a test server answering zone.
type acmeRig struct {
	s        *serving
	pout     *lockedWriter
	cacheDir string
	tlsAddr  string
	roots    *x509.CertPool // pebble's root
}

// startACME runs serve with configText (plus the server section pointing
// at pebble) and args, then pebble validating challenges against it.
func startACME(t *testing.T, configText, zone string, args ...string) *acmeRig {
	t.Helper()
	pebble := buildPebble(t)
	dir := t.TempDir()
	ca := checktest.NewCA(t)
	caFile := ca.WriteCA(t, dir)
	pebbleCert, pebbleKey := ca.WriteFiles(t, dir, time.Now().Add(24*time.Hour), "127.0.0.1", "localhost")
	dnsSrv := checktest.StartDNS(t, zone)

	// mailbeacon first, on free ports, pointed at where pebble will listen:
	// autocert reads the ACME directory only when a certificate is needed.
	acmePort, mgmtPort := freePort(t), freePort(t)
	rig := &acmeRig{pout: &lockedWriter{}, cacheDir: filepath.Join(dir, "acme-cache")}
	cfgFile := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgFile, configText+fmt.Sprintf(`
operations:
  listen: 127.0.0.1:0
server:
  listen: 127.0.0.1:0
  http_listen: 127.0.0.1:0
  acme:
    enabled: true
    email: postmaster@example.com
    directory_url: https://127.0.0.1:%d/dir
    cache_dir: %q
    ca_file: %q
`, acmePort, rig.cacheDir, caFile))
	rig.s = startServe(t, append(args, "--config", cfgFile), "server.http_listen")
	rig.tlsAddr = strings.TrimPrefix(rig.s.addrs["server.listen"], "https://")
	httpAddr := strings.TrimPrefix(rig.s.addrs["server.http_listen"], "http://")
	port := func(hostport string) int {
		_, p, _ := net.SplitHostPort(hostport)
		n, _ := strconv.Atoi(p)
		return n
	}

	// pebble validates TLS-ALPN-01 and HTTP-01 challenges on mailbeacon's
	// two listeners.
	pcfg, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    pebbleCert,
		"privateKey":                     pebbleKey,
		"httpPort":                       port(httpAddr),
		"tlsPort":                        port(rig.tlsAddr),
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}})
	pcfgFile := filepath.Join(dir, "pebble.json")
	writeFile(t, pcfgFile, string(pcfg))
	cmd := exec.Command(pebble, "-config", pcfgFile, "-dnsserver", dnsSrv.Addr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	cmd.Stdout, cmd.Stderr = rig.pout, rig.pout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble:\n%s", rig.pout.String())
		}
	})
	trustCA := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	var root []byte
	for deadline := time.Now().Add(20 * time.Second); root == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not start:\n%s", rig.pout.String())
		}
		resp, err := trustCA.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			root = b
		}
	}
	rig.roots = x509.NewCertPool()
	if !rig.roots.AppendCertsFromPEM(root) {
		t.Fatalf("pebble root: %q", root)
	}
	return rig
}

func (r *acmeRig) handshake(name string) (*x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{ServerName: name, RootCAs: r.roots}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", r.tlsAddr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// issued checks that name got a certificate, cached, after pebble
// validated a challenge against mailbeacon.
func (r *acmeRig) issued(t *testing.T, name string) {
	t.Helper()
	leaf, err := r.handshake(name)
	if err != nil {
		t.Fatalf("handshake: %v\nmailbeacon:\n%s", err, r.s.stderr.String())
	}
	if !slices.Contains(leaf.DNSNames, name) {
		t.Errorf("certificate names %v", leaf.DNSNames)
	}
	if _, err := os.Stat(filepath.Join(r.cacheDir, name)); err != nil {
		t.Errorf("certificate not cached in server.acme.cache_dir: %v", err)
	}
	if !strings.Contains(r.pout.String(), "set VALID by completed challenge") {
		t.Errorf("pebble did not validate a challenge against mailbeacon:\n%s", r.pout.String())
	}
}

// refused checks that no certificate is requested for name: the
// handshake fails and pebble never hears of it.
func (r *acmeRig) refused(t *testing.T, name string) {
	t.Helper()
	before := r.pout.String()
	if _, err := r.handshake(name); err == nil {
		t.Fatalf("a TLS handshake for %s succeeded", name)
	}
	if _, err := os.Stat(filepath.Join(r.cacheDir, name)); err == nil {
		t.Errorf("a certificate for %s is in the cache", name)
	}
	_, domain, _ := strings.Cut(name, ".")
	if after := r.pout.String(); strings.Contains(after[len(before):], domain) || strings.Contains(after[len(before):], "/order-plz") {
		t.Errorf("pebble was asked for %s:\n%s", name, after[len(before):])
	}
}

// ACME end to end against pebble on loopback: mailbeacon obtains a
// certificate for autoconfig.example.com, pebble really validating the
// challenge against mailbeacon's listeners (its DNS is a test server
// that says 127.0.0.1), and refuses to ask for a name of a domain that is
// not configured.
func TestACMEWithPebble(t *testing.T) {
	zone := "autoconfig.example.com. 60 IN A 127.0.0.1\nautodiscover.example.com. 60 IN A 127.0.0.1\n" +
		"autoconfig.unconfigured.org. 60 IN A 127.0.0.1\n"
	rig := startACME(t, demoConfig, zone, "--demo")
	t.Run("configured name gets a certificate", func(t *testing.T) {
		rig.issued(t, "autoconfig.example.com")
		// And it serves: autoconfig over the certificate pebble issued.
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rig.roots, ServerName: "autoconfig.example.com"}}}
		code, body := get(t, c, "https://"+rig.tlsAddr+"/mail/config-v1.1.xml?emailaddress=bob@example.com", "autoconfig.example.com")
		if code != 200 || !strings.Contains(body, "bob.login") {
			t.Errorf("autoconfig over ACME TLS: %d %s", code, body)
		}
	})
	t.Run("unconfigured name is refused", func(t *testing.T) {
		rig.refused(t, "autoconfig.unconfigured.org")
	})
}

// ACME for the directory's domains: a certificate for a domain the
// directory serves, none requested for one it does not (or disabled).
func TestACMEDirectoryDomainWithPebble(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(ldaptest.HostedLDIF))
	zone := "autodiscover.hosted.example. 60 IN A 127.0.0.1\nautoconfig.nowhere.example. 60 IN A 127.0.0.1\n" +
		"autoconfig.off.example. 60 IN A 127.0.0.1\n"
	rig := startACME(t, hostedConfigText(t, srv, time.Minute, time.Minute), zone)
	t.Run("directory domain gets a certificate", func(t *testing.T) { rig.issued(t, "autodiscover.hosted.example") })
	t.Run("unknown domain is refused", func(t *testing.T) { rig.refused(t, "autoconfig.nowhere.example") })
	t.Run("disabled domain is refused", func(t *testing.T) { rig.refused(t, "autoconfig.off.example") })
}

// The ACME host policy allows the autoconfig./autodiscover./ua-auto-config. names of
// configured domains and the public host, nothing else.
func TestACMEHostPolicy(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bare   bool
		host   string
		public string
		ok     bool
	}{
		{"autoconfig", false, "autoconfig.example.com", "", true},
		{"autodiscover, any case and a trailing dot", false, "AutoDiscover.Example.com.", "", true},
		{"PACC name", false, "ua-auto-config.example.com", "", true},
		{"PACC name of an unconfigured domain", false, "ua-auto-config.unconfigured.org", "", false},
		{"public host", false, "mailbeacon.example.net", "mailbeacon.example.net", true},
		{"bare domain not asked for", false, "example.com", "", false},
		{"bare domain asked for", true, "example.com", "", true},
		{"unconfigured domain", false, "autoconfig.unconfigured.org", "", false},
		{"other subdomain", false, "www.example.com", "", false},
		{"suffix trick", false, "autoconfig.example.com.evil.org", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := loadConfig(strings.NewReader(demoConfig), "test")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Server.ACME = acmeConfig{Enabled: true, CacheDir: t.TempDir(), BareDomains: tc.bare}
			cfg.Server.PublicHost = tc.public
			ts, err := newTLSServing(cfg, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := ts.hostPolicy(context.Background(), tc.host); (err == nil) != tc.ok {
				t.Errorf("hostPolicy(%q) = %v, want allowed %v", tc.host, err, tc.ok)
			}
		})
	}
}

// The ACME host policy asks the directory's domain source for the
// autoconfig./autodiscover. names of domains the configuration lacks, and
// only for those: other names are refused without a search.
func TestACMEHostPolicyDirectoryDomain(t *testing.T) {
	cfg, err := loadConfig(strings.NewReader(demoConfig), "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.ACME = acmeConfig{Enabled: true, CacheDir: t.TempDir()}
	ts, err := newTLSServing(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	ts.domain = func(_ context.Context, name string) (*policy.Domain, error) {
		asked = append(asked, name)
		switch name {
		case "hosted.example":
			return &policy.Domain{Name: name}, nil
		case "down.example":
			return nil, policy.ErrDirectoryUnavailable
		}
		return nil, policy.ErrUnknownDomain
	}
	for _, tc := range []struct {
		host string
		ok   bool
		asks string
	}{
		{"autoconfig.hosted.example", true, "hosted.example"},
		{"AUTODISCOVER.hosted.example.", true, "hosted.example"},
		{"autoconfig.example.com", true, ""}, // configured: no search
		{"autoconfig.nowhere.example", false, "nowhere.example"},
		{"autoconfig.nowhere.example", false, ""}, // found not served: not asked again
		{"autoconfig.down.example", false, "down.example"},
		{"autoconfig.down.example", false, "down.example"}, // no answer is no "not served"
		{"www.hosted.example", false, ""},
		{"hosted.example", false, ""},
		{"autoconfig.*.example", false, ""},
		{"autoconfig." + strings.Repeat("a", 64) + ".example", false, ""},
	} {
		asked = nil
		err := askingPolicy(ts, tc.host)
		if (err == nil) != tc.ok || strings.Join(asked, ",") != tc.asks {
			t.Errorf("hostPolicy(%q) = %v, asked %v; want allowed %v, asked %q", tc.host, err, asked, tc.ok, tc.asks)
		}
	}
}

// askingPolicy is the host policy as getCertificate applies it: a name
// only the directory can confirm is asked about (for a client at
// 192.0.2.1), then the policy asked again.
func askingPolicy(ts *tlsServing, host string) error {
	err := ts.hostPolicy(context.Background(), host)
	var ask *errAskDirectory
	if !errors.As(err, &ask) {
		return err
	}
	if err := ts.askDirectory(context.Background(), netip.MustParseAddr("192.0.2.1"), ask.host, ask.domain); err != nil {
		return err
	}
	return ts.hostPolicy(context.Background(), host)
}
