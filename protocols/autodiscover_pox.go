package protocols

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/html/charset"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Microsoft Autodiscover, POX flavour (CLIENTS.md §2). Namespaces
// are the http:// ones of MS-OXDSCLI 2.2.1 and the XSDs; the https://
// spelling on the learn.microsoft.com POX pages is a documentation artifact
// that Outlook does not accept (quirk 14).
const (
	nsAutodiscoverResponse = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
	nsOutlookRequest       = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
	nsOutlookResponse      = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
	nsMobilesyncRequest    = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
	nsMobilesyncResponse   = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)

// poxSchema is the response schema a request asked for.
type poxSchema int

const (
	schemaUnsupported poxSchema = iota
	schemaOutlook               // Outlook, Thunderbird, exchangelib, Evolution
	schemaMobilesync            // ActiveSync devices and the new Outlook for Windows (quirk 18)
)

// ---------------------------------------------------------------------
// Request

// poxRequest is what a POX request body says. Values are trimmed.
type poxRequest struct {
	Namespace                string // of the root element
	EMailAddress             string
	LegacyDN                 string
	AcceptableResponseSchema string
}

var (
	errPOXEmpty     = errors.New("empty request body")
	errPOXDirective = errors.New("DOCTYPE and other <! declarations are not accepted")
)

// maxPOXDepth bounds element nesting; a real request is three deep.
const maxPOXDepth = 16

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// parsePOXRequest reads an Autodiscover request:
//
//	<Autodiscover xmlns="…/requestschema/2006"><Request>
//	  <EMailAddress>…</EMailAddress> <LegacyDN>…</LegacyDN>
//	  <AcceptableResponseSchema>…</AcceptableResponseSchema>
//	</Request></Autodiscover>
//
// It walks the token stream itself rather than unmarshalling so that it
// can refuse any <!DOCTYPE …> (or other directive) wherever it appears —
// encoding/xml expands no external entities, but a DOCTYPE has no place
// in this protocol — and refuse repeated fields instead of silently
// picking one. A UTF-8 byte-order mark and any spelling of the encoding
// in the XML declaration (utf-8, UTF8, iso-8859-1, ...) are accepted.
// Element namespaces are not checked: clients disagree on them, and the
// response schema is what says what they want.
func parsePOXRequest(body []byte) (poxRequest, error) {
	body = bytes.TrimPrefix(body, utf8BOM)
	if len(bytes.TrimSpace(body)) == 0 {
		return poxRequest{}, errPOXEmpty
	}
	dec := xml.NewDecoder(bytes.NewReader(body))
	dec.CharsetReader = poxCharsetReader
	var (
		req      poxRequest
		path     []string
		field    *string // the Request child being read, if any
		text     strings.Builder
		seen     = map[string]bool{}
		rootDone bool
	)
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return poxRequest{}, fmt.Errorf("not well-formed XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			return poxRequest{}, errPOXDirective
		case xml.StartElement:
			if rootDone {
				return poxRequest{}, errors.New("a second root element")
			}
			if len(path) >= maxPOXDepth {
				return poxRequest{}, errors.New("elements nested too deeply")
			}
			path = append(path, t.Name.Local)
			switch len(path) {
			case 1:
				if t.Name.Local != "Autodiscover" {
					return poxRequest{}, errors.New("the root element is not Autodiscover")
				}
				req.Namespace = t.Name.Space
			case 3:
				if path[1] != "Request" {
					break
				}
				var f *string
				switch t.Name.Local {
				case "EMailAddress":
					f = &req.EMailAddress
				case "LegacyDN":
					f = &req.LegacyDN
				case "AcceptableResponseSchema":
					f = &req.AcceptableResponseSchema
				default:
					continue
				}
				if seen[t.Name.Local] {
					return poxRequest{}, fmt.Errorf("%s given twice", t.Name.Local)
				}
				seen[t.Name.Local] = true
				field = f
				text.Reset()
			}
		case xml.EndElement:
			if len(path) == 3 && field != nil {
				*field = strings.TrimSpace(text.String())
				field = nil
			}
			path = path[:len(path)-1]
			rootDone = len(path) == 0
		case xml.CharData:
			switch {
			case len(path) == 3 && field != nil:
				text.Write(t)
			case len(path) == 0 && len(bytes.TrimSpace(t)) > 0:
				return poxRequest{}, errors.New("text outside the root element")
			}
		}
	}
	if !rootDone {
		return poxRequest{}, errors.New("no Autodiscover element")
	}
	return req, nil
}

