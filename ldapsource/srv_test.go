package ldapsource_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// srvName is the name Active Directory publishes its DCs under, for the
// domain the tests use.
const srvName = "_ldap._tcp.dc._msdcs.example.com."

// srvRecord is an SRV record of srvName for a server on 127.0.0.1 named
// host (localhost is what the test slapd's certificate names).
func srvRecord(ttl, priority, weight int, host string, srv *ldaptest.Server) string {
	return fmt.Sprintf("%s %d IN SRV %d %d %s %s.", srvName, ttl, priority, weight, port(srv), host)
}

func port(srv *ldaptest.Server) string {
	u, err := url.Parse(srv.URL)
	if err != nil {
		panic(err)
	}
	return u.Port()
}

// srvConfig is a configuration that finds the directory through dns-srv:
// from the test DNS server d.
func srvConfig(d *ldaptest.DNS, caFile string, entry string) ldapsource.Config {
	cfg := slapdConfig(caFile, true, entry)
	cfg.DNSServer = d.Addr
	cfg.DialTimeout = 500 * time.Millisecond
	return cfg
}

func TestSRVOrderByPriorityAndWeight(t *testing.T) {
	rr := func(prio, weight uint16, target string) *dns.SRV {
		return &dns.SRV{Hdr: dns.RR_Header{Name: srvName, Rrtype: dns.TypeSRV, Class: dns.ClassINET}, Priority: prio, Weight: weight, Port: 389, Target: target}
	}
	// Listed out of order on purpose: the order comes from the records.
	records := []*dns.SRV{rr(10, 5, "backup."), rr(0, 1, "light."), rr(0, 3, "heavy."), rr(0, 0, "zero.")}
	rnd := rand.New(rand.NewPCG(1, 2))
	const n = 20000
	first := map[string]int{}
	for range n {
		out := ldapsource.OrderSRV(records, rnd)
		if len(out) != len(records) {
			t.Fatalf("OrderSRV returned %d records, want %d", len(out), len(records))
		}
		if last := out[len(out)-1].Target; last != "backup." {
			t.Fatalf("the priority-10 record came at %v; want it last, after every priority-0 record", targets(out))
		}
		first[out[0].Target]++
	}
	// RFC 2782: among priority 0 (weights 3, 1, 0; sum 4) the first is
	// drawn from 0..4 by running sums: zero on 0 (1/5), heavy on 1..3
	// (3/5), light on 4 (1/5), zero-weight records placed first.
	want := map[string]float64{"heavy.": 0.6, "light.": 0.2, "zero.": 0.2}
	for target, p := range want {
		got := float64(first[target]) / n
		if got < p-0.02 || got > p+0.02 {
			t.Errorf("%s came first in %.3f of the orderings; want %.2f ± 0.02 (counts %v)", target, got, p, first)
		}
	}
}

func targets(rrs []*dns.SRV) []string {
	var out []string
	for _, r := range rrs {
		out = append(out, r.Target)
	}
	return out
}

func TestSRVConfigErrors(t *testing.T) {
	cases := []struct {
		name     string
		urls     []string
		startTLS bool
		dns      string
		want     string
	}{
		{"no domain", []string{"dns-srv:"}, true, "", "ldap.urls[0]: \"dns-srv:\" does not name a DNS domain"},
		{"one label", []string{"dns-srv:corp"}, true, "", "does not name a DNS domain"},
		{"unknown option", []string{"dns-srv:corp.example.com?port=636"}, true, "", "only one option, site"},
		{"site with a dot", []string{"ldaps://x.example.com", "dns-srv:corp.example.com?site=a.b"}, false, "", "ldap.urls[1]"},
		{"no start_tls", []string{"dns-srv:corp.example.com"}, false, "", "ldap.start_tls: ldap.urls[0] (dns-srv:corp.example.com) finds directory servers on the plain LDAP port"},
		{"dns_server not an address", []string{"dns-srv:corp.example.com"}, true, "dns.example.com:53", "ldap.dns_server: \"dns.example.com:53\" is not an IP address and port"},
		{"dns_server without port", []string{"dns-srv:corp.example.com"}, true, "192.0.2.53", "ldap.dns_server"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := slapdConfig("", c.startTLS, c.urls...)
			cfg.DNSServer = c.dns
			_, err := ldapsource.New(cfg, nil, nil, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New: %v; want an error containing %q", err, c.want)
			}
		})
	}
}

