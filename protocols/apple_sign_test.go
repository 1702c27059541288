package protocols

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// testPKI is a root and an intermediate CA for signing tests.
type testPKI struct {
	dir       string
	root      *x509.Certificate
	inter     *x509.Certificate
	interKey  crypto.Signer
	rootFile  string
	interFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	now := time.Now()
	root, rootKey, err := issueCert(certSpec{CN: "test root", CA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inter, interKey, err := issueCert(certSpec{CN: "test intermediate", CA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)}, root, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: t.TempDir(), root: root, inter: inter, interKey: interKey}
	p.rootFile = p.writeCerts(t, "root.pem", root)
	p.interFile = p.writeCerts(t, "inter.pem", inter)
	return p
}

func (p *testPKI) writeCerts(t *testing.T, name string, certs ...*x509.Certificate) string {
	t.Helper()
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return p.write(t, name, b.Bytes())
}

func (p *testPKI) writeKey(t *testing.T, name string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func (p *testPKI) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// leaf issues a signing certificate from the intermediate and writes it
// and its key.
func (p *testPKI) leaf(t *testing.T, name string, spec certSpec) (certFile, keyFile string) {
	t.Helper()
	if spec.NotBefore.IsZero() {
		spec.NotBefore = time.Now().Add(-time.Hour)
	}
	if spec.NotAfter.IsZero() {
		spec.NotAfter = time.Now().Add(12 * time.Hour)
	}
	if spec.CN == "" {
		spec.CN = name
	}
	c, k, err := issueCert(spec, p.inter, p.interKey)
	if err != nil {
		t.Fatal(err)
	}
	return p.writeCerts(t, name+".pem", c), p.writeKey(t, name+"-key.pem", k)
}

// TestApplePrepareSigningErrors: every bad signing setup fails at start
// with a message that names the key and says what to do.
func TestApplePrepareSigningErrors(t *testing.T) {
	p := newTestPKI(t)
	good, goodKey := p.leaf(t, "good", certSpec{})
	_, otherKey := p.leaf(t, "other", certSpec{})
	expired, expiredKey := p.leaf(t, "expired", certSpec{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future, futureKey := p.leaf(t, "future", certSpec{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})
	noSig, noSigKey := p.leaf(t, "nosig", certSpec{KeyUsage: x509.KeyUsageKeyEncipherment})
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edCert, _, err := issueCert(certSpec{CN: "ed25519", Key: edKey, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, p.inter, p.interKey)
	if err != nil {
		t.Fatal(err)
	}
	edCertFile, edKeyFile := p.writeCerts(t, "ed.pem", edCert), p.writeKey(t, "ed-key.pem", edKey)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakCert, _, err := issueCert(certSpec{CN: "weak", Key: weak, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, p.inter, p.interKey)
	if err != nil {
		t.Fatal(err)
	}
	weakCertFile, weakKeyFile := p.writeCerts(t, "weak.pem", weakCert), p.writeKey(t, "weak-key.pem", weak)
	garbage := p.write(t, "garbage.pem", []byte("not a pem file\n"))
	encrypted := p.write(t, "enc.pem", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	twoCerts := p.writeCerts(t, "two.pem", p.inter, p.root)
	wrongOrder := p.writeCerts(t, "wrong-order.pem", p.root, p.inter)
	missing := filepath.Join(p.dir, "does-not-exist.pem")

	tests := []struct {
		name string
		s    AppleSigning
		want []string // substrings of the error
	}{
		{"key without certificate", AppleSigning{KeyFile: goodKey}, []string{"apple.signing.cert_file", "missing"}},
		{"certificate without key", AppleSigning{CertFile: good}, []string{"apple.signing.key_file", "missing"}},
		{"chain alone", AppleSigning{ChainFile: p.interFile}, []string{"apple.signing.cert_file"}},
		{"certificate file missing", AppleSigning{CertFile: missing, KeyFile: goodKey}, []string{"apple.signing.cert_file", "does-not-exist.pem", "no such file"}},
		{"key file missing", AppleSigning{CertFile: good, KeyFile: missing}, []string{"apple.signing.key_file", "no such file"}},
		{"chain file missing", AppleSigning{CertFile: good, KeyFile: goodKey, ChainFile: missing}, []string{"apple.signing.chain_file", "no such file"}},
		{"certificate file not PEM", AppleSigning{CertFile: garbage, KeyFile: goodKey}, []string{"apple.signing.cert_file", "no PEM certificate"}},
		{"key file not PEM", AppleSigning{CertFile: good, KeyFile: garbage}, []string{"apple.signing.key_file", "no PEM private key"}},
		{"two certificates in cert_file", AppleSigning{CertFile: twoCerts, KeyFile: goodKey}, []string{"apple.signing.cert_file", "2 certificates", "chain_file"}},
		{"key of another certificate", AppleSigning{CertFile: good, KeyFile: otherKey}, []string{"apple.signing.key_file", "not the private key"}},
		{"expired certificate", AppleSigning{CertFile: expired, KeyFile: expiredKey}, []string{"apple.signing.cert_file", "expired", "renew"}},
		{"certificate not yet valid", AppleSigning{CertFile: future, KeyFile: futureKey}, []string{"apple.signing.cert_file", "not valid before"}},
		{"no digitalSignature usage", AppleSigning{CertFile: noSig, KeyFile: noSigKey}, []string{"apple.signing.cert_file", "digitalSignature"}},
		{"encrypted key", AppleSigning{CertFile: good, KeyFile: encrypted}, []string{"apple.signing.key_file", "encrypted"}},
		{"ed25519 key", AppleSigning{CertFile: edCertFile, KeyFile: edKeyFile}, []string{"apple.signing.key_file", "RSA or ECDSA"}},
		{"weak RSA key", AppleSigning{CertFile: weakCertFile, KeyFile: weakKeyFile}, []string{"apple.signing.key_file", "1024-bit", "2048"}},
		{"chain not the issuer", AppleSigning{CertFile: good, KeyFile: goodKey, ChainFile: p.rootFile}, []string{"apple.signing.chain_file", "did not issue", "issuer of the signing certificate first"}},
		{"chain in the wrong order", AppleSigning{CertFile: good, KeyFile: goodKey, ChainFile: wrongOrder}, []string{"apple.signing.chain_file", "did not issue"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := AppleOptions{Signing: tt.s}
			err := o.Prepare()
			if err == nil {
				t.Fatal("Prepare succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if o.Signed() {
				t.Error("options hold a signer after a failed Prepare")
			}
		})
	}

	t.Run("valid", func(t *testing.T) {
		for _, s := range []AppleSigning{
			{CertFile: good, KeyFile: goodKey},
			{CertFile: good, KeyFile: goodKey, ChainFile: p.interFile},
			{CertFile: good, KeyFile: goodKey, ChainFile: twoCerts}, // intermediate, then root
		} {
			o := AppleOptions{Signing: s}
			if err := o.Prepare(); err != nil {
				t.Errorf("%+v: %v", s, err)
			}
			if !o.Signed() {
				t.Errorf("%+v: not signed after Prepare", s)
			}
		}
		var o AppleOptions
		if err := o.Prepare(); err != nil || o.Signed() {
			t.Errorf("empty options: err %v, signed %v; want unsigned profiles", err, o.Signed())
		}
	})
}

// TestAppleSignedProfileVerifies: with signing configured, /mobileconfig
// answers a DER CMS SignedData (attached, SHA-256, chain included) that
// openssl cms -verify accepts against the root, and whose content is the
// unsigned profile byte for byte.
func TestAppleSignedProfileVerifies(t *testing.T) {
	p := newTestPKI(t)
	ecCert, ecKey := p.leaf(t, "ecdsa", certSpec{})
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert, rsaKeyFile := p.leaf(t, "rsa", certSpec{Key: rsaKey})
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384Cert, p384Key := p.leaf(t, "p384", certSpec{Key: p384})
	demoDir := t.TempDir()
	demo, err := WriteDemoSigning(demoDir)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		s      AppleSigning
		caFile string
	}{
		{"ECDSA P-256 with chain", AppleSigning{CertFile: ecCert, KeyFile: ecKey, ChainFile: p.interFile}, p.rootFile},
		{"RSA 2048 with chain", AppleSigning{CertFile: rsaCert, KeyFile: rsaKeyFile, ChainFile: p.interFile}, p.rootFile},
		{"ECDSA P-384 with chain", AppleSigning{CertFile: p384Cert, KeyFile: p384Key, ChainFile: p.interFile}, p.rootFile},
		{"demo signing files", demo.Signing, demo.CAFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := AppleOptions{Signing: tt.s}
			if err := opts.Prepare(); err != nil {
				t.Fatal(err)
			}
			_, signed := appleNewFakeServer(t, Options{Apple: opts})
			_, unsigned := appleNewFakeServer(t, Options{})
			target := "/mobileconfig?emailaddress=alice@example.com"
			sr, ur := appleGet(signed, http.MethodGet, target, ""), appleGet(unsigned, http.MethodGet, target, "")
			if sr.Code != http.StatusOK || ur.Code != http.StatusOK {
				t.Fatalf("status %d / %d", sr.Code, ur.Code)
			}
			if ct := sr.Header().Get("Content-Type"); ct != profileMIME {
				t.Errorf("signed Content-Type %q", ct)
			}
			der, plain := sr.Body.Bytes(), ur.Body.Bytes()

			// Go's own parser: SignedData, attached content, SHA-256,
			// signer plus intermediate included.
			p7, err := pkcs7.Parse(der)
			if err != nil {
				t.Fatalf("not PKCS#7/CMS: %v", err)
			}
			if !bytes.Equal(p7.Content, plain) {
				t.Error("embedded content differs from the unsigned profile")
			}
			if len(p7.Signers) != 1 || !p7.Signers[0].DigestAlgorithm.Algorithm.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
				t.Errorf("signers %+v, want one with SHA-256", p7.Signers)
			}
			wantCerts := 1
			if tt.s.ChainFile != "" {
				wantCerts = 2
			}
			if len(p7.Certificates) != wantCerts {
				t.Errorf("%d certificates embedded, want %d (signer and chain)", len(p7.Certificates), wantCerts)
			}
			if err := p7.Verify(); err != nil {
				t.Errorf("pkcs7 verify: %v", err)
			}

			// openssl, as an independent implementation, against the root
			// only: it must find the intermediate inside the profile.
			content, err := appleOpensslVerify(t, der, tt.caFile)
			if err != nil {
				t.Fatalf("openssl cms -verify: %v", err)
			}
			if !bytes.Equal(content, plain) {
				t.Error("openssl's extracted content differs from the unsigned profile")
			}
			appleDecodePlist(t, content)

			// A different root must not verify it.
			if _, err := appleOpensslVerify(t, der, p.write(t, "other-root.pem", pemOf(t, otherRoot(t)))); err == nil {
				t.Error("profile verified against an unrelated root")
			}
		})
	}
}

func otherRoot(t *testing.T) *x509.Certificate {
	t.Helper()
	c, _, err := issueCert(certSpec{CN: "unrelated root", CA: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pemOf(t *testing.T, c *x509.Certificate) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// A certificate that expires while the server runs is logged once; the
// profile is still served (iOS then shows it as unsigned).
func TestAppleSignerExpiryWarning(t *testing.T) {
	p := newTestPKI(t)
	certFile, keyFile := p.leaf(t, "short", certSpec{})
	s, err := loadSigner(AppleSigning{CertFile: certFile, KeyFile: keyFile}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	s.warnIfExpired(log)
	if logs.Len() != 0 {
		t.Fatalf("warned about a valid certificate: %s", logs.String())
	}
	s.cert.NotAfter = time.Now().Add(-time.Minute)
	s.warnIfExpired(log)
	s.warnIfExpired(log)
	if n := strings.Count(logs.String(), "expired"); n != 1 {
		t.Errorf("%d expiry messages, want 1:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "apple.signing.cert_file") {
		t.Errorf("the message does not name the key: %s", logs.String())
	}
}
