package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/zone"
	"github.com/mailbeacon/mailbeacon/policy"
)

// addrList is a repeatable IP flag.
type addrList []net.IP

func (l *addrList) String() string { return fmt.Sprint([]net.IP(*l)) }
func (l *addrList) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		ip := net.ParseIP(strings.TrimSpace(part))
		if ip == nil {
			return fmt.Errorf("%q is not an IP address", part)
		}
		*l = append(*l, ip)
	}
	return nil
}

func dnsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dns", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	target := fs.String("target", "", "`host` that autoconfig.DOMAIN and autodiscover.DOMAIN are CNAMEs to (default server.public_host)")
	var addrs addrList
	fs.Var(&addrs, "address", "publish A/AAAA records with this `IP` instead of CNAMEs (repeatable; default server.public_addresses)")
	ttl := fs.Uint("ttl", 3600, "TTL of the records, in `seconds`")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mailbeacon dns [--config FILE] [--demo] [--target HOST | --address IP...] [--ttl N] DOMAIN\n\n"+
			"Print the DNS records DOMAIN needs, from the configuration, in zone-file syntax:\n"+
			"autoconfig and autodiscover names, _autodiscover._tcp SRV, RFC 6186/8314 mail SRV\n"+
			"records (\".\" for services not offered), RFC 6764 CalDAV/CardDAV SRV and TXT.\n"+
			"No directory is contacted, unless DOMAIN comes from the directory (domain_source).\n\n")
		fs.PrintDefaults()
	}
	arg, err := oneArgument(fs, args, stderr)
	if err != nil {
		return err
	}
	if *ttl == 0 || *ttl > 1<<31-1 {
		return fmt.Errorf("--ttl: %d is not a TTL in seconds", *ttl)
	}
	cfg, domains, err := loadDomains(c)
	if err != nil {
		return err
	}
	d, err := servedDomain(context.Background(), c, cfg, domains, arg, stderr)
	if err != nil {
		return err
	}
	t, err := publicTarget(c, cfg, *target, addrs)
	if err != nil {
		return err
	}
	if t.Host == "" && len(t.Addresses) == 0 {
		return fmt.Errorf("no target for autoconfig.%s and autodiscover.%s: give --target HOST (the name mailbeacon is reached by) or --address IP, or set server.public_host", d.Name, d.Name)
	}
	return zone.Write(stdout, d, t, zone.Records(d, t, uint32(*ttl)))
}

// oneArgument parses flags around exactly one positional argument; any
// other count prints the usage.
func oneArgument(fs *flag.FlagSet, args []string, stderr io.Writer) (string, error) {
	pos, err := parseInterspersed(fs, args, stderr)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		fs.Usage()
		return "", errUsage
	}
	return pos[0], nil
}

// parseInterspersed parses flags before and after the positional
// arguments (`mailbeacon dns example.com --demo`) and returns those.
func parseInterspersed(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args, stderr); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadDomains reads the configuration and validates its domains, without
// starting or contacting any directory.
func loadDomains(c commonFlags) (config, map[string]*policy.Domain, error) {
	cfg, err := readConfig(c)
	if err != nil {
		return config{}, nil, err
	}
	if err := cfg.Server.validateTLS(); err != nil {
		return config{}, nil, err
	}
	domains, err := cfg.staticDomains()
	if err != nil {
		return config{}, nil, err
	}
	return cfg, domains, nil
}

// servedDomain is findDomain, then, for a name the configuration does
// not list, the directory's domain_source when one is configured.
func servedDomain(ctx context.Context, c commonFlags, cfg config, domains map[string]*policy.Domain, name string, stderr io.Writer) (*policy.Domain, error) {
	d, err := findDomain(domains, name)
	if err == nil || !cfg.DomainSource.Active() {
		return d, err
	}
	n, nerr := policy.NormalizeDomain(name)
	if nerr != nil {
		return nil, err
	}
	a, _, cleanup, err := setup(c, stderr)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	d, err = a.resolver.Domain(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("%s: neither in the domains list nor served by the directory's domain_source: %w", n, err)
	}
	return d, nil
}

func findDomain(domains map[string]*policy.Domain, name string) (*policy.Domain, error) {
	n, err := policy.NormalizeDomain(name)
	if err != nil {
		return nil, fmt.Errorf("%q is not a domain name: %w", name, err)
	}
	if d, ok := domains[n]; ok {
		return d, nil
	}
	var names []string
	for k := range domains {
		names = append(names, k)
	}
	slices.Sort(names)
	return nil, fmt.Errorf("%s is not a configured domain (configured: %s)", n, strings.Join(names, ", "))
}

// demoPublicHost is the name the demo pretends to be reached by, when
// its configuration does not set server.public_host.
const demoPublicHost = "mailbeacon.example.net"

// publicTarget is where autoconfig./autodiscover. names point: the flags,
// else server.public_addresses / server.public_host.
func publicTarget(c commonFlags, cfg config, host string, addrs []net.IP) (zone.Target, error) {
	t := zone.Target{Host: cfg.Server.PublicHost}
	if c.demo && t.Host == "" && len(cfg.Server.PublicAddresses) == 0 {
		t.Host = demoPublicHost
	}
	for _, a := range cfg.Server.PublicAddresses {
		t.Addresses = append(t.Addresses, net.ParseIP(a)) // validated by validateTLS
	}
	if host != "" {
		n, err := policy.NormalizeDomain(host)
		if err != nil || !strings.Contains(n, ".") {
			return zone.Target{}, fmt.Errorf("--target: %q is not a host name", host)
		}
		t = zone.Target{Host: n}
	}
	if len(addrs) > 0 {
		t = zone.Target{Host: t.Host, Addresses: addrs}
	}
	if t.Host != "" {
		t.Host, _ = policy.NormalizeDomain(t.Host)
	}
	return t, nil
}