// TestSRVFailover: two SRV records, the preferred server stopped: lookups
// are answered by the other, and the entry names it.
func TestSRVFailover(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t)
	s2 := ldaptest.Slapd(t)
	d := ldaptest.NewDNS(t, srvRecord(60, 0, 100, "localhost", s1), srvRecord(60, 10, 100, "localhost", s2))
	src := slapdSource(t, srvConfig(d, ldaptest.CABundle(t, s1, s2), "dns-srv:example.com"), "uid")
	ldapsource.SetBreakerCooldown(src, 50*time.Millisecond)

	want1 := "ldap://localhost:" + port(s1)
	want2 := "ldap://localhost:" + port(s2)
	e, err := lookup(src, "alice@example.com")
	if err != nil || e.DN != aliceDN || e.Server != want1 {
		t.Fatalf("Lookup: %+v, %v; want %s from %s, the priority-0 server", e, err, aliceDN, want1)
	}
	s1.Stop()
	before := s2.SearchCount()
	for i := range 3 {
		e, err := lookup(src, "alice@example.com")
		if err != nil || e.DN != aliceDN || e.Server != want2 {
			t.Fatalf("Lookup %d with %s stopped: %+v, %v; want %s from %s", i, want1, e, err, aliceDN, want2)
		}
	}
	if got := s2.SearchCount() - before; got < 3 {
		t.Errorf("the second server counted %d searches; want the 3 lookups", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if server, err := src.Check(ctx); err != nil || server != want2 {
		t.Errorf("Check: %q, %v; want %s", server, err, want2)
	}
	// A user's password is checked through the same list.
	binds := s2.BindCount()
	if err := src.Authenticate(ctx, aliceDN, ldaptest.UserPassword); err != nil {
		t.Errorf("Authenticate with %s stopped: %v", want1, err)
	}
	if err := src.Authenticate(ctx, aliceDN, "wrong"); !errors.Is(err, ldapsource.ErrInvalidCredentials) {
		t.Errorf("Authenticate with a wrong password: %v; want ErrInvalidCredentials", err)
	}
	if got := s2.BindCount() - binds; got != 2 {
		t.Errorf("the second server counted %d binds; want the 2 password checks", got)
	}
}

// TestSRVSiteFirst: with ?site=, the site's DCs come before the domain's.
func TestSRVSiteFirst(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t)
	s2 := ldaptest.Slapd(t)
	site := "_ldap._tcp.Berlin._sites.dc._msdcs.example.com."
	d := ldaptest.NewDNS(t,
		srvRecord(60, 0, 100, "localhost", s1), srvRecord(60, 0, 100, "localhost", s2),
		fmt.Sprintf("%s 60 IN SRV 0 100 %s localhost.", site, port(s2)))
	bundle := ldaptest.CABundle(t, s1, s2)
	for _, c := range []struct {
		entry, want string
	}{
		{"dns-srv:example.com?site=Berlin", "ldap://localhost:" + port(s2)},
		// A site without records of its own falls back on the domain's.
		{"dns-srv:example.com?site=Paris", ""},
	} {
		t.Run(c.entry, func(t *testing.T) {
			src := slapdSource(t, srvConfig(d, bundle, c.entry), "uid")
			for range 5 {
				e, err := lookup(src, "alice@example.com")
				if err != nil || e.DN != aliceDN {
					t.Fatalf("Lookup: %+v, %v", e, err)
				}
				if c.want != "" && e.Server != c.want {
					t.Fatalf("answered by %s; want the site's %s", e.Server, c.want)
				}
			}
		})
	}
}

