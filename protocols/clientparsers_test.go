package protocols

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

// The autoconfig parsers of CLIENTS.md, each reduced to its documented
// rules (§1.5–1.8): what it reads, what it skips, and what makes it reject
// a server block or the whole document. Written from reading the clients'
// sources; tests run our answers through them.

// xmlNode is a generic element: enough to follow each parser's walk.
type xmlNode struct {
	Name     string
	Attrs    map[string]string
	Text     string
	Children []*xmlNode
}

func parseXMLTree(t testing.TB, body []byte) *xmlNode {
	t.Helper()
	root := xmlTreeOrNil(body)
	if root == nil {
		t.Fatalf("not XML:\n%s", body)
	}
	return root
}

func (n *xmlNode) all(name string) []*xmlNode {
	var out []*xmlNode
	for _, c := range n.Children {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

func (n *xmlNode) first(name string) (*xmlNode, bool) {
	if all := n.all(name); len(all) > 0 {
		return all[0], true
	}
	return nil, false
}

// tbServer is what Thunderbird desktop keeps of a server block.
type tbServer struct {
	Type, Hostname, Username, Socket, Auth, ExchangeURL string
	Port                                                int
}

var hostnameRE = regexp.MustCompile(`^[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*$`)

// thunderbirdReadXML follows readFromXML.sys.mjs (comm-central, Bug 1995836,
// March 2026, read at cf9726f5, August 2026) for the incoming and outgoing
// servers: an incoming type must be pop3, imap, nntp, exchange, ews, owa or
// graph (graph behind the pref mail.graph.enabled, true at that head:
// mail/app/StaticPrefList.yaml); a <url> gives hostname and socket (https:
// SSL) and, for ews and graph, the account's Exchange URL; the first
// socketType and authentication it knows win; OAuth2 counts only where
// OAuth2Providers has details for the host and the server's type (see
// thunderbirdOAuth; knownOAuth adds exact hosts, as an add-on would); a
// server that fails is skipped; the first valid one is the default and the
// rest alternatives; no valid incoming or no valid smtp outgoing server
// rejects the document.
func thunderbirdReadXML(root *xmlNode, knownOAuth map[string]bool) (in, out []tbServer, err error) {
	prov, ok := root.first("emailProvider")
	if root.Name != "clientConfig" || !ok {
		return nil, nil, errors.New("no emailProvider")
	}
	if !hostnameRE.MatchString(prov.Attrs["id"]) {
		return nil, nil, errors.New("bad emailProvider id")
	}
	sockets := map[string]string{"plain": "plain", "SSL": "SSL", "STARTTLS": "STARTTLS"}
	auths := []string{"password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI", "NTLM", "OAuth2"}
	read := func(x *xmlNode, types []string) (tbServer, error) {
		s := tbServer{Type: x.Attrs["type"]}
		if !slices.Contains(types, s.Type) {
			return s, fmt.Errorf("type %q not supported", s.Type)
		}
		if h, ok := x.first("hostname"); ok {
			s.Hostname = h.Text
		}
		if p, ok := x.first("port"); ok {
			n, err := strconv.Atoi(p.Text)
			if err != nil || n < 1 || n > 65535 {
				return s, fmt.Errorf("bad port %q", p.Text)
			}
			s.Port = n
		}
		if u, ok := x.first("url"); ok {
			if pu, err := url.Parse(u.Text); err == nil {
				s.Hostname = pu.Host
				switch pu.Scheme {
				case "https":
					s.Socket = "SSL"
				case "http":
					s.Socket = "plain"
				}
			}
			if s.Type == "ews" || s.Type == "graph" {
				s.ExchangeURL = u.Text
			}
		}
		if u, ok := x.first("username"); ok {
			s.Username = u.Text
		}
		for _, st := range x.all("socketType") {
			if v, ok := sockets[st.Text]; ok {
				s.Socket = v
				break
			}
		}
		if s.Socket == "" {
			return s, errors.New("need proper <socketType>")
		}
		if s.Hostname == "" {
			return s, errors.New("no hostname")
		}
		for _, a := range x.all("authentication") {
			// JXON turns an element with attributes into a String object
			// that compares equal to its text: the attribute is invisible.
			if slices.Contains(auths, a.Text) && (a.Text != "OAuth2" || knownOAuth[s.Hostname] || thunderbirdHasOAuth(s.Hostname, s.Type)) {
				s.Auth = a.Text
				break
			}
		}
		if s.Auth == "" {
			return s, errors.New("need proper <authentication>")
		}
		return s, nil
	}
	for _, x := range prov.all("incomingServer") {
		if s, err := read(x, []string{"pop3", "imap", "nntp", "exchange", "ews", "owa", "graph"}); err == nil {
			in = append(in, s)
		}
	}
	for _, x := range prov.all("outgoingServer") {
		s, err := read(x, []string{"smtp"})
		if err == nil && s.Port != 0 {
			out = append(out, s)
		}
	}
	if len(in) == 0 {
		return nil, nil, errors.New("need proper <incomingServer>")
	}
	if len(out) == 0 {
		return nil, nil, errors.New("need proper <outgoingServer>")
	}
	return in, out, nil
}

// thunderbirdOAuth is a part of OAuth2Providers.sys.mjs's built-in table
// (comm-central mailnews/base/src, at cf9726f5): a host name or a parent
// domain of it, and the server types it has OAuth scopes for. Microsoft's
// issuer (login.microsoftonline.com) serves imap, pop3 and smtp, and by
// special cases ews/exchange and, with mail.graph.enabled, graph; Google's
// (accounts.google.com) imap, pop3, smtp, carddav and caldav. No other
// issuer is known without an add-on or a policy.
var thunderbirdOAuth = map[string][]string{
	"office365.com":       {"imap", "pop3", "smtp", "ews", "exchange", "graph"},
	"graph.microsoft.com": {"imap", "pop3", "smtp", "ews", "exchange", "graph"},
	"outlook.com":         {"imap", "pop3", "smtp", "ews", "exchange", "graph"},
	"hotmail.com":         {"imap", "pop3", "smtp", "ews", "exchange", "graph"},
	"gmail.com":           {"imap", "pop3", "smtp", "carddav", "caldav"},
	"googlemail.com":      {"imap", "pop3", "smtp", "carddav", "caldav"},
}

// thunderbirdHasOAuth walks from the host name to its parent domains, as
// _getBuiltInDetails does, and reports whether the first entry found has
// scopes for the type.
func thunderbirdHasOAuth(host, typ string) bool {
	host = strings.ToLower(host)
	for strings.Contains(host, ".") {
		if types, ok := thunderbirdOAuth[host]; ok {
			return slices.Contains(types, typ)
		}
		_, host, _ = strings.Cut(host, ".")
	}
	return false
}

// exchangelibAnswer is what exchangelib keeps of a POX answer.
type exchangelibAnswer struct {
	Action, RedirectAddr, RedirectURL string
	SMTPAddress, EwsURL               string
}

// exchangelibReadPOX follows exchangelib 4.9.0, the last release that
// spoke POX Autodiscover (v5.0.0 replaced it with SOAP, commit 48a0e790):
// exchangelib/autodiscover/properties.py. The root must be Autodiscover in
// the base response namespace; without a Response in the Outlook namespace
// the answer is an error (the "cannot be found" message: no such mailbox).
// Account/Action must be redirectUrl, redirectAddr or settings; the
// redirect address is RedirectAddr when Action is redirectAddr; the
// redirect URL is read from an element spelled RedirectURL — not
// MS-OXDSCLI's RedirectUrl — when Action is redirectUrl; the EWS URL is
// EwsUrl of EXPR, else of EXCH.
func exchangelibReadPOX(body []byte) (exchangelibAnswer, error) {
	type account struct {
		Action       string `xml:"Action"`
		RedirectAddr string `xml:"RedirectAddr"`
		RedirectURL  string `xml:"RedirectURL"`
		Protocol     []struct {
			Type   string `xml:"Type"`
			EwsURL string `xml:"EwsUrl"`
		} `xml:"Protocol"`
	}
	var doc struct {
		XMLName  xml.Name
		Response *struct {
			User struct {
				AutoDiscoverSMTPAddress string `xml:"AutoDiscoverSMTPAddress"`
			} `xml:"User"`
			Account account `xml:"Account"`
		} `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
		Error *struct {
			Error struct {
				ErrorCode int    `xml:"ErrorCode"`
				Message   string `xml:"Message"`
			} `xml:"Error"`
		} `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Response"`
	}
	if err := xml.Unmarshal(body, &doc); err != nil {
		return exchangelibAnswer{}, fmt.Errorf("ParseError: %w", err)
	}
	if doc.XMLName != (xml.Name{Space: nsAutodiscoverResponse, Local: "Autodiscover"}) {
		return exchangelibAnswer{}, fmt.Errorf("ParseError: unknown root element %v", doc.XMLName)
	}
	if doc.Response == nil {
		if doc.Error != nil && doc.Error.Error.Message == "The e-mail address cannot be found." {
			return exchangelibAnswer{}, errors.New("ErrorNonExistentMailbox")
		}
		return exchangelibAnswer{}, errors.New("AutoDiscoverFailed: unknown error")
	}
	acct := doc.Response.Account
	if !slices.Contains([]string{"redirectUrl", "redirectAddr", "settings"}, acct.Action) {
		return exchangelibAnswer{}, fmt.Errorf("invalid Action %q", acct.Action)
	}
	ans := exchangelibAnswer{Action: acct.Action}
	switch acct.Action {
	case "redirectAddr":
		ans.RedirectAddr = acct.RedirectAddr
	case "redirectUrl":
		ans.RedirectURL = acct.RedirectURL
	default:
		ans.SMTPAddress = doc.Response.User.AutoDiscoverSMTPAddress
		urls := map[string]string{}
		for _, p := range acct.Protocol {
			if p.EwsURL != "" {
				urls[p.Type] = p.EwsURL
			}
		}
		ans.EwsURL = urls["EXPR"]
		if ans.EwsURL == "" {
			ans.EwsURL = urls["EXCH"]
		}
	}
	return ans, nil
}

// exchangelibDiscover follows exchangelib 4.9.0's discovery
// (autodiscover/discovery/base.py, discover): it asks for email; on a
// redirect address it starts over with that address, failing on one it
// has seen before (AutoDiscoverCircularRedirect); otherwise the answer
// must name an EWS URL, and the primary address is AutoDiscoverSMTPAddress
// or else the address asked last. ask stands for the Autodiscover service
// of the address's domain.
func exchangelibDiscover(email string, ask func(email string) []byte) (primary, ewsURL string, err error) {
	var seen []string
	for {
		seen = append(seen, strings.ToLower(email))
		ans, err := exchangelibReadPOX(ask(email))
		if err != nil {
			return "", "", err
		}
		if ans.RedirectAddr != "" {
			if slices.Contains(seen, strings.ToLower(ans.RedirectAddr)) {
				return "", "", errors.New("AutoDiscoverCircularRedirect")
			}
			email = ans.RedirectAddr
			continue
		}
		if ans.EwsURL == "" {
			return "", "", errors.New("no EWS URL found in any of the available protocols")
		}
		if ans.SMTPAddress == "" {
			ans.SMTPAddress = email
		}
		return ans.SMTPAddress, ans.EwsURL, nil
	}
}

// thunderbirdAutodiscover follows ExchangeAutoDiscover.sys.mjs
// (readAutoDiscoverResponse, comm-central at cf9726f5) on an Outlook
// answer: a RedirectAddr in the Account, whatever the Action, makes it ask
// the Autodiscover service of that address's domain again, at most twice
// ("Too many redirects"); RedirectUrl is not read; otherwise the Protocol
// types it knows (WEB, EXHTTP, EXCH, EXPR, POP3, IMAP, SMTP) of the first
// Account make the configuration, and none is a failure. It returns the
// address asked last and the types found.
func thunderbirdAutodiscover(email string, ask func(email string) []byte) (last string, types []string, err error) {
	known := []string{"WEB", "EXHTTP", "EXCH", "EXPR", "POP3", "IMAP", "SMTP"}
	for redirects := 0; ; {
		root := xmlTreeOrNil(ask(email))
		if root == nil {
			return email, nil, errors.New("not XML")
		}
		resp, _ := root.first("Response")
		if resp == nil {
			return email, nil, errors.New("no Response")
		}
		acct, _ := resp.first("Account")
		if acct == nil {
			return email, nil, errors.New("no Account")
		}
		if r, ok := acct.first("RedirectAddr"); ok && r.Text != "" {
			if redirects++; redirects > 2 {
				return email, nil, errors.New("too many redirects")
			}
			email = r.Text
			continue
		}
		for _, p := range acct.all("Protocol") {
			if t, ok := p.first("Type"); ok && slices.Contains(known, t.Text) {
				types = append(types, t.Text)
			}
		}
		if len(types) == 0 {
			return email, nil, errors.New("no protocols")
		}
		return email, types, nil
	}
}

// xmlTreeOrNil reads body into a tree of xmlNodes, nil when it is not
// well-formed XML.
func xmlTreeOrNil(body []byte) *xmlNode {
	dec := xml.NewDecoder(bytes.NewReader(body))
	var stack []*xmlNode
	var root *xmlNode
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return root
		}
		if err != nil {
			return nil
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			n := &xmlNode{Name: tok.Name.Local, Attrs: map[string]string{}}
			for _, a := range tok.Attr {
				n.Attrs[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].Text += string(tok)
			}
		}
	}
}

