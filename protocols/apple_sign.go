package protocols

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/smallstep/pkcs7"
)

// Signed profiles (CLIENTS.md §4.5): a DER CMS ContentInfo of type
// SignedData (1.2.840.113549.1.7.2) with the plist encapsulated (attached),
// a SHA-256 digest, and the signing certificate plus its intermediates so
// the device can build the path to a root it trusts.

// profileSigner is the loaded apple.signing configuration.
type profileSigner struct {
	cert         *x509.Certificate
	key          crypto.Signer
	chain        []*x509.Certificate // issuer of cert first
	warnedExpiry *atomic.Bool        // shared by copies of the options
}

// sign wraps data in an attached CMS SignedData, DER-encoded.
func (s *profileSigner) sign(data []byte) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(data)
	if err != nil {
		return nil, err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(s.cert, s.key, s.chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, err
	}
	return sd.Finish()
}

// warnIfExpired logs once when the certificate has expired since start-up:
// iOS then treats the profile as unsigned (§4.5), so it is still served.
func (s *profileSigner) warnIfExpired(log *slog.Logger) {
	if time.Now().After(s.cert.NotAfter) && s.warnedExpiry.CompareAndSwap(false, true) {
		log.Error("the profile signing certificate has expired: devices show profiles as unsigned; renew apple.signing.cert_file and restart",
			"not_after", s.cert.NotAfter)
	}
}

// loadSigner reads and checks the signing files at start-up. Every error
// names the key at fault and says what to do.
func loadSigner(c AppleSigning, now time.Time) (*profileSigner, error) {
	switch {
	case c.CertFile == "":
		return nil, errors.New("apple.signing.cert_file: missing: profile signing needs a certificate (PEM) together with apple.signing.key_file; leave all apple.signing keys empty to serve unsigned profiles")
	case c.KeyFile == "":
		return nil, errors.New("apple.signing.key_file: missing: give the PEM private key of apple.signing.cert_file")
	}
	certs, err := readCertificates(c.CertFile)
	if err != nil {
		return nil, fmt.Errorf("apple.signing.cert_file: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("apple.signing.cert_file: %s holds %d certificates: put only the signing certificate there and its issuers in apple.signing.chain_file", c.CertFile, len(certs))
	}
	cert := certs[0]
	if err := checkValidity(cert, now); err != nil {
		return nil, fmt.Errorf("apple.signing.cert_file: %w", err)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("apple.signing.cert_file: the certificate %q does not allow digitalSignature in its key usage, so it cannot sign profiles: use a certificate issued for signing (digitalSignature; e.g. a TLS server or S/MIME certificate)", cert.Subject.CommonName)
	}
	key, err := readKey(c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("apple.signing.key_file: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("apple.signing.key_file: %s is not the private key of the certificate in apple.signing.cert_file (%s): give the key the certificate was issued for", c.KeyFile, c.CertFile)
	}
	var chain []*x509.Certificate
	if c.ChainFile != "" {
		if chain, err = readCertificates(c.ChainFile); err != nil {
			return nil, fmt.Errorf("apple.signing.chain_file: %w", err)
		}
		child := cert
		for i, ca := range chain {
			if err := child.CheckSignatureFrom(ca); err != nil {
				return nil, fmt.Errorf("apple.signing.chain_file: certificate %d (%q) did not issue %q: list the issuer of the signing certificate first, then its issuer, and so on", i+1, ca.Subject.CommonName, child.Subject.CommonName)
			}
			if err := checkValidity(ca, now); err != nil {
				return nil, fmt.Errorf("apple.signing.chain_file: certificate %d: %w", i+1, err)
			}
			child = ca
		}
	}
	s := &profileSigner{cert: cert, key: key, chain: chain, warnedExpiry: new(atomic.Bool)}
	if _, err := s.sign([]byte("mailbeacon start-up check")); err != nil {
		return nil, fmt.Errorf("apple.signing.key_file: signing a test message failed: %w", err)
	}
	return s, nil
}

func checkValidity(c *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("the certificate %q is not valid before %s: check the system clock or wait", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	case now.After(c.NotAfter):
		return fmt.Errorf("the certificate %q expired on %s: devices would treat the profiles as unsigned; renew it", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// readCertificates parses every CERTIFICATE block of a PEM file.
func readCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: give the path of a PEM file", err)
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path)
	}
	return certs, nil
}

// readKey parses the first private key of a PEM file.
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: give the path of a PEM private key", err)
	}
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("%s holds no PEM private key (-----BEGIN PRIVATE KEY-----)", path)
		}
		var key any
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%s is encrypted: store it unencrypted, readable only by mailbeacon (openssl pkey -in %s -out key.pem)", path, path)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			if k.N.BitLen() < 2048 {
				return nil, fmt.Errorf("%s: a %d-bit RSA key is too weak: use 2048 bits or more", path, k.N.BitLen())
			}
			return k, nil
		case *ecdsa.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("%s: a %T cannot sign profiles: use an RSA or ECDSA key", path, key)
	}
}
