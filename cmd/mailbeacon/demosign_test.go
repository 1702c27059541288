package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/mailbeacon/mailbeacon/protocols"
)

// serve --demo --demo-sign signs profiles with a throwaway CA whose files
// exist while the server runs and are removed afterwards.
func TestDemoSign(t *testing.T) {
	a, log, cleanup, err := setup(commonFlags{demo: true, demoSign: true}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dirGone := false
	defer func() {
		if !dirGone {
			cleanup()
		}
	}()
	if !a.cfg.Apple.Signed() {
		t.Fatal("--demo-sign: options hold no signer")
	}
	certFile := a.cfg.Apple.Signing.CertFile
	if _, err := os.Stat(certFile); err != nil {
		t.Fatalf("signing certificate: %v", err)
	}
	h := protocols.NewHandler(a.resolver, a.handlerOptions(log))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mobileconfig?emailaddress=alice@example.com", nil))
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/x-apple-aspen-config" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	p7, err := pkcs7.Parse(rec.Body.Bytes())
	if err != nil {
		t.Fatalf("not a signed profile: %v", err)
	}
	if err := p7.Verify(); err != nil || !bytes.Contains(p7.Content, []byte("com.apple.mail.managed")) || len(p7.Certificates) != 2 {
		t.Errorf("verify: %v; %d certificates; content %.80q", err, len(p7.Certificates), p7.Content)
	}
	cleanup()
	dirGone = true
	if _, err := os.Stat(certFile); !os.IsNotExist(err) {
		t.Errorf("demo signing files left behind: %v", err)
	}
}

func TestDemoSignFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve", "--config", "../../config.example.yaml", "--demo-sign"}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "--demo-sign works only with --demo") {
		t.Errorf("exit %d, stderr %q", code, errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"serve", "--help"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "-demo-sign") {
		t.Errorf("serve --help does not list --demo-sign: %q", errOut.String())
	}
}

// The apple section is read from YAML and the environment, and a bad
// signing file stops the start with the key named.
func TestAppleConfig(t *testing.T) {
	t.Setenv("MAILBEACON_APPLE_SIGNING_KEY_FILE", "/from/env/key.pem")
	cfg, err := loadConfig(strings.NewReader(demoConfig+`
apple:
  organization: Example IT
  signing:
    cert_file: /nonexistent/cert.pem
    chain_file: /nonexistent/chain.pem
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Apple.Signing
	if cfg.Apple.Organization != "Example IT" || s.CertFile != "/nonexistent/cert.pem" || s.KeyFile != "/from/env/key.pem" || s.ChainFile != "/nonexistent/chain.pem" {
		t.Errorf("apple section read as %+v", cfg.Apple)
	}
	_, err = build(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "apple.signing.cert_file") || !strings.Contains(err.Error(), "/nonexistent/cert.pem") {
		t.Errorf("build error %v, want one naming apple.signing.cert_file", err)
	}
	if _, err := loadConfig(strings.NewReader(demoConfig+"apple:\n  signing:\n    certfile: x\n"), "test.yaml"); err == nil {
		t.Error("a misspelt apple key was accepted")
	}
}
