package ldapsource

import (
	"slices"
	"testing"
)

func TestConfusableExactMatch(t *testing.T) {
	alice := &Entry{DN: "uid=alice", Attributes: map[string][]string{
		"uid": {"alice"}, "mail": {"Alice@Example.com"}, "proxyaddresses": {"SMTP:alice@example.com", "smtp:al\u00efce@example.com"},
	}}
	for _, tc := range []struct {
		tmpl      string
		q         Query
		want      bool
		wantAttrs []string
	}{
		{"(uid={local})", Query{Email: "al\u0130ce@example.com", Local: "al\u0130ce"}, false, []string{"uid"}},
		{"(uid={local})", Query{Email: "\uff41lice@example.com", Local: "\uff41lice"}, false, []string{"uid"}},
		{"(mail={email})", Query{Email: "al\u0130ce@example.com"}, false, []string{"mail"}},
		// The entry holds the non-ASCII address as asked (ASCII letters in
		// any case) in the attribute searched, with the template's prefix.
		{"(&(objectClass=user)(proxyAddresses=smtp:{email}))", Query{Email: "al\u00efce@example.com"}, true, []string{"proxyaddresses"}},
		{"(&(objectClass=user)(proxyAddresses=smtp:{email}))", Query{Email: "AL\u00efCE@example.com"}, true, []string{"proxyaddresses"}},
		{"(&(objectClass=user)(proxyAddresses=smtp:{email}))", Query{Email: "al\u00cfce@example.com"}, false, []string{"proxyaddresses"}},
		// Either branch of an alias domain's search may hold it.
		{"(|(mail={email})(proxyAddresses=smtp:{email}))",
			Query{Email: "al\u00efce@alias.example", Or: &Query{Email: "al\u00efce@example.com"}}, true, []string{"mail", "proxyaddresses"}},
		// Assertions that cannot be checked exactly do not hold.
		{"(mail={local}@*)", Query{Local: "al\u0130ce"}, false, []string{"mail"}},
		{"(uid~={local})", Query{Local: "al\u0130ce"}, false, []string{"uid"}},
		{"(uid:caseExactMatch:={local})", Query{Local: "al\u0130ce"}, false, []string{"uid"}},
		// Literal assertions and negations are the directory's business.
		{"(&(!(uid={local}))(cn=Z\u00fcrich)(mail={email}))", Query{Email: "alice@example.com", Local: "al\u0130ce"}, true, []string{"uid", "mail"}},
	} {
		f, err := parseFilter(tc.tmpl)
		if err != nil {
			t.Fatalf("%s: %v", tc.tmpl, err)
		}
		if !slices.Equal(f.addressAttrs, tc.wantAttrs) {
			t.Errorf("%s: address attributes %q, want %q", tc.tmpl, f.addressAttrs, tc.wantAttrs)
		}
		if tc.q.ascii() {
			t.Fatalf("%+v is ASCII", tc.q)
		}
		if got := f.exactMatch(f.expand(tc.q), alice); got != tc.want {
			t.Errorf("%s with %+v: exactMatch = %v, want %v", tc.tmpl, tc.q, got, tc.want)
		}
	}
	if (Query{Email: "alice@example.com", Local: "alice", Or: &Query{Email: "al\u0130ce@x.y"}}).ascii() {
		t.Error("a query whose alias branch is not ASCII counts as ASCII")
	}
}