// TestSRVRefreshAfterTTL: a changed record is used once its TTL ran out,
// and the connection to the server that left the list is not reused.
func TestSRVRefreshAfterTTL(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t)
	s2 := ldaptest.Slapd(t)
	d := ldaptest.NewDNS(t, srvRecord(1, 0, 100, "localhost", s1))
	src := slapdSource(t, srvConfig(d, ldaptest.CABundle(t, s1, s2), "dns-srv:example.com"), "uid")
	ldapsource.SetSRVTTLBounds(src, 200*time.Millisecond, time.Hour)

	if e, err := lookup(src, "alice@example.com"); err != nil || e.Server != "ldap://localhost:"+port(s1) {
		t.Fatalf("Lookup: %+v, %v; want it from the first server", e, err)
	}
	d.Set(t, srvRecord(1, 0, 100, "localhost", s2))
	want := "ldap://localhost:" + port(s2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := lookup(src, "alice@example.com")
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if e.Server == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still answered by %s 10s after the record changed with a TTL of 1s; want %s", e.Server, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := s1.SearchCount()
	for range 3 {
		if e, err := lookup(src, "alice@example.com"); err != nil || e.Server != want {
			t.Fatalf("Lookup after the refresh: %+v, %v; want it from %s", e, err, want)
		}
	}
	if got := s1.SearchCount() - before; got != 0 {
		t.Errorf("the server that left the SRV list got %d searches after the refresh; want 0", got)
	}
}

