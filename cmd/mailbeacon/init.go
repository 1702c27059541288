package main

// mailbeacon init: look at a directory through one connection, bound at
// most once, and write a commented configuration for it, with a table of
// sampled accounts as lookup explains them.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
)

// initFlags are init's flags.
type initFlags struct {
	bindDN, passwordFile  string
	caFile, serverName    string
	baseDN, preset, out   string
	startTLS              bool
	sample                int
	domains               domainList
	dialTimeout, deadline time.Duration
}

// domainList is the repeatable --domain flag.
type domainList []string

func (l *domainList) String() string { return strings.Join(*l, ",") }
func (l *domainList) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		d, err := policy.NormalizeDomain(strings.TrimSpace(part))
		if err != nil {
			return err
		}
		*l = append(*l, d)
	}
	return nil
}

// maxInitSample bounds --sample: the table is for reading.
const maxInitSample = 1000

// maxInitDomains bounds the domains written to the file; a directory with
// more is better served by domain_source.
const maxInitDomains = 50

const initUsage = "Usage: mailbeacon init [--bind-dn DN --bind-password-file FILE] [--ca-file FILE] [--start-tls] " +
	"[--base-dn DN] [--preset NAME] [--domain DOMAIN...] [--sample N] [--out FILE] URL\n"

func initCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	var f initFlags
	fs.StringVar(&f.bindDN, "bind-dn", "", "bind as this `DN` (Active Directory: also user@domain), once")
	fs.StringVar(&f.passwordFile, "bind-password-file", "", "read the bind password from the first line of this `file` (or set MAILBEACON_LDAP_BIND_PASSWORD)")
	fs.StringVar(&f.caFile, "ca-file", "", "PEM `file` of the CA that signed the directory's certificate (default: the system's)")
	fs.StringVar(&f.serverName, "tls-server-name", "", "check the certificate against this `name` instead of the URL's host")
	fs.BoolVar(&f.startTLS, "start-tls", false, "require StartTLS on an ldap:// URL (without it, init tries StartTLS and goes on without when the directory refuses it)")
	fs.StringVar(&f.baseDN, "base-dn", "", "search under this `DN` (default: the naming context that holds the mail schema's entries)")
	fs.StringVar(&f.preset, "preset", "", "use this policy `preset` instead of the one the schema suggests")
	fs.Var(&f.domains, "domain", "write this mail `domain` (repeatable; default: the directory's domains and those of the sampled addresses)")
	fs.IntVar(&f.sample, "sample", 10, "sample at most `N` accounts")
	fs.StringVar(&f.out, "out", "mailbeacon.yaml", "write the configuration to this `file`, which must not exist")
	fs.DurationVar(&f.dialTimeout, "dial-timeout", 5*time.Second, "give up connecting after this `duration`")
	fs.DurationVar(&f.deadline, "request-timeout", 10*time.Second, "give up on one directory request after this `duration`")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), initUsage+"\n"+
			"Look at the directory at URL and write a configuration for it: the directory's\n"+
			"vendor and naming contexts from its RootDSE, whether StartTLS or ldaps:// verify\n"+
			"with --ca-file (or the system's CAs), the mail schema in use (iRedMail,\n"+
			"Univention, Zimbra, Kolab, qmail-ldap, postfix-book, Exchange attributes on\n"+
			"Active Directory) and the preset for it, the mail domains, and a sample of\n"+
			"accounts: a table of address, login and services, with the rule behind each,\n"+
			"as lookup explains them. Every guess is marked \"# guessed:\" in the file.\n\n"+
			"init reads the RootDSE anonymously where the directory allows it, and binds at\n"+
			"most once with the credentials given: a refused password is reported with the\n"+
			"fix, never tried again. It never overwrites a file. What it could not find, it\n"+
			"says. Then run the commands it prints: config check --online, and lookup.\n\n"+
			"Exit status: 0 written, 1 failed (the file exists), 2 usage error, 78 a file\n"+
			"a flag names cannot be used, the directory refuses the credentials, its\n"+
			"certificate is not verified, or it shows too little to go on (the message names\n"+
			"the flag to give), 3 the directory cannot be reached or does not answer.\n\n")
		fs.PrintDefaults()
	}
	url, err := oneArgument(fs, args, stderr)
	if err != nil {
		return err
	}
	if f.sample < 1 || f.sample > maxInitSample {
		return fmt.Errorf("--sample: %d is out of range 1..%d", f.sample, maxInitSample)
	}
	if f.preset != "" {
		if _, err := policy.Preset(f.preset); err != nil {
			return fmt.Errorf("--preset: %w", err)
		}
	}
	if _, err := os.Lstat(f.out); err == nil {
		return fmt.Errorf("--out: %s exists: init never overwrites a file: give another --out, or move %s away", f.out, f.out)
	}
	if fi, err := os.Stat(filepath.Dir(f.out)); err != nil || !fi.IsDir() {
		return fmt.Errorf("--out: %s: no directory %s to write it in", f.out, filepath.Dir(f.out))
	}
	lc, passwordKey, err := f.ldapConfig(url)
	if err != nil {
		return err
	}
	in := &initRun{flags: f, ldap: lc, passwordKey: passwordKey, out: stdout}
	return in.run(ctx)
}

