package ldapsource_test

import (
	"errors"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// A user whose uid and name are not ASCII (mail is IA5 in core.schema).
const jorgLDIF = `dn: uid=j` + "\u00f6" + `rg,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: j` + "\u00f6" + `rg
cn: J` + "\u00f6" + `rg
sn: J` + "\u00f6" + `rg
mail: joerg@example.com
`

// TestConfusableLookupSlapd searches slapd by uid, whose caseIgnoreMatch
// folds U+0130 to i and fullwidth letters to ASCII: the look-alikes of
// alice reach her entry in the directory, and Lookup must not return it.
func TestConfusableLookupSlapd(t *testing.T) {
	t.Parallel()
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(jorgLDIF))
	cfg := slapdConfig(srv.CAFile, true, srv.URL)
	cfg.Filter = "(&(objectClass=inetOrgPerson)(|(uid={local})(cn={local})(mail={email})))"
	// displayName only: uid and cn, which the check needs, are fetched
	// for non-ASCII addresses alone.
	src := slapdSource(t, cfg, "displayName")
	if err := ping(src); err != nil {
		t.Fatal(err)
	}
	lookAlikes := []string{
		"al\u0130ce", "ali\u0307ce", "al\u0131ce", "\uff41lice", "\uff41\uff4c\uff49\uff43\uff45",
		"a\u0301lice", "\u00e1lice", "al\u034fice", "\u0430lice",
	}
	before := srv.SearchCount()
	for _, local := range lookAlikes {
		e, err := lookup(src, local+"@example.com")
		if !errors.Is(err, ldapsource.ErrNotFound) {
			t.Errorf("Lookup(%q) = %v, %v; want ErrNotFound", local+"@example.com", e, err)
		}
	}
	searches := srv.SearchCount() - before
	t.Logf("%d look-alikes of alice: %d searches reached slapd", len(lookAlikes), searches)
	if searches != len(lookAlikes) {
		t.Errorf("%d searches for %d look-alikes, want one each", searches, len(lookAlikes))
	}

	// A genuinely non-ASCII local part reaches the directory intact and
	// finds its entry; ASCII addresses are found as before.
	for email, wantDN := range map[string]string{
		"j\u00f6rg@example.com": "uid=j\u00f6rg,ou=people,dc=example,dc=com",
		"joerg@example.com":     "uid=j\u00f6rg,ou=people,dc=example,dc=com",
		"alice@example.com":     aliceDN,
	} {
		e, err := lookup(src, email)
		if err != nil || e.DN != wantDN {
			t.Errorf("Lookup(%q) = %v, %v; want %s", email, e, err, wantDN)
		}
	}
	// Not folded either way: upper-case Ö is not ö.
	if e, err := lookup(src, "j\u00d6rg@example.com"); !errors.Is(err, ldapsource.ErrNotFound) {
		t.Errorf("Lookup(jÖrg) = %v, %v; want ErrNotFound", e, err)
	}
}
