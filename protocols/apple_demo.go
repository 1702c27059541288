package protocols

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// DemoSigning is a throwaway certificate authority and profile signing
// certificate, made by WriteDemoSigning for `serve --demo --demo-sign` and
// for tests. Nothing trusts it: iOS shows such profiles as "Unverified".
type DemoSigning struct {
	Signing AppleSigning // the files to put in AppleOptions.Signing
	CAFile  string       // the root certificate, for openssl cms -verify -CAfile
}

// WriteDemoSigning makes a root CA, an intermediate CA and a signing
// certificate (ECDSA P-256, valid for 30 days) and writes them as PEM into
// dir: ca.pem, chain.pem (the intermediate), signing.pem and signing-key.pem.
func WriteDemoSigning(dir string) (DemoSigning, error) {
	now := time.Now()
	root, rootKey, err := issueCert(certSpec{CN: "mailbeacon demo root CA", CA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)}, nil, nil)
	if err != nil {
		return DemoSigning{}, err
	}
	inter, interKey, err := issueCert(certSpec{CN: "mailbeacon demo intermediate CA", CA: true, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0)}, root, rootKey)
	if err != nil {
		return DemoSigning{}, err
	}
	leaf, leafKey, err := issueCert(certSpec{CN: "mailbeacon demo profile signing", NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, 30)}, inter, interKey)
	if err != nil {
		return DemoSigning{}, err
	}
	d := DemoSigning{
		Signing: AppleSigning{
			CertFile:  filepath.Join(dir, "signing.pem"),
			KeyFile:   filepath.Join(dir, "signing-key.pem"),
			ChainFile: filepath.Join(dir, "chain.pem"),
		},
		CAFile: filepath.Join(dir, "ca.pem"),
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return DemoSigning{}, err
	}
	for _, f := range []struct {
		path  string
		typ   string
		der   []byte
		perms os.FileMode
	}{
		{d.CAFile, "CERTIFICATE", root.Raw, 0o644},
		{d.Signing.ChainFile, "CERTIFICATE", inter.Raw, 0o644},
		{d.Signing.CertFile, "CERTIFICATE", leaf.Raw, 0o644},
		{d.Signing.KeyFile, "PRIVATE KEY", keyDER, 0o600},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.perms); err != nil {
			return DemoSigning{}, err
		}
	}
	return d, nil
}

// certSpec describes a certificate for issueCert.
type certSpec struct {
	CN                  string
	CA                  bool
	NotBefore, NotAfter time.Time
	// KeyUsage of a leaf; zero means digitalSignature. ExtKeyUsage of a
	// leaf; nil means emailProtection, the purpose openssl cms -verify
	// checks by default.
	KeyUsage    x509.KeyUsage
	ExtKeyUsage []x509.ExtKeyUsage
	Key         crypto.Signer // nil: a fresh ECDSA P-256 key
}

// issueCert makes a certificate signed by parent (self-signed when parent
// is nil) and returns it with its key.
func issueCert(s certSpec, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
	key := s.Key
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		key = k
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: s.CN, Organization: []string{"mailbeacon demo"}},
		NotBefore:             s.NotBefore,
		NotAfter:              s.NotAfter,
		BasicConstraintsValid: true,
	}
	if s.CA {
		tmpl.IsCA = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = s.KeyUsage
		if tmpl.KeyUsage == 0 {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		}
		tmpl.ExtKeyUsage = s.ExtKeyUsage
		if tmpl.ExtKeyUsage == nil {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
		}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("making the %s certificate: %w", s.CN, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return c, key, nil
}
