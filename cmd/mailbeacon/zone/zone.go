// Package zone makes the DNS records a configured domain needs, from the
// configuration alone: `mailbeacon dns` prints them and `mailbeacon check`
// compares a live deployment with them.
package zone

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
	"github.com/mailbeacon/mailbeacon/protocols"
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

// FQDN is name with one trailing dot.
func FQDN(name string) string { return strings.TrimSuffix(name, ".") + "." }

// FQDNs is FQDN of each name.
func FQDNs(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = FQDN(n)
	}
	return out
}

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
//     URLs ("." for the labels not in use);
//   - PACC (draft-ietf-mailmaint-pacc), when the domain has a document:
//     ua-auto-config.<d> like the names above, and the _ua-auto-config TXT
//     record with the SHA-256 of exactly the bytes mailbeacon serves there.
func Records(d *policy.Domain, t Target, ttl uint32) []Record {
	var out []Record
	dom := FQDN(d.Name)
	add := func(r Record) {
		r.TTL = ttl
		out = append(out, r)
	}
	hostNote := "Thunderbird autoconfig and Outlook Autodiscover"
	for _, r := range hostRecords(t, hostNote, FQDNs(d.ClientHosts())...) {
		add(r)
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
				recs = append(recs, srv(label+dom, prio, 1, uint16(s.Port), FQDN(s.Host), mailNote))
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
			add(srv(v.label+dom, 0, 1, port, FQDN(v.u.Hostname()), davNote))
			if p := v.u.EscapedPath(); p != "" && p != "/" {
				add(Record{Name: v.label + dom, Type: "TXT", Value: strconv.Quote("path=" + p), Note: davNote})
			}
		}
	}
	// PACC. The document is rendered here exactly as it is served, so the
	// hash cannot drift from the bytes.
	if body, ok, err := protocols.RenderPACC(d); err == nil && ok {
		paccNote := "PACC (draft-ietf-mailmaint-pacc): the document on ua-auto-config, pinned by its SHA-256;\n" +
			"; change the domain's services, oauth or provider and this TXT record changes too"
		for _, r := range hostRecords(t, paccNote, FQDN(d.PACCHost())) {
			add(r)
		}
		add(Record{Name: "_" + FQDN(d.PACCHost()), Type: "TXT", Value: strconv.Quote(protocols.PACCRecord(body)), Note: paccNote})
	}
	return out
}

// hostRecords point each of names at t: a CNAME to t.Host, or A/AAAA
// records for t.Addresses; none when t is empty.
func hostRecords(t Target, note string, names ...string) []Record {
	var out []Record
	for _, n := range names {
		switch {
		case len(t.Addresses) > 0:
			for _, ip := range t.Addresses {
				typ := "A"
				if ip.To4() == nil {
					typ = "AAAA"
				}
				out = append(out, Record{Name: n, Type: typ, Value: ip.String(), Note: note})
			}
		case t.Host != "":
			out = append(out, Record{Name: n, Type: "CNAME", Target: FQDN(t.Host), Value: FQDN(t.Host), Note: note})
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
	if u, err := url.Parse(d.AutodiscoverURL); err == nil && d.AutodiscoverURL != "" && !strings.EqualFold(u.Hostname(), d.AutodiscoverHost()) {
		return FQDN(strings.ToLower(u.Hostname()))
	}
	if len(t.Addresses) == 0 && t.Host != "" {
		return FQDN(t.Host)
	}
	return FQDN(d.AutodiscoverHost())
}

func adPort(d *policy.Domain) uint16 {
	if u, err := url.Parse(d.AutodiscoverURL); err == nil && u.Port() != "" {
		if p, err := strconv.Atoi(u.Port()); err == nil {
			return uint16(p)
		}
	}
	return 443 // clients ignore the port anyway (protocols/CLIENTS.md §2.5, quirk 13)
}

// Write writes recs in zone-file syntax, each group under its note as
// a comment, with absolute names so the snippet pastes into any zone.
func Write(w io.Writer, d *policy.Domain, t Target, recs []Record) error {
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	fmt.Fprintf(tw, "; DNS records for %s, made by mailbeacon from its configuration.\n", d.Name)
	if t.empty() {
		fmt.Fprintf(tw, "; autoconfig.%[1]s, autodiscover.%[1]s and ua-auto-config.%[1]s are left out: set server.public_host (or --target).\n", d.Name)
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
