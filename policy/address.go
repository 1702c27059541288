package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Limits from RFC 5321 §4.5.3.1: 64 octets of local part, 255 of domain, and
// a path of 256 octets including the angle brackets, so 254 for the address.
const (
	maxLocalLen   = 64
	maxDomainLen  = 253
	maxAddressLen = 254
)

// ErrInvalidAddress is wrapped by every error ParseAddress returns.
var ErrInvalidAddress = errors.New("invalid e-mail address")

// Address is a validated, normalised e-mail address. The domain is lower-case
// ASCII (IDNs in their A-label form). The local part has its ASCII letters
// lower-cased, since directories match mail attributes case-insensitively and
// the cache must not hold one account under several keys; every other
// character stays as sent (RFC 6531). Unicode case mapping or normalisation
// would fold look-alikes into ASCII accounts: U+0130 and U+212A lower-case
// to i and k, U+212A is canonically K, fullwidth letters are compatibly ASCII.
type Address struct {
	Local  string
	Domain string
}

func (a Address) String() string { return a.Local + "@" + a.Domain }

// ParseAddress validates s as a dot-atom address (RFC 5322 §3.4.1, with
// RFC 6531 UTF-8 allowed in the local part). Quoted local parts, comments,
// address literals and display names are refused: no mail client sends them
// to autoconfiguration, and refusing them keeps odd bytes away from LDAP.
func ParseAddress(s string) (Address, error) {
	if len(s) > maxAddressLen {
		return Address{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidAddress, maxAddressLen)
	}
	if !utf8.ValidString(s) {
		return Address{}, fmt.Errorf("%w: not UTF-8", ErrInvalidAddress)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Address{}, fmt.Errorf("%w: no @", ErrInvalidAddress)
	}
	local, domain := s[:at], s[at+1:]
	if err := checkLocal(local); err != nil {
		return Address{}, err
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Address{}, err
	}
	return Address{Local: asciiLower(local), Domain: d}, nil
}

// asciiLower maps A-Z to a-z and leaves every other byte as it is.
func asciiLower(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' })
	if i < 0 {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if c := b[i]; c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// atextSpecials are the non-alphanumeric characters RFC 5322 allows in an atom.
const atextSpecials = "!#$%&'*+-/=?^_`{|}~"

func checkLocal(local string) error {
	switch {
	case local == "":
		return fmt.Errorf("%w: empty local part", ErrInvalidAddress)
	case len(local) > maxLocalLen:
		return fmt.Errorf("%w: local part longer than %d bytes", ErrInvalidAddress, maxLocalLen)
	case local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, ".."):
		return fmt.Errorf("%w: misplaced dot in local part", ErrInvalidAddress)
	}
	for _, r := range local {
		switch {
		case r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'):
		case r == '.' || strings.ContainsRune(atextSpecials, r):
		case r >= 0x80 && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)):
		default:
			return fmt.Errorf("%w: character %q not allowed in local part", ErrInvalidAddress, r)
		}
	}
	return nil
}

// NormalizeDomain returns the lower-case A-label form of a host name, or an
// error wrapping ErrInvalidAddress. A trailing dot (fully qualified form) is
// dropped.
func NormalizeDomain(domain string) (string, error) {
	domain = strings.TrimSuffix(domain, ".")
	if domain == "" {
		return "", fmt.Errorf("%w: empty domain", ErrInvalidAddress)
	}
	ascii, ok := plainASCIIDomain(domain)
	if !ok {
		var err error
		if ascii, err = idna.Lookup.ToASCII(domain); err != nil {
			return "", fmt.Errorf("%w: domain: %v", ErrInvalidAddress, err)
		}
		ascii = strings.ToLower(ascii)
	}
	if len(ascii) > maxDomainLen {
		return "", fmt.Errorf("%w: domain longer than %d bytes", ErrInvalidAddress, maxDomainLen)
	}
	if !strings.Contains(ascii, ".") {
		return "", fmt.Errorf("%w: domain %q has no dot", ErrInvalidAddress, ascii)
	}
	for l := range strings.SplitSeq(ascii, ".") {
		if !validLabel(l) {
			return "", fmt.Errorf("%w: bad domain label %q", ErrInvalidAddress, l)
		}
	}
	return ascii, nil
}

// plainASCIIDomain lower-cases a name made only of ASCII letters, digits,
// hyphens and dots, for which IDNA's lookup mapping does nothing more, and
// reports whether it applied: every request carries a domain, and most are
// plain. Labels with "--" in their third and fourth places (A-labels such
// as xn--…, and names IDNA refuses) take the IDNA path.
// FuzzPlainASCIIDomain checks that both paths agree.
func plainASCIIDomain(d string) (string, bool) {
	upper := false
	pos := 0 // of d[i] in its label
	for i := 0; i < len(d); i, pos = i+1, pos+1 {
		switch c := d[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '.':
			pos = -1
		case c == '-':
			if pos == 3 && d[i-1] == '-' {
				return "", false
			}
		default:
			return "", false
		}
	}
	if upper {
		return strings.ToLower(d), true
	}
	return d, true
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
