package policy

import (
	"fmt"
	"strings"
)

// template is a template over an entry such as "{uid}",
// "{userPrincipalName}" or "EXAMPLE\\{sAMAccountName}". Placeholders name
// directory attributes; {email}, {local} and {domain} stand for the asked
// address. A placeholder may strip a prefix from the value, ignoring case:
// {targetAddress|strip_prefix:smtp:} is "bob@tenant.mail.onmicrosoft.com"
// for a targetAddress of "SMTP:bob@tenant.mail.onmicrosoft.com" (and for
// one without the prefix).
type template struct {
	parts []templatePart
}

type templatePart struct {
	literal string
	attr    string // placeholder name when literal is ""
	strip   string // prefix to strip from the value, ignoring case
}

// stripPrefixFilter is the one filter a placeholder takes.
const stripPrefixFilter = "strip_prefix:"

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
		part, err := parsePlaceholder(name)
		if err != nil {
			return template{}, err
		}
		t.parts = append(t.parts, part)
		s = s[open+end+1:]
	}
	return t, nil
}

// parsePlaceholder reads "attr" or "attr|strip_prefix:PREFIX".
func parsePlaceholder(s string) (templatePart, error) {
	name, filter, hasFilter := strings.Cut(s, "|")
	if name == "" || strings.ContainsAny(name, "{ ") {
		return templatePart{}, fmt.Errorf("bad placeholder {%s}", s)
	}
	part := templatePart{attr: name}
	if !hasFilter {
		return part, nil
	}
	prefix, ok := strings.CutPrefix(filter, stripPrefixFilter)
	if !ok || prefix == "" {
		return templatePart{}, fmt.Errorf("bad placeholder {%s}: the one filter is |%sPREFIX, e.g. {targetAddress|strip_prefix:smtp:}", s, stripPrefixFilter)
	}
	part.strip = prefix
	return part, nil
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
		var val string
		if f, ok := addressPlaceholders[strings.ToLower(p.attr)]; ok {
			val = f(addr)
		} else {
			v := e.Values(p.attr)
			if len(v) == 0 || strings.TrimSpace(v[0]) == "" {
				return "", fmt.Errorf("attribute %s is missing", p.attr)
			}
			val = strings.TrimSpace(v[0])
		}
		if n := len(p.strip); n > 0 && len(val) >= n && strings.EqualFold(val[:n], p.strip) {
			val = val[n:]
		}
		b.WriteString(val)
	}
	return b.String(), nil
}