// poxCharsetReader lets the XML declaration name its encoding in any
// spelling. UTF-8 (and ASCII, a subset) pass through; other labels are
// decoded with the WHATWG encodings table.
func poxCharsetReader(label string, in io.Reader) (io.Reader, error) {
	norm := strings.NewReplacer("-", "", "_", "", " ", "").Replace(strings.ToLower(label))
	switch norm {
	case "utf8", "usascii", "ascii":
		return in, nil
	}
	r, err := charset.NewReaderLabel(label, in)
	if err != nil {
		return nil, fmt.Errorf("unknown encoding %q", label)
	}
	return r, nil
}

// responseSchema says which answer the request wants. A missing
// AcceptableResponseSchema (which MS-OXDSCLI requires) is taken from the
// request's namespace; the https:// spelling some clients copy from the
// POX documentation pages is accepted.
func (q poxRequest) responseSchema() poxSchema {
	s := q.AcceptableResponseSchema
	if s == "" {
		if strings.EqualFold(schemaKey(q.Namespace), schemaKey(nsMobilesyncRequest)) {
			return schemaMobilesync
		}
		return schemaOutlook
	}
	switch schemaKey(s) {
	case schemaKey(nsOutlookResponse):
		return schemaOutlook
	case schemaKey(nsMobilesyncResponse):
		return schemaMobilesync
	}
	return schemaUnsupported
}

func schemaKey(uri string) string {
	uri = strings.ToLower(strings.TrimSpace(uri))
	uri = strings.TrimPrefix(uri, "https://")
	return strings.TrimPrefix(uri, "http://")
}

// ---------------------------------------------------------------------
// Outlook response (…/outlook/responseschema/2006a), §2.2

type outlookDoc struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response outlookResponse
}