// androidServer is what Thunderbird for Android keeps of a server block.
type androidServer struct {
	Hostname, Username, Socket string
	Port                       int
	Auths                      []string
}

// thunderbirdAndroidRead follows RealAutoconfigParser.kt
// (thunderbird-android, feature/autodiscovery/autoconfig): it reads
// clientConfig/emailProvider, skips any element it does not know at any
// level, reads incomingServer only of type imap and outgoingServer only
// of type smtp, and rejects the whole document when such a block lacks
// hostname, port, username, a known authentication or socketType, when a
// socketType is neither SSL nor STARTTLS, when a known text element holds
// elements, or when no valid domain, imap or smtp server is left.
func thunderbirdAndroidRead(root *xmlNode) (in, out []androidServer, err error) {
	if root.Name != "clientConfig" {
		return nil, nil, errors.New("missing clientConfig")
	}
	prov, ok := root.first("emailProvider")
	if !ok {
		return nil, nil, errors.New("missing emailProvider")
	}
	if !hostnameRE.MatchString(prov.Attrs["id"]) {
		return nil, nil, errors.New("invalid emailProvider.id")
	}
	domainFound := false
	for _, d := range prov.all("domain") {
		domainFound = domainFound || hostnameRE.MatchString(d.Text)
	}
	if !domainFound {
		return nil, nil, errors.New("valid domain required")
	}
	read := func(x *xmlNode) (androidServer, error) {
		var s androidServer
		var haveSocket, havePort, haveUser, haveHost bool
		for _, c := range x.Children {
			known := slices.Contains([]string{"hostname", "port", "username", "authentication", "socketType"}, c.Name)
			if known && len(c.Children) > 0 {
				return s, fmt.Errorf("expected text in %s", c.Name)
			}
			switch c.Name {
			case "hostname":
				if !hostnameRE.MatchString(c.Text) {
					return s, fmt.Errorf("invalid hostname %q", c.Text)
				}
				s.Hostname, haveHost = c.Text, true
			case "port":
				n, err := strconv.Atoi(c.Text)
				if err != nil || n < 0 || n > 65535 {
					return s, fmt.Errorf("invalid port %q", c.Text)
				}
				s.Port, havePort = n, true
			case "username":
				s.Username, haveUser = c.Text, true
			case "authentication":
				if slices.Contains([]string{"OAuth2", "password-cleartext", "password-encrypted"}, c.Text) {
					s.Auths = append(s.Auths, c.Text)
				}
			case "socketType":
				if c.Text != "SSL" && c.Text != "STARTTLS" {
					return s, fmt.Errorf("unknown socketType %q", c.Text)
				}
				s.Socket, haveSocket = c.Text, true
			}
		}
		switch {
		case !haveHost:
			return s, errors.New("missing hostname")
		case !havePort:
			return s, errors.New("missing port")
		case !haveUser:
			return s, errors.New("missing username")
		case len(s.Auths) == 0:
			return s, errors.New("no usable authentication")
		case !haveSocket:
			return s, errors.New("missing socketType")
		}
		return s, nil
	}
	for _, c := range prov.Children {
		var dst *[]androidServer
		switch {
		case c.Name == "incomingServer" && c.Attrs["type"] == "imap":
			dst = &in
		case c.Name == "outgoingServer" && c.Attrs["type"] == "smtp":
			dst = &out
		default:
			continue // skipped, whatever it holds
		}
		s, err := read(c)
		if err != nil {
			return nil, nil, err // the whole document
		}
		*dst = append(*dst, s)
	}
	if len(in) == 0 {
		return nil, nil, errors.New("no supported incomingServer")
	}
	if len(out) == 0 {
		return nil, nil, errors.New("no supported outgoingServer")
	}
	return in, out, nil
}

