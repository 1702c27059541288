package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
)

// Exit statuses for scripts and service managers; a usage error exits 2
// like every command.
const (
	// exitConfig (EX_CONFIG of sysexits.h): the configuration is wrong, or
	// the directory refuses it (the service account's credentials, the
	// CA, the base DN). Starting again does not help: the shipped unit's
	// RestartPreventExitStatus=78 stops systemd from trying.
	exitConfig = 78
	// exitConfigInvalid is config check's status for an invalid file:
	// the same as serve's.
	exitConfigInvalid = exitConfig
	exitDirectory     = 3 // --online: the directory cannot be reached, or a search failed
)

// exitError makes run exit with code after printing err.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func configCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprint(stderr, "Usage: mailbeacon config check [--online] [--strict] FILE\n")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	return configCheckCmd(ctx, args[1:], stdout, stderr)
}

// configCheckCmd validates a configuration file the way serve loads it:
// readConfig, build (every section, and the files the ldap and apple keys
// name) and the HTTPS certificate files or ACME settings. It serves
// nothing. With --online it also binds as the service account and runs
// one search per domain.
func configCheckCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	online := fs.Bool("online", false, "also bind to the directory as the service account and search once per domain")
	strict := fs.Bool("strict", false, "treat warnings (the example's placeholder hosts and domains left in place) as errors: exit 78")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: mailbeacon config check [--online] [--strict] FILE\n\n"+
			"Check a configuration without serving: every key (as serve reads them, with the\n"+
			"MAILBEACON_* environment overrides), the password, CA, TLS and signing files\n"+
			"they name. With --online, also bind as ldap.bind_dn, read domain_source.base_dn\n"+
			"if set, and search for postmaster@DOMAIN in each listed domain. Each problem is printed with the key at\n"+
			"fault and the fix.\n\n"+
			"Values left from config.example.yaml's placeholders (names under example.com,\n"+
			"example.net, example.org) are warned about, each by its key; with --strict\n"+
			"they make the check fail with status 78.\n\n"+
			"Service-account credentials the directory refused before (remembered in\n"+
			"state_dir) are not sent again: the check says so without binding.\n\n"+
			"Exit status: 0 valid (warnings or not), 78 (EX_CONFIG) invalid configuration\n"+
			"(or warnings, with --strict), 2 usage error,\n"+
			"3 (--online) the directory cannot be reached or a search failed (a bind or a\n"+
			"base DN the directory refuses for a configuration reason, such as the password,\n"+
			"the CA, or a referral to another server, is status 78).\n\n")
		fs.PrintDefaults()
	}
	file, err := oneArgument(fs, args, stderr)
	if err != nil {
		return err
	}
	if _, err := os.Stat(file); err != nil {
		return &exitError{exitConfigInvalid, err}
	}
	invalid := func(err error) error {
		return &exitError{exitConfigInvalid, fmt.Errorf("%s: %w", file, err)}
	}
	cfg, err := readConfig(commonFlags{config: file})
	if err != nil {
		// readConfig's errors name the file already.
		return &exitError{exitConfigInvalid, err}
	}
	// Warnings (an unencrypted service password, a certificate that does
	// not cover every name, ...) are printed as serve would log them.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	a, err := build(cfg, log)
	if err != nil {
		return invalid(err)
	}
	defer a.source.Close()
	t, err := newTLSServing(a.cfg, log, nil)
	if err != nil {
		return invalid(err)
	}
	https := "plain HTTP (TLS at a reverse proxy)"
	if t != nil {
		https = "HTTPS from " + t.mode
	}
	apple := "unsigned"
	if a.cfg.Apple.Signed() {
		apple = "signed"
	}
	for _, w := range a.cfg.placeholders {
		fmt.Fprintf(stderr, "%s: warning: %s\n", file, w)
	}
	if *strict && len(a.cfg.placeholders) > 0 {
		return &exitError{exitConfigInvalid, fmt.Errorf("%s: %d warning(s), and --strict makes each an error", file, len(a.cfg.placeholders))}
	}
	domains := domainNames(a.cfg.Domains)
	fmt.Fprintf(stdout, "%s: valid: %d domain(s) %v, %s, Apple profiles %s\n", file, len(domains), domains, https, apple)
	if !*online {
		return nil
	}
	if held := a.source.Held(); held != nil {
		// Known refused: say so, and do not bind to find out again.
		fmt.Fprintf(stdout, "directory: not binding as the service account: %s\n", heldState(a.source))
		if f := a.refusals.File(); f != "" {
			fmt.Fprintf(stdout, "directory: the refusal is recorded in %s (remove it, or change the credentials, to try again)\n", f)
		}
		return &exitError{exitConfigInvalid, fmt.Errorf("directory: %w", held)}
	}
	err = probeDirectory(ctx, a.source, domains, stdout)
	if err == nil && a.domains != nil {
		if err = a.domains.Ping(ctx); err == nil {
			fmt.Fprintln(stdout, "domain_source: read domain_source.base_dn")
		}
	}
	if err == nil && a.resolver.HasLinked() {
		if err = a.resolver.PingLinked(ctx); err == nil {
			fmt.Fprintln(stdout, "policy.linked: read each base_dn")
		}
	}
	if err != nil {
		if ldapsource.ConfigurationError(err) != nil {
			// The directory refuses the configuration (password, CA,
			// TLS, base DN): the file is wrong, as serve would say.
			return &exitError{exitConfigInvalid, err}
		}
		return &exitError{exitDirectory, err}
	}
	return nil
}

func domainNames(cfgs []policy.DomainConfig) []string {
	var out []string
	for _, d := range cfgs {
		if n, err := policy.NormalizeDomain(d.Name); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// directory is what the online check uses of ldapsource.Source.
type directory interface {
	Ping(ctx context.Context) error
	Lookup(ctx context.Context, q ldapsource.Query) (*ldapsource.Entry, error)
}

// probeDirectory binds as the service account, reads the base DN, and
// searches once per domain with the configured filter, for the postmaster
// address RFC 5321 makes every mail domain have. Found or not, the search
// worked; only errors fail.
func probeDirectory(ctx context.Context, d directory, domains []string, stdout io.Writer) error {
	if err := d.Ping(ctx); err != nil {
		return fmt.Errorf("directory: bind as ldap.bind_dn or reading ldap.base_dn failed: %w", err)
	}
	fmt.Fprintln(stdout, "directory: bound as the service account and read ldap.base_dn")
	var errs []error
	for _, dom := range domains {
		q := ldapsource.Query{Email: "postmaster@" + dom, Local: "postmaster", Domain: dom}
		_, err := d.Lookup(ctx, q)
		switch {
		case err == nil:
			fmt.Fprintf(stdout, "domain %s: searched: %s has an entry\n", dom, q.Email)
		case errors.Is(err, ldapsource.ErrNotFound):
			fmt.Fprintf(stdout, "domain %s: searched: no entry for %s (the search itself works)\n", dom, q.Email)
		case errors.Is(err, ldapsource.ErrAmbiguous):
			fmt.Fprintf(stdout, "domain %s: searched: several entries match %s: check ldap.filter (or the policy preset's), one address must find one entry\n", dom, q.Email)
		default:
			errs = append(errs, fmt.Errorf("domain %s: searching %s under ldap.base_dn with ldap.filter failed: %w", dom, q.Email, err))
		}
	}
	return errors.Join(errs...)
}
