package protocols

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"howett.net/plist"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
	"github.com/mailbeacon/mailbeacon/policy"
)

// appleTestDomains is the demo domain (cmd/mailbeacon/demo.yaml) plus
// CalDAV and CardDAV, and a second domain without any DAV service.
var appleTestDomains = []policy.DomainConfig{
	{
		Name: "example.com", Provider: "Example Mail", ShortName: "Example",
		Services: []policy.ServiceConfig{
			{Type: "imap", Host: "mail.example.com", Port: 993, Socket: "tls"},
			{Type: "pop3", Host: "mail.example.com", Port: 995, Socket: "tls"},
			{Type: "smtp", Host: "mail.example.com", Port: 465, Socket: "tls"},
			{Type: "smtp", Host: "mail.example.com", Port: 587, Socket: "starttls"},
			{Type: "activesync", URL: "https://mail.example.com/Microsoft-Server-ActiveSync"},
			{Type: "caldav", URL: "https://dav.example.com/dav/"},
			{Type: "carddav", URL: "https://dav.example.com:8443/dav/"},
		},
	},
	{
		Name: "example.org", Provider: "Org Mail",
		Services: []policy.ServiceConfig{
			{Type: "pop3", Host: "pop.example.org", Socket: "starttls"},
			{Type: "imap", Host: "imap.example.org", Socket: "plain"},
			{Type: "smtp", Host: "smtp.example.org", Socket: "starttls", Auth: []string{"password-encrypted"}},
		},
	},
}