// TestSRVDNSFailureKeepsLastList: once DNS answered, a DNS server that
// hangs or forgets the name leaves the last list in use.
func TestSRVDNSFailureKeepsLastList(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t)
	for _, c := range []struct {
		name string
		fail func(d *ldaptest.DNS)
	}{
		{"hang", func(d *ldaptest.DNS) { d.Hang(true) }},
		{"NXDOMAIN", func(d *ldaptest.DNS) { d.Set(t) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := ldaptest.NewDNS(t, srvRecord(1, 0, 100, "localhost", s1))
			cfg := srvConfig(d, s1.CAFile, "dns-srv:example.com")
			cfg.DialTimeout = 200 * time.Millisecond
			src := slapdSource(t, cfg, "uid")
			ldapsource.SetSRVTTLBounds(src, 100*time.Millisecond, time.Hour)
			if _, err := lookup(src, "alice@example.com"); err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			c.fail(d)
			asked := d.Queries()
			deadline := time.Now().Add(10 * time.Second)
			for d.Queries() == asked || time.Now().Before(deadline.Add(-9*time.Second)) {
				if e, err := lookup(src, "alice@example.com"); err != nil || e.DN != aliceDN {
					t.Fatalf("Lookup while DNS fails: %+v, %v; want the entry through the last list", e, err)
				}
				if time.Now().After(deadline) {
					t.Fatal("DNS was not asked again within 10s of the TTL running out")
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestSRVDNSHangAtStart: with no list yet, a DNS server that does not
// answer fails the lookup after the DNS timeout, not the request's.
func TestSRVDNSHangAtStart(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t)
	d := ldaptest.NewDNS(t)
	d.Hang(true)
	cfg := srvConfig(d, s1.CAFile, "dns-srv:example.com")
	cfg.DialTimeout = 200 * time.Millisecond
	cfg.RequestTimeout = 20 * time.Second
	src := slapdSource(t, cfg)
	ldapsource.SetBreakerCooldown(src, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := src.Lookup(ctx, slapdQuery("alice@example.com"))
	if err == nil || errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		t.Fatalf("Lookup: %v; want the DNS timeout", err)
	}
	if !strings.Contains(err.Error(), "ldap.urls[0]") || !strings.Contains(err.Error(), "_ldap._tcp.dc._msdcs.example.com") || !strings.Contains(err.Error(), d.Addr) {
		t.Errorf("Lookup: %v; want the key, the SRV name and the DNS server named", err)
	}
	if ldapsource.KindOf(err) != ldapsource.Transient {
		t.Errorf("a DNS server that does not answer is %v; want transient", ldapsource.KindOf(err))
	}
	if took := time.Since(start); took > cfg.RequestTimeout/2 {
		t.Errorf("Lookup took %v; want it bounded by the DNS timeout, well under the request timeout %v", took, cfg.RequestTimeout)
	}
	// The next lookups, within the breaker's cooldown, do not wait on
	// DNS again; once DNS answers, the one after the cooldown finds the
	// server.
	asked := d.Queries()
	if _, err := src.Lookup(ctx, slapdQuery("alice@example.com")); err == nil || d.Queries() != asked {
		t.Errorf("second Lookup: %v after %d more DNS queries; want the same failure and none", err, d.Queries()-asked)
	}
	d.Set(t, srvRecord(60, 0, 100, "localhost", s1))
	d.Hang(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := src.Lookup(ctx, slapdQuery("alice@example.com"))
		if err == nil && e.DN == aliceDN {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Lookup 10s after DNS answers again: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSRVNXDomainAtStart: a domain DNS does not know is a configuration
// error that names ldap.urls.
func TestSRVNXDomainAtStart(t *testing.T) {
	t.Parallel()
	d := ldaptest.NewDNS(t, "example.com. 60 IN A 127.0.0.1")
	src := slapdSource(t, srvConfig(d, "", "dns-srv:example.com"))
	err := ping(src)
	t.Logf("Ping: %v", err)
	ce := ldapsource.ConfigurationError(err)
	if ce == nil || ce.Key != "ldap.urls[0]" {
		t.Fatalf("Ping: %v; want a configuration error on ldap.urls[0]", err)
	}
	for _, w := range []string{"no SRV record _ldap._tcp.dc._msdcs.example.com.", "NXDOMAIN", "ldap.dns_server"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("Ping: %v; want it to say %q", err, w)
		}
	}
}

// TestSRVCertificateNameMismatch: the certificate is checked against the
// SRV target's name, which the server's certificate does not hold here.
func TestSRVCertificateNameMismatch(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t)
	d := ldaptest.NewDNS(t, srvRecord(60, 0, 100, "dc9.example.com", s1), "dc9.example.com. 60 IN A 127.0.0.1")
	src := slapdSource(t, srvConfig(d, s1.CAFile, "dns-srv:example.com"))
	before := s1.BindCount()
	err := ping(src)
	t.Logf("Ping: %v", err)
	ce := ldapsource.ConfigurationError(err)
	if ce == nil || ce.Key != "ldap.urls[0]" || !strings.Contains(ce.Reason, "does not name dc9.example.com, the host name its SRV record gives") ||
		!strings.Contains(err.Error(), "x509: certificate is valid for localhost, not dc9.example.com") {
		t.Fatalf("Ping: %v; want a certificate error on ldap.urls[0] naming dc9.example.com", err)
	}
	if got := s1.BindCount() - before; got != 0 {
		t.Errorf("the service account bound %d times to a server whose certificate does not match; want 0", got)
	}
}

// TestSRVConcurrentStartAsksDNSOnce: lookups that arrive together before
// the first list share one DNS query.
func TestSRVConcurrentStartAsksDNSOnce(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t)
	d := ldaptest.NewDNS(t, srvRecord(60, 0, 100, "localhost", s1))
	src := slapdSource(t, srvConfig(d, s1.CAFile, "dns-srv:example.com"), "uid")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := lookup(src, "alice@example.com"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Lookup: %v", err)
	}
	if got := d.Queries(); got != 1 {
		t.Errorf("8 concurrent first lookups sent DNS %d queries; want 1", got)
	}
}
