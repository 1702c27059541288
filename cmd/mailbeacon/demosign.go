package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/mailbeacon/mailbeacon/protocols"
)

// demoSigning makes a throwaway CA and profile signing certificate in a
// temporary directory and points cfg's apple.signing at it, for
// `serve --demo --demo-sign`. The returned function removes the directory.
func demoSigning(cfg *config, log *slog.Logger) (func(), error) {
	dir, err := os.MkdirTemp("", "mailbeacon-demo-sign-")
	if err != nil {
		return nil, fmt.Errorf("--demo-sign: %w", err)
	}
	d, err := protocols.WriteDemoSigning(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("--demo-sign: %w", err)
	}
	cfg.Apple.Signing = d.Signing
	log.Info("signing Apple profiles with a throwaway demo CA (devices show them as unverified)",
		"ca_file", d.CAFile, "cert_file", d.Signing.CertFile, "chain_file", d.Signing.ChainFile,
		"verify", "openssl cms -verify -inform DER -CAfile "+d.CAFile+" -in profile.mobileconfig")
	return func() { _ = os.RemoveAll(dir) }, nil
}

var errDemoSignNeedsDemo = errors.New("--demo-sign works only with --demo: with a configuration file, set apple.signing.cert_file, key_file and chain_file")
