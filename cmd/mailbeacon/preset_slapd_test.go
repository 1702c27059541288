package main

// The presets of the mail stacks, end to end: a real slapd loaded with the
// stack's schema (ldaptest/schema) and entries written as the stack writes
// them, mailbeacon built from a configuration that names nothing but the
// preset, and Thunderbird's and Outlook's answers for an enabled user, a
// disabled one, one asked by an alias, and one per per-service switch the
// stack has. Skips without slapd, fails under CI=true (ldaptest).

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// presetBaseLDIF is the tree every preset test starts from: the suffix,
// the service account the test server lets read, and ou=people.
const presetBaseLDIF = `dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
dc: example
o: Example

` + ldaptest.ServiceLDIF

// presetUser is an entry under ou=people named rdn (uid=NAME, or
// mail=NAME@example.com), of class inetOrgPerson and the classes given,
// with uid, cn and sn uid, and the attribute lines given.
func presetUser(rdn, uid string, classes []string, attrs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dn: %s,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\n", rdn)
	for _, c := range classes {
		fmt.Fprintf(&b, "objectClass: %s\n", c)
	}
	fmt.Fprintf(&b, "uid: %[1]s\ncn: %[1]s\nsn: %[1]s\n", uid)
	for _, a := range attrs {
		b.WriteString(a + "\n")
	}
	return b.String()
}

// mailUser is presetUser of class class named uid=uid, with mail
// uid@example.com and the attribute lines given.
func mailUser(class, uid string, attrs ...string) string {
	return presetUser("uid="+uid, uid, []string{class}, append([]string{"mail: " + uid + "@example.com"}, attrs...)...)
}

// presetConfigText is a configuration naming only the preset, the demo's
// domain (IMAP 993, POP3 995, SMTP 465 and 587, ActiveSync) and the test
// server.
func presetConfigText(t *testing.T, srv *ldaptest.Server, preset string) string {
	t.Helper()
	return slapdLDAPText(t, srv, slapdOptions{}) + fmt.Sprintf(`policy:
  preset: %s
domains:
  - name: example.com
    services:
      - {type: imap, host: mail.example.com, port: 993, socket: tls}
      - {type: pop3, host: mail.example.com, port: 995, socket: tls}
      - {type: smtp, host: mail.example.com, port: 465, socket: tls}
      - {type: smtp, host: mail.example.com, port: 587, socket: starttls}
      - {type: activesync, url: "https://mail.example.com/Microsoft-Server-ActiveSync"}
`, preset)
}

// presetCase is one address asked, and what its answers must say: the
// login and mail host of every service, and whether POP3 and ActiveSync
// are offered (IMAP and SMTP are, in every case here). A disabled account
// gets the domain's services with the address as login, the answer of an
// address nobody has; whether the preset found the account enabled is
// checked with lookup's explanation.
type presetCase struct {
	name, addr  string
	enabled     bool
	login, host string
	pop3, eas   bool
}

// presetAutoconfig is what these tests read from Thunderbird's answer.
type presetAutoconfig struct {
	Servers []struct {
		XMLName  xml.Name
		Type     string `xml:"type,attr"`
		Hostname string `xml:"hostname"`
		Port     int    `xml:"port"`
		Username string `xml:"username"`
	} `xml:",any"`
}

// autoconfigServers lists type:port/username@hostname for each incoming
// and outgoing server of the answer.
func autoconfigServers(t *testing.T, h http.Handler, addr string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/mail/config-v1.1.xml?emailaddress="+addr, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("autoconfig %s: %d %s", addr, rec.Code, rec.Body)
	}
	var doc struct {
		Provider presetAutoconfig `xml:"emailProvider"`
	}
	if err := xml.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatalf("autoconfig %s: %v\n%s", addr, err, rec.Body)
	}
	var out []string
	for _, s := range doc.Provider.Servers {
		if s.XMLName.Local == "incomingServer" || s.XMLName.Local == "outgoingServer" {
			out = append(out, fmt.Sprintf("%s:%d/%s@%s", s.Type, s.Port, s.Username, s.Hostname))
		}
	}
	return strings.Join(out, " ")
}

// want is the autoconfig and POX answer tc describes.
func (tc presetCase) want() (autoconfig, pox string) {
	srv := func(typ string, port int) string { return fmt.Sprintf("%s:%d/%s@%s", typ, port, tc.login, tc.host) }
	ac := []string{srv("imap", 993)}
	px := []string{fmt.Sprintf("IMAP:993/%s@%s/on/SSL", tc.login, tc.host)}
	if tc.pop3 {
		ac = append(ac, srv("pop3", 995))
		px = append(px, fmt.Sprintf("POP3:995/%s@%s/on/SSL", tc.login, tc.host))
	}
	ac = append(ac, srv("smtp", 465), srv("smtp", 587))
	px = append(px, fmt.Sprintf("SMTP:465/%s@%s/on/SSL", tc.login, tc.host), fmt.Sprintf("SMTP:587/%s@%s/on/TLS", tc.login, tc.host))
	return strings.Join(ac, " "), strings.Join(px, " ")
}

