package protocols

import (
	"crypto/sha1"
	"encoding/hex"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"howett.net/plist"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Apple configuration profiles, .mobileconfig (CLIENTS.md §4).
// Every struct below is encoded by howett.net/plist into an XML property
// list; the encoder sorts dictionary keys, so the output is stable and the
// golden files in testdata/apple pin it byte for byte. No payload carries a
// password: Apple keeps those for encrypted profiles (§4.5), and the device
// asks for it when the profile is installed.

// profile is the top level (§4.1, TopLevel.yaml).
type profile struct {
	PayloadType         string `plist:"PayloadType"` // always "Configuration"
	PayloadVersion      int    `plist:"PayloadVersion"`
	PayloadIdentifier   string `plist:"PayloadIdentifier"` // same identifier: a re-download replaces the installed profile
	PayloadUUID         string `plist:"PayloadUUID"`
	PayloadDisplayName  string `plist:"PayloadDisplayName"`
	PayloadDescription  string `plist:"PayloadDescription"`
	PayloadOrganization string `plist:"PayloadOrganization,omitempty"`
	// PayloadScope is macOS only: mail and DAV accounts belong to the
	// user, not to the machine.
	PayloadScope   string `plist:"PayloadScope,omitempty"`
	PayloadContent []any  `plist:"PayloadContent"`
}

// PayloadKeys holds the keys every payload needs (CommonPayloadKeys.yaml).
// It is exported only because the plist encoder inlines embedded structs of
// exported types alone; nothing outside this package uses it.
type PayloadKeys struct {
	PayloadType         string `plist:"PayloadType"`
	PayloadVersion      int    `plist:"PayloadVersion"`
	PayloadIdentifier   string `plist:"PayloadIdentifier"` // unique within the profile
	PayloadUUID         string `plist:"PayloadUUID"`
	PayloadDisplayName  string `plist:"PayloadDisplayName"`
	PayloadOrganization string `plist:"PayloadOrganization,omitempty"`
}

// mailPayload is com.apple.mail.managed (§4.2). Both servers are required,
// so a user without an incoming or an outgoing server gets no mail payload.
type mailPayload struct {
	PayloadKeys
	EmailAccountType        string `plist:"EmailAccountType"`        // EmailTypeIMAP | EmailTypePOP
	EmailAccountDescription string `plist:"EmailAccountDescription"` // the account's name in Mail's list
	EmailAccountName        string `plist:"EmailAccountName,omitempty"`
	EmailAddress            string `plist:"EmailAddress"`

	IncomingMailServerHostName       string `plist:"IncomingMailServerHostName"`
	IncomingMailServerPortNumber     int    `plist:"IncomingMailServerPortNumber"`
	IncomingMailServerUseSSL         bool   `plist:"IncomingMailServerUseSSL"`
	IncomingMailServerUsername       string `plist:"IncomingMailServerUsername"`
	IncomingMailServerAuthentication string `plist:"IncomingMailServerAuthentication"`

	OutgoingMailServerHostName       string `plist:"OutgoingMailServerHostName"`
	OutgoingMailServerPortNumber     int    `plist:"OutgoingMailServerPortNumber"`
	OutgoingMailServerUseSSL         bool   `plist:"OutgoingMailServerUseSSL"`
	OutgoingMailServerUsername       string `plist:"OutgoingMailServerUsername"`
	OutgoingMailServerAuthentication string `plist:"OutgoingMailServerAuthentication"`
	// One password prompt at install instead of two (interactive installs).
	OutgoingPasswordSameAsIncomingPassword bool `plist:"OutgoingPasswordSameAsIncomingPassword"`
}

// easPayload is com.apple.eas.account (§4.3), iOS and visionOS only.
type easPayload struct {
	PayloadKeys
	EmailAddress string `plist:"EmailAddress"`
	// Host is the server's name; the device always uses the path
	// /Microsoft-Server-ActiveSync, which no key can change. A non-default
	// port is kept as host:port.
	Host     string `plist:"Host"`
	SSL      bool   `plist:"SSL"`
	UserName string `plist:"UserName"`
}

// caldavPayload is com.apple.caldav.account (§4.4).
type caldavPayload struct {
	PayloadKeys
	CalDAVAccountDescription string `plist:"CalDAVAccountDescription"`
	CalDAVHostName           string `plist:"CalDAVHostName"`
	CalDAVPort               int    `plist:"CalDAVPort"`
	CalDAVUseSSL             bool   `plist:"CalDAVUseSSL"` // defaults to true on the device: always written
	CalDAVPrincipalURL       string `plist:"CalDAVPrincipalURL,omitempty"`
	CalDAVUsername           string `plist:"CalDAVUsername"`
}

// carddavPayload is com.apple.carddav.account (§4.4).
type carddavPayload struct {
	PayloadKeys
	CardDAVAccountDescription string `plist:"CardDAVAccountDescription"`
	CardDAVHostName           string `plist:"CardDAVHostName"`
	CardDAVPort               int    `plist:"CardDAVPort"`
	CardDAVUseSSL             bool   `plist:"CardDAVUseSSL"`
	CardDAVPrincipalURL       string `plist:"CardDAVPrincipalURL,omitempty"` // not on macOS
	CardDAVUsername           string `plist:"CardDAVUsername"`
}

// profileOptions are the per-request choices a profile depends on besides
// the account.
type profileOptions struct {
	Organization string // PayloadOrganization; empty: the domain's provider name
	Platform     platform
}

// profileNamespace is the UUIDv5 namespace of every PayloadUUID mailbeacon
// makes. It must never change: devices match installed payloads by UUID, so
// a new namespace would make every re-download a duplicate account.
var profileNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/mailbeacon/mailbeacon/apple-profile"))

// payloadUUID derives a payload's UUID from the domain, the primary address
// and the payload kind, so the same user downloading the same payload twice
// gets the same UUID and the device updates it in place.
func payloadUUID(domain, primary, kind string) string {
	name := domain + "\x00" + primary + "\x00" + kind
	return strings.ToUpper(uuid.NewSHA1(profileNamespace, []byte(name)).String())
}

// appleAuth maps mailbeacon's authentication families onto the Apple mail
// payload's enum. OAuth2, GSSAPI and client certificates have no value
// there: a service offering only those cannot go into the payload.
var appleAuth = map[policy.Auth]string{
	policy.AuthPasswordCleartext: "EmailAuthPassword", // over TLS, as every service mailbeacon offers
	policy.AuthPasswordEncrypted: "EmailAuthCRAMMD5",
	policy.AuthNTLM:              "EmailAuthNTLM",
}

func appleAuthOf(s policy.Service) (string, bool) {
	for _, a := range s.Auth {
		if v, ok := appleAuth[a]; ok {
			return v, true
		}
	}
	return "", false
}

// profileMailServer picks the first service of kind k that a profile can
// describe: secured by TLS or STARTTLS (cleartext servers are left out, as
// in autoconfig and per RFC 8314) with a password method Apple knows.
func profileMailServer(a *policy.Account, k policy.Kind) (policy.Service, string, bool) {
	for _, s := range a.Services {
		if s.Kind != k || s.Socket == policy.SocketPlain {
			continue
		}
		if auth, ok := appleAuthOf(s); ok {
			return s, auth, true
		}
	}
	return policy.Service{}, "", false
}

// buildProfile is the profile for an account: a pure function of the
// account and the options.
func buildProfile(a *policy.Account, o profileOptions) *profile {
	d := a.Domain
	org := o.Organization
	if org == "" {
		org = d.Provider
	}
	// The accounts are named after where the mailbox lives (a destination's
	// provider); the organization is the one handing out the profile.
	provider := providerName(a)
	local, _ := splitPrimary(a)
	ident := reverseDNS(d.Name) + ".mailbeacon." + identifierLabel(local)
	uid := func(kind string) string { return payloadUUID(d.Name, a.Primary, kind) }
	header := func(typ, kind, name string) PayloadKeys {
		return PayloadKeys{
			PayloadType: typ, PayloadVersion: 1,
			PayloadIdentifier: ident + "." + kind, PayloadUUID: uid(kind),
			PayloadDisplayName: name, PayloadOrganization: org,
		}
	}
	p := &profile{
		PayloadType:         "Configuration",
		PayloadVersion:      1,
		PayloadIdentifier:   ident,
		PayloadUUID:         uid("profile"),
		PayloadDisplayName:  provider + " (" + a.Primary + ")",
		PayloadDescription:  "Sets up " + a.Primary + " on this device. The profile holds no password: you are asked for it when you install the profile.",
		PayloadOrganization: org,
		PayloadContent:      []any{},
	}
	if o.Platform == platformMac {
		p.PayloadScope = "User"
	}

	// The rule: IMAP when the user may use it, else POP3; and the
	// first SMTP server. The payload needs both.
	in, inAuth, ok := profileMailServer(a, policy.IMAP)
	accountType, kind, label := "EmailTypeIMAP", "imap", "IMAP"
	if !ok {
		in, inAuth, ok = profileMailServer(a, policy.POP3)
		accountType, kind, label = "EmailTypePOP", "pop3", "POP"
	}
	out, outAuth, okOut := profileMailServer(a, policy.SMTP)
	if ok && okOut {
		p.PayloadContent = append(p.PayloadContent, mailPayload{
			PayloadKeys:             header("com.apple.mail.managed", kind, "E-mail ("+label+")"),
			EmailAccountType:        accountType,
			EmailAccountDescription: provider,
			EmailAccountName:        a.DisplayName,
			EmailAddress:            a.Primary,
			// Apple has only a UseSSL boolean, no STARTTLS switch (§4.2).
			// It is true for implicit TLS and STARTTLS alike: false would
			// allow cleartext. How Mail tells the two apart is not
			// documented (§4.2 [?]); it goes by the port, which is why the
			// domain's standard ports (993/995/465 TLS, 143/110/587
			// STARTTLS) are the safe choice for Apple devices.
			IncomingMailServerHostName:             in.Host,
			IncomingMailServerPortNumber:           in.Port,
			IncomingMailServerUseSSL:               true,
			IncomingMailServerUsername:             in.Login,
			IncomingMailServerAuthentication:       inAuth,
			OutgoingMailServerHostName:             out.Host,
			OutgoingMailServerPortNumber:           out.Port,
			OutgoingMailServerUseSSL:               true,
			OutgoingMailServerUsername:             out.Login,
			OutgoingMailServerAuthentication:       outAuth,
			OutgoingPasswordSameAsIncomingPassword: true,
		})
	}

	// macOS has no Exchange ActiveSync payload (§4.3).
	if eas, ok := a.First(policy.ActiveSync); ok && o.Platform != platformMac {
		if u, err := url.Parse(eas.URL); err == nil && u.Host != "" {
			p.PayloadContent = append(p.PayloadContent, easPayload{
				PayloadKeys:  header("com.apple.eas.account", "eas", "Exchange ActiveSync"),
				EmailAddress: a.Primary,
				Host:         u.Host,
				SSL:          u.Scheme == "https",
				UserName:     eas.Login,
			})
		}
	}

	if dav, ok := a.First(policy.CalDAV); ok {
		if host, port, ssl, principal, ok := davTarget(dav.URL); ok {
			p.PayloadContent = append(p.PayloadContent, caldavPayload{
				PayloadKeys:              header("com.apple.caldav.account", "caldav", "Calendar (CalDAV)"),
				CalDAVAccountDescription: provider + " Calendar",
				CalDAVHostName:           host,
				CalDAVPort:               port,
				CalDAVUseSSL:             ssl,
				CalDAVPrincipalURL:       principal,
				CalDAVUsername:           dav.Login,
			})
		}
	}
	if dav, ok := a.First(policy.CardDAV); ok {
		if host, port, ssl, principal, ok := davTarget(dav.URL); ok {
			if o.Platform == platformMac {
				principal = "" // CardDAVPrincipalURL is not supported on macOS (§4.4)
			}
			p.PayloadContent = append(p.PayloadContent, carddavPayload{
				PayloadKeys:               header("com.apple.carddav.account", "carddav", "Contacts (CardDAV)"),
				CardDAVAccountDescription: provider + " Contacts",
				CardDAVHostName:           host,
				CardDAVPort:               port,
				CardDAVUseSSL:             ssl,
				CardDAVPrincipalURL:       principal,
				CardDAVUsername:           dav.Login,
			})
		}
	}
	return p
}

// davTarget splits a configured DAV URL into the payload's host, port and
// TLS flag. A path other than "/" becomes the principal URL, from which the
// device finds the current-user-principal (RFC 6764 §6).
func davTarget(raw string) (host string, port int, ssl bool, principal string, ok bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return "", 0, false, "", false
	}
	ssl = u.Scheme == "https"
	port = 80
	if ssl {
		port = 443
	}
	if ps := u.Port(); ps != "" {
		if port, err = strconv.Atoi(ps); err != nil {
			return "", 0, false, "", false
		}
	}
	if u.Path != "" && u.Path != "/" {
		principal = raw
	}
	return u.Hostname(), port, ssl, principal, true
}

