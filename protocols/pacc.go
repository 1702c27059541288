package protocols

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/mailbeacon/mailbeacon/policy"
)

// PACC, draft-ietf-mailmaint-pacc (CLIENTS.md §7): the client fetches
// https://ua-auto-config.<domain>/.well-known/user-agent-configuration.json
// and accepts it only when the SHA-256 of the exact body matches the TXT
// record _ua-auto-config.<domain>. The hash pins the bytes, so the document
// is the domain's (its services, the ceiling of what users get), never a
// user's, and the same configuration must always give the same bytes.

// PACCPath is where the document is served.
const PACCPath = "/.well-known/user-agent-configuration.json"

// paccDoc is the configuration document. Field order is the draft's
// example's; encoding/json keeps it, so the bytes are stable.
type paccDoc struct {
	Protocols      paccProtocols `json:"protocols"`
	Authentication paccAuth      `json:"authentication"`
	Info           paccInfo      `json:"info"`
}

// paccProtocols: mail protocols by host only, on their implicit-TLS port
// (993, 995, 465); DAV by https URL. The draft has no member for EWS or
// ActiveSync.
type paccProtocols struct {
	IMAP    *paccHost `json:"imap,omitempty"`
	POP3    *paccHost `json:"pop3,omitempty"`
	SMTP    *paccHost `json:"smtp,omitempty"`
	CalDAV  *paccURL  `json:"caldav,omitempty"`
	CardDAV *paccURL  `json:"carddav,omitempty"`
}

type paccHost struct {
	Host string `json:"host"`
}

type paccURL struct {
	URL string `json:"url"`
}

type paccAuth struct {
	OAuthPublic *paccOAuth `json:"oauth-public,omitempty"`
	Password    bool       `json:"password"`
}

type paccOAuth struct {
	Issuer string `json:"issuer"`
}

type paccInfo struct {
	Provider paccProvider `json:"provider"`
	Help     *paccHelp    `json:"help,omitempty"`
}

type paccProvider struct {
	Name      string `json:"name"`                // at most 60 characters
	ShortName string `json:"shortName,omitempty"` // at most 20
}

type paccHelp struct {
	Documentation string `json:"documentation"`
}

// paccPorts are the only ports PACC can express: implicit TLS, default.
var paccPorts = map[policy.Kind]int{policy.IMAP: 993, policy.POP3: 995, policy.SMTP: 465}

// RenderPACC returns the PACC document of d. ok is false when d offers
// nothing the format can express (no implicit-TLS mail service on its
// standard port, no https DAV URL on port 443): such a domain publishes
// no document and no TXT record.
func RenderPACC(d *policy.Domain) (body []byte, ok bool, err error) {
	doc := paccDoc{Info: paccInfo{Provider: paccProvider{
		Name: truncateRunes(d.Provider, 60), ShortName: truncateRunes(d.ShortName, 20),
	}}}
	p := &doc.Protocols
	hosts := map[policy.Kind]**paccHost{policy.IMAP: &p.IMAP, policy.POP3: &p.POP3, policy.SMTP: &p.SMTP}
	urls := map[policy.Kind]**paccURL{policy.CalDAV: &p.CalDAV, policy.CardDAV: &p.CardDAV}
	for _, s := range d.Services {
		switch {
		case hosts[s.Kind] != nil && *hosts[s.Kind] == nil && s.Socket == policy.SocketTLS && s.Port == paccPorts[s.Kind]:
			*hosts[s.Kind] = &paccHost{Host: s.Host}
		case urls[s.Kind] != nil && *urls[s.Kind] == nil && defaultHTTPS(s.URL):
			*urls[s.Kind] = &paccURL{URL: s.URL}
		default:
			continue
		}
		ok = true
		for _, a := range s.Auth {
			doc.Authentication.Password = doc.Authentication.Password ||
				a == policy.AuthPasswordCleartext || a == policy.AuthPasswordEncrypted
		}
	}
	if !ok {
		return nil, false, nil
	}
	if d.OAuth != nil {
		doc.Authentication.OAuthPublic = &paccOAuth{Issuer: d.OAuth.Issuer}
	}
	if d.DocumentationURL != "" {
		doc.Info.Help = &paccHelp{Documentation: d.DocumentationURL}
	}
	body, err = json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, false, err
	}
	return append(body, '\n'), true, nil
}

// defaultHTTPS reports whether u is an https URL on the default port, the
// only kind PACC allows.
func defaultHTTPS(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Scheme == "https" && (u.Port() == "" || u.Port() == "443")
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}

// PACCRecord is the text of the _ua-auto-config TXT record that vouches for
// body: version UAAC1, algorithm sha256, and the base64 of body's SHA-256.
func PACCRecord(body []byte) string {
	sum := sha256.Sum256(body)
	return "v=UAAC1; a=sha256; d=" + base64.StdEncoding.EncodeToString(sum[:])
}

// paccContentType is the draft's media type, without a charset: clients
// hash the bytes, not a decoded text.
var paccContentType = []string{"application/json"}

// paccCache lets PACC clients and proxies keep the document for a short
// while: a changed configuration and its new TXT record are not kept
// apart for long.
var paccCache = []string{"public, max-age=300"}

// errNoPACC: the domain offers nothing PACC can express.
var errNoPACC = &httpError{status: http.StatusNotFound, msg: "no PACC configuration for this domain"}

// pacc serves the PACC document on ua-auto-config.<domain>. It reads no
// user from the directory: the document is the same for every user of the
// domain.
func (h *Handler) pacc(c *call) error {
	d, err := c.hostDomain(policy.PACCPrefix)
	if err != nil {
		return err
	}
	body, ok, err := RenderPACC(d)
	switch {
	case err != nil:
		return fmt.Errorf("rendering PACC: %w", err)
	case !ok:
		return errNoPACC
	}
	c.send(http.StatusOK, paccContentType, paccCache, body)
	return nil
}