// checkPresetSlapd starts slapd with the stack's schema (ldaptest.Schema;
// "": mailbeacon.schema's only) and entries, builds mailbeacon with the
// preset, and checks each case's autoconfig, POX and mobilesync answers.
// Each address costs the directory one search: the three answers share
// the cached account.
func checkPresetSlapd(t *testing.T, preset, schema, entries string, cases []presetCase, opts ...ldaptest.Option) {
	t.Helper()
	if schema != "" {
		opts = append(opts, ldaptest.WithSchema(ldaptest.Schema(schema)))
	}
	opts = append(opts, ldaptest.WithLDIF(presetBaseLDIF+"\n"+entries))
	srv := ldaptest.Slapd(t, opts...)
	a := buildText(t, presetConfigText(t, srv, preset))
	h := protocols.NewHandler(a.resolver, a.handlerOptions(nil))
	before := srv.SearchCount()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantAC, wantPOX := tc.want()
			if got := autoconfigServers(t, h, tc.addr); got != wantAC {
				t.Errorf("autoconfig\n got %s\nwant %s", got, wantAC)
			}
			rec, ans := adPOST(t, h, tc.addr, adOutlookSchema, "", "")
			if rec.Code != http.StatusOK || ans.protocols() != wantPOX {
				t.Errorf("POX %d\n got %s\nwant %s", rec.Code, ans.protocols(), wantPOX)
			}
			_, ans = adPOST(t, h, tc.addr, adMobilesyncSchema, "", "")
			if got := ans.Response.Action.Settings != nil; got != tc.eas {
				t.Errorf("ActiveSync offered: %v, want %v (%+v)", got, tc.eas, ans.Response.Action)
			}
		})
	}
	if got := srv.SearchCount() - before; got != len(cases) {
		t.Errorf("%d searches for %d addresses", got, len(cases))
	}
	for _, tc := range cases {
		_, ex, err := a.resolver.Explain(context.Background(), mustParse(t, tc.addr))
		if err != nil || !ex.Found || ex.Enabled != tc.enabled {
			t.Errorf("%s: lookup %v found=%v enabled=%v, want found, enabled=%v (%s)", tc.addr, err, ex != nil && ex.Found, ex != nil && ex.Enabled, tc.enabled, ex.Reason)
		}
	}
}

func TestPresetUniventionSlapd(t *testing.T) {
	// A UCS user as UDM writes it: posix, Kerberos and mail classes;
	// krb5KDCFlags 126 is an active account, 254 one UDM deactivated
	// (which also sets shadowExpire 1); shadowExpire is also the day the
	// account expires (20000: 2024-10-04).
	user := func(uid, flags string, extra ...string) string {
		return presetUser("uid="+uid, uid, []string{"shadowAccount", "krb5KDCEntry", "univentionMail"},
			append([]string{"krb5PrincipalName: " + uid + "@EXAMPLE.COM", "krb5KeyVersionNumber: 1",
				"krb5KDCFlags: " + flags, "mailPrimaryAddress: " + uid + "@example.com"}, extra...)...)
	}
	entries := user("ute", "126", "mailAlternativeAddress: ute.alias@example.com") + "\n" +
		user("dirk", "254", "shadowExpire: 1") + "\n" +
		user("eve", "126", "shadowExpire: 20000") + "\n" +
		user("hanna", "126", "univentionMailHomeServer: mail2.example.com")
	checkPresetSlapd(t, "univention", "univention", entries, []presetCase{
		{"enabled", "ute@example.com", true, "ute@example.com", "mail.example.com", true, true},
		{"alias", "ute.alias@example.com", true, "ute@example.com", "mail.example.com", true, true},
		{"deactivated", "dirk@example.com", false, "dirk@example.com", "mail.example.com", true, true},
		{"expired", "eve@example.com", false, "eve@example.com", "mail.example.com", true, true},
		{"home server", "hanna@example.com", true, "hanna@example.com", "mail2.example.com", true, true},
	})
}

