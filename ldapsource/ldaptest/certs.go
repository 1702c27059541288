package ldaptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCerts writes the slapd test server's CA, certificate and key into
// dir as ca.crt, server.crt and server.key.
func writeCerts(dir string) (caFile, certFile, keyFile string, err error) {
	caFile = filepath.Join(dir, "ca.crt")
	certFile = filepath.Join(dir, "server.crt")
	keyFile = filepath.Join(dir, "server.key")
	err = WriteServerCert(caFile, certFile, keyFile, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	return caFile, certFile, keyFile, err
}

// WriteServerCert creates a throwaway CA and a server certificate signed by
// it (ECDSA P-256, valid for two days, subjectAltName the given names and
// addresses, which Go's verifier needs) and writes them and the server's key
// (mode 0600) as PEM files. Test directory servers share it.
func WriteServerCert(caFile, certFile, keyFile string, names []string, ips []net.IP) error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "mailbeacon throwaway test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  ips,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{
		{caFile, "CERTIFICATE", caDER, 0o644},
		{certFile, "CERTIFICATE", der, 0o644},
		{keyFile, "PRIVATE KEY", keyDER, 0o600},
	} {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(f.path, b, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported systems
	}
	return n.Add(n, big.NewInt(1))
}

// CABundle writes one PEM file, in the test's temporary directory, that
// trusts the CA of every server given: for a configuration whose
// ldap.urls name several of them.
func CABundle(t testing.TB, servers ...*Server) string {
	t.Helper()
	var pems []byte
	for _, s := range servers {
		b, err := os.ReadFile(s.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pems = append(pems, b...)
	}
	f := filepath.Join(t.TempDir(), "cas.pem")
	if err := os.WriteFile(f, pems, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