// ldapConfig is the ldap section the flags give, and the name of where
// the password comes from.
func (f *initFlags) ldapConfig(url string) (ldapsource.Config, string, error) {
	c := ldapsource.DefaultConfig()
	c.URLs, c.StartTLS, c.ServerName = []string{url}, f.startTLS && strings.HasPrefix(url, "ldap://"), f.serverName
	c.DialTimeout, c.RequestTimeout = f.dialTimeout, f.deadline
	if f.startTLS && !strings.HasPrefix(url, "ldap://") {
		return c, "", fmt.Errorf("--start-tls: StartTLS applies to ldap:// URLs, and %s is not one", url)
	}
	for _, p := range []*string{&f.caFile, &f.passwordFile} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return c, "", err
			}
			*p = abs
		}
	}
	c.CAFile = f.caFile
	env := os.Getenv("MAILBEACON_LDAP_BIND_PASSWORD")
	switch {
	case f.bindDN == "" && f.passwordFile != "":
		return c, "", fmt.Errorf("--bind-password-file: give --bind-dn too, the name the password belongs to")
	case f.bindDN == "":
		return c, "", nil
	case f.passwordFile != "":
		c.BindDN, c.BindPasswordFile = f.bindDN, f.passwordFile
		return c, "--bind-password-file", nil
	case env != "":
		c.BindDN, c.BindPassword = f.bindDN, env
		return c, "MAILBEACON_LDAP_BIND_PASSWORD", nil
	}
	return c, "", fmt.Errorf("--bind-dn: no password: give --bind-password-file FILE, or set MAILBEACON_LDAP_BIND_PASSWORD (never on the command line)")
}

// initRun is one run of init: what it found so far.
type initRun struct {
	flags       initFlags
	ldap        ldapsource.Config
	passwordKey string
	out         io.Writer

	probe    *ldapsource.Probe
	root     *ldapsource.Entry
	schema   *ldapsource.Schema
	tlsNote  string
	vendor   string
	baseDN   string
	baseNote string
	stack    *stackFound
	preset   string
	presetOf string // why this preset
	sample   []sampled
	hostAttr string // written as policy.host_attribute; "" when the preset's
	hostNote string
	domains  []initDomain
	domainOf string // where the domains came from
	missing  []string
}

// sampled is one sampled account.
type sampled struct {
	address string
	entry   *ldapsource.Entry
}

// initDomain is one domain to write.
type initDomain struct {
	name, host, hostNote string
}