type outlookResponse struct {
	XMLName xml.Name       `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
	User    *outlookUser   `xml:"User,omitempty"` // nil in a redirect
	Account outlookAccount `xml:"Account"`
}

type outlookUser struct {
	DisplayName string `xml:"DisplayName"`
	// The primary address, also when an alias was asked: exchangelib and
	// Outlook carry on with this address.
	AutoDiscoverSMTPAddress string `xml:"AutoDiscoverSMTPAddress"`
}

// outlookAccount holds every Protocol: Thunderbird reads only the first
// Account, and Outlook was reported to fail with one Account per protocol.
//
// A redirect (MS-OXDSCLI 2.2.4.1.1.2.2 Action redirectAddr or redirectUrl)
// holds only the Action and RedirectAddr (2.2.4.1.1.2.8) or RedirectUrl
// (2.2.4.1.1.2.9), as the example of section 4.2 does.
type outlookAccount struct {
	AccountType  string        `xml:"AccountType,omitempty"`
	Action       string        `xml:"Action"`
	RedirectAddr string        `xml:"RedirectAddr,omitempty"`
	RedirectURL  string        `xml:"RedirectUrl,omitempty"`
	Protocol     []poxProtocol `xml:"Protocol"`
}

// poxProtocol is one Protocol element. SPA, SSL and AuthRequired default to
// "on" when absent and Outlook fails on "yes" or an empty value, so they
// are always sent, as exactly "on" or "off" (quirk 15).
type poxProtocol struct {
	Type           string `xml:"Type"`
	Server         string `xml:"Server"`
	Port           int    `xml:"Port,omitempty"`
	LoginName      string `xml:"LoginName,omitempty"`
	DomainRequired string `xml:"DomainRequired"`
	SPA            string `xml:"SPA"`
	SSL            string `xml:"SSL"`
	Encryption     string `xml:"Encryption,omitempty"`
	AuthRequired   string `xml:"AuthRequired"`
	UsePOPAuth     string `xml:"UsePOPAuth,omitempty"`
	SMTPLast       string `xml:"SMTPLast,omitempty"`
	AuthPackage    string `xml:"AuthPackage,omitempty"`
	ASUrl          string `xml:"ASUrl,omitempty"`
	EwsUrl         string `xml:"EwsUrl,omitempty"`
	OOFUrl         string `xml:"OOFUrl,omitempty"`
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// poxEncryption spells a socket so that Outlook and Thunderbird both read
// it right. Outlook lets <Encryption> override <SSL> and reads TLS as
// STARTTLS and SSL as implicit TLS (quirk 16); Outlook 2007 may not know
// <Encryption> at all and goes by <SSL> (quirk 25); Thunderbird reads
// SSL=off or Encryption=None as plain and otherwise guesses STARTTLS or
// implicit TLS from the port (§1.1.5).
func poxEncryption(s policy.Socket) (ssl, encryption string) {
	switch s {
	case policy.SocketTLS:
		return "on", "SSL"
	case policy.SocketSTARTTLS:
		return "on", "TLS"
	}
	return "off", "None"
}

// poxSPA is "on" only when the service wants an encrypted password
// mechanism and offers no plain one: Outlook's SPA means NTLM/Kerberos
// style logins.
func poxSPA(auths []policy.Auth) string {
	if slices.Contains(auths, policy.AuthPasswordCleartext) {
		return "off"
	}
	for _, a := range auths {
		if a == policy.AuthPasswordEncrypted || a == policy.AuthNTLM || a == policy.AuthGSSAPI {
			return "on"
		}
	}
	return "off"
}

var poxTypes = map[policy.Kind]string{policy.IMAP: "IMAP", policy.POP3: "POP3", policy.SMTP: "SMTP"}

// displayName is the account's display name, or its primary address so
// that known and unknown addresses get answers of the same shape.
func displayName(a *policy.Account) string {
	if a.DisplayName != "" {
		return a.DisplayName
	}
	return a.Primary
}

// outlookProtocols lists the Protocol elements for an account: the
// Exchange-style EXCH and EXPR first when the user may use EWS (as
// Exchange orders them; GNOME Online Accounts reads only the first
// Protocol), then IMAP, POP3 and SMTP in the domain's order of preference.
func outlookProtocols(a *policy.Account) []poxProtocol {
	var out []poxProtocol
	if ews, ok := a.First(policy.EWS); ok {
		// ASUrl is the Availability service (EWS), not ActiveSync: Evolution
		// reads ASUrl, exchangelib EwsUrl, both preferring EXPR over EXCH.
		var host string
		ssl := "on"
		if u, err := url.Parse(ews.URL); err == nil {
			host = u.Hostname()
			ssl = onOff(u.Scheme == "https")
		}
		oof := a.Domain.OOFURL
		if oof == "" || ews.URL != a.Domain.EWSURL {
			oof = ews.URL // oof_url goes with the domain's first EWS URL
		}
		for _, typ := range []string{"EXCH", "EXPR"} {
			out = append(out, poxProtocol{
				Type: typ, Server: host, DomainRequired: "off", SPA: "off", SSL: ssl,
				AuthRequired: "on", AuthPackage: "Basic",
				ASUrl: ews.URL, EwsUrl: ews.URL, OOFUrl: oof,
			})
		}
	}
	incomingLogins := map[string]bool{}
	for _, s := range a.Services {
		if s.Kind == policy.IMAP || s.Kind == policy.POP3 {
			incomingLogins[s.Login] = true
		}
	}
	for _, s := range a.Services {
		typ, ok := poxTypes[s.Kind]
		if !ok {
			continue // ActiveSync, CalDAV, CardDAV: no POX Outlook form
		}
		ssl, enc := poxEncryption(s.Socket)
		p := poxProtocol{
			Type: typ, Server: s.Host, Port: s.Port, LoginName: s.Login,
			DomainRequired: "off", SPA: poxSPA(s.Auth), SSL: ssl, Encryption: enc,
			AuthRequired: "on",
		}
		if s.Kind == policy.SMTP {
			// UsePOPAuth on: log in to SMTP with the incoming server's
			// credentials — the same login here, so Outlook needs no second
			// password (CLIENTS.md §2.2 example). SMTPLast off: no
			// "SMTP after POP" ordering.
			p.UsePOPAuth = onOff(incomingLogins[s.Login])
			p.SMTPLast = "off"
		}
		out = append(out, p)
	}
	return out
}

// renderOutlook builds the Outlook response. It is a pure function of the
// account; golden files pin its output. ok is false when the account has
// nothing this schema can express (no IMAP, POP3, SMTP or EWS).
func renderOutlook(a *policy.Account) (body []byte, ok bool, err error) {
	doc, ok := outlookDocument(a)
	if !ok {
		return nil, false, nil
	}
	body, err = encodeXMLDoc(doc)
	return body, err == nil, err
}

// outlookDocument is the Outlook response of an account, to encode; ok is
// false when the account has nothing this schema can express.
func outlookDocument(a *policy.Account) (doc outlookDoc, ok bool) {
	if acct, ok := poxRedirect(a); ok {
		return outlookDoc{Response: outlookResponse{Account: acct}}, true
	}
	protos := outlookProtocols(a)
	if len(protos) == 0 {
		return outlookDoc{}, false
	}
	return outlookDoc{Response: outlookResponse{
		User: &outlookUser{DisplayName: displayName(a), AutoDiscoverSMTPAddress: a.Primary},
		Account: outlookAccount{
			AccountType: "email",
			Action:      "settings",
			Protocol:    protos,
		},
	}}, true
}

// poxRedirect is the Account of a redirect answer, for a user whose
// destination sends Autodiscover elsewhere (CLIENTS.md §2.6): Outlook then
// asks again for the RedirectAddr, or asks the RedirectUrl, instead of
// configuring anything (MS-OXDSCLI 3.1.5.3). Only a known user has a
// destination, so an unknown address is never redirected and learns
// nothing of where mailboxes live.
func poxRedirect(a *policy.Account) (outlookAccount, bool) {
	d := a.Destination
	switch {
	case d == nil || !a.Known:
		return outlookAccount{}, false
	case d.RedirectAddr != "":
		return outlookAccount{Action: "redirectAddr", RedirectAddr: d.RedirectAddr}, true
	case d.RedirectURL != "":
		return outlookAccount{Action: "redirectUrl", RedirectURL: d.RedirectURL}, true
	}
	return outlookAccount{}, false
}

// ---------------------------------------------------------------------
// Mobilesync response (…/mobilesync/responseschema/2006), §2.4, MS-ASCMD

type mobilesyncDoc struct {
	XMLName  xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response mobilesyncResponse
}

type mobilesyncResponse struct {
	XMLName xml.Name         `xml:"http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006 Response"`
	Culture string           `xml:"Culture"`
	User    *mobilesyncUser  `xml:"User,omitempty"`
	Action  mobilesyncAction `xml:"Action"`
}

type mobilesyncUser struct {
	DisplayName  string `xml:"DisplayName"`
	EMailAddress string `xml:"EMailAddress"` // minOccurs=1 in the XSD
}

// mobilesyncAction holds one of Redirect (MS-ASCMD 2.2.3.147: an address
// whose domain the device asks next), Settings or Error.
type mobilesyncAction struct {
	Redirect string              `xml:"Redirect,omitempty"`
	Settings *mobilesyncSettings `xml:"Settings,omitempty"`
	Error    *mobilesyncError    `xml:"Error,omitempty"`
}

type mobilesyncSettings struct {
	Server []mobilesyncServer `xml:"Server"`
}

type mobilesyncServer struct {
	Type string `xml:"Type"`
	URL  string `xml:"Url"`
	Name string `xml:"Name"` // the URL again for MobileSync (MS-ASCMD 2.2.3.120.1)
}

// mobilesyncError is MS-ASCMD's Action/Error; Status 2 is "protocol
// error", the only failure status the Autodiscover command defines.
type mobilesyncError struct {
	Status  int    `xml:"Status"`
	Message string `xml:"Message"`
}

const (
	msgMobilesyncNotAvailable = "ActiveSync is not available for this mailbox"
	msgMobilesyncNotFound     = "The e-mail address cannot be found."
	msgMobilesyncDirectory    = "The directory service could not be reached"
)

const mobilesyncCulture = "en:us"

// renderMobilesync builds the mobilesync response: the ActiveSync URL when
// the account holds ActiveSync (the domain offers it and the user is
// entitled), else the protocol's own Action/Error.
//
// A user whose destination redirects Autodiscover to another address gets
// Action/Redirect with that address and nothing else, as in the POX answer;
// the device asks the Autodiscover service of its domain next (MS-ASCMD
// 2.2.3.147). The mobilesync schema has no URL redirect: a destination
// with a redirect URL answers with its own ActiveSync service, if any.
func renderMobilesync(a *policy.Account) ([]byte, error) {
	return encodeXMLDoc(mobilesyncDocument(a))
}

// mobilesyncDocument is the mobilesync response of an account, to encode.
func mobilesyncDocument(a *policy.Account) mobilesyncDoc {
	if acct, ok := poxRedirect(a); ok && acct.RedirectAddr != "" {
		return mobilesyncDoc{Response: mobilesyncResponse{
			Culture: mobilesyncCulture,
			Action:  mobilesyncAction{Redirect: acct.RedirectAddr},
		}}
	}
	resp := mobilesyncResponse{
		Culture: mobilesyncCulture,
		User:    &mobilesyncUser{DisplayName: displayName(a), EMailAddress: a.Primary},
	}
	if s, ok := a.First(policy.ActiveSync); ok {
		resp.Action.Settings = &mobilesyncSettings{Server: []mobilesyncServer{{Type: "MobileSync", URL: s.URL, Name: s.URL}}}
	} else {
		resp.Action.Error = &mobilesyncError{Status: 2, Message: msgMobilesyncNotAvailable}
	}
	return mobilesyncDoc{Response: resp}
}

// renderMobilesyncError answers a mobilesync request that has no account
// to speak of (unknown domain, rejected address, directory down). No User
// element: nothing from the request is repeated.
func renderMobilesyncError(msg string) ([]byte, error) {
	return encodeXMLDoc(mobilesyncDoc{Response: mobilesyncResponse{
		Culture: mobilesyncCulture,
		Action:  mobilesyncAction{Error: &mobilesyncError{Status: 2, Message: msg}},
	}})
}

// ---------------------------------------------------------------------
// Error response, §2.3 (MS-OXDSCLI 2.2.4.1.1.3.2)

type poxErrorDoc struct {
	XMLName  xml.Name         `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response poxErrorResponse `xml:"Response"`
}

