package protocols

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

// TestProfileGolden pins the profile of each kind of user byte for byte
// (go test -update rewrites testdata/apple/).
func TestProfileGolden(t *testing.T) {
	ds := appleDomains(t)
	accts := appleFixtureAccounts(ds)
	unknown := ds["example.com"].DefaultAccount(policy.Address{Local: "nobody", Domain: "example.com"}, "nobody@example.com")
	orgUser := ds["example.org"].DefaultAccount(policy.Address{Local: "zoe", Domain: "example.org"}, "zoe@example.org")
	tests := []struct {
		name string
		acct *policy.Account
		opts profileOptions
	}{
		{"alice", accts["alice@example.com"], profileOptions{}},
		{"alice-mac", accts["alice@example.com"], profileOptions{Platform: platformMac}},
		{"alice-alias", accts["a.example@example.com"], profileOptions{}},
		{"bob", accts["bob@example.com"], profileOptions{}},
		{"dave", accts["dave@example.com"], profileOptions{Organization: "Example IT <helpdesk> & Co"}},
		{"erin-pop", accts["erin@example.com"], profileOptions{}},
		{"unknown", unknown, profileOptions{}},
		{"org-defaults", orgUser, profileOptions{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := renderProfile(tt.acct, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			appleDecodePlist(t, got) // well-formed plist
			golden(t, "apple/"+tt.name+".mobileconfig", got)
		})
	}
}

// TestProfileStructure checks the keys Apple requires of every profile and
// payload (CLIENTS.md §4.1) on every fixture account.
func TestProfileStructure(t *testing.T) {
	ds := appleDomains(t)
	uuidRE := regexp.MustCompile(`^[0-9A-F]{8}-[0-9A-F]{4}-5[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$`)
	for addr, acct := range appleFixtureAccounts(ds) {
		for _, plat := range []platform{platformIOS, platformMac} {
			b, err := renderProfile(acct, profileOptions{Platform: plat})
			if err != nil {
				t.Fatal(err)
			}
			prof := appleDecodePlist(t, b)
			if prof["PayloadType"] != "Configuration" || prof["PayloadVersion"] != uint64(1) {
				t.Errorf("%s: top level PayloadType %v, PayloadVersion %v", addr, prof["PayloadType"], prof["PayloadVersion"])
			}
			if id, _ := prof["PayloadIdentifier"].(string); !strings.HasPrefix(id, "com.example.mailbeacon.") {
				t.Errorf("%s: PayloadIdentifier %q is not in the domain's reverse DNS", addr, id)
			}
			seenIDs, seenUUIDs := map[string]bool{}, map[string]bool{}
			all := append([]any{prof}, prof["PayloadContent"].([]any)...)
			for _, p := range all {
				d := p.(map[string]any)
				for _, k := range []string{"PayloadType", "PayloadIdentifier", "PayloadUUID", "PayloadDisplayName"} {
					if s, _ := d[k].(string); s == "" {
						t.Errorf("%s: a %v payload has no %s", addr, d["PayloadType"], k)
					}
				}
				if d["PayloadVersion"] != uint64(1) {
					t.Errorf("%s: %v PayloadVersion = %v", addr, d["PayloadType"], d["PayloadVersion"])
				}
				id, u := d["PayloadIdentifier"].(string), d["PayloadUUID"].(string)
				if seenIDs[id] || seenUUIDs[u] {
					t.Errorf("%s: identifier %s or UUID %s used twice", addr, id, u)
				}
				seenIDs[id], seenUUIDs[u] = true, true
				if !uuidRE.MatchString(u) {
					t.Errorf("%s: PayloadUUID %q is not an upper-case name-based (v5) UUID", addr, u)
				}
			}
		}
	}
}

// TestProfileNoPasswords: Apple keeps passwords for encrypted profiles
// (§4.5); these are not, so no password key may appear.
func TestProfileNoPasswords(t *testing.T) {
	ds := appleDomains(t)
	for addr, acct := range appleFixtureAccounts(ds) {
		b, err := renderProfile(acct, profileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`<key>([^<]*Password[^<]*)</key>`).FindAllSubmatch(b, -1) {
			if string(m[1]) != "OutgoingPasswordSameAsIncomingPassword" {
				t.Errorf("%s: profile carries %s", addr, m[1])
			}
		}
		if bytes.Contains(b, []byte("Secret123")) {
			t.Errorf("%s: profile contains a password", addr)
		}
	}
}

// TestProfileEntitlements: payloads follow what the user may use.
func TestProfileEntitlements(t *testing.T) {
	ds := appleDomains(t)
	accts := appleFixtureAccounts(ds)
	org := ds["example.org"].DefaultAccount(policy.Address{Local: "zoe", Domain: "example.org"}, "zoe@example.org")
	type want struct {
		payloads    []string       // PayloadTypes, in order
		mail        map[string]any // expected keys of the mail payload
		eas         map[string]any // expected keys of the EAS payload
		top         map[string]any // expected top-level keys
		absentInAny []string       // keys no payload may have
		extra       func(*testing.T, map[string]map[string]any)
	}
	const mailT, easT, calT, cardT = "com.apple.mail.managed", "com.apple.eas.account", "com.apple.caldav.account", "com.apple.carddav.account"
	tests := []struct {
		name string
		acct *policy.Account
		opts profileOptions
		want want
	}{
		{"alice gets IMAP, EAS and DAV", accts["alice@example.com"], profileOptions{}, want{
			payloads: []string{mailT, easT, calT, cardT},
			mail: map[string]any{
				"EmailAccountType": "EmailTypeIMAP", "EmailAddress": "alice@example.com", "EmailAccountName": "Alice Example",
				"IncomingMailServerHostName": "mail.example.com", "IncomingMailServerPortNumber": uint64(993),
				"IncomingMailServerUseSSL": true, "IncomingMailServerUsername": "alice",
				"OutgoingMailServerPortNumber": uint64(465), "OutgoingMailServerUseSSL": true, "OutgoingMailServerUsername": "alice",
			},
			eas: map[string]any{"Host": "mail.example.com", "SSL": true, "UserName": "alice", "EmailAddress": "alice@example.com"},
			top: map[string]any{"PayloadIdentifier": "com.example.mailbeacon.alice", "PayloadOrganization": "Example Mail"},
		}},
		{"bob gets no EAS payload", accts["bob@example.com"], profileOptions{}, want{
			payloads: []string{mailT, calT, cardT},
			mail:     map[string]any{"EmailAccountType": "EmailTypeIMAP", "IncomingMailServerUsername": "bob.login", "OutgoingMailServerUsername": "bob.login"},
		}},
		{"an alias gets the primary address", accts["a.example@example.com"], profileOptions{}, want{
			payloads: []string{mailT, easT, calT, cardT},
			mail:     map[string]any{"EmailAddress": "alice@example.com"},
			top:      map[string]any{"PayloadIdentifier": "com.example.mailbeacon.alice"},
		}},
		{"dave's own mail host", accts["dave@example.com"], profileOptions{}, want{
			payloads: []string{mailT, calT, cardT},
			mail:     map[string]any{"IncomingMailServerHostName": "mail2.example.com", "OutgoingMailServerHostName": "mail2.example.com", "EmailAccountName": `Dave <Ops> & "Smith" *) Über`},
		}},
		{"POP3 when IMAP is not allowed", accts["erin@example.com"], profileOptions{}, want{
			payloads: []string{mailT},
			mail:     map[string]any{"EmailAccountType": "EmailTypePOP", "IncomingMailServerPortNumber": uint64(995), "IncomingMailServerUsername": "erin"},
		}},
		{"no SMTP: no mail payload", accts["frank@example.com"], profileOptions{}, want{payloads: nil}},
		{"DAV only", accts["gina@example.com"], profileOptions{}, want{payloads: []string{calT}}},
		{"Mac: no EAS, user scope, no CardDAV principal", accts["alice@example.com"], profileOptions{Platform: platformMac}, want{
			payloads: []string{mailT, calT, cardT},
			top:      map[string]any{"PayloadScope": "User"},
			extra: func(t *testing.T, p map[string]map[string]any) {
				if _, ok := p[cardT]["CardDAVPrincipalURL"]; ok {
					t.Error("CardDAVPrincipalURL in a Mac profile")
				}
			},
		}},
		{"configured organization", accts["bob@example.com"], profileOptions{Organization: "Example IT"}, want{
			payloads: []string{mailT, calT, cardT},
			top:      map[string]any{"PayloadOrganization": "Example IT"},
			mail:     map[string]any{"PayloadOrganization": "Example IT", "EmailAccountDescription": "Example Mail"},
		}},
		{"unknown address: domain defaults, typed address as login, no name", ds["example.com"].DefaultAccount(policy.Address{Local: "carol", Domain: "example.com"}, "carol@example.com"), profileOptions{}, want{
			payloads:    []string{mailT, easT, calT, cardT},
			mail:        map[string]any{"EmailAccountType": "EmailTypeIMAP", "IncomingMailServerUsername": "carol@example.com"},
			absentInAny: []string{"EmailAccountName"},
		}},
		{"cleartext IMAP skipped, POP3 STARTTLS, CRAM-MD5", org, profileOptions{}, want{
			payloads: []string{mailT},
			mail: map[string]any{
				"EmailAccountType": "EmailTypePOP", "IncomingMailServerHostName": "pop.example.org", "IncomingMailServerPortNumber": uint64(110),
				"IncomingMailServerUseSSL": true, "IncomingMailServerAuthentication": "EmailAuthPassword",
				"OutgoingMailServerPortNumber": uint64(587), "OutgoingMailServerUseSSL": true, "OutgoingMailServerAuthentication": "EmailAuthCRAMMD5",
			},
			top: map[string]any{"PayloadIdentifier": "org.example.mailbeacon.zoe"},
		}},
		{"DAV URLs", accts["alice@example.com"], profileOptions{}, want{
			payloads: []string{mailT, easT, calT, cardT},
			extra: func(t *testing.T, p map[string]map[string]any) {
				for k, v := range map[string]any{"CalDAVHostName": "dav.example.com", "CalDAVPort": uint64(443), "CalDAVUseSSL": true, "CalDAVPrincipalURL": "https://dav.example.com/dav/", "CalDAVUsername": "alice"} {
					if p[calT][k] != v {
						t.Errorf("caldav %s = %#v, want %#v", k, p[calT][k], v)
					}
				}
				for k, v := range map[string]any{"CardDAVHostName": "dav.example.com", "CardDAVPort": uint64(8443), "CardDAVUseSSL": true, "CardDAVUsername": "alice"} {
					if p[cardT][k] != v {
						t.Errorf("carddav %s = %#v, want %#v", k, p[cardT][k], v)
					}
				}
			},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := buildProfile(tt.acct, tt.opts)
			b, err := encodeProfile(p)
			if err != nil {
				t.Fatal(err)
			}
			prof := appleDecodePlist(t, b)
			var types []string
			for _, x := range prof["PayloadContent"].([]any) {
				types = append(types, x.(map[string]any)["PayloadType"].(string))
			}
			if strings.Join(types, " ") != strings.Join(tt.want.payloads, " ") {
				t.Fatalf("payloads %v, want %v", types, tt.want.payloads)
			}
			byType := applePayloads(t, prof)
			check := func(what string, got map[string]any, want map[string]any) {
				for k, v := range want {
					if got[k] != v {
						t.Errorf("%s %s = %#v, want %#v", what, k, got[k], v)
					}
				}
			}
			check("mail", byType[mailT], tt.want.mail)
			check("eas", byType[easT], tt.want.eas)
			check("profile", prof, tt.want.top)
			for _, k := range tt.want.absentInAny {
				for typ, d := range byType {
					if _, ok := d[k]; ok {
						t.Errorf("%s payload has %s", typ, k)
					}
				}
			}
			if tt.want.extra != nil {
				tt.want.extra(t, byType)
			}
		})
	}
}

// TestProfileUUIDStability: the same user and payload get the same UUID on
// every download, so the device updates the account instead of adding a
// second one; other users and other payloads get other UUIDs.
func TestProfileUUIDStability(t *testing.T) {
	ds := appleDomains(t)
	uuids := func(a *policy.Account) []string {
		p := buildProfile(a, profileOptions{})
		out := []string{p.PayloadUUID}
		for _, x := range p.PayloadContent {
			switch v := x.(type) {
			case mailPayload:
				out = append(out, v.PayloadUUID)
			case easPayload:
				out = append(out, v.PayloadUUID)
			case caldavPayload:
				out = append(out, v.PayloadUUID)
			case carddavPayload:
				out = append(out, v.PayloadUUID)
			}
		}
		return out
	}
	// Two resolutions give two distinct Account values.
	a1 := appleFixtureAccounts(ds)["alice@example.com"]
	a2 := appleFixtureAccounts(ds)["alice@example.com"]
	if u1, u2 := uuids(a1), uuids(a2); strings.Join(u1, ",") != strings.Join(u2, ",") {
		t.Errorf("UUIDs differ between two builds:\n%v\n%v", u1, u2)
	}
	// A changed entitlement keeps the UUIDs of the payloads that remain.
	a2.Services = a2.Services[:4] // drop EAS and DAV
	if got, want := uuids(a2)[:2], uuids(a1)[:2]; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("profile and mail UUIDs changed with the entitlements: %v, want %v", got, want)
	}
	// Pinned: a change of namespace or name scheme would turn every
	// re-download on every device into a duplicate account.
	pinned := map[[3]string]string{
		{"example.com", "alice@example.com", "profile"}: "92AE3B60-72DA-5271-8F25-B9BA38FB3EB4",
	}
	for in, want := range pinned {
		if got := payloadUUID(in[0], in[1], in[2]); got != want {
			t.Errorf("payloadUUID%v = %s, want %s", in, got, want)
		}
	}
	seen := map[string]string{}
	for addr, a := range appleFixtureAccounts(ds) {
		if addr == "a.example@example.com" {
			continue // an alias shares its primary's profile
		}
		for _, u := range uuids(a) {
			if other, dup := seen[u]; dup {
				t.Errorf("UUID %s shared by %s and %s", u, addr, other)
			}
			seen[u] = addr
		}
	}
}

func TestIdentifierLabel(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{"bob-smith", "bob-smith"},
		{"Bob", "Bob"},
	}
	for _, tt := range tests {
		if got := identifierLabel(tt.in); got != tt.want {
			t.Errorf("identifierLabel(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// Characters outside [A-Za-z0-9-] are replaced and a hash keeps
	// distinct local parts distinct.
	seen := map[string]string{}
	for _, in := range []string{"a.b", "a_b", "a+b", "a-b", "ü", "é", "a..", "x'y"} {
		got := identifierLabel(in)
		if !regexp.MustCompile(`^[A-Za-z0-9-]+$`).MatchString(got) || strings.HasPrefix(got, "-") {
			t.Errorf("identifierLabel(%q) = %q: not a DNS-style label", in, got)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("identifierLabel(%q) = identifierLabel(%q) = %q", in, other, got)
		}
		seen[got] = in
	}
}

func TestReverseDNS(t *testing.T) {
	for in, want := range map[string]string{"example.com": "com.example", "mail.example.co.uk": "uk.co.example.mail", "xn--bcher-kva.example": "example.xn--bcher-kva"} {
		if got := reverseDNS(in); got != want {
			t.Errorf("reverseDNS(%q) = %q, want %q", in, got, want)
		}
	}
}