func (in *initRun) run(ctx context.Context) error {
	if err := in.connect(ctx); err != nil {
		return err
	}
	defer in.probe.Close()
	if err := in.readDirectory(ctx); err != nil {
		return err
	}
	if err := in.sampleAccounts(ctx); err != nil {
		return err
	}
	in.findDomains(ctx)
	text := in.configText()
	a, err := in.build(text)
	if err != nil {
		return fmt.Errorf("the configuration init made does not load (a bug of init: please report it, with the output above): %w", err)
	}
	defer a.source.Close()
	if err := writeNew(in.flags.out, text); err != nil {
		return err
	}
	in.report(ctx, a)
	return nil
}

// connect dials, settles TLS, reads the RootDSE anonymously if the
// directory shows it, and binds once if credentials were given.
func (in *initRun) connect(ctx context.Context) error {
	p, err := ldapsource.DialProbe(ctx, in.ldap, in.passwordKey)
	if err != nil {
		return in.directoryError("connecting", err)
	}
	in.probe = p
	if p.Encryption() == "" {
		// First, while nothing is outstanding (slapd refuses StartTLS
		// while it still counts an answered search), and tried whether
		// the RootDSE lists it or not: Samba does not.
		switch err := p.StartTLS(ctx); {
		case err == nil:
		case ldapsource.ConfigurationError(err) != nil || in.ldap.StartTLS || errors.Is(err, ldapsource.ErrNoAnswer) || errors.Is(err, ldapsource.ErrProbeClosed):
			p.Close()
			return in.directoryError("StartTLS", err)
		default:
			in.missing = append(in.missing, fmt.Sprintf("StartTLS: the directory refused it (%v)", err))
		}
	}
	// Before any bind: what anonymous clients see.
	root, rootErr := p.RootDSE(ctx)
	if errors.Is(rootErr, ldapsource.ErrNoAnswer) {
		p.Close()
		return in.directoryError("reading the RootDSE", rootErr)
	}
	in.tlsNote = in.describeTLS()
	if in.ldap.BindDN != "" {
		if !p.Loopback() && p.Encryption() == "" {
			fmt.Fprintf(in.out, "warning: the password goes to %s unencrypted: use ldaps:// or a directory with StartTLS\n", p.URL())
		}
		if err := p.Bind(ctx); err != nil {
			p.Close()
			return in.directoryError("binding", err)
		}
	}
	if root == nil && in.ldap.BindDN != "" {
		fmt.Fprintf(in.out, "RootDSE: not shown to anonymous clients (%v); read after binding\n", rootErr)
		root, rootErr = p.RootDSE(ctx)
	}
	if root == nil {
		fix := ""
		if in.ldap.BindDN == "" {
			fix = ": give --bind-dn and --bind-password-file to read it as the service account"
		}
		in.missing = append(in.missing, fmt.Sprintf("RootDSE: %v%s", rootErr, fix))
		if in.flags.baseDN == "" {
			p.Close()
			give := "--base-dn"
			if in.ldap.BindDN == "" {
				give += ", or --bind-dn and --bind-password-file"
			}
			return &exitError{exitConfig, fmt.Errorf("%s: the directory does not show its RootDSE to this client (%v), so init cannot find the naming context: give %s", p.URL(), rootErr, give)}
		}
		root = &ldapsource.Entry{Attributes: map[string][]string{}}
	}
	in.root = root
	return nil
}

// describeTLS says how the connection is protected, for the file and the
// report.
func (in *initRun) describeTLS() string {
	ca := "the system's CAs"
	if in.ldap.CAFile != "" {
		ca = "ca_file"
	}
	switch in.probe.Encryption() {
	case "ldaps":
		return "ldaps: the directory's certificate verified with " + ca
	case "StartTLS":
		return "StartTLS: the directory takes it, and its certificate verified with " + ca
	}
	if in.probe.Loopback() {
		return "no TLS: the directory offers no StartTLS; on the loopback the password stays on this host"
	}
	return "no TLS: the directory offers no StartTLS: use ldaps:// if it has it, or the service password crosses the network in clear"
}