func TestPresetKolabSlapd(t *testing.T) {
	// A Kolab user as Kolab's LDAP backend writes it: inetUserStatus a
	// bit field (0x2 active, 0x10 LDAP ready, 0x20 IMAP ready; 0x4
	// suspended), services as managed roles under the root DN.
	user := func(uid, status string, extra ...string) string {
		return presetUser("uid="+uid, uid, []string{"inetUser", "kolabInetOrgPerson", "mailRecipient", "mailbeaconDSOperational"},
			append([]string{"mail: " + uid + "@example.com", "inetUserStatus: " + status}, extra...)...)
	}
	entries := user("kim", "50", "alias: kim.alias@example.com", "mailAlternateAddress: kim.alt@example.com",
		"nsRoleDN: cn=activesync-user,dc=example,dc=com", "nsRoleDN: cn=imap-user,dc=example,dc=com") + "\n" +
		user("kai", "50", "nsRoleDN: cn=imap-user,dc=example,dc=com") + "\n" +
		user("sue", "54", "nsRoleDN: cn=activesync-user,dc=example,dc=com") + "\n" +
		user("lou", "50", "nsAccountLock: true") + "\n" +
		user("mia", "50", "mailHost: imap2.example.com")
	checkPresetSlapd(t, "kolab", "kolab", entries, []presetCase{
		{"enabled with activesync role", "kim@example.com", true, "kim@example.com", "mail.example.com", true, true},
		{"alias", "kim.alias@example.com", true, "kim@example.com", "mail.example.com", true, true},
		{"mailAlternateAddress", "kim.alt@example.com", true, "kim@example.com", "mail.example.com", true, true},
		{"no activesync role", "kai@example.com", true, "kai@example.com", "mail.example.com", true, false},
		{"suspended", "sue@example.com", false, "sue@example.com", "mail.example.com", true, true},
		{"nsAccountLock", "lou@example.com", false, "lou@example.com", "mail.example.com", true, true},
		{"mailHost", "mia@example.com", true, "mia@example.com", "imap2.example.com", true, false},
	}, ldaptest.WithBaseSchemasOnly())
}

func TestPresetQmailLDAPSlapd(t *testing.T) {
	user := func(uid string, extra ...string) string {
		return mailUser("qmailUser", uid, extra...)
	}
	entries := user("quinn", "accountStatus: active", "mailAlternateAddress: q.alias@example.com") + "\n" +
		user("nora", "accountStatus: nopop") + "\n" +
		user("dana", "accountStatus: disabled") + "\n" +
		user("del", "accountStatus: deleted") + "\n" +
		user("hugo", "mailHost: qmail2.example.com")
	checkPresetSlapd(t, "qmail-ldap", "qmail", entries, []presetCase{
		{"active", "quinn@example.com", true, "quinn", "mail.example.com", true, true},
		{"alias", "q.alias@example.com", true, "quinn", "mail.example.com", true, true},
		{"nopop", "nora@example.com", true, "nora", "mail.example.com", false, true},
		{"disabled", "dana@example.com", false, "dana@example.com", "mail.example.com", true, true},
		{"deleted", "del@example.com", false, "del@example.com", "mail.example.com", true, true},
		{"no status and mailHost", "hugo@example.com", true, "hugo", "qmail2.example.com", true, true},
	}, ldaptest.WithBaseSchemasOnly())
}

func TestPresetPostfixBookSlapd(t *testing.T) {
	user := func(uid string, extra ...string) string {
		return mailUser("PostfixBookMailAccount", uid, extra...)
	}
	entries := user("paula", "mailEnabled: TRUE", "mailAlias: p.alias@example.com") + "\n" +
		user("fritz", "mailEnabled: FALSE") + "\n" +
		user("otto")
	checkPresetSlapd(t, "postfix-book", "postfixbook", entries, []presetCase{
		{"enabled", "paula@example.com", true, "paula@example.com", "mail.example.com", true, true},
		{"alias", "p.alias@example.com", true, "paula@example.com", "mail.example.com", true, true},
		{"disabled", "fritz@example.com", false, "fritz@example.com", "mail.example.com", true, true},
		{"no mailEnabled", "otto@example.com", false, "otto@example.com", "mail.example.com", true, true},
	}, ldaptest.WithBaseSchemasOnly())
}

func TestPresetIRedMailSlapd(t *testing.T) {
	// iRedMail's users: mailUser with accountStatus and the services
	// enabledService lists ("mail" is the switch for all of them), in
	// mailbeacon.schema, which the test server loads by default.
	user := func(uid, status string, services ...string) string {
		return presetUser("mail="+uid+"@example.com", uid, []string{"mailUser"}, "mail: "+uid+"@example.com",
			"shadowAddress: "+uid+".alias@example.com", "accountStatus: "+status, "enabledService: "+strings.Join(services, "\nenabledService: "))
	}
	all := []string{"mail", "imapsecured", "pop3secured", "smtpsecured", "activesync"}
	entries := user("ida", "active", all...) + "\n" +
		user("ben", "active", "mail", "imapsecured", "smtpsecured") + "\n" +
		user("pia", "active", "mail", "imapsecured", "pop3secured", "smtpsecured") + "\n" +
		user("cleo", "disabled", all...)
	checkPresetSlapd(t, "iredmail", "", entries, []presetCase{
		{"enabled", "ida@example.com", true, "ida@example.com", "mail.example.com", true, true},
		{"alias", "ida.alias@example.com", true, "ida@example.com", "mail.example.com", true, true},
		{"no pop3, no activesync", "ben@example.com", true, "ben@example.com", "mail.example.com", false, false},
		{"no activesync", "pia@example.com", true, "pia@example.com", "mail.example.com", true, false},
		{"disabled", "cleo@example.com", false, "cleo@example.com", "mail.example.com", true, true},
	})
}
