package check

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/mailbeacon/mailbeacon/policy"
)

// The URLs clients try, in their order, each validated as the client
// would read it.

const (
	secThunderbird = "Thunderbird: autoconfig URLs in the order it tries them"
	secOutlook     = "Outlook: Autodiscover URLs in the order it tries them"
	maxBody        = 256 << 10
)

// answer is what one URL gave.
type answer struct {
	status int
	ctype  string
	body   []byte
	hops   []string // redirects followed, as "302 → URL"
	header http.Header
}

// fetch requests u, following up to five redirects when follow is set
// (Thunderbird's XHR does; a POST is re-sent as GET after 301/302/303 as
// XHR does).
func (c *checker) fetch(ctx context.Context, method, u string, body []byte, hdr http.Header, follow bool) (*answer, error) {
	a := &answer{}
	for hop := 0; ; hop++ {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		req.Header.Set("User-Agent", "mailbeacon-check")
		resp, err := c.client.Do(req)
		if err != nil {
			return a, describeTransport(err)
		}
		a.body, err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if err != nil {
			return a, fmt.Errorf("reading the answer: %w", err)
		}
		a.status, a.ctype, a.header = resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header
		loc := resp.Header.Get("Location")
		if !follow || resp.StatusCode < 300 || resp.StatusCode > 399 || loc == "" || hop == 5 {
			return a, nil
		}
		next, err := resp.Request.URL.Parse(loc)
		if err != nil {
			return a, fmt.Errorf("redirect to an invalid URL %q", loc)
		}
		a.hops = append(a.hops, fmt.Sprintf("%d → %s", resp.StatusCode, next))
		u = next.String()
		if resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusPermanentRedirect {
			method, body = http.MethodGet, nil
		}
	}
}

// describeTransport turns a client error into words.
func describeTransport(err error) error {
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var ue *url.Error
	switch {
	case errors.As(err, &hostErr):
		return fmt.Errorf("TLS: the certificate is for %s, not %s", certNames(hostErr.Certificate), hostErr.Host)
	case errors.As(err, &authErr):
		return errors.New("TLS: certificate not issued by a trusted CA (or incomplete chain)")
	case errors.As(err, &ue) && ue.Timeout():
		return errTimeout
	case errors.As(err, &ue):
		return ue.Err
	}
	return err
}

// errTimeout: the URL did not answer within the timeout.
var errTimeout = errors.New("no answer in time (Thunderbird gives up after 5 s)")

// unreachable reports whether err means nothing answered (as opposed to
// an answer that is wrong).
func unreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) || strings.Contains(err.Error(), "no A or AAAA record")
}

// probe is one URL a client tries.
type probe struct {
	n        int
	method   string
	url      string
	required bool   // the client's main URL: it must work
	note     string // why this URL is tried
}

// ---------------------------------------------------------------------
// Thunderbird (protocols/CLIENTS.md §1.1, step 2 "fromISP"): all four
// URLs carry ?emailaddress=, "@" percent-encoded; the first that gives a
// valid configuration wins.

func (c *checker) checkThunderbird(ctx context.Context) {
	q := "?" + url.Values{"emailaddress": {c.addr.String()}}.Encode()
	d, ac := c.d.Name, policy.AutoconfigPrefix+c.d.Name
	probes := []probe{
		{1, "GET", "https://" + ac + "/mail/config-v1.1.xml" + q, true, ""},
		{2, "GET", "https://" + d + "/.well-known/autoconfig/mail/config-v1.1.xml" + q, false, ""},
		{3, "GET", "http://" + ac + "/mail/config-v1.1.xml" + q, false, ""},
		{4, "GET", "http://" + d + "/.well-known/autoconfig/mail/config-v1.1.xml" + q, false, ""},
	}
	used := 0
	for _, p := range probes {
		a, err := c.fetch(ctx, p.method, p.url, nil, nil, true)
		st, detail, fix := c.judge(p, a, err, c.validateAutoconfig)
		if st == OK && used == 0 {
			used = p.n
		}
		c.add(secThunderbird, fmt.Sprintf("%d %s %s", p.n, p.method, p.url), st, detail, fix)
	}
	if used == 0 {
		c.add(secThunderbird, "Thunderbird", Fail, "no URL gives a valid configuration: Thunderbird falls back to its ISP database and to guessing",
			"make https://autoconfig."+d+"/mail/config-v1.1.xml answer (see the failures above)")
		return
	}
	c.add(secThunderbird, "Thunderbird", OK, fmt.Sprintf("uses URL %d", used), "")
}