// directoryError words a failure to reach or use the directory, with the
// exit status: 78 for what the configuration must fix, 3 otherwise.
func (in *initRun) directoryError(doing string, err error) error {
	if ldapsource.ConfigurationError(err) != nil || errors.Is(err, ldapsource.ErrSettings) {
		// The fix names the flag that sets the key.
		return &exitError{exitConfig, fmt.Errorf("%s: %s", doing, flagWords.Replace(err.Error()))}
	}
	if errors.Is(err, ldapsource.ErrNoAnswer) {
		return &exitError{exitDirectory, fmt.Errorf("%s: %w (--request-timeout %v): the server took the connection but does not answer: is it hung, or overloaded?", doing, err, in.ldap.RequestTimeout)}
	}
	var ne net.Error
	if errors.As(err, &ne) || ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		return &exitError{exitDirectory, fmt.Errorf("%s: %w: is the directory running, and are the URL's host and port right?", doing, err)}
	}
	return &exitError{exitDirectory, fmt.Errorf("%s: %w", doing, err)}
}

// flagWords turns the configuration keys of ldapsource's errors into the
// flags of init that set them.
var flagWords = strings.NewReplacer(
	"ldap.start_tls: true", "--start-tls",
	"ldap.bind_password_file", "--bind-password-file",
	"ldap.bind_dn", "--bind-dn",
	"ldap.ca_file", "--ca-file",
	"ldap.tls_server_name", "--tls-server-name",
	"in ldap.urls", "in the URL",
	"ldap.urls", "the URL",
	"ldap.base_dn", "--base-dn",
)

// readDirectory reads the RootDSE's facts, the schema and the base DN,
// and picks the preset.
func (in *initRun) readDirectory(ctx context.Context) error {
	in.vendor = ldapsource.Vendor(in.root)
	if in.vendor == "" {
		in.missing = append(in.missing, "vendor: the RootDSE names none")
	}
	dn := "cn=Subschema"
	if v := in.root.Values("subschemaSubentry"); len(v) > 0 {
		dn = v[0]
	}
	s, err := in.probe.Schema(ctx, dn)
	if err != nil {
		why := fmt.Sprintf("schema: %v", err)
		if !in.probe.Bound() {
			why += ": give --bind-dn and --bind-password-file to read it as the service account"
		}
		in.missing = append(in.missing, why)
	}
	in.schema = s
	ncs := ldapsource.NamingContexts(in.root)
	bases := ncs
	if in.flags.baseDN != "" {
		bases = []string{in.flags.baseDN}
	}
	stack, where := detectStack(ctx, in.probe, in.schema, bases)
	in.stack = stack
	switch {
	case in.flags.baseDN != "":
		in.baseDN, in.baseNote = in.flags.baseDN, "from --base-dn"
	case len(ncs) == 0:
		return &exitError{exitConfig, fmt.Errorf("%s: the RootDSE lists no naming context: give --base-dn", in.probe.URL())}
	default:
		in.baseDN = ncs[0]
		if where != "" {
			in.baseDN = where
		}
		in.baseNote = "guessed: the directory's naming context"
		switch {
		case len(ncs) > 1 && where != "":
			in.baseNote += fmt.Sprintf(" that holds %s entries, of %d: %s", stack.name, len(ncs), strings.Join(ncs, "; "))
		case len(ncs) > 1:
			in.baseNote += fmt.Sprintf(", the first of %d: %s", len(ncs), strings.Join(ncs, "; "))
		}
		in.baseNote += "; narrow it to the subtree of the mailboxes (e.g. ou=people," + in.baseDN + ") if others hold entries with mail addresses"
	}
	in.preset, in.presetOf = choosePreset(in.flags.preset, in.stack, ldapsource.IsActiveDirectory(in.root))
	return nil
}

