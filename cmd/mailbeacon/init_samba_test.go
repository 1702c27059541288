package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// A Samba AD DC with Exchange's attributes: init finds the exchange
// preset by msExchMailboxGuid, and the file answers each sampled user as
// its protocolSettings and msExchOmaAdminWirelessEnable say. A wrong
// password is sent once: the DC counts one failed logon, not more.
func TestInitSambaExchange(t *testing.T) {
	srv := sambatest.DC(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "ldap-password")
	writeFile(t, pw, sambatest.ServicePassword+"\n")

	t.Run("wrong password", func(t *testing.T) {
		wrong := filepath.Join(dir, "wrong-password")
		writeFile(t, wrong, "Not-the-Passw0rd\n")
		file := filepath.Join(dir, "refused.yaml")
		code, stdout, stderr := runInit(t, "--bind-dn", sambatest.ServiceUPN, "--bind-password-file", wrong, "--ca-file", srv.CAFile, "--out", file, srv.LDAPSURL)
		if code != exitConfig || !strings.Contains(stderr, "binding: --bind-password-file: the directory refused --bind-dn with its password (AD 52e") ||
			!strings.Contains(stderr, "check --bind-dn and --bind-password-file together") {
			t.Errorf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
		}
		if bad, locked := srv.Lockout(t, sambatest.ServiceDN); bad != 1 || locked {
			t.Errorf("the DC counts %d failed logons (locked %t), want 1: init sends a refused password once", bad, locked)
		}
		if _, err := os.Stat(file); err == nil {
			t.Errorf("%s written", file)
		}
	})

	file := filepath.Join(dir, "mailbeacon.yaml")
	code, stdout, stderr := runInit(t, "--bind-dn", sambatest.ServiceUPN, "--bind-password-file", pw, "--ca-file", srv.CAFile, "--sample", "20", "--out", file, srv.URL)
	t.Logf("init:\n%s", stdout)
	if code != 0 {
		t.Fatalf("init: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	text := readText(t, file)
	for _, want := range []string{`preset: "exchange"`, "start_tls: true", `base_dn: "DC=example,DC=test"`, `- name: "example.test"`,
		`bind_dn: "` + sambatest.ServiceUPN + `"`, "type: activesync"} {
		if !strings.Contains(text, want) {
			t.Errorf("the file lacks %s:\n%s", want, text)
		}
	}
	assertGuessed(t, text, "base_dn:")
	assertGuessed(t, text, `{type: imap, host: "mail.example.test"`)
	for _, want := range []string{"Directory: " + srv.URL + ": Samba Active Directory", "StartTLS: the directory takes it, and its certificate verified",
		"Mail schema: Exchange attributes on Active Directory (attribute msExchMailboxGuid, carried by entries under the base DN)",
		"Preset: exchange (the preset for Exchange attributes on Active Directory)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("init's output lacks %q", want)
		}
	}
	// The lookup to run next is for the first enabled account of the table.
	for _, m := range tableRow.FindAllStringSubmatch(stdout, -1) {
		if !strings.Contains(m[3], "(domain defaults") {
			if want := "  mailbeacon lookup --config " + file + " " + m[1] + "\n"; !strings.Contains(stdout, want) {
				t.Errorf("init's output lacks %q", want)
			}
			break
		}
	}
	checkInitFile(t, file, stdout, []initUser{
		{addr: "alice@example.test", services: "imap pop3 smtp activesync", login: "asmith@example.test", enabled: true},
		// protocolSettings POP3§0, msExchOmaAdminWirelessEnable 4.
		{addr: "bob@example.test", services: "imap smtp", login: "bob.login@example.test", enabled: true},
		// protocolSettings IMAP4§0 (and POP3§1).
		{addr: "erin@example.test", services: "pop3 smtp activesync", login: "erin@example.test", enabled: true},
		{addr: "carol@example.test", services: "imap pop3 smtp activesync"},
	})
}
