// Package check holds what `mailbeacon dns` and `mailbeacon check` share:
// the DNS records a configured domain needs, and a checker of a live
// deployment that compares DNS with them, inspects the certificates, and
// requests every URL in the order Thunderbird and Outlook try them.
package check

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Target is where the autoconfig. and autodiscover. names of a domain
// point: a host name (published as CNAME) or addresses (A/AAAA).
type Target struct {
	Host      string   // e.g. mailbeacon.example.net; server.public_host
	Addresses []net.IP // server.public_addresses; win over Host for the names
}

func (t Target) empty() bool { return t.Host == "" && len(t.Addresses) == 0 }

// Record is one resource record in zone-file terms.
type Record struct {
	Name  string // fully qualified, with the trailing dot
	TTL   uint32
	Type  string // CNAME, A, AAAA, SRV or TXT
	Value string // the RDATA as written in a zone file
	// For SRV: the parts of Value.
	Priority, Weight, Port uint16
	Target                 string // CNAME and SRV target ("." for none)
	// Note explains the record (printed as a comment above its group).
	Note string
}

// String is the record as one zone-file line.
func (r Record) String() string {
	return fmt.Sprintf("%s %d IN %s %s", r.Name, r.TTL, r.Type, r.Value)
}

// NotOffered reports whether r is an SRV record saying "no such service
// here" (target ".", RFC 2782).
func (r Record) NotOffered() bool { return r.Type == "SRV" && r.Target == "." }

func fqdn(name string) string { return strings.TrimSuffix(name, ".") + "." }

// Records are the records domain d needs, pointing its autoconfig. and
// autodiscover. names at t (left out when t is empty), with the given TTL:
//
//   - autoconfig.<d> and autodiscover.<d>: CNAME to t.Host, or A/AAAA;
//   - _autodiscover._tcp.<d> SRV: Outlook's and Thunderbird's last resort
//     (protocols/CLIENTS.md §1.1.5, §2.5). An SRV target must not be an
//     alias (RFC 2782), so with CNAMEs it names t.Host itself;
//   - RFC 6186 SRV for IMAP, POP3 and submission, with RFC 8314's
//     implicit-TLS labels (_imaps, _pop3s, _submissions) preferred by
//     priority over the STARTTLS ones, the domain's first access protocol
//     preferred over the other, and target "." for what is not offered;
//   - RFC 6764 _caldavs/_carddavs SRV and TXT path= for configured DAV
//     URLs ("." for the labels not in use).
func Records(d *policy.Domain, t Target, ttl uint32) []Record {
	var out []Record
	dom := fqdn(d.Name)
	add := func(r Record) {
		r.TTL = ttl
		out = append(out, r)
	}
	hostNote := "Thunderbird autoconfig and Outlook Autodiscover"
	switch {
	case len(t.Addresses) > 0:
		for _, n := range d.ClientHosts() {
			for _, ip := range t.Addresses {
				typ := "A"
				if ip.To4() == nil {
					typ = "AAAA"
				}
				add(Record{Name: fqdn(n), Type: typ, Value: ip.String(), Note: hostNote})
			}
		}
	case t.Host != "":
		for _, n := range d.ClientHosts() {
			add(Record{Name: fqdn(n), Type: "CNAME", Target: fqdn(t.Host), Value: fqdn(t.Host), Note: hostNote})
		}
	}
	add(srv("_autodiscover._tcp."+dom, 0, 0, adPort(d), autodiscoverTarget(d, t), hostNote))

	// Mail (RFC 6186, RFC 8314).
	mailNote := "Mail services (RFC 6186, RFC 8314: implicit TLS preferred over STARTTLS; target \".\" = not offered, RFC 2782)"
	access := []policy.Kind{}
	for _, s := range d.Services {
		if (s.Kind == policy.IMAP || s.Kind == policy.POP3) && !slices.Contains(access, s.Kind) {
			access = append(access, s.Kind)
		}
	}
	for _, k := range []policy.Kind{policy.IMAP, policy.POP3} {
		if !slices.Contains(access, k) {
			access = append(access, k) // not offered: "." records
		}
	}
	labels := map[policy.Kind][2]string{
		policy.IMAP: {"_imaps._tcp.", "_imap._tcp."},
		policy.POP3: {"_pop3s._tcp.", "_pop3._tcp."},
		policy.SMTP: {"_submissions._tcp.", "_submission._tcp."},
	}
	for rank, k := range append(access, policy.SMTP) {
		base := uint16(0)
		if k != policy.SMTP {
			base = uint16(20 * rank)
		}
		for i, label := range labels[k] {
			var recs []Record
			for _, s := range d.Services {
				if s.Kind != k || (i == 0) != (s.Socket == policy.SocketTLS) {
					continue
				}
				prio := base + uint16(10*i+len(recs))
				recs = append(recs, srv(label+dom, prio, 1, uint16(s.Port), fqdn(s.Host), mailNote))
			}
			if len(recs) == 0 {
				recs = append(recs, srv(label+dom, 0, 0, 0, ".", mailNote))
			}
			for _, r := range recs {
				add(r)
			}
		}
	}

	// CalDAV and CardDAV (RFC 6764).
	davNote := "CalDAV and CardDAV (RFC 6764: SRV, and TXT path= for the context path)"
	for _, k := range []policy.Kind{policy.CalDAV, policy.CardDAV} {
		name := string(k) // caldav, carddav
		var tlsURL, plainURL *url.URL
		for _, s := range d.Services {
			if s.Kind != k {
				continue
			}
			u, err := url.Parse(s.URL)
			if err != nil {
				continue
			}
			if u.Scheme == "https" && tlsURL == nil {
				tlsURL = u
			} else if u.Scheme == "http" && plainURL == nil {
				plainURL = u
			}
		}
		for _, v := range []struct {
			label string
			u     *url.URL
			port  uint16
		}{{"_" + name + "s._tcp.", tlsURL, 443}, {"_" + name + "._tcp.", plainURL, 80}} {
			if v.u == nil {
				add(srv(v.label+dom, 0, 0, 0, ".", davNote))
				continue
			}
			port := v.port
			if p, err := strconv.Atoi(v.u.Port()); err == nil {
				port = uint16(p)
			}
			add(srv(v.label+dom, 0, 1, port, fqdn(v.u.Hostname()), davNote))
			if p := v.u.EscapedPath(); p != "" && p != "/" {
				add(Record{Name: v.label + dom, Type: "TXT", Value: strconv.Quote("path=" + p), Note: davNote})
			}
		}
	}
	return out
}

