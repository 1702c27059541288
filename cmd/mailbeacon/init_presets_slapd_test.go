package main

import (
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// init against the stacks whose presets came after it: each schema is
// recognised, the stack's preset written, and the written file answers
// the users as their entries say.
func TestInitSlapdPresetOfEachStack(t *testing.T) {
	for _, tc := range []struct {
		preset, schema, stack string
		entries               []string
		users                 []initUser
	}{
		{
			preset: "qmail-ldap", schema: "qmail", stack: "qmail-ldap",
			entries: []string{
				mailUser("qmailUser", "quinn", "accountStatus: active"),
				mailUser("qmailUser", "nora", "accountStatus: nopop"),
				mailUser("qmailUser", "dana", "accountStatus: disabled"),
			},
			users: []initUser{
				{addr: "quinn@example.com", services: "imap pop3 smtp", login: "quinn", enabled: true},
				{addr: "nora@example.com", services: "imap smtp", login: "nora", enabled: true},
				{addr: "dana@example.com", services: "imap pop3 smtp"},
			},
		},
		{
			preset: "postfix-book", schema: "postfixbook", stack: "postfix-book",
			entries: []string{
				mailUser("PostfixBookMailAccount", "paula", "mailEnabled: TRUE"),
				mailUser("PostfixBookMailAccount", "fritz", "mailEnabled: FALSE"),
				mailUser("PostfixBookMailAccount", "otto", "mailEnabled: TRUE"),
			},
			users: []initUser{
				{addr: "paula@example.com", services: "imap pop3 smtp", login: "paula@example.com", enabled: true},
				{addr: "fritz@example.com", services: "imap pop3 smtp"},
				{addr: "otto@example.com", services: "imap pop3 smtp", login: "otto@example.com", enabled: true},
			},
		},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			srv := ldaptest.Slapd(t, ldaptest.WithBaseSchemasOnly(), ldaptest.WithSchema(ldaptest.Schema(tc.schema)),
				ldaptest.WithLDIF(presetBaseLDIF+"\n"+strings.Join(tc.entries, "\n")))
			pw, file := initPaths(t)
			stdout := runInitOK(t, srv, pw, file)
			if text := readText(t, file); !strings.Contains(text, `preset: "`+tc.preset+`"`) {
				t.Errorf("the file names no preset %s:\n%s", tc.preset, text)
			}
			if !strings.Contains(stdout, "Mail schema: "+tc.stack) {
				t.Errorf("init's output does not name %s:\n%s", tc.stack, stdout)
			}
			checkInitFile(t, file, stdout, tc.users)
		})
	}
}
