package main

import (
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// Values from the directory reach the file as quoted strings and comments
// that hold no line break: whatever the directory says, the file reads
// back as init meant it.
func TestInitConfigTextFromHostileDirectory(t *testing.T) {
	for _, tc := range []struct{ name, baseDN, vendor string }{
		{"quotes and hash", `o="x" # y,dc=example,dc=com`, "Vendor # 1"},
		{"new lines", "dc=a\n  bind_dn: cn=evil\n,dc=com", "OpenLDAP\nldap:\n  bind_dn: cn=evil"},
		{"backslashes and non-ASCII", `cn=Ünïcode\,x\\y,dc=example,dc=com`, "Dir\u2028ectory\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := &initRun{
				flags:    initFlags{out: "mailbeacon.yaml", passwordFile: "/etc/mailbeacon/ldap-password"},
				ldap:     ldapsource.Config{BindDN: "cn=mailbeacon,ou=services,dc=example,dc=com", CAFile: "/etc/ssl/ca \"x\".pem"},
				probe:    &ldapsource.Probe{},
				vendor:   tc.vendor,
				baseDN:   tc.baseDN,
				baseNote: "guessed: " + tc.baseDN,
				preset:   "openldap",
				presetOf: tc.vendor,
				tlsNote:  tc.vendor,
				domains:  []initDomain{{name: "example.com", host: "mail.example.com", hostNote: "guessed: " + tc.vendor}},
				domainOf: tc.vendor,
				missing:  []string{tc.vendor, tc.baseDN},
			}
			text := in.configText()
			cfg, err := loadConfig(strings.NewReader(text), "init test")
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			if cfg.LDAP.BaseDN != tc.baseDN || cfg.LDAP.BindDN != in.ldap.BindDN || cfg.LDAP.CAFile != in.ldap.CAFile ||
				cfg.Policy.Preset != "openldap" || len(cfg.Domains) != 1 || cfg.Domains[0].Name != "example.com" {
				t.Errorf("read back: base %q bind %q ca %q preset %q domains %+v\n%s", cfg.LDAP.BaseDN, cfg.LDAP.BindDN, cfg.LDAP.CAFile, cfg.Policy.Preset, cfg.Domains, text)
			}
			for _, l := range strings.Split(text, "\n") {
				if len(l) > 100 && strings.HasPrefix(strings.TrimSpace(l), "#") && !strings.Contains(l, "mailbeacon ") {
					t.Errorf("comment line of %d characters: %q", len(l), l)
				}
			}
		})
	}
}