func srv(name string, prio, weight, port uint16, target, note string) Record {
	return Record{
		Name: name, Type: "SRV", Priority: prio, Weight: weight, Port: port, Target: target, Note: note,
		Value: fmt.Sprintf("%d %d %d %s", prio, weight, port, target),
	}
}

// autodiscoverTarget is the host the _autodiscover._tcp SRV record names:
// the host of autodiscover_url when that is not autodiscover.<d>, else
// t.Host when autodiscover.<d> is a CNAME to it (an SRV target must not
// be an alias, RFC 2782), else autodiscover.<d>.
func autodiscoverTarget(d *policy.Domain, t Target) string {
	if u, err := url.Parse(d.AutodiscoverURL); err == nil && d.AutodiscoverURL != "" && !strings.EqualFold(u.Hostname(), "autodiscover."+d.Name) {
		return fqdn(strings.ToLower(u.Hostname()))
	}
	if len(t.Addresses) == 0 && t.Host != "" {
		return fqdn(t.Host)
	}
	return fqdn("autodiscover." + d.Name)
}

func adPort(d *policy.Domain) uint16 {
	if u, err := url.Parse(d.AutodiscoverURL); err == nil && u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			return uint16(p)
		}
	}
	return 443 // clients ignore the port anyway (protocols/CLIENTS.md §2.5, quirk 13)
}

// WriteZone writes recs in zone-file syntax, each group under its note as
// a comment, with absolute names so the snippet pastes into any zone.
func WriteZone(w io.Writer, d *policy.Domain, t Target, recs []Record) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	fmt.Fprintf(tw, "; DNS records for %s, made by mailbeacon from its configuration.\n", d.Name)
	if t.empty() {
		fmt.Fprintf(tw, "; autoconfig.%s and autodiscover.%s are left out: set server.public_host (or --target).\n", d.Name, d.Name)
	}
	note := ""
	for _, r := range recs {
		if r.Note != note {
			note = r.Note
			fmt.Fprintf(tw, "\n; %s\n", note)
		}
		fmt.Fprintf(tw, "%s\t%d\tIN\t%s\t%s\n", r.Name, r.TTL, r.Type, r.Value)
	}
	fmt.Fprintf(tw, "\n; Not in DNS: Thunderbird also asks https://%[1]s/.well-known/autoconfig/mail/config-v1.1.xml\n"+
		"; and Outlook first asks https://%[1]s/autodiscover/autodiscover.xml, both on the web server\n"+
		"; of %[1]s itself: proxy those two paths to mailbeacon (see deploy/), or make sure that\n"+
		"; server fails fast with a valid certificate (iOS gives up on a wrong one).\n", d.Name)
	return tw.Flush()
}
