package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// A flood of distinct unknown addresses never grows the cache past
// cache.max_entries, and pushes out no account: unknown entries go first.
func TestResolveCacheBound(t *testing.T) {
	cfg := DefaultCacheConfig()
	cfg.MaxEntries = 100
	r, dir, _ := newTestResolver(t, cfg)
	ctx := context.Background()
	if _, err := r.Resolve(ctx, mustAddr(t, "bob@example.com")); err != nil {
		t.Fatal(err)
	}
	for i := range 10_000 {
		if _, err := r.Resolve(ctx, mustAddr(t, fmt.Sprintf("nobody%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
		if n := r.cache.Len(); n > cfg.MaxEntries {
			t.Fatalf("after %d addresses the cache holds %d entries, over cache.max_entries %d", i+1, n, cfg.MaxEntries)
		}
	}
	before := dir.searches.Load()
	if a, err := r.Resolve(ctx, mustAddr(t, "bob@example.com")); err != nil || !a.Known {
		t.Fatal(a, err)
	}
	if dir.searches.Load() != before {
		t.Error("bob's account was evicted by unknown addresses")
	}
}

// default_services: what unknown and disabled addresses get, and what an
// uncached address gets while the directory fails, all in one shape.
func TestDefaultServices(t *testing.T) {
	ds, err := NewDomains([]DomainConfig{{
		Name: "example.com",
		Services: []ServiceConfig{
			{Type: "imap", Host: "mail.example.com"},
			{Type: "pop3", Host: "mail.example.com"},
			{Type: "smtp", Host: "mail.example.com"},
		},
		DefaultServices: []string{"IMAP", "smtp"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dir := &fakeDirectory{entries: map[string]*ldapsource.Entry{
		"pat@example.com":   entry(map[string][]string{"uid": {"pat"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "pop3secured", "smtpsecured"}}),
		"carol@example.com": entry(map[string][]string{"uid": {"carol"}, "accountStatus": {"disabled"}, "enabledService": {"mail", "pop3secured"}}),
	}}
	pol, err := New(Config{Login: "{uid}"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, pol, ds, DefaultCacheConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	get := func(addr string) *Account {
		a, err := r.Resolve(ctx, mustAddr(t, addr))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if got := kinds(get("pat@example.com")); got != "imap,pop3,smtp" {
		t.Errorf("pat, allowed POP3 by the directory: %s", got)
	}
	unknown := get("nobody@example.com")
	for name, a := range map[string]*Account{"unknown": unknown, "disabled": get("carol@example.com")} {
		if got := kinds(a); got != "imap,smtp" || a.Services[0].Login != a.Address.String() {
			t.Errorf("%s: %s, login %s; want imap,smtp with the typed address", name, got, a.Services[0].Login)
		}
	}
	dir.set(func(f *fakeDirectory) { f.err = errors.New("connection refused") })
	outage := get("someone@example.com")
	if got := kinds(outage); got != "imap,smtp" || outage.Known || outage.Services[0].Login != "someone@example.com" {
		t.Errorf("outage: %s %+v", got, outage)
	}
	// Where unknown addresses are refused (policy.unknown: reject), an
	// outage is still no reason to tell a real user the address does not
	// exist: the defaults.
	rejecting, err := New(Config{Login: "{uid}", Unknown: UnknownReject})
	if err != nil {
		t.Fatal(err)
	}
	r, err = NewResolver(dir, rejecting, ds, DefaultCacheConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a := get("pat@example.com"); kinds(a) != "imap,smtp" || a.Known {
		t.Errorf("outage under policy.unknown reject: %+v", a)
	}

	_, err = NewDomains([]DomainConfig{{Name: "example.com", Services: []ServiceConfig{{Type: "imap", Host: "mail.example.com"}}, DefaultServices: []string{"pop3"}}})
	if err == nil || !strings.HasPrefix(err.Error(), "domains[0].default_services: pop3 is not among the services") {
		t.Errorf("default_services naming a service the domain lacks: %v", err)
	}
}

// A failing directory is logged once when it starts failing and once when
// it answers again, not once per request.
func TestDirectoryFailureLoggedOncePerChange(t *testing.T) {
	r, dir, clk := newTestResolver(t, DefaultCacheConfig())
	var buf bytes.Buffer
	r.log = slog.New(slog.NewTextHandler(&buf, nil))
	ctx := context.Background()
	dir.set(func(f *fakeDirectory) { f.err = fmt.Errorf("dial: %w", errors.New("connection refused")) })
	for i := range 100 {
		if _, err := r.Resolve(ctx, mustAddr(t, fmt.Sprintf("u%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	dir.set(func(f *fakeDirectory) { f.err = nil })
	clk.Advance(time.Hour)
	for i := range 10 {
		if _, err := r.Resolve(ctx, mustAddr(t, fmt.Sprintf("u%d@example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	logs := buf.String()
	if n := strings.Count(logs, "directory lookups fail"); n != 1 {
		t.Errorf("failure logged %d times for 100 failed lookups, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs, "kind=transient") || strings.Count(logs, "the directory answers again") != 1 {
		t.Errorf("log:\n%s", logs)
	}
}

// policy.privacy: strict hides the display name and the primary address
// from unauthenticated answers, and only from those.
func TestPrivacy(t *testing.T) {
	alice := entry(map[string][]string{"uid": {"alice"}, "cn": {"Alice Example"}, "mail": {"alice@example.com"},
		"accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}})
	for _, tt := range []struct {
		privacy     string
		display     string
		primary     string
		wantErrText string
	}{
		{"", "Alice Example", "alice@example.com", ""},
		{PrivacyStandard, "Alice Example", "alice@example.com", ""},
		{PrivacyStrict, "", "a.example@example.com", ""},
		{"paranoid", "", "", `policy.privacy: "paranoid" is not one of`},
	} {
		t.Run(tt.privacy, func(t *testing.T) {
			pol, err := New(Config{Login: "{uid}", Privacy: tt.privacy})
			if tt.wantErrText != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErrText) {
					t.Errorf("New = %v, want %q", err, tt.wantErrText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			dir := &fakeDirectory{entries: map[string]*ldapsource.Entry{"a.example@example.com": alice}}
			r, err := NewResolver(dir, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			addr := mustAddr(t, "a.example@example.com")
			a, err := r.Resolve(context.Background(), addr)
			if err != nil {
				t.Fatal(err)
			}
			if a.DisplayName != tt.display || a.Primary != tt.primary || a.Services[0].Login != "alice" {
				t.Errorf("unauthenticated: display %q primary %q login %q; want %q %q alice", a.DisplayName, a.Primary, a.Services[0].Login, tt.display, tt.primary)
			}
			// The cached account is the whole one: the next caller (and
			// Authenticate) sees it unchanged.
			full, err := r.resolve(context.Background(), addr, true)
			if err != nil || full.DisplayName != "Alice Example" || full.Primary != "alice@example.com" {
				t.Errorf("whole account: %+v %v", full, err)
			}
			// Each view stays one pointer while the entry lives: protocols
			// keeps rendered answers by pointer.
			again, err := r.Resolve(context.Background(), addr)
			if err != nil || again != a {
				t.Errorf("a second Resolve gave another *Account (%p, %p): rendered answers would never be reused", a, again)
			}
		})
	}
}
