package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// resolver asks one recursive DNS server, over UDP with a TCP retry for
// truncated answers.
type resolver struct {
	server  string // host:port
	timeout time.Duration
}

// errNoRecord: the name exists but has no record of the type, or the name
// does not exist (NXDOMAIN). Anything else is a failed query.
var errNoRecord = errors.New("no record")

// systemResolver is the first name server of /etc/resolv.conf.
func systemResolver() (string, error) {
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return "", fmt.Errorf("reading the system resolver: %w (give --resolver IP:PORT)", err)
	}
	if len(cc.Servers) == 0 {
		return "", errors.New("no name server in /etc/resolv.conf (give --resolver IP:PORT)")
	}
	return net.JoinHostPort(cc.Servers[0], cc.Port), nil
}

// query returns the answer records of type qtype for name, in order.
func (r *resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: "udp", Timeout: r.timeout}
	in, _, err := c.ExchangeContext(ctx, m, r.server)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.server)
	}
	if err != nil {
		return nil, fmt.Errorf("DNS query %s %s at %s: %w", dns.TypeToString[qtype], name, r.server, err)
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, errNoRecord
	default:
		return nil, fmt.Errorf("DNS query %s %s at %s: %s", dns.TypeToString[qtype], name, r.server, dns.RcodeToString[in.Rcode])
	}
	var out []dns.RR
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype && strings.EqualFold(rr.Header().Name, dns.Fqdn(name)) {
			out = append(out, rr)
		}
	}
	if len(out) == 0 && qtype != dns.TypeCNAME {
		// A recursive answer for a CNAME'd name carries the chain: take
		// the records of the type wherever they are in it.
		for _, rr := range in.Answer {
			if rr.Header().Rrtype == qtype {
				out = append(out, rr)
			}
		}
	}
	if len(out) == 0 {
		return nil, errNoRecord
	}
	return out, nil
}

// cname returns the CNAME target of name, or "" when it has none.
func (r *resolver) cname(ctx context.Context, name string) (string, error) {
	rrs, err := r.query(ctx, name, dns.TypeCNAME)
	if errors.Is(err, errNoRecord) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.ToLower(rrs[0].(*dns.CNAME).Target), nil
}

// addrs returns the IPv4 and IPv6 addresses of name, following CNAMEs.
// errNoRecord when there are none.
func (r *resolver) addrs(ctx context.Context, name string) ([]net.IP, error) {
	var out []net.IP
	var errs []error
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		n := name
		for hops := 0; hops < 8; hops++ {
			rrs, err := r.query(ctx, n, qt)
			if errors.Is(err, errNoRecord) {
				// No answer of the type: is it a CNAME the server did not
				// chase (an authoritative server for another zone)?
				if t, cerr := r.cname(ctx, n); cerr == nil && t != "" && !strings.EqualFold(t, dns.Fqdn(n)) {
					n = t
					continue
				}
				break
			}
			if err != nil {
				errs = append(errs, err)
				break
			}
			for _, rr := range rrs {
				switch a := rr.(type) {
				case *dns.A:
					out = append(out, a.A)
				case *dns.AAAA:
					out = append(out, a.AAAA)
				}
			}
			break
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return nil, errNoRecord
}

// srv returns the SRV records of name.
func (r *resolver) srv(ctx context.Context, name string) ([]*dns.SRV, error) {
	rrs, err := r.query(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, err
	}
	var out []*dns.SRV
	for _, rr := range rrs {
		if s, ok := rr.(*dns.SRV); ok {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *dns.SRV) int { return int(a.Priority) - int(b.Priority) })
	return out, nil
}

// txt returns the TXT strings of name, each record's strings joined.
func (r *resolver) txt(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}