// poxErrorResponse is in the base response namespace, not 2006a: that is
// where exchangelib and Outlook look for errors.
type poxErrorResponse struct {
	XMLName xml.Name `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Response"`
	Error   poxError `xml:"Error"`
}

type poxError struct {
	Time      string `xml:"Time,attr"`
	ID        string `xml:"Id,attr"`
	ErrorCode int    `xml:"ErrorCode"`
	Message   string `xml:"Message"`
	DebugData string `xml:"DebugData"`
}

// POX error codes (MS-OXDSCLI 2.2.4.1.1.3.2).
const (
	poxErrNotFound      = 500 // the e-mail address cannot be found
	poxErrNoSettings    = 501 // known, but nothing to configure
	poxErrInvalid       = 600 // malformed request
	poxErrSchema        = 601 // AcceptableResponseSchema not served
	poxErrInternalError = 603
)

// poxErrorMessages are fixed texts; exchangelib recognises the 500 one as
// "no such mailbox".
var poxErrorMessages = map[int]string{
	poxErrNotFound:      "The e-mail address cannot be found.",
	poxErrNoSettings:    "No configuration is available for this e-mail address.",
	poxErrInvalid:       "Invalid Request",
	poxErrSchema:        "Provider is not available",
	poxErrInternalError: "Internal Server Error",
}

// renderPOXError builds an error document. Time is the time of the error
// as Exchange writes it (HH:MM:SS.fffffff, UTC); id is a fixed hash of
// the server's name. Nothing from the request appears in it.
func renderPOXError(code int, now time.Time, id string) ([]byte, error) {
	return encodeXMLDoc(poxErrorDoc{Response: poxErrorResponse{Error: poxError{
		Time:      now.UTC().Format("15:04:05.0000000"),
		ID:        id,
		ErrorCode: code,
		Message:   poxErrorMessages[code],
	}}})
}

// serverID is the error Id: FNV-1a of the host name, as a decimal number.
func serverID(hostname string) string {
	h := uint32(2166136261)
	for i := 0; i < len(hostname); i++ {
		h ^= uint32(hostname[i])
		h *= 16777619
	}
	return strconv.FormatUint(uint64(h), 10)
}

// encodeXMLDoc writes a document with the XML declaration, indented, UTF-8
// without a byte-order mark, with default namespaces only (no prefixes,
// which Thunderbird cannot read: quirk 6).
func encodeXMLDoc(v any) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(xml.Header)
	enc := xml.NewEncoder(&b)
	enc.Indent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}
