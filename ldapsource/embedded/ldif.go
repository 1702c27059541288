package embedded

import (
	"bufio"
	_ "embed"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

//go:embed demo/demo.ldif
var demoLDIF string

// DemoLDIF is the demo directory in LDIF, for loading into other servers.
func DemoLDIF() string { return demoLDIF }

// Demo returns a fresh copy of the demo directory.
func Demo() *Dir {
	d, err := ParseLDIF(strings.NewReader(demoLDIF))
	if err != nil {
		panic("embedded demo.ldif: " + err.Error()) // a build-time asset; a test guards it
	}
	return d
}

// Demo directory facts that the built-in demo configuration needs.
const (
	DemoBaseDN   = "dc=example,dc=com"
	DemoBindDN   = "cn=mailbeacon,ou=services,dc=example,dc=com"
	DemoPassword = "demo-service-password"
)

// ParseLDIF reads LDIF content records (RFC 2849): "attr: value",
// "attr:: base64", folded lines and comments. Change records and URL
// values are not supported.
func ParseLDIF(r io.Reader) (*Dir, error) {
	d := &Dir{}
	var cur *Entry
	var lines []string
	lineNo := 0
	flush := func() error {
		defer func() { lines, cur = nil, nil }()
		for _, l := range lines {
			name, value, err := parseLDIFLine(l)
			if err != nil {
				return fmt.Errorf("ldif line %d: %w", lineNo, err)
			}
			if cur == nil {
				if !strings.EqualFold(name, "dn") {
					return fmt.Errorf("ldif line %d: record does not start with a dn line", lineNo)
				}
				cur = &Entry{DN: value, Attrs: map[string][]string{}}
				continue
			}
			if strings.EqualFold(name, "changetype") {
				return fmt.Errorf("ldif line %d: change records are not supported", lineNo)
			}
			cur.Attrs[name] = append(cur.Attrs[name], value)
		}
		if cur != nil {
			d.Entries = append(d.Entries, cur)
		}
		return nil
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		lineNo++
		l := strings.TrimRight(sc.Text(), "\r")
		switch {
		case l == "":
			if err := flush(); err != nil {
				return nil, err
			}
		case strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, " "):
			if len(lines) == 0 {
				return nil, fmt.Errorf("ldif line %d: continuation without a line before it", lineNo)
			}
			lines[len(lines)-1] += l[1:]
		case strings.HasPrefix(l, "version:") && len(d.Entries) == 0 && len(lines) == 0:
		default:
			lines = append(lines, l)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("ldif: %w", err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return d, nil
}

func parseLDIFLine(l string) (name, value string, err error) {
	i := strings.IndexByte(l, ':')
	if i <= 0 {
		return "", "", fmt.Errorf("no attribute name in %q", l)
	}
	name, rest := l[:i], l[i+1:]
	switch {
	case strings.HasPrefix(rest, ":"):
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest[1:]))
		if err != nil {
			return "", "", fmt.Errorf("%s: bad base64: %w", name, err)
		}
		return name, string(b), nil
	case strings.HasPrefix(rest, "<"):
		return "", "", fmt.Errorf("%s: URL values are not supported", name)
	}
	return name, strings.TrimLeft(rest, " "), nil
}