// sampleAccounts searches for up to --sample entries with the preset's
// filter, every placeholder a wildcard.
func (in *initRun) sampleAccounts(ctx context.Context) error {
	pc, _ := policy.Preset(in.preset)
	pol, err := policy.New(policy.Config{Preset: in.preset})
	if err != nil {
		return err
	}
	filter := strings.NewReplacer("{email}", "*", "{local}", "*", "{domain}", "*").Replace(pol.Filter())
	hostAttrs := []string{"mailHost"}
	if pc.HostAttribute != "" {
		hostAttrs = []string{pc.HostAttribute}
	}
	entries, err := in.probe.Search(ctx, in.baseDN, ldap.ScopeWholeSubtree, filter, append(slices.Clone(pol.Attributes()), hostAttrs...), in.flags.sample)
	if err != nil {
		if ldapsource.ConfigurationError(err) != nil {
			return in.directoryError("sampling accounts", err)
		}
		in.missing = append(in.missing, fmt.Sprintf("accounts: searching %s for %s: %v", in.baseDN, filter, err))
	}
	for _, e := range entries {
		if a, ok := pol.PrimaryAddress(e); ok {
			in.sample = append(in.sample, sampled{address: a, entry: e})
		}
	}
	if len(in.sample) == 0 {
		in.missing = append(in.missing, fmt.Sprintf("accounts: no entry under %s matches %s (the preset's filter)", in.baseDN, filter))
	}
	in.hostAttr, in.hostNote = pc.HostAttribute, ""
	if pc.HostAttribute == "" {
		n := 0
		for _, s := range in.sample {
			if len(s.entry.Values("mailHost")) > 0 {
				n++
			}
		}
		if n > 0 {
			in.hostAttr = "mailHost"
			in.hostNote = fmt.Sprintf("guessed: %d of the %s name the server of their mailbox in mailHost", n, plural(len(in.sample), "sampled entry", "sampled entries"))
		}
	}
	return nil
}

// findDomains takes --domain, else the domains the stack keeps in the
// directory (those not turned off) and those of the sampled addresses;
// and guesses each one's host.
func (in *initRun) findDomains(ctx context.Context) {
	var names []string
	if len(in.flags.domains) > 0 {
		names, in.domainOf = in.flags.domains, "from --domain"
	} else {
		var from []string
		if in.stack != nil && in.stack.domains != nil {
			names = in.directoryDomains(ctx)
			if len(names) > 0 {
				from = append(from, fmt.Sprintf("the %s domain entries in the directory, %s", in.stack.name, in.stack.domains.filter))
			}
		}
		n := len(names)
		for _, s := range in.sample {
			if _, d, ok := strings.Cut(s.address, "@"); ok && !slices.Contains(names, d) {
				names = append(names, d)
			}
		}
		if len(names) > n {
			from = append(from, fmt.Sprintf("the domains of the %s", plural(len(in.sample), "sampled address", "sampled addresses")))
		}
		in.domainOf = strings.Join(from, "; ")
	}
	if len(names) == 0 {
		in.missing = append(in.missing, "mail domains: none found: give --domain DOMAIN")
		names = []string{"example.org"}
		in.domainOf = "guessed: a placeholder, since no domain was found: replace it"
	}
	if len(names) > maxInitDomains {
		in.missing = append(in.missing, fmt.Sprintf("mail domains: %d found, the first %d written: a directory with this many is better served by domain_source (README, \"Hosted domains from the directory\")", len(names), maxInitDomains))
		names = names[:maxInitDomains]
	}
	for _, n := range names {
		in.domains = append(in.domains, in.guessHost(n))
	}
}

