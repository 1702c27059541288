package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailbeacon/mailbeacon/cmd/mailbeacon/zone"
	"github.com/mailbeacon/mailbeacon/policy"
)

// Options configures a check. Domain is required; every network client is
// injectable so that tests stay on 127.0.0.1 with a test CA.
type Options struct {
	// Domain is the configured domain of the address, Target where its
	// autoconfig. and autodiscover. names should point (may be empty:
	// then any address will do).
	Domain *policy.Domain
	Target zone.Target
	// TTL of the records printed in fixes; default 3600.
	TTL uint32
	// Resolver is the DNS server (host:port) asked for everything,
	// including the addresses HTTP and TLS connect to; default the first
	// name server of /etc/resolv.conf.
	Resolver string
	// DialAddr connects to a resolved ip:port; default a net.Dialer.
	DialAddr func(ctx context.Context, network, address string) (net.Conn, error)
	// RootCAs verify the certificates; nil means the system roots.
	RootCAs *x509.CertPool
	// Now is the clock for certificate expiry; default time.Now.
	Now func() time.Time
	// MinValidity is how long a certificate must still be valid; default
	// 14 days.
	MinValidity time.Duration
	// Timeout bounds each request and DNS query; default 5s, the time
	// Thunderbird waits for an autoconfig answer (protocols/CLIENTS.md §1.1).
	Timeout time.Duration
	// Password, when set, is sent with Basic authentication to the
	// Autodiscover URLs, as Thunderbird does pre-emptively.
	Password string
}

// checker runs one check.
type checker struct {
	o      Options
	d      *policy.Domain
	addr   policy.Address
	dns    *resolver
	client *http.Client
	rep    *Report
	ips    map[string][]net.IP
	ipErrs map[string]error
}

