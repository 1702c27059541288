package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/mailbeacon/mailbeacon/policy"
)

// configText is the configuration init writes: YAML with a comment on
// every value init found or guessed, guesses marked "# guessed:". Every
// value from the directory or the command line is written as a JSON
// string, which YAML reads as the same double-quoted string.
func (in *initRun) configText() string {
	var b strings.Builder
	line := func(indent int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	comment := func(indent int, text string) {
		for _, l := range wrapComment(text, 76-2*indent) {
			line(indent, "# %s", l)
		}
	}
	comment(0, fmt.Sprintf("mailbeacon configuration written by `mailbeacon init %s` on %s.", in.probe.URL(), time.Now().UTC().Format("2006-01-02")))
	stack := "no mail schema init knows"
	if in.stack != nil {
		stack = in.stack.describe()
	}
	comment(0, fmt.Sprintf("The directory: %s; mail schema: %s.", or(in.vendor, "vendor unknown"), stack))
	comment(0, "Lines under a \"# guessed:\" comment are init's guesses: check each one. config.example.yaml documents every key. Next:")
	for _, c := range in.nextCommands("") {
		line(0, "#   %s", c)
	}
	for _, m := range in.missing {
		comment(0, "not found: "+m)
	}

	b.WriteString("\nldap:\n")
	line(1, "urls: [%s]", q(in.probe.URL()))
	comment(1, in.tlsNote)
	line(1, "start_tls: %t", in.probe.Encryption() == "StartTLS")
	if in.ldap.CAFile != "" {
		line(1, "ca_file: %s", q(in.ldap.CAFile))
	}
	if in.ldap.ServerName != "" {
		line(1, "tls_server_name: %s", q(in.ldap.ServerName))
	}
	switch {
	case in.ldap.BindDN == "":
		comment(1, "No service account: init read anonymously. Set bind_dn and bind_password_file if the directory shows the mailboxes to its service account only.")
	default:
		line(1, "bind_dn: %s", q(in.ldap.BindDN))
		if in.flags.passwordFile != "" {
			line(1, "bind_password_file: %s", q(in.flags.passwordFile))
		} else {
			comment(1, "The password: MAILBEACON_LDAP_BIND_PASSWORD in the environment, as init read it; or bind_password_file: FILE (its first line).")
		}
	}
	comment(1, in.baseNote)
	line(1, "base_dn: %s", q(in.baseDN))

	b.WriteString("\npolicy:\n")
	comment(1, in.presetOf)
	line(1, "preset: %s", q(in.preset))
	if in.hostAttr != "" {
		if pc, _ := policy.Preset(in.preset); pc.HostAttribute != in.hostAttr {
			comment(1, in.hostNote)
			line(1, "host_attribute: %s", q(in.hostAttr))
		}
	}

	pc, _ := policy.Preset(in.preset)
	_, activesync := pc.ServiceRules[string(policy.ActiveSync)]
	_, ews := pc.ServiceRules[string(policy.EWS)]
	b.WriteString("\ndomains:\n")
	comment(1, "The domains: "+in.domainOf+".")
	for _, d := range in.domains {
		line(1, "- name: %s", q(d.name))
		comment(2, "guessed: the name mail clients show")
		line(2, "provider: %s", q(d.name))
		comment(2, d.hostNote+"; the usual ports (RFC 8314): keep only what the servers offer, best first")
		line(2, "services:")
		h := q(d.host)
		line(3, "- {type: imap, host: %s, port: 993, socket: tls}", h)
		line(3, "- {type: pop3, host: %s, port: 995, socket: tls}", h)
		line(3, "- {type: smtp, host: %s, port: 465, socket: tls}", h)
		line(3, "- {type: smtp, host: %s, port: 587, socket: starttls}", h)
		if activesync {
			line(3, "- {type: activesync, url: %s}", q("https://"+d.host+"/Microsoft-Server-ActiveSync"))
		}
		if ews {
			comment(3, "- {type: ews, url: "+q("https://"+d.host+"/EWS/Exchange.asmx")+"}   # Outlook desktop then tries an Exchange account")
		}
	}
	return b.String()
}

// q quotes s as a JSON string: a YAML double-quoted scalar with the same
// value, whatever s holds.
func q(s string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

// wrapComment breaks text into lines of at most width characters, at
// spaces; control characters (a new line from the directory) become
// spaces, so that a comment stays a comment.
func wrapComment(text string, width int) []string {
	text = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029 {
			return ' '
		}
		return r
	}, text)
	var out []string
	cur := ""
	for _, w := range strings.Fields(text) {
		switch {
		case cur == "":
			cur = w
		case len(cur)+1+len(w) > width:
			out = append(out, cur)
			cur = w
		default:
			cur += " " + w
		}
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}