// ---------------------------------------------------------------------
// Outlook (protocols/CLIENTS.md §2.5, KB 2612922): root domain over
// HTTPS, autodiscover.<domain> over HTTPS, the unauthenticated HTTP
// redirect probe, then the _autodiscover._tcp SRV target. The first valid
// answer wins.

func (c *checker) checkOutlook(ctx context.Context) {
	d := c.d.Name
	body := []byte(`<?xml version="1.0" encoding="utf-8"?>` +
		`<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>` +
		`<EMailAddress>` + c.addr.String() + `</EMailAddress>` +
		`<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>` +
		`</Request></Autodiscover>`)
	hdr := http.Header{"Content-Type": {"text/xml; charset=utf-8"}}
	if c.o.Password != "" {
		r, _ := http.NewRequest("POST", "https://x/", nil)
		r.SetBasicAuth(c.addr.String(), c.o.Password)
		hdr.Set("Authorization", r.Header.Get("Authorization"))
	}
	used := 0
	note := func(p probe, st Status, detail, fix string) {
		if st == OK && used == 0 {
			used = p.n
		}
		c.add(secOutlook, fmt.Sprintf("%d %s %s", p.n, p.method, p.url), st, detail, fix)
	}
	post := func(p probe) {
		a, err := c.fetch(ctx, "POST", p.url, body, hdr, false)
		st, detail, fix := c.judge(p, a, err, c.validatePOX)
		note(p, st, detail, fix)
	}
	post(probe{1, "POST", "https://" + d + poxPath, false, ""})
	post(probe{2, "POST", "https://" + c.d.AutodiscoverHost() + poxPath, true, ""})

	// 3: the redirect probe: a GET without credentials that must answer
	// 302 to an https:// URL, which then gets the POST.
	p3 := probe{3, "GET", "http://" + c.d.AutodiscoverHost() + poxPath, false, ""}
	a, err := c.fetch(ctx, "GET", p3.url, nil, nil, false)
	switch {
	case err != nil && unreachable(err):
		note(p3, Skip, "not answered ("+err.Error()+"): Outlook moves on", "")
	case err != nil:
		note(p3, Fail, err.Error(), "")
	case a.status == http.StatusFound || a.status == http.StatusMovedPermanently:
		loc, perr := url.Parse(a.header.Get("Location"))
		if perr != nil || loc.Scheme != "https" {
			note(p3, Fail, fmt.Sprintf("%d to %q, not to an https:// URL", a.status, a.header.Get("Location")),
				"redirect to https://"+c.d.AutodiscoverHost()+poxPath+" (Outlook sends no credentials over plain HTTP)")
			break
		}
		ra, rerr := c.fetch(ctx, "POST", loc.String(), body, hdr, false)
		st, detail, fix := c.judge(probe{3, "POST", loc.String(), false, ""}, ra, rerr, c.validatePOX)
		note(p3, st, fmt.Sprintf("%d → POST %s: %s", a.status, loc, detail), fix)
	case a.status == http.StatusNotFound:
		note(p3, Skip, "404: Outlook moves on", "")
	default:
		note(p3, Fail, fmt.Sprintf("HTTP %d instead of a redirect to HTTPS", a.status),
			"answer with 302 to https://"+c.d.AutodiscoverHost()+poxPath+" (behind a proxy that terminates TLS, make sure its plain-HTTP side sends X-Forwarded-Proto: http; a proxy not on loopback must be listed in autodiscover.proto_proxies or limits.trusted_proxies)")
	}

	// 4: the SRV target (port ignored, CLIENTS.md §2.5 and quirk 13).
	srvs, err := c.dns.srv(ctx, "_autodiscover._tcp."+d)
	switch {
	case err != nil || len(srvs) == 0 || srvs[0].Target == ".":
		c.add(secOutlook, "4 SRV _autodiscover._tcp."+d, Skip, "no SRV record: Outlook moves on", "")
	default:
		target := strings.TrimSuffix(srvs[0].Target, ".")
		post(probe{4, "POST", "https://" + target + poxPath, false, ""})
	}

	if used == 0 {
		c.add(secOutlook, "Outlook", Fail, "no URL gives a valid Autodiscover answer",
			"make https://autodiscover."+d+poxPath+" answer (see the failures above)")
		return
	}
	c.add(secOutlook, "Outlook", OK, fmt.Sprintf("uses URL %d", used), "")
}

