package policy

import (
	"strings"
	"testing"

	"golang.org/x/net/idna"
)

// normalizeIDNA is NormalizeDomain as it was before plainASCIIDomain:
// IDNA for every name, then the same checks.
func normalizeIDNA(d string) (string, bool) {
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", false
	}
	a, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", false
	}
	a = strings.ToLower(a)
	if len(a) > maxDomainLen || !strings.Contains(a, ".") {
		return "", false
	}
	for _, l := range strings.Split(a, ".") {
		if !validLabel(l) {
			return "", false
		}
	}
	return a, true
}

// FuzzPlainASCIIDomain: NormalizeDomain with its ASCII fast path accepts
// exactly the names that IDNA alone accepted, and gives the same A-label.
func FuzzPlainASCIIDomain(f *testing.F) {
	for _, s := range []string{"example.com", "EXAMPLE.Com", "xn--bcher-kva.example", "ab--cd.example", "a--b.example",
		"-a.example", "a-.example", "..example.com", "example.com.", "1.2.3.4", "a_b.example", "bücher.example", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, d string) {
		got, err := NormalizeDomain(d)
		want, ok := normalizeIDNA(d)
		if (err == nil) != ok || got != want {
			t.Fatalf("NormalizeDomain(%q) = %q, %v; IDNA alone gives %q, %v", d, got, err, want, ok)
		}
	})
}

// Hostile and odd addresses, one row each, with the normalised address or
// the refusal expected. protocols/hostile_test.go sends the same kinds of
// input through every endpoint.
func TestParseAddressHostile(t *testing.T) {
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name, in, want string // want "" means refused
	}{
		{"plain", "bob@example.com", "bob@example.com"},
		{"mixed-case domain and local part", "Bob@EXAMPLE.Com", "bob@example.com"},
		{"trailing dot", "bob@example.com.", "bob@example.com"},
		{"IDN domain to A-label", "jörg@bücher.example", "jörg@xn--bcher-kva.example"},
		// Only ASCII letters are lower-cased: Ö stays as sent (RFC 6531).
		{"IDN domain upper case", "JÖRG@BÜCHER.EXAMPLE", "jÖrg@xn--bcher-kva.example"},
		{"A-label kept", "x@xn--bcher-kva.example", "x@xn--bcher-kva.example"},
		{"invalid A-label", "x@xn--zz.example", ""},
		{"ASCII-only A-label", "x@xn--abc-.example", ""},
		{"hyphens in 3rd and 4th place", "x@ab--cd.example", ""},
		{"fullwidth dot", "x@example。com", "x@example.com"},
		{"star local part (atext, searched literally)", "*@example.com", "*@example.com"},
		{"star domain", "bob@*.example.com", ""},
		{"LDAP filter close", "bob)(uid=*@example.com", ""},
		{"LDAP filter or", "x)(|(mail=*@example.com", ""},
		{"LDAP escape", `\2a@example.com`, ""},
		{"NUL byte", "bob\x00@example.com", ""},
		{"NUL in domain", "bob@exam\x00ple.com", ""},
		{"quoted local part", `"bob"@example.com`, ""},
		{"comment", "bob(x)@example.com", ""},
		{"display name", "Bob <bob@example.com>", ""},
		{"two @", "bob@evil@example.com", ""},
		{"no @", "bob.example.com", ""},
		{"empty local part", "@example.com", ""},
		{"no dot in domain", "bob@localhost", ""},
		{"address literal", "bob@[127.0.0.1]", ""},
		{"space", "bob smith@example.com", ""},
		{"CRLF", "bob\r\n@example.com", ""},
		{"invalid UTF-8", "b\xffob@example.com", ""},
		{"64-byte local part", long + "@example.com", long + "@example.com"},
		{"65-byte local part", long + "a@example.com", ""},
		{"overlong address", long + "@" + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + "." + strings.Repeat("e", 60) + ".example", ""},
		{"64-byte label", "x@" + long + ".example", ""},
		{"1 MB address", strings.Repeat("a", 1<<20) + "@example.com", ""},
		{"leading dot", ".bob@example.com", ""},
		{"double dot", "b..ob@example.com", ""},
		{"underscore domain", "bob@ex_ample.com", ""},
		{"allowed specials", "b.o+b!#$%&'*/=?^_`{|}~-@example.com", "b.o+b!#$%&'*/=?^_`{|}~-@example.com"},
		{"right-to-left domain", "x@שלום.example", "x@xn--9dbne9b.example"},
		{"mixed-direction label", "x@aשלום.example", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAddress(tc.in)
			switch {
			case tc.want == "" && err == nil:
				t.Errorf("ParseAddress(%q) = %q; want a refusal", tc.in, a)
			case tc.want != "" && err != nil:
				t.Errorf("ParseAddress(%q): %v; want %q", tc.in, err, tc.want)
			case tc.want != "" && a.String() != tc.want:
				t.Errorf("ParseAddress(%q) = %q; want %q", tc.in, a, tc.want)
			}
		})
	}
}
