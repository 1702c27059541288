package policy

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" = invalid
	}{
		{"bob@example.com", "bob@example.com"},
		{"Bob@Example.COM", "bob@example.com"},
		{"bob@example.com.", "bob@example.com"},
		{"first.last+tag@sub.example.com", "first.last+tag@sub.example.com"},
		{"*@example.com", "*@example.com"}, // legal atext; escaped before LDAP
		{"o'brien@example.com", "o'brien@example.com"},
		{"jörg@bücher.example", "jörg@xn--bcher-kva.example"},
		{"a@xn--bcher-kva.example", "a@xn--bcher-kva.example"},
		{"a@b@example.com", ""},
		{"", ""},
		{"bob", ""},
		{"@example.com", ""},
		{"bob@", ""},
		{"bob@localhost", ""},
		{".bob@example.com", ""},
		{"bob.@example.com", ""},
		{"b..ob@example.com", ""},
		{"bo b@example.com", ""},
		{"bob(x)@example.com", ""},
		{`bo\b@example.com`, ""},
		{"bo\x00b@example.com", ""},
		{`"quoted"@example.com`, ""},
		{"bob@exa_mple.com", ""},
		{"bob@-example.com", ""},
		{"bob@example..com", ""},
		{"bob@[127.0.0.1]", ""},
		{"bob@example.com)(uid=*", ""},
		{"\xff@example.com", ""},
		{strings.Repeat("a", 65) + "@example.com", ""},
		{strings.Repeat("a", 64) + "@example.com", strings.Repeat("a", 64) + "@example.com"},
		{"a@" + strings.Repeat("b", 64) + ".com", ""},
		{"a@" + strings.Repeat(strings.Repeat("b", 60)+".", 5) + "com", ""},
	} {
		got, err := ParseAddress(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseAddress(%q) = %q, want an error", tc.in, got)
		case tc.want == "" && !errors.Is(err, ErrInvalidAddress):
			t.Errorf("ParseAddress(%q) error %v does not wrap ErrInvalidAddress", tc.in, err)
		case tc.want != "" && err != nil:
			t.Errorf("ParseAddress(%q): %v", tc.in, err)
		case tc.want != "" && got.String() != tc.want:
			t.Errorf("ParseAddress(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParseAddress: no panic, and anything accepted is short, valid UTF-8,
// free of LDAP filter metacharacters other than '*', and stable when parsed again.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"bob@example.com", "jörg@bücher.example", "*@example.com", "a(b)@c.d", "x@y", "\x00@a.b", ".a@b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		out := a.String()
		if len(out) > maxLocalLen+1+maxDomainLen || !utf8.ValidString(out) || strings.ContainsAny(out, "()\\\x00 \"") {
			t.Fatalf("ParseAddress(%q) accepted %q", s, out)
		}
		again, err := ParseAddress(out)
		if err != nil || again != a {
			t.Fatalf("not stable: %q -> %q -> %q, %v", s, out, again, err)
		}
	})
}
