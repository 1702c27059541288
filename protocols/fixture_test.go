package protocols

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mailbeacon/mailbeacon/policy"
)

// fakeResolver stands in for policy.Resolver with the demo directory's
// users as Accounts (cmd/mailbeacon/demo.yaml over the demo LDIF): what
// protocols renders, without a directory. Tests of the real path (LDAP,
// policy) live in policy and cmd/mailbeacon.
type fakeResolver struct {
	domains map[string]*policy.Domain
	reject  bool // policy.unknown: reject

	searches atomic.Int64 // lookups of addresses not asked for before: a cache's misses
	binds    atomic.Int64 // Authenticate calls
	fail     atomic.Bool  // lookups fail: the directory is unavailable
	down     atomic.Bool  // password checks fail: the directory is unavailable
	domErr   error        // Domain fails with this (nil: it answers)
	broken   error        // Resolve fails with this: neither outage nor answer

	mu    sync.Mutex
	known map[string]*policy.Account // one Account per address, as the policy cache hands out
	seen  map[string]bool
}

// demoUser is a directory entry of the demo.
type demoUser struct {
	login, display, dn string
	kinds              []policy.Kind // nil: every service of the domain
	host               string        // mailHost: overrides the mail protocols' host
}

const (
	errDirectoryDown = testError("directory down")
	demoUserPassword = "Secret123!"
)

var demoUsers = map[string]demoUser{
	"alice": {login: "alice", display: "Alice Example", dn: "uid=alice,ou=people,dc=example,dc=com"},
	"bob": {login: "bob.login", display: "Bob Builder", dn: "uid=bob.login,ou=people,dc=example,dc=com",
		kinds: []policy.Kind{policy.IMAP, policy.SMTP}},
	"dave": {login: "dave", display: `Dave <Ops> & "Smith" *) Über`, dn: "uid=dave,ou=people,dc=example,dc=com",
		kinds: []policy.Kind{policy.IMAP, policy.SMTP}, host: "mail2.example.com"},
}

// demoAliases are shadow addresses: local part -> user.
var demoAliases = map[string]string{"a.example": "alice"}

type testError string

func (e testError) Error() string { return string(e) }

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

// newDemoResolver is the demo's answers for the given domains. It returns
// the resolver twice: as the Resolver, and as the "directory" whose
// counters and failure switches the tests use.
func newDemoResolver(t testing.TB, domains []policy.DomainConfig) (*fakeResolver, *fakeResolver) {
	t.Helper()
	ds, err := policy.NewDomains(domains)
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeResolver{domains: ds, known: map[string]*policy.Account{}, seen: map[string]bool{}}
	return r, r
}

func (r *fakeResolver) Domain(_ context.Context, name string) (*policy.Domain, error) {
	if r.domErr != nil {
		return nil, r.domErr
	}
	if d, ok := r.domains[name]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("%w: %s", policy.ErrUnknownDomain, name)
}

func (r *fakeResolver) Resolve(ctx context.Context, addr policy.Address) (*policy.Account, error) {
	d, err := r.Domain(ctx, addr.Domain)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if !r.seen[addr.String()] {
		r.seen[addr.String()] = true
		r.searches.Add(1)
	}
	r.mu.Unlock()
	if r.broken != nil {
		return nil, r.broken
	}
	if r.fail.Load() {
		return nil, fmt.Errorf("%w: %w", policy.ErrDirectoryUnavailable, errDirectoryDown)
	}
	if a := r.account(d, addr); a != nil {
		return a, nil
	}
	if r.reject {
		return nil, policy.ErrRejected
	}
	return d.DefaultAccount(addr, addr.String()), nil
}

// Authenticate checks the demo password of a known user.
func (r *fakeResolver) Authenticate(ctx context.Context, addr policy.Address, password string) (*policy.Account, error) {
	acct, err := r.Resolve(ctx, addr)
	if err != nil {
		return nil, err
	}
	r.binds.Add(1)
	if r.down.Load() {
		return nil, fmt.Errorf("%w: %w", policy.ErrDirectoryUnavailable, errDirectoryDown)
	}
	if !acct.Known || password != demoUserPassword {
		return nil, policy.ErrBadCredentials
	}
	return acct, nil
}

// account is the Account of a known demo user, the same pointer each
// time, or nil.
func (r *fakeResolver) account(d *policy.Domain, addr policy.Address) *policy.Account {
	local := addr.Local
	if u, ok := demoAliases[local]; ok {
		local = u
	}
	u, ok := demoUsers[local]
	if !ok || d.Name != "example.com" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := addr.String()
	if a, ok := r.known[key]; ok {
		return a
	}
	a := &policy.Account{
		Address: addr, Primary: local + "@" + d.Name, DisplayName: u.display, Known: true, Domain: d, DN: u.dn,
	}
	for _, s := range d.Services {
		if u.kinds != nil && !slices.Contains(u.kinds, s.Kind) {
			continue
		}
		s.Login = u.login
		if u.host != "" && s.Host != "" {
			s.Host = u.host
		}
		a.Services = append(a.Services, s)
	}
	r.known[key] = a
	return a
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
