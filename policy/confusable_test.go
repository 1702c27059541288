package policy

import (
	"context"
	"strings"
	"testing"
)

// confusables are addresses that Unicode case mapping, case folding or
// normalisation (NFC, NFKC) would turn into the ASCII address next to them,
// or that only look like it. None may reach that account.
var confusables = []struct{ name, addr, ascii string }{
	{"U+0130 capital I with dot", "al\u0130ce@example.com", "alice@example.com"},
	{"U+0130 in an upper-case address", "AL\u0130CE@EXAMPLE.COM", "alice@example.com"},
	{"U+0131 dotless i", "al\u0131ce@example.com", "alice@example.com"},
	{"U+0069 U+0307 (full case folding of U+0130)", "ali\u0307ce@example.com", "alice@example.com"},
	{"U+212A Kelvin sign", "\u212aim@example.com", "kim@example.com"},
	{"U+017F long s", "\u017fam@example.com", "sam@example.com"},
	{"U+FF41 fullwidth a", "\uff41lice@example.com", "alice@example.com"},
	{"fullwidth upper case", "\uff21\uff2c\uff29\uff23\uff25@example.com", "alice@example.com"},
	{"combining acute after a", "a\u0301lice@example.com", "alice@example.com"},
	{"precomposed a acute", "\u00e1lice@example.com", "alice@example.com"},
	{"U+034F combining grapheme joiner", "al\u034fice@example.com", "alice@example.com"},
	{"U+00DF sharp s", "stra\u00dfe@example.com", "strasse@example.com"},
	{"U+1E9E capital sharp s", "STRA\u1e9eE@example.com", "strasse@example.com"},
	{"U+0430 Cyrillic a", "\u0430lice@example.com", "alice@example.com"},
}

func TestConfusableParseAddressKeepsNonASCII(t *testing.T) {
	for _, tc := range confusables {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAddress(tc.addr)
			if err != nil {
				t.Fatalf("ParseAddress(%q): %v", tc.addr, err)
			}
			if lowerASCII(a.String()) == tc.ascii {
				t.Fatalf("ParseAddress(%q) = %q: folded into the ASCII address %q", tc.addr, a, tc.ascii)
			}
			// Only A-Z changed: every other byte is the one sent.
			local := tc.addr[:strings.LastIndexByte(tc.addr, '@')]
			if a.Local != lowerASCII(local) {
				t.Errorf("local part %q, sent %q: changed beyond ASCII letters", a.Local, local)
			}
		})
	}
	for in, want := range map[string]string{
		"Alice@Example.COM":             "alice@example.com",
		"J\u00d6RG@example.com":         "j\u00d6rg@example.com",
		"j\u00f6rg@b\u00fccher.example": "j\u00f6rg@xn--bcher-kva.example",
	} {
		if a, err := ParseAddress(in); err != nil || a.String() != want {
			t.Errorf("ParseAddress(%q) = %q, %v; want %q", in, a, err, want)
		}
	}
}

// TestConfusableNeverReachesASCIIAccount resolves every look-alike against
// a directory holding the ASCII accounts: the search sent never names the
// ASCII address, and the answer is the unknown address's.
func TestConfusableNeverReachesASCIIAccount(t *testing.T) {
	r, dir, _ := newTestResolver(t, DefaultCacheConfig())
	dir.set(func(f *fakeDirectory) {
		for _, a := range []string{"alice", "kim", "sam", "strasse"} {
			f.entries[a+"@example.com"] = entry(map[string][]string{"uid": {a + ".login"}, "accountStatus": {"active"},
				"displayName": {"The real " + a}, "enabledService": {"mail", "imapsecured", "smtpsecured"}})
		}
	})
	for _, tc := range confusables {
		t.Run(tc.name, func(t *testing.T) {
			before := len(dir.queries)
			a, err := r.Resolve(context.Background(), mustAddr(t, tc.addr))
			if err != nil {
				t.Fatal(err)
			}
			dir.mu.Lock()
			sent := dir.queries[before:]
			dir.mu.Unlock()
			if len(sent) > 1 {
				t.Fatalf("%d searches, want at most 1 (none when an earlier row cached the same address)", len(sent))
			}
			asciiLocal := tc.ascii[:strings.IndexByte(tc.ascii, '@')]
			for _, q := range sent {
				if lowerASCII(q.Email) == tc.ascii || lowerASCII(q.Local) == asciiLocal {
					t.Errorf("searched %q (local %q): the ASCII account's address", q.Email, q.Local)
				}
			}
			if a.Known || a.DisplayName != "" || strings.HasSuffix(a.Services[0].Login, ".login") {
				t.Errorf("%q got known=%v display name %q login %q", tc.addr, a.Known, a.DisplayName, a.Services[0].Login)
			}
		})
	}
	// The ASCII accounts still answer, in any ASCII letter case.
	a, err := r.Resolve(context.Background(), mustAddr(t, "ALICE@example.com"))
	if err != nil || !a.Known || a.Services[0].Login != "alice.login" {
		t.Fatalf("ALICE@example.com: %v, %+v", err, a)
	}
}

// A non-ASCII local part reaches the directory as sent: not folded, not
// normalised.
func TestConfusableNonASCIIPassedThrough(t *testing.T) {
	r, dir, _ := newTestResolver(t, DefaultCacheConfig())
	for _, in := range []string{"j\u00f6rg@example.com", "J\u00d6RG@example.com", "jo\u0308rg@example.com", "\u0437\u043e\u044f@example.com"} {
		before := len(dir.queries)
		if _, err := r.Resolve(context.Background(), mustAddr(t, in)); err != nil {
			t.Fatal(err)
		}
		want := lowerASCII(in[:strings.LastIndexByte(in, '@')])
		if q := dir.queries[before]; q.Local != want || q.Email != want+"@example.com" {
			t.Errorf("%q searched as %q (local %q), want local %q", in, q.Email, q.Local, want)
		}
	}
}

// lowerASCII lower-cases A-Z only: the test's own, so that it does not
// depend on the code under test.
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}