const poxPath = "/autodiscover/autodiscover.xml"

// judge turns a probe's outcome into a report line.
func (c *checker) judge(p probe, a *answer, err error, validate func(*answer) (string, []string, string)) (Status, string, string) {
	optional := !p.required
	if errors.Is(err, errTimeout) && optional {
		return Warn, err.Error(), "make it answer or refuse quickly: a client waits for it before trying the next URL"
	}
	if err != nil {
		if optional && unreachable(err) {
			return Skip, "not answered (" + err.Error() + "): the client moves on", ""
		}
		if optional && strings.HasPrefix(err.Error(), "TLS:") {
			return Skip, err.Error() + ": the client moves on (see Certificates)", ""
		}
		u, _ := url.Parse(p.url)
		return Fail, err.Error(), "make " + u.Scheme + "://" + u.Host + " reach mailbeacon"
	}
	via := ""
	if len(a.hops) > 0 {
		via = " (after " + strings.Join(a.hops, ", ") + ")"
	}
	if a.status == http.StatusNotFound && optional {
		return Skip, "404" + via + ": the client moves on", ""
	}
	if a.status == http.StatusUnauthorized {
		if strings.Contains(strings.ToLower(a.header.Get("WWW-Authenticate")), "basic") {
			return Warn, "401: asks for the user's password (autodiscover.require_auth); the answer was not checked",
				"set MAILBEACON_CHECK_PASSWORD to the password of the address to check the answer too"
		}
		return Fail, "401" + via + " without a Basic challenge", "mailbeacon challenges with Basic: is a proxy in the way?"
	}
	if a.status != http.StatusOK {
		return Fail, fmt.Sprintf("HTTP %d%s", a.status, via), "the URL must answer 200 with the document (check the proxy's routing to mailbeacon)"
	}
	detail, problems, fix := validate(a)
	if len(problems) > 0 {
		return Fail, strings.Join(problems, "; ") + via, fix
	}
	return OK, detail + via, ""
}

// xmlType checks the Content-Type (quirk 1: Thunderbird drops anything
// but text/xml or application/xml).
func xmlType(a *answer) string {
	mt, _, err := mime.ParseMediaType(a.ctype)
	if err != nil || (mt != "text/xml" && mt != "application/xml") {
		return fmt.Sprintf("Content-Type %q: clients ignore a document not served as text/xml", a.ctype)
	}
	return ""
}

// ---------------------------------------------------------------------
// config-v1.1.xml (protocols/CLIENTS.md §1.4–1.6)