// directoryDomains reads the names of the stack's domain entries, less
// those turned off.
func (in *initRun) directoryDomains(ctx context.Context) []string {
	de := in.stack.domains
	entries, err := in.probe.Search(ctx, in.baseDN, ldap.ScopeWholeSubtree, de.filter, []string{de.attr, de.status}, maxInitDomains+1)
	if err != nil {
		in.missing = append(in.missing, fmt.Sprintf("mail domains: searching %s: %v", de.filter, err))
		return nil
	}
	var names, off []string
	for _, e := range entries {
		st := e.Values(de.status)
		for _, v := range e.Values(de.attr) {
			d, err := policy.NormalizeDomain(v)
			switch {
			case err != nil, slices.Contains(names, d):
			case len(st) > 0 && !strings.EqualFold(st[0], "active"):
				off = append(off, fmt.Sprintf("%s (%s %s)", d, de.status, st[0]))
			default:
				names = append(names, d)
			}
		}
	}
	if len(off) > 0 {
		in.missing = append(in.missing, "mail domains turned off in the directory, left out: "+strings.Join(off, ", "))
	}
	return names
}

// guessHost picks a domain's mail host: the commonest value of the host
// attribute among its sampled users if at least half of them carry it,
// else mail.DOMAIN.
func (in *initRun) guessHost(domain string) initDomain {
	count := map[string]int{}
	best, users := "", 0
	for _, s := range in.sample {
		if !strings.HasSuffix(s.address, "@"+domain) {
			continue
		}
		users++
		if in.hostAttr == "" {
			continue
		}
		if v := s.entry.Values(in.hostAttr); len(v) > 0 {
			h, err := policy.NormalizeDomain(strings.TrimSpace(v[0]))
			if err != nil {
				continue
			}
			count[h]++
			if count[h] > count[best] || (count[h] == count[best] && h < best) {
				best = h
			}
		}
	}
	if best != "" && 2*count[best] >= users {
		return initDomain{name: domain, host: best, hostNote: fmt.Sprintf("guessed: %s, the %s of %s", best, in.hostAttr, plural(count[best], "sampled user", "sampled users"))}
	}
	note := "guessed: mail." + domain + ", no host in the directory"
	if best != "" {
		note = fmt.Sprintf("guessed: mail.%s; %s of %s of this domain name their own (%s %s)", domain, plural(len(count), "host", "hosts"), plural(users, "sampled user", "sampled users"), in.hostAttr, best)
	}
	return initDomain{name: domain, host: "mail." + domain, hostNote: note}
}

// plural is "1 user", "2 users": n and the noun, one or many.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// build loads text as serve would, with lookups going over the probe's
// bound connection.
func (in *initRun) build(text string) (*app, error) {
	cfg, err := loadConfig(strings.NewReader(text), in.flags.out)
	if err != nil {
		return nil, err
	}
	cfg.noState = true
	cfg.newSource = in.probe.Source
	return build(cfg, slog.New(slog.DiscardHandler))
}

// writeNew writes text to a file that must not exist.
func writeNew(name, text string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("--out: %s exists: init never overwrites a file: give another --out, or move %s away", name, name)
	}
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if _, err := io.WriteString(f, text); err != nil {
		f.Close()
		return fmt.Errorf("--out: %w", err)
	}
	return f.Close()
}

