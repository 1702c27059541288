package embedded

import (
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestDemoLDIF(t *testing.T) {
	d := Demo()
	byUID := map[string]*Entry{}
	for _, e := range d.Entries {
		if uid := e.Get("uid"); len(uid) > 0 {
			byUID[uid[0]] = e
		}
	}
	for uid, mail := range map[string]string{"alice": "alice@example.com", "bob.login": "bob@example.com", "carol": "carol@example.com", "dave": "dave@example.com"} {
		if e := byUID[uid]; e == nil || e.Get("mail")[0] != mail {
			t.Errorf("demo entry %s missing or wrong mail", uid)
		}
	}
	if got := byUID["dave"].Get("displayName")[0]; got != `Dave <Ops> & "Smith" *) Über` {
		t.Errorf("base64 value decoded to %q", got)
	}
	if !d.Bind(DemoBindDN, DemoPassword) || d.Bind(DemoBindDN, "") || d.Bind(DemoBindDN, "wrong") ||
		d.Bind(DemoBindDN, strings.ToUpper(DemoPassword)) {
		t.Error("service account bind misbehaves")
	}
}

func TestParseLDIF(t *testing.T) {
	d, err := ParseLDIF(strings.NewReader("version: 1\n# comment\ndn: cn=a,dc=x\ncn: a\ndescription: long\n  folded\n\n\ndn: cn=b,dc=x\ncn:: Yg==\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Entries) != 2 || d.Entries[0].Get("description")[0] != "long folded" || d.Entries[1].Get("CN")[0] != "b" {
		t.Errorf("parsed %+v %+v", d.Entries[0], d.Entries[1])
	}
	for in, errHas := range map[string]string{
		"cn: a\n":                         "does not start with a dn line",
		"dn: cn=a\nchangetype: add\n":     "change records",
		"dn: cn=a\njpegPhoto:< file:///x": "URL values",
		"dn: cn=a\ncn:: !!!\n":            "bad base64",
		" continued\n":                    "continuation",
		"dn: cn=a\nnocolon\n":             "no attribute name",
	} {
		if _, err := ParseLDIF(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), errHas) {
			t.Errorf("ParseLDIF(%q) = %v, want %q", in, err, errHas)
		}
	}
}

func TestSearchFilters(t *testing.T) {
	d := Demo()
	for filter, want := range map[string]string{
		"(&(objectClass=mailUser)(|(mail=A.Example@example.com)(shadowAddress=A.Example@example.com)))": "alice",
		"(&(accountStatus=active)(enabledService=pop3secured))":                                         "alice",
		"(&(objectClass=mailUser)(!(accountStatus=active)))":                                            "carol",
		"(mailHost=*)":                   "dave",
		"(mail=bo*)":                     "bob.login",
		"(mail=*@example.com)":           "alice,bob.login,carol,dave",
		"(mail=\\2a@example.com)":        "",
		"(displayName=Dave <Ops>*\\2a*)": "dave",
	} {
		entries, err := d.Search(DemoBaseDN, 2, filter)
		if err != nil {
			t.Fatalf("%s: %v", filter, err)
		}
		var uids []string
		for _, e := range entries {
			uids = append(uids, e.Get("uid")[0])
		}
		if strings.Join(uids, ",") != want {
			t.Errorf("%s: got %v, want %s", filter, uids, want)
		}
	}
	if _, err := ldap.CompileFilter("(memberOf:1.2.840.113556.1.4.1941:=cn=x)"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Search(DemoBaseDN, 2, "(memberOf:1.2.840.113556.1.4.1941:=cn=x)"); err == nil {
		t.Error("unsupported matching rule must be an error, not a silent miss")
	}
}
