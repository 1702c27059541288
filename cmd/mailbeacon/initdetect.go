package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
)

// mailStack is a mail system that keeps its users in LDAP, as init
// recognises it in the schema.
type mailStack struct {
	name string
	// classes and types are the object classes and attribute types that
	// mark it; one of them defined in the schema is enough.
	classes, types []string
	// presets are the presets for it, preferred first; init takes the
	// first this mailbeacon has.
	presets []string
	// domains says where the stack keeps its domains, if it does.
	domains *domainEntries
}

// domainEntries are a stack's domain entries: the filter that finds
// them, the attribute that names the domain, and the one whose value, if
// present and not "active", says the domain is off.
type domainEntries struct{ filter, attr, status string }

// mailStacks in the order init prefers them when a schema carries
// several: the specific before iRedMail's mailUser, which other schemas
// loaded beside it may also define.
//
// The names are those the stacks' published LDAP schemas define (names
// are facts; each preset's comment cites where its attributes are
// documented). protocolSettings is the Exchange attribute the exchange
// preset reads; msExchMailboxGuid is on every Exchange mailbox.
var mailStacks = []mailStack{
	{name: "Zimbra / Carbonio", classes: []string{"zimbraAccount"}, presets: []string{"zimbra"},
		domains: &domainEntries{"(objectClass=zimbraDomain)", "zimbraDomainName", "zimbraDomainStatus"}},
	{name: "Univention UCS", classes: []string{"univentionMail"}, presets: []string{"univention"}},
	{name: "Kolab", classes: []string{"kolabInetOrgPerson"}, presets: []string{"kolab"}},
	{name: "qmail-ldap", classes: []string{"qmailUser"}, presets: []string{"qmail-ldap"}},
	{name: "postfix-book", classes: []string{"PostfixBookMailAccount"}, presets: []string{"postfix-book"}},
	{name: "iRedMail", classes: []string{"mailUser"}, presets: []string{"iredmail", "openldap"},
		domains: &domainEntries{"(objectClass=mailDomain)", "domainName", "accountStatus"}},
	{name: "Exchange attributes on Active Directory", types: []string{"msExchMailboxGuid", "protocolSettings"}, presets: []string{"exchange"}},
}

// stackFound is the stack init recognised, and by what.
type stackFound struct {
	*mailStack
	mark    string // the class or attribute found
	isClass bool
	entries bool     // an entry under the base DN carries the mark
	others  []string // other stacks the schema also defines
}

func (s *stackFound) describe() string {
	kind := "attribute"
	if s.isClass {
		kind = "object class"
	}
	out := fmt.Sprintf("%s (%s %s", s.name, kind, s.mark)
	if s.entries {
		out += ", carried by entries under the base DN"
	} else {
		out += ", but no entry under the base DN carries it"
	}
	out += ")"
	if len(s.others) > 0 {
		out += "; the schema also has " + strings.Join(s.others, ", ")
	}
	return out
}

// detectStack finds the mail stacks whose marks the schema defines. Of
// several, the first whose mark an entry under one of bases carries wins
// (one search per stack and base, size limit 1), else the first. base is
// where the winner's entry is ("" when none has one).
func detectStack(ctx context.Context, p *ldapsource.Probe, s *ldapsource.Schema, bases []string) (found *stackFound, base string) {
	if s == nil {
		return nil, ""
	}
	var all []*stackFound
	for i := range mailStacks {
		st := &mailStacks[i]
		if f := st.in(s); f != nil {
			all = append(all, f)
		}
	}
	if len(all) == 0 {
		return nil, ""
	}
	found = all[0]
search:
	for _, f := range all {
		filter := "(" + ldap.EscapeFilter(f.mark) + "=*)"
		if f.isClass {
			filter = "(objectClass=" + ldap.EscapeFilter(f.mark) + ")"
		}
		for _, b := range bases {
			if e, err := p.Search(ctx, b, ldap.ScopeWholeSubtree, filter, []string{"1.1"}, 1); err == nil && len(e) > 0 {
				f.entries, found, base = true, f, b
				break search
			}
		}
	}
	for _, f := range all {
		if f != found {
			found.others = append(found.others, f.name)
		}
	}
	return found, base
}

// in returns the stack as found in s, or nil.
func (st *mailStack) in(s *ldapsource.Schema) *stackFound {
	for _, c := range st.classes {
		if n, ok := s.Class(c); ok {
			return &stackFound{mailStack: st, mark: n, isClass: true}
		}
	}
	for _, t := range st.types {
		if n, ok := s.Type(t); ok {
			return &stackFound{mailStack: st, mark: n}
		}
	}
	return nil
}

// choosePreset returns the preset to write and why: --preset, else the
// stack's, else active-directory on Active Directory, else generic.
func choosePreset(flag string, st *stackFound, ad bool) (name, why string) {
	if flag != "" {
		return flag, "from --preset"
	}
	if st != nil {
		for _, p := range st.presets {
			if _, err := policy.Preset(p); err == nil {
				return p, "the preset for " + st.name
			}
		}
		if ad {
			return "active-directory", fmt.Sprintf("this mailbeacon has no preset %s for %s: the Active Directory one, edit its rules", st.presets[0], st.name)
		}
		return "generic", fmt.Sprintf("this mailbeacon has no preset %s for %s: generic, every entry found gets every service; write rules", st.presets[0], st.name)
	}
	if ad {
		return "active-directory", "Active Directory without a mail schema init knows"
	}
	return "generic", "no mail schema init knows: every entry found gets every service; write rules"
}