// report prints what init found, the sampled accounts as lookup explains
// them, what it could not find, and the commands to run next.
func (in *initRun) report(ctx context.Context, a *app) {
	w := in.out
	fmt.Fprintf(w, "Directory: %s: %s\n", in.probe.URL(), or(in.vendor, "vendor unknown"))
	fmt.Fprintf(w, "TLS: %s\n", in.tlsNote)
	if in.probe.Bound() {
		fmt.Fprintf(w, "Bound once as %s\n", in.ldap.BindDN)
	} else {
		fmt.Fprintln(w, "Not bound: read anonymously")
	}
	if ncs := ldapsource.NamingContexts(in.root); len(ncs) > 0 {
		fmt.Fprintf(w, "Naming contexts: %s\n", strings.Join(ncs, "; "))
	}
	if v := in.root.Values("supportedSASLMechanisms"); len(v) > 0 {
		fmt.Fprintf(w, "SASL mechanisms: %s\n", strings.Join(v, " "))
	}
	if v := in.root.Values("supportedControl"); len(v) > 0 {
		fmt.Fprintf(w, "Controls: %d, paged results %s\n", len(v), yesNo(slices.Contains(v, ldapsource.OIDPagedResults)))
	}
	if in.schema != nil {
		c, t := in.schema.Size()
		fmt.Fprintf(w, "Schema: %s: %d object classes, %d attribute types\n", in.schema.DN, c, t)
	}
	if in.stack != nil {
		fmt.Fprintf(w, "Mail schema: %s\n", in.stack.describe())
	} else {
		fmt.Fprintln(w, "Mail schema: none recognised")
	}
	fmt.Fprintf(w, "Preset: %s (%s)\n", in.preset, in.presetOf)
	fmt.Fprintf(w, "Base DN: %s\n", in.baseDN)
	names := make([]string, len(in.domains))
	for i, d := range in.domains {
		names[i] = d.name
	}
	fmt.Fprintf(w, "Domains: %s (%s)\n", strings.Join(names, " "), in.domainOf)
	addr := in.sampleTable(ctx, a)
	if len(in.missing) > 0 {
		fmt.Fprintln(w, "\nNot found:")
		for _, m := range in.missing {
			fmt.Fprintf(w, "  %s\n", m)
		}
	}
	fmt.Fprintf(w, "\nWrote %s. Check the lines marked \"# guessed:\", then run:\n", in.flags.out)
	for _, c := range in.nextCommands(addr) {
		fmt.Fprintf(w, "  %s\n", c)
	}
}

// nextCommands are the commands to run after init, lookup for addr
// ("": the first sampled address).
func (in *initRun) nextCommands(addr string) []string {
	if addr == "" && len(in.sample) > 0 {
		addr = in.sample[0].address
	}
	if addr == "" {
		addr = "ADDRESS"
	}
	file := shellQuote(in.flags.out)
	return []string{
		"mailbeacon config check --online " + file,
		"mailbeacon lookup --config " + file + " " + addr,
	}
}

// sampleTable prints each sampled address's login and services and the
// rule behind each, from the resolver's Explain as lookup prints it. It
// returns the first enabled account's address, or "".
func (in *initRun) sampleTable(ctx context.Context, a *app) (enabled string) {
	w := in.out
	if len(in.sample) == 0 {
		return ""
	}
	fmt.Fprintf(w, "\nSampled accounts (%d), as `mailbeacon lookup` explains them:\n", len(in.sample))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  ADDRESS\tLOGIN\tSERVICES")
	type why struct {
		addr string
		ex   *policy.Explanation
	}
	var whys []why
	for _, s := range in.sample {
		addr, err := policy.ParseAddress(s.address)
		if err != nil {
			fmt.Fprintf(tw, "  %s\t-\tnot an address: %v\n", s.address, err)
			continue
		}
		_, ex, err := a.resolver.Explain(ctx, addr)
		if err != nil {
			fmt.Fprintf(tw, "  %s\t-\tnot looked up: %v\n", s.address, err)
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.address, ex.Login, allowedServices(ex))
		whys = append(whys, why{s.address, ex})
		if enabled == "" && ex.Enabled {
			enabled = s.address
		}
	}
	tw.Flush()
	for _, y := range whys {
		fmt.Fprintf(w, "\n%s: %s\n", y.addr, y.ex.Reason)
		for _, d := range y.ex.Services {
			fmt.Fprintf(w, "  %s: %s: %s\n", d.Service, onOff(d.Allowed), d.Rule)
		}
	}
	return enabled
}

// allowedServices lists the services an explanation allows, or says why
// there are none of the user's own.
func allowedServices(ex *policy.Explanation) string {
	var on []string
	for _, d := range ex.Services {
		if d.Allowed && !slices.Contains(on, d.Service) {
			on = append(on, d.Service)
		}
	}
	s := strings.Join(on, " ")
	if s == "" {
		s = "none"
	}
	if !ex.Enabled {
		s += " (domain defaults: " + map[bool]string{true: "disabled", false: "not found"}[ex.Found] + ")"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
