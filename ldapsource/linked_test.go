package ldapsource_test

import (
	"strings"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

func TestPresetLinkedFilter(t *testing.T) {
	f, err := ldapsource.ParseLinkedFilter("(&(objectClass=zimbraCOS)(zimbraId={zimbraCOSId})(o={domain.o}))")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Placeholders(), " "); got != "zimbraCOSId domain.o" {
		t.Errorf("placeholders %q", got)
	}
	// A value read from an entry cannot change the filter's structure.
	got := f.Expand(func(name string) string {
		if name == "zimbraCOSId" {
			return "*)(objectClass=*"
		}
		return `a\b`
	})
	if want := `(&(objectClass=zimbraCOS)(zimbraId=\2a\29\28objectClass=\2a)(o=a\5cb))`; got != want {
		t.Errorf("expanded %s, want %s", got, want)
	}
	for _, tmpl := range []string{"(zimbraId={zimbraCOSId}", "(zimbraId={zimbraCOSId)", "(zimbraId={})", "(zimbraId=x})"} {
		if _, err := ldapsource.ParseLinkedFilter(tmpl); err == nil {
			t.Errorf("%q accepted", tmpl)
		}
	}
}
