package ldapsource

import (
	"testing"
	"unicode/utf8"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// FuzzFilterExpand: whatever a request puts into a placeholder, the
// expanded filter compiles to the template's structure, with the value as
// it was asked for in every assertion: nothing can add a clause, a
// wildcard or an escape of its own.
func FuzzFilterExpand(f *testing.F) {
	for _, s := range []string{"bob@example.com", "*@example.com", "x)(|(mail=*", `\2a`, "a\x00b", "(", ")", "*", "jörg@xn--bcher-kva.example", ""} {
		f.Add(s)
	}
	tmpl, err := parseFilter("(&(objectClass=mailUser)(|(mail={email})(uid={local})(shadowAddress={email})))")
	if err != nil {
		f.Fatal(err)
	}
	want := []string{"mailUser", "", "", ""}
	f.Fuzz(func(t *testing.T, v string) {
		if !utf8.ValidString(v) {
			return // ParseAddress refuses it before any lookup
		}
		filter := tmpl.expand(Query{Email: v, Local: v, Domain: v})
		p, err := ldap.CompileFilter(filter)
		if err != nil {
			t.Fatalf("value %q: filter %q does not compile: %v", v, filter, err)
		}
		// (& (objectClass=…) (| (mail=v) (uid=v) (shadowAddress=v)))
		if p.Tag != ldap.FilterAnd || len(p.Children) != 2 || p.Children[1].Tag != ldap.FilterOr || len(p.Children[1].Children) != 3 {
			t.Fatalf("value %q changed the filter's structure: %s", v, filter)
		}
		eqs := append([]*ber.Packet{p.Children[0]}, p.Children[1].Children...)
		for i, eq := range eqs {
			if eq.Tag != ldap.FilterEqualityMatch || len(eq.Children) != 2 {
				t.Fatalf("value %q: clause %d is not an equality match: %s", v, i, filter)
			}
			got := eq.Children[1].Data.String()
			if w := want[i]; (i == 0 && got != w) || (i > 0 && got != v) {
				t.Fatalf("value %q: clause %d asserts %q: %s", v, i, got, filter)
			}
		}
	})
}