// Run checks the deployment for addr: DNS against the configuration, the
// certificates, then every URL in the order Thunderbird and Outlook try
// them. It returns a report; an error only when it could not start.
func Run(ctx context.Context, addr policy.Address, o Options) (*Report, error) {
	if o.Domain == nil || o.Domain.Name != addr.Domain {
		return nil, fmt.Errorf("%s is not a configured domain", addr.Domain)
	}
	if o.TTL == 0 {
		o.TTL = 3600
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MinValidity == 0 {
		o.MinValidity = 14 * 24 * time.Hour
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.DialAddr == nil {
		d := &net.Dialer{Timeout: o.Timeout}
		o.DialAddr = d.DialContext
	}
	if o.Resolver == "" {
		s, err := systemResolver()
		if err != nil {
			return nil, err
		}
		o.Resolver = s
	}
	c := &checker{
		o: o, d: o.Domain, addr: addr,
		dns:    &resolver{server: o.Resolver, timeout: o.Timeout},
		rep:    &Report{Address: addr.String(), Domain: addr.Domain},
		ips:    map[string][]net.IP{},
		ipErrs: map[string]error{},
	}
	c.client = &http.Client{
		Transport: &http.Transport{
			DialContext:           c.dial,
			TLSClientConfig:       &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   o.Timeout,
			ResponseHeaderTimeout: o.Timeout,
			DisableKeepAlives:     true,
		},
		Timeout:       o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer c.client.CloseIdleConnections()
	// A resolver that does not answer would fail every line below.
	if _, err := c.dns.query(ctx, addr.Domain, dns.TypeSOA); err != nil && !errors.Is(err, errNoRecord) {
		return nil, fmt.Errorf("the DNS resolver gives no usable answer: %w (give one with --resolver IP:PORT)", err)
	}
	c.checkDNS(ctx)
	c.checkCertificates(ctx)
	c.checkThunderbird(ctx)
	c.checkOutlook(ctx)
	c.checkPACC(ctx)
	return c.rep, nil
}

func (c *checker) add(section, check string, st Status, detail, fix string) {
	c.rep.add(Result{Section: section, Check: check, Status: st, Detail: detail, Fix: fix})
}

// lookup returns the addresses of host from the configured resolver,
// remembered for the rest of the check.
func (c *checker) lookup(ctx context.Context, host string) ([]net.IP, error) {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if ips, ok := c.ips[host]; ok {
		return ips, c.ipErrs[host]
	}
	ips, err := c.dns.addrs(ctx, host)
	if errors.Is(err, errNoRecord) {
		err = fmt.Errorf("%s has no A or AAAA record", host)
	}
	c.ips[host], c.ipErrs[host] = ips, err
	return ips, err
}

// dial connects to host:port at the addresses the resolver gives.
func (c *checker) dial(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	if net.ParseIP(host) != nil {
		return c.o.DialAddr(ctx, network, hostport)
	}
	ips, err := c.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ip := range ips {
		conn, err := c.o.DialAddr(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// ---------------------------------------------------------------------
// DNS

const secDNS = "DNS (compared with the configuration)"

func (c *checker) zoneLines(recs []zone.Record) string {
	var lines []string
	for _, r := range recs {
		lines = append(lines, r.String())
	}
	return strings.Join(lines, "\n")
}

func (c *checker) checkDNS(ctx context.Context) {
	recs := zone.Records(c.d, c.o.Target, c.o.TTL)
	for _, name := range c.hostNames(recs) {
		var want []zone.Record
		for _, r := range recs {
			if r.Name == name+"." && (r.Type == "CNAME" || r.Type == "A" || r.Type == "AAAA") {
				want = append(want, r)
			}
		}
		c.checkHostName(ctx, name, want)
	}
	// The SRV and TXT records, one check per owner name and type.
	type key struct{ name, typ string }
	var order []key
	groups := map[key][]zone.Record{}
	for _, r := range recs {
		if r.Type != "SRV" && r.Type != "TXT" {
			continue
		}
		k := key{r.Name, r.Type}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		if k.typ == "SRV" {
			c.checkSRV(ctx, k.name, groups[k])
		} else {
			c.checkTXT(ctx, k.name, groups[k])
		}
	}
}

// hostNames are the names clients reach mailbeacon by: autoconfig. and
// autodiscover., and ua-auto-config. when the domain publishes PACC.
func (c *checker) hostNames(recs []zone.Record) []string {
	names := c.d.ClientHosts()
	if slices.ContainsFunc(recs, func(r zone.Record) bool { return r.Name == paccTXTName(c.d) }) {
		names = append(names, c.d.PACCHost())
	}
	return names
}

// checkHostName checks that name leads to mailbeacon: the CNAME or
// addresses the configuration names, or any address when it names none.
func (c *checker) checkHostName(ctx context.Context, name string, want []zone.Record) {
	check := name
	t := c.o.Target
	fix := "add to the " + c.d.Name + " zone:\n" + c.zoneLines(want)
	if len(want) == 0 {
		fix = "point " + name + " at mailbeacon (CNAME to its host name, or A/AAAA); set server.public_host so that `mailbeacon dns` prints the record"
	}
	target, err := c.dns.cname(ctx, name)
	if err != nil {
		c.add(secDNS, check, Fail, err.Error(), "check that the resolver ("+c.o.Resolver+") answers; give another with --resolver")
		return
	}
	ips, ipErr := c.lookup(ctx, name)
	switch {
	case target != "" && len(t.Addresses) == 0 && t.Host != "" && target != zone.FQDN(t.Host):
		c.add(secDNS, check, Fail, fmt.Sprintf("CNAME %s, but server.public_host is %s", target, t.Host), "replace the record with:\n"+c.zoneLines(want))
		return
	case ipErr != nil && target != "":
		c.add(secDNS, check, Fail, fmt.Sprintf("CNAME %s, which has no A or AAAA record", target), "give "+strings.TrimSuffix(target, ".")+" an address")
		return
	case ipErr != nil:
		c.add(secDNS, check, Fail, "no record", fix)
		return
	}
	detail := joinIPs(ips)
	if target != "" {
		detail = "CNAME " + target + " → " + detail
	}
	if len(t.Addresses) > 0 && !sameIPs(ips, t.Addresses) {
		c.add(secDNS, check, Fail, detail+", but server.public_addresses are "+joinIPs(t.Addresses), "replace the records with:\n"+c.zoneLines(want))
		return
	}
	if target == "" && len(t.Addresses) == 0 && t.Host != "" {
		// Addresses where a CNAME was expected: fine if they are the
		// public host's.
		hostIPs, err := c.lookup(ctx, t.Host)
		if err != nil || !sameIPs(ips, hostIPs) {
			c.add(secDNS, check, Fail, detail+", not the addresses of server.public_host "+t.Host, "replace the records with:\n"+c.zoneLines(want))
			return
		}
	}
	c.add(secDNS, check, OK, detail, "")
}

func (c *checker) checkSRV(ctx context.Context, name string, want []zone.Record) {
	check := strings.TrimSuffix(name, ".") + " SRV"
	got, err := c.dns.srv(ctx, name)
	if err != nil && !errors.Is(err, errNoRecord) {
		c.add(secDNS, check, Fail, err.Error(), "check that the resolver ("+c.o.Resolver+") answers; give another with --resolver")
		return
	}
	gotNone := len(got) == 1 && got[0].Target == "."
	wantNone := len(want) == 1 && want[0].NotOffered()
	autodiscover := strings.HasPrefix(name, "_autodiscover.")
	var gotDesc []string
	for _, s := range got {
		gotDesc = append(gotDesc, fmt.Sprintf("%d %d %d %s", s.Priority, s.Weight, s.Port, s.Target))
	}
	have := strings.Join(gotDesc, ", ")
	replace := "replace the records with:\n" + c.zoneLines(want)
	switch {
	case len(got) == 0 && wantNone:
		c.add(secDNS, check, Warn, "no record; the configuration offers no such service",
			"publish \".\" to say so, and clients stop looking (RFC 2782):\n"+c.zoneLines(want))
	case len(got) == 0:
		st := Fail
		if autodiscover {
			st = Warn // Outlook's and Thunderbird's last resort only
		}
		c.add(secDNS, check, st, "no record", "add to the "+c.d.Name+" zone:\n"+c.zoneLines(want))
	case wantNone && gotNone:
		c.add(secDNS, check, OK, "\".\": not offered, as configured", "")
	case wantNone:
		c.add(secDNS, check, Fail, "advertises "+have+", which the configuration does not offer", replace)
	case gotNone:
		c.add(secDNS, check, Fail, "says \".\" (not offered), but the configuration offers it", replace)
	default:
		var wantSet, gotSet []string
		for _, w := range want {
			wantSet = append(wantSet, fmt.Sprintf("%d %s", w.Port, w.Target))
		}
		for _, g := range got {
			gotSet = append(gotSet, fmt.Sprintf("%d %s", g.Port, strings.ToLower(g.Target)))
		}
		slices.Sort(wantSet)
		slices.Sort(gotSet)
		if !slices.Equal(wantSet, gotSet) {
			st := Fail
			if autodiscover {
				st = Warn // clients use the target host, not the port; the URL check below tells whether it works
			}
			c.add(secDNS, check, st, "has "+have+"; the configuration says "+srvValues(want), replace)
			return
		}
		for i, g := range got {
			if i < len(want) && g.Priority != want[i].Priority {
				c.add(secDNS, check, Warn, "has "+have+"; priorities differ from "+srvValues(want),
					"lower numbers are preferred: implicit TLS before STARTTLS (RFC 8314), the domain's first protocol before the other (RFC 6186):\n"+c.zoneLines(want))
				return
			}
		}
		c.add(secDNS, check, OK, have, "")
	}
}

func srvValues(rs []zone.Record) string {
	var v []string
	for _, r := range rs {
		v = append(v, r.Value)
	}
	return strings.Join(v, ", ")
}

func (c *checker) checkTXT(ctx context.Context, name string, want []zone.Record) {
	check := strings.TrimSuffix(name, ".") + " TXT"
	got, err := c.dns.txt(ctx, name)
	if err != nil && !errors.Is(err, errNoRecord) {
		c.add(secDNS, check, Fail, err.Error(), "")
		return
	}
	wantText, _ := strconv.Unquote(want[0].Value)
	if slices.Contains(got, wantText) {
		c.add(secDNS, check, OK, wantText, "")
		return
	}
	detail := "no record"
	if len(got) > 0 {
		detail = "has " + strings.Join(got, ", ")
	}
	c.add(secDNS, check, Fail, detail+"; the configuration says "+wantText, "add to the "+c.d.Name+" zone (and remove a stale one):\n"+c.zoneLines(want))
}

func joinIPs(ips []net.IP) string {
	var s []string
	for _, ip := range ips {
		s = append(s, ip.String())
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func sameIPs(a, b []net.IP) bool { return joinIPs(a) == joinIPs(b) }

// ---------------------------------------------------------------------
// Certificates

const secCerts = "Certificates (port 443)"

func (c *checker) checkCertificates(ctx context.Context) {
	hosts := append(c.hostNames(zone.Records(c.d, c.o.Target, c.o.TTL)), c.d.Name)
	// Outlook and Thunderbird also connect to the _autodiscover SRV target.
	if srvs, err := c.dns.srv(ctx, "_autodiscover._tcp."+c.d.Name); err == nil && srvs[0].Target != "." {
		if t := strings.ToLower(strings.TrimSuffix(srvs[0].Target, ".")); !slices.Contains(hosts, t) {
			hosts = append(hosts, t)
		}
	}
	for _, h := range hosts {
		c.checkCertificate(ctx, h, h == c.d.Name)
	}
}

func (c *checker) checkCertificate(ctx context.Context, host string, bare bool) {
	if _, err := c.lookup(ctx, host); err != nil {
		st, detail := Skip, "not checked: "+err.Error()
		if bare {
			detail = "no address: clients skip https://" + host + "/ and move on"
		}
		c.add(secCerts, host, st, detail, "")
		return
	}
	dctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	raw, err := c.dial(dctx, "tcp", net.JoinHostPort(host, "443"))
	if err != nil {
		if bare {
			c.add(secCerts, host, Skip, "nothing answers on port 443: clients move on", "")
			return
		}
		c.add(secCerts, host, Fail, "cannot connect: "+err.Error(), "make port 443 of "+host+" reach mailbeacon (server.listen with server.tls/server.acme, or a reverse proxy: deploy/)")
		return
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(c.o.Timeout))
	tc := tls.Client(raw, &tls.Config{ServerName: host, InsecureSkipVerify: true}) // verified below, to say what is wrong
	if err := tc.HandshakeContext(dctx); err != nil {
		c.add(secCerts, host, Fail, "TLS handshake failed: "+err.Error(), "serve a certificate for "+host+" on port 443 (server.tls or server.acme)")
		return
	}
	st, detail, fix := c.verify(host, tc.ConnectionState().PeerCertificates)
	c.add(secCerts, host, st, detail, fix)
}

// verify checks a presented chain for host, the way clients do, and says
// what is wrong in words.
func (c *checker) verify(host string, chain []*x509.Certificate) (Status, string, string) {
	if len(chain) == 0 {
		return Fail, "no certificate presented", "configure a certificate for " + host
	}
	leaf := chain[0]
	now := c.o.Now()
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: c.o.RootCAs, Intermediates: inter, CurrentTime: now})
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var invErr x509.CertificateInvalidError
	switch {
	case errors.As(err, &hostErr):
		return Fail, fmt.Sprintf("the certificate is for %s, not %s", certNames(leaf), host),
			"get a certificate that includes " + host + " (server.acme obtains one by itself; or add the name to the certificate of server.tls.cert_file or of your proxy)"
	case errors.As(err, &authErr):
		return Fail, "not issued by a trusted CA, or the chain is incomplete (issuer " + leaf.Issuer.String() + ")",
			"serve the full chain: the certificate first, then the intermediates (server.tls.cert_file)"
	case errors.As(err, &invErr) && invErr.Reason == x509.Expired:
		return Fail, "expired or not yet valid (valid " + leaf.NotBefore.UTC().Format(time.DateOnly) + " to " + leaf.NotAfter.UTC().Format(time.DateOnly) + ")",
			"renew the certificate"
	case err != nil:
		return Fail, "not valid: " + err.Error(), "serve a certificate valid for " + host
	}
	left := leaf.NotAfter.Sub(now)
	days := int(left.Hours() / 24)
	if left < c.o.MinValidity {
		return Fail, fmt.Sprintf("valid, but expires in %d days (%s)", days, leaf.NotAfter.UTC().Format(time.DateOnly)),
			"renew it now: renewal should happen 30 days ahead (with server.acme it does; check its log)"
	}
	return OK, fmt.Sprintf("valid for %s until %s (%d days), issuer %s", host, leaf.NotAfter.UTC().Format(time.DateOnly), days, issuerName(leaf)), ""
}

func certNames(c *x509.Certificate) string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	if len(names) == 0 {
		return "no name"
	}
	return strings.Join(names, ", ")
}

func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}
