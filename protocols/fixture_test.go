package protocols

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/embedded"
	"github.com/mailbeacon/mailbeacon/policy"
)

// demoDirectory answers lookups from the demo LDIF in memory, matching mail
// and shadowAddress like the openldap preset's filter does. Tests of the
// real LDAP path live in ldapsource and cmd/mailbeacon.
type demoDirectory struct {
	dir      *embedded.Dir
	searches atomic.Int64
	fail     atomic.Bool
}

func (d *demoDirectory) Lookup(_ context.Context, q ldapsource.Query) (*ldapsource.Entry, error) {
	d.searches.Add(1)
	if d.fail.Load() {
		return nil, errDirectoryDown
	}
	var found []*embedded.Entry
	for _, e := range d.dir.Entries {
		for _, attr := range []string{"mail", "shadowAddress"} {
			if containsFold(e.Get(attr), q.Email) {
				found = append(found, e)
				break
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, ldapsource.ErrNotFound
	case 1:
	default:
		return nil, ldapsource.ErrAmbiguous
	}
	out := &ldapsource.Entry{DN: found[0].DN, Attributes: map[string][]string{}}
	for k, v := range found[0].Attrs {
		out.Attributes[strings.ToLower(k)] = v
	}
	return out, nil
}

type testError string

func (e testError) Error() string { return string(e) }

const errDirectoryDown = testError("directory down")

func containsFold(vals []string, v string) bool {
	for _, x := range vals {
		if strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}

// demoDomains is the demo configuration's domain list (cmd/mailbeacon/demo.yaml).
func demoDomains() []policy.DomainConfig {
	return []policy.DomainConfig{{
		Name: "example.com", Provider: "Example Mail", ShortName: "Example",
		Services: []policy.ServiceConfig{
			{Type: "imap", Host: "mail.example.com", Port: 993, Socket: "tls"},
			{Type: "pop3", Host: "mail.example.com", Port: 995, Socket: "tls"},
			{Type: "smtp", Host: "mail.example.com", Port: 465, Socket: "tls"},
			{Type: "smtp", Host: "mail.example.com", Port: 587, Socket: "starttls"},
			{Type: "activesync", URL: "https://mail.example.com/Microsoft-Server-ActiveSync"},
		},
	}}
}

// newDemoResolver is the demo's policy over an in-memory demo directory.
func newDemoResolver(t testing.TB, domains []policy.DomainConfig) (*policy.Resolver, *demoDirectory) {
	t.Helper()
	pol, err := policy.New(policy.Config{Preset: "openldap", Login: "{uid}", HostAttribute: "mailHost"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := policy.NewDomains(domains)
	if err != nil {
		t.Fatal(err)
	}
	dir := &demoDirectory{dir: embedded.Demo()}
	res, err := policy.NewResolver(dir, pol, ds, policy.DefaultCacheConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return res, dir
}

// get performs a request against the handler and returns the recorder.
func get(t testing.TB, h http.Handler, method, host, target string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	if host != "" {
		req.Host = host
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func demoDir() *embedded.Dir { return embedded.Demo() }
