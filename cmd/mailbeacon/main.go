// Command mailbeacon answers the account-discovery requests of mail clients
// (Thunderbird autoconfig and more) with settings made for each user from
// an LDAP directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
)

const usage = `mailbeacon - e-mail client autoconfiguration from your LDAP directory

Usage:
  mailbeacon init   [--bind-dn DN --bind-password-file FILE] [--out FILE] URL
  mailbeacon serve  [--config FILE] [--listen ADDR] [--operations-listen ADDR]
                    [--start-degraded] [--demo [--demo-sign]]
  mailbeacon lookup [--config FILE] [--demo] ADDRESS
  mailbeacon dns    [--config FILE] [--demo] [--target HOST | --address IP...] DOMAIN
  mailbeacon check  [--config FILE] [--demo] [--resolver IP:PORT] [--json] ADDRESS
  mailbeacon config check [--online] [--strict] FILE
  mailbeacon health [--url URL | --config FILE] [--timeout DURATION]
  mailbeacon version
  mailbeacon completion bash|zsh
  mailbeacon help [--man]

Commands:
  init     look at a directory and write a commented configuration for it,
           with a sample of accounts as lookup explains them
  serve    answer client discovery requests over HTTP
  lookup   resolve one address like a request would, bypassing the cache, and
           print the account as JSON with the rule that decided each service
  dns      print the DNS records a domain needs, in zone-file syntax
  check    check a live deployment for an address: DNS, certificates, and
           every URL in the order Thunderbird and Outlook try them
  config check
           validate a configuration file without serving (with --online, also
           bind to the directory and search once per domain)
  health   exit 0 if a running serve answers its /healthz (a container's
           health check)
  version  print the version, commit and Go release it was built from
  completion
           print the bash or zsh completion script
  help     print this text (--man: the manual page, made from the same help)

  --demo runs against a built-in directory (domain example.com; users alice,
  bob, carol, dave) served in-process, with the built-in demo configuration
  unless --config is given. Try:
    mailbeacon serve --demo
    curl 'http://127.0.0.1:8080/mail/config-v1.1.xml?emailaddress=bob@example.com'
  --demo-sign also signs Apple profiles with a throwaway CA made at start.

Exit status: 0 done, 1 failed, 2 usage error, 78 (EX_CONFIG) the configuration
is wrong or the directory refuses it (serve and config check: a restart does
not help; systemd's RestartPreventExitStatus=78), 3 (config check --online)
the directory cannot be reached.

Configuration: YAML, every key documented in config.example.yaml (the
package installs it in /usr/share/doc/mailbeacon/examples/). config check
warns about the example's placeholder hosts and domains left in place.

Environment: MAILBEACON_<SECTION>_<KEY> overrides a key of the file, e.g.
MAILBEACON_LDAP_BIND_PASSWORD or MAILBEACON_LDAP_BIND_PASSWORD_FILE.

Files: /etc/mailbeacon/config.yaml, the package's configuration (mode 0640,
group mailbeacon-config); /etc/mailbeacon/ldap-password, the service
account's password (root's, mode 0600: the systemd unit hands it to the
service as a credential); /var/lib/mailbeacon, the unit's state directory.

Run 'mailbeacon COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "init":
		err = initCmd(ctx, args[1:], stdout, stderr)
	case "serve":
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = serveCmd(ctx, args[1:], stdout, stderr)
	case "lookup":
		err = lookupCmd(ctx, args[1:], stdout, stderr)
	case "dns":
		err = dnsCmd(args[1:], stdout, stderr)
	case "check":
		err = checkCmd(ctx, args[1:], stdout, stderr)
	case "config":
		err = configCmd(ctx, args[1:], stdout, stderr)
	case "health":
		err = healthCmd(ctx, args[1:], stdout, stderr)
	case "completion":
		err = completionCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		readBuildInfo().write(stdout)
		return 0
	case "help", "-h", "--help":
		if len(args) > 1 && args[1] == "--man" {
			helpMan(ctx, stdout)
			return 0
		}
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mailbeacon: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	// The reason a command failed is an error in the journal.
	prefix := "mailbeacon:"
	if journalStream(stderr) {
		prefix = prioError + prefix
	}
	if ee := (*exitError)(nil); errors.As(err, &ee) {
		fmt.Fprintln(stderr, prefix, err)
		return ee.code
	}
	fmt.Fprintln(stderr, prefix, err)
	return 1
}

var errUsage = errors.New("usage")

// commonFlags are the flags every command that needs a configuration takes.
type commonFlags struct {
	config   string
	demo     bool
	demoSign bool // serve only: sign Apple profiles with a throwaway CA
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "configuration `file` (YAML; see config.example.yaml)")
	fs.BoolVar(&c.demo, "demo", false, "run against the built-in demo directory (domain example.com)")
}

// parseFlags parses args, printing errors and help to stderr. It wraps
// usage errors in errUsage so run exits with 2 without repeating them.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

// logFlushInterval bounds how long a log line waits in the buffer.
const logFlushInterval = 100 * time.Millisecond

// setup loads the configuration (starting the demo directory if asked) and
// builds the app. cleanup must be called when done; it also flushes the log.
func setup(c commonFlags, stderr io.Writer) (a *app, log *slog.Logger, cleanup func(), err error) {
	if c.demoSign && !c.demo {
		return nil, nil, nil, errDemoSignNeedsDemo
	}
	cfg, err := readConfig(c)
	if err != nil {
		return nil, nil, nil, err
	}
	lw := newLogWriter(stderr, logFlushInterval)
	if journalStream(stderr) {
		log, err = newJournalLogger(lw, cfg.Log)
	} else {
		log, err = newLogger(lw, cfg.Log)
	}
	if err != nil {
		lw.Close()
		return nil, nil, nil, err
	}
	stopDemo := func() {}
	defer func() {
		if err != nil {
			stopDemo()
			lw.Close()
		}
	}()
	if c.demo {
		srv, err := embedded.Start(embedded.Demo(), nil)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("starting the demo directory: %w", err)
		}
		cfg.LDAP = demoLDAP(cfg.LDAP, srv.URL)
		cfg.noState = true // the demo's credentials are built in
		stopDemo = func() { _ = srv.Close() }
		log.Info("demo directory started", "url", srv.URL, "base_dn", embedded.DemoBaseDN)
	}
	if c.demoSign {
		stopSign, err := demoSigning(&cfg, log)
		if err != nil {
			return nil, nil, nil, err
		}
		stop := stopDemo
		stopDemo = func() { stop(); stopSign() }
	}
	a, err = build(cfg, log)
	if err != nil {
		return nil, nil, nil, err
	}
	// A reload (serve, SIGHUP) reads the same file again and keeps what
	// --demo and --demo-sign put in.
	demoURL, signing := cfg.LDAP.URLs, cfg.Apple.Signing
	a.reread = func() (config, error) {
		cfg, err := readConfig(c)
		if err != nil {
			return config{}, err
		}
		if c.demo {
			cfg.LDAP = demoLDAP(cfg.LDAP, demoURL[0])
			cfg.noState = true
		}
		if c.demoSign {
			cfg.Apple.Signing = signing
		}
		return cfg, nil
	}
	return a, log, func() { a.source.Close(); stopDemo(); lw.Close() }, nil
}

// readConfig reads the file --config names, or the built-in demo
// configuration with --demo.
func readConfig(c commonFlags) (config, error) {
	switch {
	case c.config != "":
		f, err := os.Open(c.config)
		if err != nil {
			return config{}, fmt.Errorf("--config: %w", err)
		}
		defer f.Close()
		return loadConfig(f, c.config)
	case c.demo:
		return loadConfig(strings.NewReader(demoConfig), "built-in demo configuration")
	}
	return config{}, fmt.Errorf("no configuration: give --config FILE (see config.example.yaml), or --demo to try the built-in demo")
}

// demoLDAP points an ldap configuration at the embedded demo directory,
// keeping its timeouts, pool size and filter.
func demoLDAP(c ldapsource.Config, url string) ldapsource.Config {
	c.URLs = []string{url}
	c.StartTLS, c.CAFile, c.ServerName, c.InsecureSkipVerify = false, "", "", false
	c.BindDN, c.BindPassword, c.BindPasswordFile = embedded.DemoBindDN, embedded.DemoPassword, ""
	c.BaseDN = embedded.DemoBaseDN
	return c
}