func appleDomains(t testing.TB) map[string]*policy.Domain {
	t.Helper()
	ds, err := policy.NewDomains(appleTestDomains)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// appleFakeResolver answers from a fixed set of accounts; other addresses of a
// configured domain get the domain defaults. Addresses of the domain
// "down.example" fail as a directory outage does.
type appleFakeResolver struct {
	domains  map[string]*policy.Domain
	accounts map[string]*policy.Account
	reject   bool
}

func (f *appleFakeResolver) Resolve(_ context.Context, addr policy.Address) (*policy.Account, error) {
	if addr.Domain == "down.example" {
		return nil, policy.ErrDirectoryUnavailable
	}
	d, ok := f.domains[addr.Domain]
	if !ok {
		return nil, policy.ErrUnknownDomain
	}
	if a, ok := f.accounts[addr.String()]; ok {
		return a, nil
	}
	if f.reject {
		return nil, policy.ErrRejected
	}
	return d.DefaultAccount(addr, addr.String()), nil
}

func (f *appleFakeResolver) Domain(_ context.Context, name string) (*policy.Domain, error) {
	if d, ok := f.domains[name]; ok {
		return d, nil
	}
	return nil, policy.ErrUnknownDomain
}

// account builds a known account of domain d holding the domain's services
// of the given kinds, with login and optional host override.
func appleAccount(d *policy.Domain, addr, display, login, host string, kinds ...policy.Kind) *policy.Account {
	a, err := policy.ParseAddress(addr)
	if err != nil {
		panic(err)
	}
	acct := &policy.Account{Address: a, Primary: a.String(), DisplayName: display, Known: true, Domain: d}
	for _, s := range d.Services {
		for _, k := range kinds {
			if s.Kind == k {
				s.Login = login
				if host != "" && !k.HTTPBased() {
					s.Host = host
				}
				acct.Services = append(acct.Services, s)
			}
		}
	}
	return acct
}

var appleAllKinds = policy.Kinds

// appleFixtureAccounts mirror the demo directory's users, on appleTestDomains.
func appleFixtureAccounts(ds map[string]*policy.Domain) map[string]*policy.Account {
	ex := ds["example.com"]
	alias := appleAccount(ex, "a.example@example.com", "Alice Example", "alice", "", appleAllKinds...)
	alias.Primary = "alice@example.com"
	return map[string]*policy.Account{
		"alice@example.com":     appleAccount(ex, "alice@example.com", "Alice Example", "alice", "", appleAllKinds...),
		"a.example@example.com": alias,
		"bob@example.com":       appleAccount(ex, "bob@example.com", "Bob Builder", "bob.login", "", policy.IMAP, policy.SMTP, policy.CalDAV, policy.CardDAV),
		"dave@example.com":      appleAccount(ex, "dave@example.com", `Dave <Ops> & "Smith" *) Über`, "dave", "mail2.example.com", policy.IMAP, policy.SMTP, policy.CalDAV, policy.CardDAV),
		"erin@example.com":      appleAccount(ex, "erin@example.com", "Erin POP", "erin", "", policy.POP3, policy.SMTP),
		"frank@example.com":     appleAccount(ex, "frank@example.com", "Frank Readonly", "frank", "", policy.IMAP, policy.POP3),
		"gina@example.com":      appleAccount(ex, "gina@example.com", "Gina Calendar", "gina", "", policy.CalDAV),
	}
}

func appleNewFakeServer(t testing.TB, opts Options) (*appleFakeResolver, http.Handler) {
	t.Helper()
	ds := appleDomains(t)
	f := &appleFakeResolver{domains: ds, accounts: appleFixtureAccounts(ds)}
	return f, NewHandler(f, opts)
}

// get performs a request against h.
func appleGet(h http.Handler, method, target, host string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	if host != "" {
		req.Host = host
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// appleDecodePlist parses an XML property list into generic values.
func appleDecodePlist(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	format, err := plist.Unmarshal(b, &m)
	if err != nil {
		t.Fatalf("not a property list: %v\n%s", err, b)
	}
	if format != plist.XMLFormat {
		t.Fatalf("plist format %d, want XML", format)
	}
	return m
}

// payloads returns the profile's payload dictionaries by PayloadType.
func applePayloads(t testing.TB, prof map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	list, _ := prof["PayloadContent"].([]any)
	for _, p := range list {
		d, ok := p.(map[string]any)
		if !ok {
			t.Fatalf("payload is %T, want a dictionary", p)
		}
		typ, _ := d["PayloadType"].(string)
		if _, dup := out[typ]; dup {
			t.Fatalf("two %s payloads", typ)
		}
		out[typ] = d
	}
	return out
}

// appleStartDemoResolver runs the real stack: the embedded demo directory,
// ldapsource, the openldap policy of demo.yaml and appleTestDomains.
func appleStartDemoResolver(t testing.TB) *policy.Resolver {
	t.Helper()
	srv, err := embedded.Start(embedded.Demo(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	pol, err := policy.New(policy.Config{Preset: "openldap", Login: "{uid}", HostAttribute: "mailHost"})
	if err != nil {
		t.Fatal(err)
	}
	lc := ldapsource.DefaultConfig()
	lc.URLs = []string{srv.URL}
	lc.BindDN, lc.BindPassword, lc.BaseDN = embedded.DemoBindDN, embedded.DemoPassword, embedded.DemoBaseDN
	lc.Filter = pol.Filter()
	src, err := ldapsource.New(lc, pol.Attributes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	res, err := policy.NewResolver(src, pol, appleDomains(t), policy.DefaultCacheConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// appleNeedTool returns the path of an external program the test needs. Under
// CI=true a missing program fails the test (the test command installs it);
// elsewhere the test is skipped.
func appleNeedTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " not found: install the Debian package " + pkg + " (apt-get install -y --no-install-recommends " + pkg + ")"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// appleOpensslVerify runs openssl cms -verify on a DER profile against caFile
// and returns the embedded content.
func appleOpensslVerify(t testing.TB, der []byte, caFile string) ([]byte, error) {
	t.Helper()
	openssl := appleNeedTool(t, "openssl", "openssl")
	dir := t.TempDir()
	in := dir + "/profile.mobileconfig"
	if err := os.WriteFile(in, der, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, "cms", "-verify", "-inform", "DER", "-in", in, "-CAfile", caFile, "-out", dir+"/content")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, errors.New(strings.TrimSpace(stderr.String()) + ": " + err.Error())
	}
	return os.ReadFile(dir + "/content")
}
