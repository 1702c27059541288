package ldapsource_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

func probeConfig(srv *ldaptest.Server, password string) ldapsource.Config {
	c := ldapsource.DefaultConfig()
	c.URLs, c.CAFile = []string{srv.URL}, srv.CAFile
	c.BindDN, c.BindPassword = ldaptest.ServiceDN, password
	return c
}

// What init reads through a Probe: the RootDSE anonymously, StartTLS,
// one bind, the schema's names, and a Source over the same connection.
func TestInitProbeSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	ctx := context.Background()
	before := srv.BindCount()
	p, err := ldapsource.DialProbe(ctx, probeConfig(srv, ldaptest.ServicePassword), "ldap.bind_password")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.StartTLS(ctx); err != nil || p.Encryption() != "StartTLS" {
		t.Fatalf("StartTLS: %v (%q)", err, p.Encryption())
	}
	root, err := p.RootDSE(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v := ldapsource.Vendor(root); v != "OpenLDAP" || ldapsource.IsActiveDirectory(root) {
		t.Errorf("vendor %q", v)
	}
	if ncs := ldapsource.NamingContexts(root); !slices.Equal(ncs, []string{ldaptest.BaseDN}) {
		t.Errorf("naming contexts %q", ncs)
	}
	if !slices.Contains(root.Values("supportedExtension"), ldapsource.OIDStartTLS) {
		t.Errorf("supportedExtension %q", root.Values("supportedExtension"))
	}
	if err := p.Bind(ctx); err != nil {
		t.Fatal(err)
	}
	// A second Bind does not reach the directory.
	if err := p.Bind(ctx); err == nil || !strings.Contains(err.Error(), "binds once") {
		t.Errorf("second bind: %v", err)
	}
	if n := srv.BindCount() - before; n != 1 {
		t.Errorf("%d binds, want 1", n)
	}
	s, err := p.Schema(ctx, root.Values("subschemaSubentry")[0])
	if err != nil {
		t.Fatal(err)
	}
	// NAME 'x' and NAME ( 'x' 'y' ) (core.schema: cn and commonName).
	for _, name := range []string{"mailuser", "inetOrgPerson"} {
		if _, ok := s.Class(name); !ok {
			t.Errorf("object class %s not in the schema", name)
		}
	}
	for _, name := range []string{"enabledService", "cn", "commonName"} {
		if _, ok := s.Type(name); !ok {
			t.Errorf("attribute type %s not in the schema", name)
		}
	}
	if n, _ := s.Class("mailUser"); n != "mailUser" {
		t.Errorf("spelling %q", n)
	}
	if _, ok := s.Type("mailUser"); ok {
		t.Error("mailUser is an object class, not an attribute type")
	}
	entries, err := p.Search(ctx, ldaptest.BaseDN, ldap.ScopeWholeSubtree, "(objectClass=mailUser)", []string{"mail"}, 2)
	if err != nil || len(entries) != 2 {
		t.Errorf("search with size limit 2: %d entries, %v", len(entries), err)
	}

	// The Source looks up over the probe's connection, and never dials:
	// once that connection is gone, lookups fail without a bind.
	cfg := probeConfig(srv, ldaptest.ServicePassword)
	cfg.BaseDN, cfg.StartTLS = ldaptest.BaseDN, true
	cfg.Filter = "(mail={email})"
	src, err := p.Source(cfg, []string{"mail"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	e, err := src.Lookup(ctx, ldapsource.Query{Email: "bob@example.com", Local: "bob", Domain: "example.com"})
	if err != nil || e.DN != "uid=bob.login,ou=people,dc=example,dc=com" {
		t.Fatalf("lookup over the probe's connection: %v %v", e, err)
	}
	srv.Stop()
	srv.Start()
	for range 2 {
		if _, err := src.Lookup(ctx, ldapsource.Query{Email: "bob@example.com", Local: "bob", Domain: "example.com"}); err == nil {
			t.Error("lookup after the connection broke: no error")
		}
	}
	if n := srv.BindCount(); n != 0 {
		t.Errorf("%d binds after the connection broke, want none", n)
	}
}

// A refused bind is a configuration error naming the password's key, and
// is not sent twice.
func TestInitProbeRefusedBind(t *testing.T) {
	srv := ldaptest.Slapd(t)
	ctx := context.Background()
	p, err := ldapsource.DialProbe(ctx, probeConfig(srv, "wrong"), "--bind-password-file")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	before := srv.BindCount()
	err = p.Bind(ctx)
	if ce := ldapsource.ConfigurationError(err); ce == nil || ce.Key != "--bind-password-file" {
		t.Errorf("refused bind: %v", err)
	}
	if err := p.Bind(ctx); err == nil || ldapsource.ConfigurationError(err) != nil {
		t.Errorf("second bind: %v", err)
	}
	if n := srv.BindCount() - before; n != 1 {
		t.Errorf("%d binds, want 1", n)
	}
	if p.Bound() {
		t.Error("bound after a refusal")
	}
	other := probeConfig(srv, "wrong")
	other.URLs, other.BaseDN = []string{srv.LDAPSURL}, ldaptest.BaseDN
	if _, err := p.Source(other, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "the probe is connected to "+srv.URL) {
		t.Errorf("a Source for another URL than the probe's: %v", err)
	}
	p.Close()
	if _, err := p.RootDSE(ctx); !errors.Is(err, ldapsource.ErrProbeClosed) {
		t.Errorf("RootDSE after Close: %v", err)
	}
	if err := p.StartTLS(ctx); !errors.Is(err, ldapsource.ErrProbeClosed) {
		t.Errorf("StartTLS after Close: %v", err)
	}
}
