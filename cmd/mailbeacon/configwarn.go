package main

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"

	"github.com/mailbeacon/mailbeacon/policy"
)

// placeholderDomains are the names config.example.yaml writes its hosts
// and domains under: RFC 2606 reserves them for documentation, so none is
// anybody's real directory or mail server. Any name under them is a
// placeholder left in place, whatever the example says today.
var placeholderDomains = [...]string{"example.com", "example.net", "example.org"}

// placeholders walks the settings read from a file and returns a warning
// for each value naming a host or domain under placeholderDomains, led by
// its key: "ldap.urls[0]: ldap1.example.com is ...".
func placeholders(settings map[string]any) []string {
	var out []string
	walkSettings("", settings, func(key, value string) {
		for _, name := range namesIn(value) {
			if isPlaceholder(name) {
				shown := name
				if strings.Contains(strings.ToLower(value), "dc=") {
					shown = value // a DN: the whole of it is to be replaced
				}
				out = append(out, fmt.Sprintf("%s: %s is the example's placeholder (RFC 2606 reserves %s for documentation): write your own %s here", key, shown, placeholderRoot(name), what(key)))
			}
		}
	})
	sort.Strings(out)
	return out
}

func walkSettings(key string, v any, f func(key, value string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			if key != "" {
				k = key + "." + k
			}
			walkSettings(k, sub, f)
		}
	case []any:
		for i, sub := range v {
			walkSettings(fmt.Sprintf("%s[%d]", key, i), sub, f)
		}
	case string:
		f(key, v)
	}
}

// namesIn returns the host or domain names a value holds: a URL's host, a
// DN's dc= components, an address's domain, or the value as a host name.
func namesIn(s string) []string {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil && u.Hostname() != "" {
			return []string{u.Hostname()}
		}
	}
	if strings.Contains(strings.ToLower(s), "dc=") {
		var dcs []string
		for _, rdn := range strings.Split(s, ",") {
			if k, v, ok := strings.Cut(strings.TrimSpace(rdn), "="); ok && strings.EqualFold(k, "dc") {
				dcs = append(dcs, v)
			}
		}
		return []string{strings.Join(dcs, ".")}
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return []string{s[i+1:]}
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		s = h
	}
	if strings.ContainsAny(s, " /\\{}") {
		return nil
	}
	return []string{s}
}

func isPlaceholder(name string) bool {
	return placeholderRoot(name) != ""
}

// placeholderRoot returns the reserved domain name is, or is under; "" if none.
func placeholderRoot(name string) string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, d := range placeholderDomains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return d
		}
	}
	return ""
}

// what names what a key's value is, for the fix.
func what(key string) string {
	switch {
	case strings.HasPrefix(key, "ldap.urls"):
		return "directory's host"
	case strings.HasSuffix(key, "_dn"):
		return "directory's DN"
	case strings.HasPrefix(key, "domains[") && strings.HasSuffix(key, "].name"):
		return "mail domain"
	case strings.HasSuffix(key, ".host") || strings.HasSuffix(key, "_host"):
		return "server's host name"
	case strings.HasSuffix(key, "url"):
		return "server's URL"
	}
	return "value"
}

// deprecated returns a warning for each setting naming a preset by an old
// name, led by its key: the old name works, and the new one should be
// written instead.
func deprecated(cfg config) []string {
	var out []string
	for _, s := range []struct{ key, name string }{
		{"policy.preset", cfg.Policy.Preset},
		{"domain_source.preset", cfg.DomainSource.Preset},
	} {
		if n, old := policy.PresetReplacement(s.name); old {
			out = append(out, fmt.Sprintf("%s: %s is deprecated, the old name of the %s preset (the same rules): write %s", s.key, s.name, n, n))
		}
	}
	return out
}
