package policy

import (
	"fmt"
	"sort"
)

// A preset is a named starting point for Config, written in the same rule
// language that administrators use to override it.
var presets = map[string]func() Config{
	// generic: any entry the filter finds may use every service of its
	// domain; login is the mail attribute.
	"generic": func() Config {
		return Config{
			Filter:            "(mail={email})",
			DisplayName:       []string{"displayName", "cn"},
			PrimaryAddress:    "mail",
			Login:             "{mail}",
			AccountEnabled:    nil,
			ServiceRules:      map[string]*Rule{},
			HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
		}
	},
	// openldap: iRedMail-style entries (objectClass mailUser). accountStatus
	// must be "active", and enabledService lists what a user may use. The
	// "secured" values are the ones iRedMail's Dovecot and Postfix check on
	// TLS connections, and every service mailbeacon offers is TLS-secured by
	// default; "mail" is iRedMail's master switch for all mail services.
	"openldap": func() Config {
		svc := func(v string) *Rule {
			return &Rule{All: []Rule{{Has: "enabledService", Value: "mail"}, {Has: "enabledService", Value: v}}}
		}
		return Config{
			Filter:            "(&(objectClass=mailUser)(|(mail={email})(shadowAddress={email})))",
			DisplayName:       []string{"displayName", "cn"},
			PrimaryAddress:    "mail",
			Login:             "{mail}",
			AccountEnabled:    &Rule{Equals: "accountStatus", Value: "active"},
			HostOverrideKinds: []string{string(IMAP), string(POP3), string(SMTP)},
			ServiceRules: map[string]*Rule{
				string(IMAP):       svc("imapsecured"),
				string(POP3):       svc("pop3secured"),
				string(SMTP):       svc("smtpsecured"),
				string(ActiveSync): {Has: "enabledService", Value: "activesync"},
			},
		}
	},
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns a fresh copy of the named preset.
func Preset(name string) (Config, error) {
	p, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (one of %v)", name, PresetNames())
	}
	return p(), nil
}
