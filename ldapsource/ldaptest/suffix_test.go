package ldaptest

import (
	"slices"
	"testing"
)

// Records go to the naming context their DN lies under, whatever the
// DN's case, folding or encoding.
func TestSplitLDIF(t *testing.T) {
	ldif := "dn: dc=example,dc=com\nobjectClass: top\n\n" +
		"dn: cn=default,cn=cos,CN=Zimbra\ncn: default\n\n" +
		"dn: cn=students,cn=cos,cn=zi\n mbra\ncn: students\n\n" +
		"dn:: Y249emltYnJh\nobjectClass: organizationalRole\n\n" + // cn=zimbra
		"dn: cn=notzimbra\ncn: x\n"
	main, per := splitLDIF(ldif, []string{"cn=zimbra"})
	var got []string
	for _, rec := range []string{main, per[0]} {
		var dns []string
		for _, r := range splitRecords(rec) {
			dns = append(dns, recordDN(r))
		}
		got = append(got, dns...)
		got = append(got, "|")
	}
	want := []string{"dc=example,dc=com", "cn=notzimbra", "|", "cn=default,cn=cos,CN=Zimbra", "cn=students,cn=cos,cn=zimbra", "cn=zimbra", "|"}
	if !slices.Equal(got, want) {
		t.Errorf("split %q\nwant  %q", got, want)
	}
	if m, p := splitLDIF(ldif, nil); m != ldif || p != nil {
		t.Errorf("without suffixes the LDIF changed")
	}
}
