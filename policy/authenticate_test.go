package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
)

// bindingDirectory is fakeDirectory plus password checks by DN.
type bindingDirectory struct {
	*fakeDirectory
	passwords map[string]string // DN -> password
	bindErr   atomic.Pointer[error]
	gate      chan struct{} // when set, binds wait for it to close
	binds     atomic.Int64
	onBind    func() // when set, runs during every bind (e.g. to advance a clock)
}

func (d *bindingDirectory) Authenticate(ctx context.Context, dn, password string) error {
	d.binds.Add(1)
	if d.onBind != nil {
		d.onBind()
	}
	if d.gate != nil {
		<-d.gate
	}
	if p := d.bindErr.Load(); p != nil {
		return *p
	}
	if pw, ok := d.passwords[dn]; ok && password != "" && pw == password {
		return nil
	}
	return ldapsource.ErrInvalidCredentials
}

func authEntry(dn string, attrs map[string][]string) *ldapsource.Entry {
	e := entry(attrs)
	e.DN = dn
	return e
}

func newAuthResolver(t testing.TB, pcfg Config) (*Resolver, *bindingDirectory, *clock) {
	t.Helper()
	dir := &bindingDirectory{
		fakeDirectory: &fakeDirectory{entries: map[string]*ldapsource.Entry{
			"bob@example.com": authEntry("uid=bob.login,ou=people,dc=example,dc=com",
				map[string][]string{"uid": {"bob.login"}, "mail": {"bob@example.com"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured", "smtpsecured"}}),
			"carol@example.com": authEntry("uid=carol,ou=people,dc=example,dc=com",
				map[string][]string{"uid": {"carol"}, "accountStatus": {"disabled"}, "enabledService": {"mail", "imapsecured"}}),
		}},
		passwords: map[string]string{
			"uid=bob.login,ou=people,dc=example,dc=com": "Secret123!",
			"uid=carol,ou=people,dc=example,dc=com":     "Secret123!",
		},
	}
	if pcfg.Login == "" {
		pcfg.Login = "{uid}"
	}
	pol, err := New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResolver(dir, pol, testDomains(t), DefaultCacheConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.now = clk.Now
	return r, dir, clk
}

func TestAuthenticate(t *testing.T) {
	for _, tc := range []struct {
		name, addr, password string
		wantErr              error
		wantBind             bool
	}{
		{"right password", "bob@example.com", "Secret123!", nil, true},
		{"upper-case address", "Bob@Example.com", "Secret123!", nil, true},
		{"wrong password", "bob@example.com", "secret123!", ErrBadCredentials, true},
		{"empty password", "bob@example.com", "", ErrBadCredentials, false},
		{"disabled account, right password", "carol@example.com", "Secret123!", ErrBadCredentials, false},
		{"unknown address", "nobody@example.com", "Secret123!", ErrBadCredentials, false},
		{"unknown domain", "bob@unknown.example", "Secret123!", ErrUnknownDomain, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir, _ := newAuthResolver(t, Config{})
			acct, err := r.Authenticate(context.Background(), mustAddr(t, tc.addr), tc.password)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil && (!acct.Known || acct.DN != "uid=bob.login,ou=people,dc=example,dc=com" || kinds(acct) != "imap,smtp,smtp") {
				t.Errorf("account %+v", acct)
			}
			if err != nil && acct != nil {
				t.Errorf("account returned with error %v", err)
			}
			if got := dir.binds.Load() > 0; got != tc.wantBind {
				t.Errorf("bound: %t, want %t", got, tc.wantBind)
			}
		})
	}
}

func TestAuthenticateRejectMode(t *testing.T) {
	r, dir, _ := newAuthResolver(t, Config{Unknown: UnknownReject})
	for _, addr := range []string{"nobody@example.com", "carol@example.com"} {
		if _, err := r.Authenticate(context.Background(), mustAddr(t, addr), "Secret123!"); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("%s: %v, want ErrBadCredentials", addr, err)
		}
	}
	if _, err := r.Authenticate(context.Background(), mustAddr(t, "bob@example.com"), "Secret123!"); err != nil {
		t.Errorf("bob: %v", err)
	}
	if n := dir.binds.Load(); n != 1 {
		t.Errorf("%d binds, want 1 (only bob)", n)
	}
}

func TestAuthenticateRemembersSuccess(t *testing.T) {
	ctx := context.Background()
	r, dir, clk := newAuthResolver(t, Config{})
	r.SetAuthCacheTTL(2 * time.Minute)
	bob := mustAddr(t, "bob@example.com")
	for i := 0; i < 5; i++ {
		if _, err := r.Authenticate(ctx, bob, "Secret123!"); err != nil {
			t.Fatal(err)
		}
	}
	if n := dir.binds.Load(); n != 1 {
		t.Fatalf("%d binds for 5 logins within the TTL, want 1", n)
	}
	// Another password is checked by the directory, never by the memory.
	if _, err := r.Authenticate(ctx, bob, "Secret123?"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("wrong password after success: %v", err)
	}
	if n := dir.binds.Load(); n != 2 {
		t.Errorf("wrong password: %d binds, want 2", n)
	}
	// Past the TTL the directory is asked again.
	clk.Advance(2*time.Minute + time.Second)
	if _, err := r.Authenticate(ctx, bob, "Secret123!"); err != nil || dir.binds.Load() != 3 {
		t.Errorf("after TTL: err %v, %d binds, want 3", err, dir.binds.Load())
	}
	// A password changed in the directory: the new one binds and replaces the old.
	dir.passwords["uid=bob.login,ou=people,dc=example,dc=com"] = "New-Pass-1"
	if _, err := r.Authenticate(ctx, bob, "New-Pass-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Authenticate(ctx, bob, "Secret123!"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("old password still accepted after the new one was used: %v", err)
	}
	// Off: every login binds.
	r.SetAuthCacheTTL(0)
	before := dir.binds.Load()
	for i := 0; i < 3; i++ {
		_, _ = r.Authenticate(ctx, bob, "New-Pass-1")
	}
	if n := dir.binds.Load() - before; n != 3 {
		t.Errorf("TTL 0: %d binds for 3 logins, want 3", n)
	}
}

func TestAuthenticateMemoryHoldsNoPassword(t *testing.T) {
	r1, _, _ := newAuthResolver(t, Config{})
	r2, _, _ := newAuthResolver(t, Config{})
	for _, r := range []*Resolver{r1, r2} {
		if _, err := r.Authenticate(context.Background(), mustAddr(t, "bob@example.com"), "Secret123!"); err != nil {
			t.Fatal(err)
		}
	}
	e1, e2 := r1.binds.seen["uid=bob.login,ou=people,dc=example,dc=com"], r2.binds.seen["uid=bob.login,ou=people,dc=example,dc=com"]
	plain := sha256.Sum256([]byte("Secret123!"))
	if e1.mac == e2.mac {
		t.Error("two processes remember the same value: the key is not random")
	}
	if e1.mac == plain || bytes.Contains(e1.mac[:], []byte("Secret")) {
		t.Error("the memory holds an unsalted hash or the password")
	}
}

func TestAuthenticateConcurrentLoginsOneBind(t *testing.T) {
	r, dir, _ := newAuthResolver(t, Config{})
	dir.gate = make(chan struct{})
	bob := mustAddr(t, "bob@example.com")
	if _, err := r.Resolve(context.Background(), bob); err != nil { // warm the account cache
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.Authenticate(context.Background(), bob, "Secret123!")
			errs <- err
		}()
	}
	for dir.binds.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others join the flight
	close(dir.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := dir.binds.Load(); n != 1 {
		t.Errorf("%d binds for 20 concurrent logins, want 1", n)
	}
}

func TestAuthenticateDirectoryDown(t *testing.T) {
	ctx := context.Background()
	t.Run("lookup fails", func(t *testing.T) {
		// cache.on_directory_error "defaults" makes Resolve answer with the
		// domain defaults; that must not read as "wrong password".
		r, dir, _ := newAuthResolver(t, Config{})
		dir.set(func(f *fakeDirectory) { f.err = errors.New("connection refused") })
		_, err := r.Authenticate(ctx, mustAddr(t, "bob@example.com"), "Secret123!")
		if !errors.Is(err, ErrDirectoryUnavailable) || errors.Is(err, ErrBadCredentials) {
			t.Errorf("err = %v, want ErrDirectoryUnavailable", err)
		}
	})
	t.Run("lookup fails, reject mode", func(t *testing.T) {
		r, dir, _ := newAuthResolver(t, Config{Unknown: UnknownReject})
		dir.set(func(f *fakeDirectory) { f.err = errors.New("connection refused") })
		if _, err := r.Authenticate(ctx, mustAddr(t, "bob@example.com"), "Secret123!"); !errors.Is(err, ErrDirectoryUnavailable) {
			t.Errorf("err = %v, want ErrDirectoryUnavailable", err)
		}
	})
	t.Run("bind fails", func(t *testing.T) {
		r, dir, _ := newAuthResolver(t, Config{})
		down := error(errors.New("ldap: network error"))
		dir.bindErr.Store(&down)
		_, err := r.Authenticate(ctx, mustAddr(t, "bob@example.com"), "Secret123!")
		if !errors.Is(err, ErrDirectoryUnavailable) || !strings.Contains(err.Error(), "network error") {
			t.Errorf("err = %v, want ErrDirectoryUnavailable wrapping the cause", err)
		}
		dir.bindErr.Store(nil)
		if _, err := r.Authenticate(ctx, mustAddr(t, "bob@example.com"), "Secret123!"); err != nil {
			t.Errorf("after recovery: %v", err)
		}
	})
	t.Run("directory cannot bind", func(t *testing.T) {
		r, _, _ := newTestResolver(t, DefaultCacheConfig())
		if acct, err := r.Authenticate(ctx, mustAddr(t, "bob@example.com"), "Secret123!"); err == nil || acct != nil {
			t.Errorf("a directory without binds authenticated: %v", err)
		}
	})
}

func TestDecideSetsDN(t *testing.T) {
	pol, err := New(Config{Login: "{uid}"})
	if err != nil {
		t.Fatal(err)
	}
	d := testDomains(t)["example.com"]
	e := authEntry("uid=bob.login,ou=people,dc=example,dc=com", map[string][]string{"uid": {"bob.login"}, "accountStatus": {"active"}, "enabledService": {"mail", "imapsecured"}})
	if acct, _ := pol.Decide(d, mustAddr(t, "bob@example.com"), e); acct.DN != e.DN {
		t.Errorf("DN %q, want %q", acct.DN, e.DN)
	}
	e.Attributes["accountstatus"] = []string{"disabled"}
	if acct, _ := pol.Decide(d, mustAddr(t, "bob@example.com"), e); acct.DN != "" || acct.Known {
		t.Errorf("disabled account keeps DN %q", acct.DN)
	}
}

func TestDomainExchangeURLs(t *testing.T) {
	svc := []ServiceConfig{{Type: "imap", Host: "mail.a.com"}}
	ds, err := NewDomains([]DomainConfig{
		{Name: "a.com", Services: svc, EWSURL: "https://mail.a.com/EWS/Exchange.asmx", AutodiscoverURL: "https://ad.a.com/Autodiscover/Autodiscover.xml"},
		{Name: "b.com", Services: svc, EWSURL: "https://mail.b.com/EWS/Exchange.asmx", OOFURL: "https://mail.b.com/EWS/oof.asmx"},
		{Name: "c.com", Services: svc},
	})
	if err != nil {
		t.Fatal(err)
	}
	if a := ds["a.com"]; a.EWSURL != "https://mail.a.com/EWS/Exchange.asmx" || a.OOFURL != a.EWSURL || a.AutodiscoverURL != "https://ad.a.com/Autodiscover/Autodiscover.xml" {
		t.Errorf("a.com: %+v", a)
	}
	if b := ds["b.com"]; b.OOFURL != "https://mail.b.com/EWS/oof.asmx" {
		t.Errorf("b.com OOF %q", b.OOFURL)
	}
	if c := ds["c.com"]; c.EWSURL != "" || c.OOFURL != "" || c.AutodiscoverURL != "" {
		t.Errorf("c.com opted into nothing but got %+v", c)
	}
	for _, tc := range []struct {
		name string
		cfg  DomainConfig
		err  string
	}{
		{"ews not a url", DomainConfig{EWSURL: "mail.a.com/EWS"}, "domains[0].ews_url:"},
		{"oof without ews", DomainConfig{OOFURL: "https://mail.a.com/EWS/Exchange.asmx"}, "domains[0].oof_url:"},
		{"oof not a url", DomainConfig{EWSURL: "https://mail.a.com/EWS/Exchange.asmx", OOFURL: "ftp://x"}, "domains[0].oof_url:"},
		{"autodiscover over http", DomainConfig{AutodiscoverURL: "http://ad.a.com/autodiscover/autodiscover.xml"}, "domains[0].autodiscover_url:"},
		{"autodiscover relative", DomainConfig{AutodiscoverURL: "/autodiscover/autodiscover.xml"}, "domains[0].autodiscover_url:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name, tc.cfg.Services = "a.com", svc
			if _, err := NewDomains([]DomainConfig{tc.cfg}); err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("err = %v, want one starting %q", err, tc.err)
			}
		})
	}
}
