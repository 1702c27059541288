package ldapsource

import (
	"os"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestFilterTemplateEscapes(t *testing.T) {
	f, err := parseFilter("(&(objectClass=mailUser)(|(mail={email})(uid={local})(associatedDomain={domain})))")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q    Query
		want string
	}{
		{Query{Email: "bob@example.com", Local: "bob", Domain: "example.com"},
			"(&(objectClass=mailUser)(|(mail=bob@example.com)(uid=bob)(associatedDomain=example.com)))"},
		// Every filter metacharacter arrives escaped (RFC 4515 §3).
		{Query{Email: "*)(uid=*", Local: `a\b`, Domain: "\x00"},
			`(&(objectClass=mailUser)(|(mail=\2a\29\28uid=\2a)(uid=a\5cb)(associatedDomain=\00)))`},
		{Query{Email: "jörg@x.y", Local: "jörg", Domain: "x.y"},
			`(&(objectClass=mailUser)(|(mail=j\c3\b6rg@x.y)(uid=j\c3\b6rg)(associatedDomain=x.y)))`},
	} {
		got := f.expand(tc.q)
		if got != tc.want {
			t.Errorf("expand(%+v)\n got %s\nwant %s", tc.q, got, tc.want)
		}
		if _, err := ldap.CompileFilter(got); err != nil {
			t.Errorf("expanded filter does not compile: %v", err)
		}
	}
}

func TestFilterTemplateErrors(t *testing.T) {
	for tmpl, errHas := range map[string]string{
		"(mail=bob@example.com)":  "no {email}",
		"(mail={address})":        "unknown placeholder {address}",
		"(mail={email)":           "unclosed",
		"(&(mail={email})":        "not a valid LDAP filter",
		"":                        "no {email}",
		"(|(mail={email})(x=y)))": "not a valid LDAP filter",
	} {
		_, err := parseFilter(tmpl)
		if err == nil || !strings.Contains(err.Error(), errHas) {
			t.Errorf("parseFilter(%q) = %v, want error containing %q", tmpl, err, errHas)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.URLs, c.BaseDN, c.Filter = []string{"ldaps://ldap.example.com"}, "dc=example,dc=com", "(mail={email})"
		return c
	}
	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		errHas string
	}{
		{"ok", func(*Config) {}, ""},
		{"no urls", func(c *Config) { c.URLs = nil }, "ldap.urls"},
		{"bad scheme", func(c *Config) { c.URLs = []string{"http://x"} }, "ldap.urls[0]"},
		{"ldapi unsupported", func(c *Config) { c.URLs = []string{"ldap://a", "ldapi://%2Frun%2Fslapd"} }, "ldap.urls[1]"},
		{"path in url", func(c *Config) { c.URLs = []string{"ldap://a/dc=x"} }, "ldap.urls[0]"},
		{"starttls with ldaps", func(c *Config) { c.StartTLS = true }, "ldap.start_tls"},
		{"no base", func(c *Config) { c.BaseDN = "" }, "ldap.base_dn"},
		{"bind dn without password", func(c *Config) { c.BindDN = "cn=x" }, "no password"},
		{"two passwords", func(c *Config) { c.BindPassword, c.BindPasswordFile = "a", "/x" }, "not both"},
		{"missing password file", func(c *Config) { c.BindDN, c.BindPasswordFile = "cn=x", "/nonexistent/pw" }, "ldap.bind_password_file"},
		{"missing ca", func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, "ldap.ca_file"},
		{"zero timeout", func(c *Config) { c.RequestTimeout = 0 }, "ldap.request_timeout"},
		{"pool size", func(c *Config) { c.PoolSize = 0 }, "ldap.pool_size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			_, err := New(c, nil, nil, nil)
			if (err != nil) != (tc.errHas != "") || (err != nil && !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("New = %v, want error containing %q", err, tc.errHas)
			}
		})
	}
}

func TestBindPasswordFile(t *testing.T) {
	path := t.TempDir() + "/pw"
	if err := os.WriteFile(path, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.URLs, c.BaseDN, c.Filter = []string{"ldap://127.0.0.1:1"}, "dc=example,dc=com", "(mail={email})"
	c.BindDN, c.BindPasswordFile = "cn=svc,dc=example,dc=com", path
	s, err := New(c, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.BindPassword != "s3cret" {
		t.Errorf("password from file = %q, want the file's first line without newline", s.cfg.BindPassword)
	}
}
