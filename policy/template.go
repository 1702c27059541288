package policy

import (
	"fmt"
	"strings"
)

// template is a login-name template such as "{uid}", "{userPrincipalName}"
// or "EXAMPLE\\{sAMAccountName}". Placeholders name directory attributes;
// {email}, {local} and {domain} stand for the asked address.
type template struct {
	parts []templatePart
}

type templatePart struct {
	literal string
	attr    string // placeholder name when literal is ""
}

var addressPlaceholders = map[string]func(Address) string{
	"email":  Address.String,
	"local":  func(a Address) string { return a.Local },
	"domain": func(a Address) string { return a.Domain },
}

func parseTemplate(s string) (template, error) {
	if strings.TrimSpace(s) == "" {
		return template{}, fmt.Errorf("empty template: use e.g. \"{uid}\" or \"{mail}\"")
	}
	var t template
	for s != "" {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			if strings.ContainsRune(s, '}') {
				return template{}, fmt.Errorf("unmatched } in template")
			}
			t.parts = append(t.parts, templatePart{literal: s})
			break
		}
		if open > 0 {
			if strings.ContainsRune(s[:open], '}') {
				return template{}, fmt.Errorf("unmatched } in template")
			}
			t.parts = append(t.parts, templatePart{literal: s[:open]})
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return template{}, fmt.Errorf("unclosed { in template")
		}
		name := s[open+1 : open+end]
		if name == "" || strings.ContainsAny(name, "{ ") {
			return template{}, fmt.Errorf("bad placeholder {%s}", name)
		}
		t.parts = append(t.parts, templatePart{attr: name})
		s = s[open+end+1:]
	}
	return t, nil
}

// attributes lists the directory attributes the template reads.
func (t template) attributes() []string {
	var out []string
	for _, p := range t.parts {
		if p.literal == "" {
			if _, ok := addressPlaceholders[strings.ToLower(p.attr)]; !ok {
				out = append(out, p.attr)
			}
		}
	}
	return out
}

func (t template) expand(addr Address, e Entry) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.literal != "" {
			b.WriteString(p.literal)
			continue
		}
		if f, ok := addressPlaceholders[strings.ToLower(p.attr)]; ok {
			b.WriteString(f(addr))
			continue
		}
		v := e.Values(p.attr)
		if len(v) == 0 || strings.TrimSpace(v[0]) == "" {
			return "", fmt.Errorf("attribute %s is missing", p.attr)
		}
		b.WriteString(strings.TrimSpace(v[0]))
	}
	return b.String(), nil
}
