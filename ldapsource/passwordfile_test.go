package ldapsource

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A password file that is missing or unreadable is named with the key,
// the path, and the commands that create it root-owned, mode 0600.
func TestBindPasswordFileErrorGivesTheCommands(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "ldap-password")
	unreadable := filepath.Join(dir, "unreadable")
	if err := os.WriteFile(unreadable, []byte("x\n"), 0); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file string
		is         error
		want       []string
	}{
		{"missing", missing, fs.ErrNotExist, []string{
			`ldap.bind_password_file: "` + missing + `" does not exist`,
			"install -m 0600 -o root -g root /dev/null " + missing,
			"printf '%s\\n' 'the-service-password' > " + missing,
			"credential",
		}},
		{"a directory", dir, nil, []string{`ldap.bind_password_file: "` + dir + `": `, "is a directory"}},
	}
	if os.Getuid() != 0 { // root reads any file
		cases = append(cases, struct {
			name, file string
			is         error
			want       []string
		}{"unreadable", unreadable, fs.ErrPermission, []string{`ldap.bind_password_file: "` + unreadable + `" cannot be read by this user`, "chmod 0600 " + unreadable}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.URLs, c.BaseDN, c.Filter = []string{"ldap://127.0.0.1:1"}, "dc=corp,dc=test", "(mail={email})"
			c.BindDN, c.BindPasswordFile = "cn=svc,dc=corp,dc=test", tc.file
			_, err := New(c, nil, nil, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error does not wrap %v: %v", tc.is, err)
			}
		})
	}
}
