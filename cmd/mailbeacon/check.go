package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/check"
	"github.com/mailbeacon/mailbeacon/policy"
)

// checkPasswordEnv names the environment variable with the password
// `check` sends to Autodiscover when it asks for one.
const checkPasswordEnv = "MAILBEACON_CHECK_PASSWORD"

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return checkWith(ctx, args, stdout, stderr, nil)
}

// checkWith is checkCmd with a hook that adjusts the checker's options
// (tests point its network clients at loopback).
func checkWith(ctx context.Context, args []string, stdout, stderr io.Writer, adjust func(*check.Options)) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	resolver := fs.String("resolver", "", "DNS server `IP:PORT` to ask for everything (default: the first of /etc/resolv.conf)")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	target := fs.String("target", "", "`host` autoconfig./autodiscover. should be CNAMEs to (default server.public_host)")
	var addrs addrList
	fs.Var(&addrs, "address", "`IP` autoconfig./autodiscover. should have as A/AAAA (repeatable; default server.public_addresses)")
	caFile := fs.String("ca-file", "", "PEM `file` of CA certificates to trust besides the system's (a private CA)")
	minDays := fs.Int("min-days", 14, "fail certificates that expire within this many `days`")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on each request and DNS query (Thunderbird waits 5s)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mailbeacon check [--config FILE] [--demo] [--resolver IP:PORT] [--json] ADDRESS\n\n"+
			"Check a live deployment for ADDRESS: its domain's DNS records against the\n"+
			"configuration, the certificates of autoconfig.DOMAIN, autodiscover.DOMAIN and\n"+
			"DOMAIN, then every URL in the order Thunderbird and Outlook try them, each answer\n"+
			"validated. One line per check (✔ ok, ✘ failed, ! warning, - skipped), with the fix\n"+
			"for each failure; exits 1 when any check fails. With autodiscover.require_auth,\n"+
			"set %s to the address's password to check those answers too.\n\n", checkPasswordEnv)
		fs.PrintDefaults()
	}
	arg, err := oneArgument(fs, args, stderr)
	if err != nil {
		return err
	}
	addr, err := policy.ParseAddress(arg)
	if err != nil {
		return err
	}
	if *minDays < 0 || *timeout <= 0 {
		return fmt.Errorf("--min-days and --timeout must be positive")
	}
	cfg, domains, err := loadDomains(c)
	if err != nil {
		return err
	}
	d, err := servedDomain(ctx, c, cfg, domains, addr.Domain, stderr)
	if err != nil {
		return err
	}
	t, err := publicTarget(c, cfg, *target, addrs)
	if err != nil {
		return err
	}
	o := check.Options{
		Domain: d, Target: t, Resolver: *resolver,
		MinValidity: time.Duration(*minDays) * 24 * time.Hour, Timeout: *timeout,
		Password: os.Getenv(checkPasswordEnv),
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file: %s holds no PEM certificate", *caFile)
		}
		o.RootCAs = pool
	}
	if adjust != nil {
		adjust(&o)
	}
	rep, err := check.Run(ctx, addr, o)
	if err != nil {
		return err
	}
	if *jsonOut {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("check: %d of %d checks failed", rep.Failed, len(rep.Results))
	}
	return nil
}