// encodeProfile writes the profile as an XML property list.
func encodeProfile(p *profile) ([]byte, error) {
	b, err := plist.MarshalIndent(p, plist.XMLFormat, "\t")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// renderProfile builds and encodes an account's profile.
func renderProfile(a *policy.Account, o profileOptions) ([]byte, error) {
	return encodeProfile(buildProfile(a, o))
}

// splitPrimary returns the local part and domain of the account's primary
// address.
func splitPrimary(a *policy.Account) (local, domain string) {
	if i := strings.LastIndexByte(a.Primary, '@'); i >= 0 {
		return a.Primary[:i], a.Primary[i+1:]
	}
	return a.Address.Local, a.Address.Domain
}

// reverseDNS turns example.com into com.example.
func reverseDNS(domain string) string {
	labels := strings.Split(domain, ".")
	slices.Reverse(labels)
	return strings.Join(labels, ".")
}

// identifierLabel makes a local part fit for a reverse-DNS identifier and a
// file name: letters, digits and hyphens. When that changes anything, a
// short hash of the original keeps "a.b" and "a_b" apart.
func identifierLabel(local string) string {
	var b strings.Builder
	changed := false
	for _, r := range local {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
			changed = true
		}
	}
	if !changed && b.Len() > 0 {
		return b.String()
	}
	sum := sha1.Sum([]byte(local))
	tag := hex.EncodeToString(sum[:4])
	if base := strings.Trim(b.String(), "-"); base != "" {
		return base + "-" + tag
	}
	return tag
}