// kdeRead follows KMail's account wizard (kmail-account-wizard,
// ispdbservice.cpp and serverconfiguration.cpp): the first emailProvider
// anywhere, incoming imap and pop3 and outgoing smtp only, other elements
// and types ignored, a server without a port dropped.
func kdeRead(root *xmlNode) (servers []string) {
	var find func(n *xmlNode) *xmlNode
	find = func(n *xmlNode) *xmlNode {
		if n.Name == "emailProvider" {
			return n
		}
		for _, c := range n.Children {
			if p := find(c); p != nil {
				return p
			}
		}
		return nil
	}
	prov := find(root)
	if prov == nil {
		return nil
	}
	for _, c := range prov.Children {
		typ := c.Attrs["type"]
		if !(c.Name == "incomingServer" && (typ == "imap" || typ == "pop3") || c.Name == "outgoingServer" && typ == "smtp") {
			continue
		}
		p, ok := c.first("port")
		if !ok {
			continue
		}
		h, _ := c.first("hostname")
		host := ""
		if h != nil {
			host = h.Text
		}
		servers = append(servers, typ+":"+host+":"+p.Text)
	}
	return servers
}

// draftDomains is the demo domain offering EWS after its other services,
// with an OAuth issuer and a documentation page.
func draftDomains() []policy.DomainConfig {
	ds := demoDomains()
	ds[0].Services = append(ds[0].Services, policy.ServiceConfig{Type: "ews", URL: "https://mail.example.com/EWS/Exchange.asmx"})
	ds[0].DocumentationURL = "https://help.example.com/mail"
	ds[0].OAuth = &policy.OAuthConfig{
		Issuer: "https://login.example.com/", ClientID: "mail-apps",
		Scopes: []string{"IMAP", "POP", "SMTP", "EWS", "offline_access"},
	}
	return ds
}

// newDraftResolver is the demo's answers over draftDomains: alice gets
// every service, EWS included; bob, whose services the directory limits to
// IMAP and SMTP, gets no EWS.
func newDraftResolver(t testing.TB) *fakeResolver {
	t.Helper()
	res, _ := newDemoResolver(t, draftDomains())
	return res
}
