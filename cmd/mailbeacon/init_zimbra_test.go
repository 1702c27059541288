package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// A Zimbra directory (ldaptest.ZimbraLDIF: two domains, two classes of
// service under cn=zimbra, a naming context of their own): init finds
// the zimbra preset, the base DN that holds the accounts and the domains
// Zimbra keeps, and the file answers each user as its entry and its
// class of service say.
func TestInitSlapdZimbra(t *testing.T) {
	srv := ldaptest.Slapd(t, ldaptest.Zimbra()...)
	pw, file := initPaths(t)
	before := srv.BindCount()
	stdout := runInitOK(t, srv, pw, file, "--sample", "20")
	t.Logf("init:\n%s", stdout)
	if n := srv.BindCount() - before; n != 1 {
		t.Errorf("init bound %d times, want once", n)
	}
	text := readText(t, file)
	for _, want := range []string{`preset: "zimbra"`, `base_dn: "dc=example,dc=com"`, `- name: "example.com"`, `- name: "school.example.com"`,
		"type: activesync", "# The domains: the Zimbra / Carbonio domain entries in the directory,"} {
		if !strings.Contains(text, want) {
			t.Errorf("the file lacks %s:\n%s", want, text)
		}
	}
	assertGuessed(t, text, "base_dn:")
	assertGuessed(t, text, `{type: imap, host: "mail.school.example.com"`)
	for _, want := range []string{"Mail schema: Zimbra / Carbonio (object class zimbraAccount, carried by entries under the base DN); the schema also has iRedMail",
		"Preset: zimbra (the preset for Zimbra / Carbonio)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("init's output lacks %q", want)
		}
	}
	checkInitFile(t, file, stdout, []initUser{
		// COS students (zimbraCOSId): no POP3, mobile sync.
		{addr: "ada@example.com", services: "imap smtp activesync", login: "ada@example.com", enabled: true},
		// No COS of its own: Zimbra's COS default, POP3 but no mobile sync.
		{addr: "bob@example.com", services: "imap pop3 smtp", login: "bob@example.com", enabled: true},
		// Its own zimbraPop3Enabled FALSE over the COS's TRUE.
		{addr: "nopop@example.com", services: "imap smtp", login: "nopop@example.com", enabled: true},
		// Its own zimbraPop3Enabled TRUE over the COS students' FALSE.
		{addr: "pop@example.com", services: "imap pop3 smtp activesync", login: "pop@example.com", enabled: true},
		// The domain's default COS, students: POP3 off from there.
		{addr: "carol@school.example.com", services: "imap smtp activesync", login: "carol@school.example.com", enabled: true},
		{addr: "locked@example.com", services: "imap pop3 smtp activesync"},
	})
	// The table's explanations say where POP3 came from.
	for _, who := range []string{"ada@example.com", "carol@school.example.com"} {
		re := regexp.MustCompile(`(?s)\n` + regexp.QuoteMeta(who) + `: account enabled[^\n]*\n(  [^\n]*\n)*?  pop3: off: zimbraPop3Enabled equals "TRUE" is false, from cos "students"\n`)
		if !re.MatchString(stdout) {
			t.Errorf("%s's pop3 is not explained by the class of service students:\n%s", who, stdout)
		}
	}
}