type acDoc struct {
	XMLName  xml.Name
	Version  string `xml:"version,attr"`
	Provider struct {
		ID       string     `xml:"id,attr"`
		Domains  []string   `xml:"domain"`
		Incoming []acServer `xml:"incomingServer"`
		Outgoing []acServer `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

type acServer struct {
	Type     string   `xml:"type,attr"`
	URL      string   `xml:"url"` // URL-based servers (ews)
	Hostname string   `xml:"hostname"`
	Port     int      `xml:"port"`
	Socket   string   `xml:"socketType"`
	Auth     []string `xml:"authentication"`
	Username string   `xml:"username"`
}

var acSockets = map[string]policy.Socket{"SSL": policy.SocketTLS, "STARTTLS": policy.SocketSTARTTLS, "plain": policy.SocketPlain}

const fixAutoconfigDoc = "mailbeacon serves a valid document itself: is a proxy or another web server answering this URL?"

func (c *checker) validateAutoconfig(a *answer) (string, []string, string) {
	var problems []string
	if p := xmlType(a); p != "" {
		return "", []string{p}, "serve it as Content-Type: text/xml; charset=utf-8 (a proxy that rewrites types? nginx default_type?)"
	}
	if bytes.HasPrefix(a.body, []byte("\xef\xbb\xbf")) {
		problems = append(problems, "starts with a byte-order mark, which Thunderbird for Android cannot parse")
	}
	if prefixedRoot(a.body) {
		problems = append(problems, "the root element has a namespace prefix, which Thunderbird does not find")
	}
	var doc acDoc
	if err := xml.Unmarshal(a.body, &doc); err != nil {
		return "", append(problems, "not XML: "+err.Error()), fixAutoconfigDoc
	}
	if doc.XMLName.Local != "clientConfig" {
		return "", append(problems, "root element <"+doc.XMLName.Local+">, not <clientConfig>"), fixAutoconfigDoc
	}
	if doc.Provider.ID == "" || !slices.Contains(doc.Provider.Domains, c.d.Name) {
		problems = append(problems, "emailProvider lacks its id or <domain>"+c.d.Name+"</domain>")
	}
	if len(doc.Provider.Incoming) == 0 || len(doc.Provider.Outgoing) == 0 {
		problems = append(problems, "needs an incoming (IMAP or POP3) and an outgoing (SMTP) server")
	}
	var offered []string
	for _, s := range slices.Concat(doc.Provider.Incoming, doc.Provider.Outgoing) {
		if s.URL != "" {
			// Thunderbird takes host and TLS from the URL (CLIENTS.md §1.8).
			if len(s.Auth) == 0 || s.Username == "" {
				problems = append(problems, fmt.Sprintf("%s server %q is incomplete (url, authentication, username)", s.Type, s.URL))
				continue
			}
			if !slices.ContainsFunc(c.d.Services, func(d policy.Service) bool { return string(d.Kind) == strings.ToLower(s.Type) && d.URL == s.URL }) {
				problems = append(problems, fmt.Sprintf("offers %s at %s, which the configuration does not", s.Type, s.URL))
			}
			offered = append(offered, s.Type+" "+s.URL)
			continue
		}
		sock, ok := acSockets[s.Socket]
		if s.Hostname == "" || s.Port == 0 || !ok || len(s.Auth) == 0 || s.Username == "" {
			problems = append(problems, fmt.Sprintf("%s server %q is incomplete (hostname, port, socketType, authentication, username)", s.Type, s.Hostname))
			continue
		}
		if p := c.configured(s.Type, s.Hostname, s.Port, sock); p != "" {
			problems = append(problems, p)
		}
		offered = append(offered, fmt.Sprintf("%s %s:%d %s", s.Type, s.Hostname, s.Port, s.Socket))
	}
	return "200 " + mediaType(a.ctype) + ": " + strings.Join(offered, ", "), problems, fixAutoconfigDoc
}

// configured checks one offered server against the domain's services:
// its kind must be offered; host and port must be a configured service
// (a per-user host such as mailHost may differ: that is only noted).
func (c *checker) configured(typ, host string, port int, sock policy.Socket) string {
	kind := policy.Kind(strings.ToLower(typ))
	var same []policy.Service
	for _, s := range c.d.Services {
		if s.Kind == kind {
			same = append(same, s)
		}
	}
	if len(same) == 0 {
		return fmt.Sprintf("offers %s, which the configuration does not", typ)
	}
	for _, s := range same {
		if s.Port == port && s.Socket == sock {
			return ""
		}
	}
	return fmt.Sprintf("offers %s on port %d (%s), which the configuration does not", typ, port, sock)
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ct
	}
	return mt
}

// prefixedRoot reports whether the document's root element carries a
// namespace prefix (<a:clientConfig>), quirk 6.
func prefixedRoot(b []byte) bool {
	dec := xml.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.RawToken()
		if err != nil {
			return false
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name.Space != ""
		}
	}
}

// ---------------------------------------------------------------------
// Autodiscover POX answers (protocols/CLIENTS.md §2.2, §2.3)

const (
	nsResponse        = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	nsOutlookResponse = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)

type poxDoc struct {
	XMLName  xml.Name
	Response struct {
		XMLName xml.Name
		Error   *struct {
			Code    int    `xml:"ErrorCode"`
			Message string `xml:"Message"`
		} `xml:"Error"`
		Account struct {
			AccountType  string `xml:"AccountType"`
			Action       string `xml:"Action"`
			RedirectAddr string `xml:"RedirectAddr"`
			RedirectURL  string `xml:"RedirectUrl"`
			Protocol     []struct {
				Type       string `xml:"Type"`
				Server     string `xml:"Server"`
				Port       int    `xml:"Port"`
				SSL        string `xml:"SSL"`
				Encryption string `xml:"Encryption"`
			} `xml:"Protocol"`
		} `xml:"Account"`
	} `xml:"Response"`
}

const fixPOXDoc = "mailbeacon answers this itself: is a proxy or another server answering this URL?"

func (c *checker) validatePOX(a *answer) (string, []string, string) {
	if p := xmlType(a); p != "" {
		return "", []string{p}, "serve it as Content-Type: text/xml; charset=utf-8"
	}
	var doc poxDoc
	if err := xml.Unmarshal(a.body, &doc); err != nil {
		return "", []string{"not XML: " + err.Error()}, fixPOXDoc
	}
	if doc.XMLName.Local != "Autodiscover" || doc.XMLName.Space != nsResponse {
		return "", []string{fmt.Sprintf("root element {%s}%s, not Autodiscover in %s (quirk 14)", doc.XMLName.Space, doc.XMLName.Local, nsResponse)}, fixPOXDoc
	}
	r := doc.Response
	if e := r.Error; e != nil {
		fix := "see the server's log"
		if e.Code == 500 {
			fix = "check with an address the directory knows, or set policy.unknown: defaults"
		}
		return "", []string{fmt.Sprintf("error %d: %s", e.Code, e.Message)}, fix
	}
	if r.XMLName.Space != nsOutlookResponse {
		return "", []string{"Response is not in the Outlook 2006a response schema"}, fixPOXDoc
	}
	acc := r.Account
	switch {
	case strings.EqualFold(acc.Action, "redirectAddr"):
		return "redirects to the address " + acc.RedirectAddr, nil, ""
	case strings.EqualFold(acc.Action, "redirectUrl"):
		return "redirects to " + acc.RedirectURL, nil, ""
	}
	var problems, offered []string
	if !strings.EqualFold(acc.AccountType, "email") || !strings.EqualFold(acc.Action, "settings") {
		problems = append(problems, fmt.Sprintf("AccountType %q, Action %q: want email, settings", acc.AccountType, acc.Action))
	}
	if len(acc.Protocol) == 0 {
		problems = append(problems, "no Protocol in the answer")
	}
	for _, p := range acc.Protocol {
		switch p.Type {
		case "IMAP", "POP3", "SMTP":
			sock := policy.SocketTLS
			switch strings.ToUpper(p.Encryption) {
			case "TLS":
				sock = policy.SocketSTARTTLS
			case "NONE":
				sock = policy.SocketPlain
			case "":
				if strings.EqualFold(p.SSL, "off") {
					sock = policy.SocketPlain
				}
			}
			if pr := c.configured(p.Type, p.Server, p.Port, sock); pr != "" {
				problems = append(problems, pr)
			}
			offered = append(offered, p.Type+" "+p.Server+":"+strconv.Itoa(p.Port)+" "+string(sock))
		default:
			offered = append(offered, p.Type)
		}
	}
	return "200 " + mediaType(a.ctype) + ": " + strings.Join(offered, ", "), problems, fixPOXDoc
}
