package main

// Directory trouble, over HTTP against real slapd processes:
// an outage (stale answers for cached users, domain defaults or 503 for the
// others), failover between two directory URLs, and a directory that
// answers too slowly (bounded connections and goroutines, requests that
// end at their deadline). Times are measured and logged, never asserted.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// outageServer serves the app built from cfg on a real listener.
func outageServer(t *testing.T, cfg config) (*app, *httptest.Server) {
	t.Helper()
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(protocols.NewHandler(a.resolver, a.handlerOptions(nil)))
	t.Cleanup(func() {
		srv.Close()
		a.source.Close()
	})
	return a, srv
}

// endpoint is one way of asking for an address, with what the answer looks
// like when the address gets login as its user name.
type endpoint struct {
	name string
	do   func(c *http.Client, base, addr string) (*http.Response, error)
	// login is the text the answer holds for that login name.
	login func(login string) string
}

var outageEndpoints = []endpoint{
	{"autoconfig", func(c *http.Client, base, addr string) (*http.Response, error) {
		return c.Get(base + "/mail/config-v1.1.xml?emailaddress=" + addr)
	}, func(l string) string { return "<username>" + l + "</username>" }},
	{"autodiscover", func(c *http.Client, base, addr string) (*http.Response, error) {
		body := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>` +
			addr + `</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
		return c.Post(base+"/autodiscover/autodiscover.xml", "text/xml", strings.NewReader(body))
	}, func(l string) string { return "<LoginName>" + l + "</LoginName>" }},
	{"mobileconfig", func(c *http.Client, base, addr string) (*http.Response, error) {
		return c.Get(base + "/mobileconfig?emailaddress=" + addr)
	}, func(l string) string { return "<string>" + l + "</string>" }},
	{"setup page", func(c *http.Client, base, addr string) (*http.Response, error) {
		return c.Get(base + "/?emailaddress=" + addr)
	}, func(l string) string { return l }},
}

// ask sends addr to every endpoint and checks each answer: status want and,
// for 200, the login name.
func askAll(t *testing.T, c *http.Client, base, addr, login string, want int) {
	t.Helper()
	for _, ep := range outageEndpoints {
		start := time.Now()
		resp, err := ep.do(c, base, addr)
		if err != nil {
			t.Errorf("%s %s: %v", ep.name, addr, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		status := resp.StatusCode
		if ep.name == "autodiscover" && status == 200 && strings.Contains(string(body), "<ErrorCode>") {
			// Autodiscover reports failures inside HTTP 200 (MS-OXDSCLI):
			// count its error document as the 503 of the others.
			status = http.StatusServiceUnavailable
		}
		switch {
		case status != want:
			t.Errorf("%s %s: status %d (HTTP %d), want %d: %.300s", ep.name, addr, status, resp.StatusCode, want, body)
		case want == 200 && !strings.Contains(string(body), ep.login(login)):
			t.Errorf("%s %s: answer lacks login %q: %.400s", ep.name, addr, login, body)
		case want == http.StatusServiceUnavailable && ep.name != "autodiscover" && resp.Header.Get("Retry-After") == "" && ep.name != "setup page":
			t.Errorf("%s %s: 503 without Retry-After", ep.name, addr)
		}
		t.Logf("%s %s: %d in %v", ep.name, addr, status, took.Round(time.Microsecond))
	}
}

func TestDirectoryOutageSlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	for _, tc := range []struct {
		name     string
		onError  string
		staleFor time.Duration
		// what an address nobody cached gets while the directory is down
		uncached int
		// what a cached address gets once its stale bound has passed
		afterStale int
	}{
		{"defaults", "defaults", time.Hour, 200, 200},
		{"fail", "fail", time.Hour, 503, 503},
		{"defaults, short stale bound", "defaults", 300 * time.Millisecond, 200, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv.Start()
			cfg := slapdConfig(t, srv, false)
			cfg.Cache.TTL, cfg.Cache.NegativeTTL = 400*time.Millisecond, 400*time.Millisecond
			cfg.Cache.StaleFor, cfg.Cache.OnDirectoryError = tc.staleFor, tc.onError
			_, hs := outageServer(t, cfg)
			c := hs.Client()

			// Up: bob is looked up and cached.
			askAll(t, c, hs.URL, "bob@example.com", "bob.login", 200)

			srv.Stop()
			time.Sleep(cfg.Cache.TTL + 100*time.Millisecond) // bob's entry is no longer fresh
			if tc.staleFor > time.Second {
				// Within the stale bound: bob keeps his own settings.
				askAll(t, c, hs.URL, "bob@example.com", "bob.login", 200)
			} else {
				time.Sleep(tc.staleFor)
				// Past it: bob is an address like any other.
				askAll(t, c, hs.URL, "bob@example.com", "bob@example.com", tc.afterStale)
			}
			// Alice was never asked for: the domain defaults (login = the
			// typed address), or 503 when so configured.
			askAll(t, c, hs.URL, "alice@example.com", "alice@example.com", tc.uncached)

			srv.Start()
			// Back: alice gets her own settings, once the breaker's
			// probe finds the directory. Her failed lookup was not cached
			// as "unknown".
			waitLogin(t, c, hs.URL, "alice@example.com", "alice")
			askAll(t, c, hs.URL, "alice@example.com", "alice", 200)
		})
	}
}

// waitLogin asks for addr until its autoconfig answer holds login, for at
// most 5 s: a directory back from an outage is asked again once its
// breaker's probe finds it, within a cool-down (2 s).
func waitLogin(t *testing.T, c *http.Client, base, addr, login string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		resp, err := c.Get(base + "/mail/config-v1.1.xml?emailaddress=" + addr)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), "<username>"+login+"</username>") {
				return time.Since(start)
			}
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: no answer with login %s within 5s (%v)", addr, login, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// whoLDIF puts who@example.com on a server with a login naming the server.
func whoLDIF(server string) string {
	return fmt.Sprintf(`dn: uid=who-%[1]s,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: who-%[1]s
cn: Who
sn: Who
mail: who@example.com
accountStatus: active
enabledService: mail
enabledService: imapsecured
enabledService: smtpsecured
`, server)
}

var usernameRE = regexp.MustCompile(`<username>([^<]*)</username>`)

// whoServedBy asks for who@example.com and returns the login in the
// answer: who-first, who-second, or who@example.com (the defaults).
func whoServedBy(t *testing.T, c *http.Client, base string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := c.Get(base + "/mail/config-v1.1.xml?emailaddress=who@example.com")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	m := usernameRE.FindSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("who: %d %s", resp.StatusCode, body)
	}
	return string(m[1]), took
}

func TestDirectoryFailoverSlapd(t *testing.T) {
	s1 := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(whoLDIF("first")))
	s2 := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(whoLDIF("second")))

	t.Run("first server killed", func(t *testing.T) {
		s1.Start()
		s2.Start()
		cfg := slapdConfig(t, s1, false)
		cfg.LDAP.URLs, cfg.LDAP.CAFile = []string{s1.URL, s2.URL}, ldaptest.CABundle(t, s1, s2)
		// Every request asks the directory: the answer names the server.
		cfg.Cache.TTL, cfg.Cache.NegativeTTL, cfg.Cache.StaleFor = time.Nanosecond, time.Nanosecond, 0
		a, hs := outageServer(t, cfg)
		c := hs.Client()
		// The first server refused connections when it was killed: its
		// breaker stays open until its probe finds it again, after up to
		// one cool-down.
		firstProbed := func() {
			s1.Start()
			start := time.Now()
			for slices.Contains(a.source.OpenBreakers(), s1.URL) {
				if time.Since(start) > 5*time.Second {
					t.Fatalf("the first server's breaker still open 5s after it came back")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		for _, step := range []struct {
			name   string
			action func()
			want   string
		}{
			{"both up: the first URL", func() {}, "who-first"},
			{"first killed: the second", s1.Stop, "who-second"},
			{"first back: stays on the second until it fails", firstProbed, "who-second"},
			{"second killed: back to the first", s2.Stop, "who-first"},
		} {
			step.action()
			got, took := whoServedBy(t, c, hs.URL)
			t.Logf("%s: %s in %v (request timeout %v)", step.name, got, took.Round(time.Millisecond), cfg.LDAP.RequestTimeout)
			if got != step.want {
				t.Errorf("%s: answered by %s; want %s", step.name, got, step.want)
			}
		}
	})

	t.Run("first server hangs", func(t *testing.T) {
		s1.Start()
		s2.Start()
		p := ldaptest.NewProxy(t, strings.TrimPrefix(s1.URL, "ldap://"))
		cfg := slapdConfig(t, s1, false)
		cfg.LDAP.URLs, cfg.LDAP.CAFile = []string{"ldap://" + p.Addr, s2.URL}, ldaptest.CABundle(t, s1, s2)
		cfg.LDAP.DialTimeout, cfg.LDAP.RequestTimeout, cfg.LDAP.PoolSize = time.Second, 2*time.Second, 4
		cfg.Cache.TTL, cfg.Cache.NegativeTTL, cfg.Cache.StaleFor = time.Nanosecond, time.Nanosecond, 0
		_, hs := outageServer(t, cfg)
		c := hs.Client()
		// Fill the pool with connections to the first server: concurrent
		// lookups of distinct addresses, slowed down so that they overlap.
		p.SetDelay(30 * time.Millisecond)
		var wg sync.WaitGroup
		for _, addr := range []string{"alice", "bob", "carol", "dave", "a.example", "nobody"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := c.Get(hs.URL + "/mail/config-v1.1.xml?emailaddress=" + addr + "@example.com")
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		wg.Wait()
		p.SetDelay(0)
		t.Logf("%d connections to the first server", p.MaxOpen())
		if got, _ := whoServedBy(t, c, hs.URL); got != "who-first" {
			t.Fatalf("before the hang: %s", got)
		}
		// The first server stops answering without closing anything: its
		// pooled connections are dead weight. A request may time out once
		// on one of them (answered with the defaults); the next request
		// must reach the second server.
		p.SetDelay(time.Hour)
		var answers []string
		for range 3 {
			got, took := whoServedBy(t, c, hs.URL)
			t.Logf("first server hung: %s in %v (dial timeout %v, request timeout %v)", got, took.Round(time.Millisecond), cfg.LDAP.DialTimeout, cfg.LDAP.RequestTimeout)
			answers = append(answers, got)
		}
		if answers[1] != "who-second" || answers[2] != "who-second" {
			t.Errorf("answers while the first server hangs: %v; want who-second from the second request on", answers)
		}
		if answers[0] != "who-second" && answers[0] != "who@example.com" {
			t.Errorf("first answer during the hang: %s; want the second server or the defaults", answers[0])
		}
	})
}

// settleGoroutines waits until at most n goroutines run, and returns the
// last count.
func settleGoroutines(n int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		g := runtime.NumGoroutine()
		if g <= n || time.Now().After(deadline) {
			return g
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSlowDirectorySlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	for _, tc := range []struct {
		onError string
		status  int
	}{
		{"defaults", 200},
		{"fail", 503},
	} {
		t.Run(tc.onError, func(t *testing.T) {
			p := ldaptest.NewProxy(t, strings.TrimPrefix(srv.URL, "ldap://"))
			p.CountAfter(50 * time.Millisecond) // a discarded connection closes asynchronously
			cfg := slapdConfig(t, srv, false)
			cfg.LDAP.URLs = []string{"ldap://" + p.Addr}
			cfg.LDAP.DialTimeout, cfg.LDAP.RequestTimeout, cfg.LDAP.PoolSize = 300*time.Millisecond, 600*time.Millisecond, 2
			cfg.Cache.OnDirectoryError = tc.onError
			cfg.Limits.MaxPerClient = 0 // 30 requests at once from one client
			_, hs := outageServer(t, cfg)
			c := &http.Client{Timeout: 30 * time.Second}

			// Healthy: one lookup, one pooled connection. Then the baseline.
			askAll(t, c, hs.URL, "bob@example.com", "bob.login", 200)
			c.CloseIdleConnections()
			base := settleGoroutines(0, 300*time.Millisecond)
			p.ResetMax()

			// The directory now answers after 2 s, well past the 600 ms
			// request timeout. 30 requests for addresses nobody cached,
			// all at once.
			p.SetDelay(2 * time.Second)
			const n = 30
			var wg sync.WaitGroup
			var mu sync.Mutex
			var slowest time.Duration
			var peak atomic.Int64
			stopSampling := make(chan struct{})
			go func() {
				for {
					select {
					case <-stopSampling:
						return
					case <-time.After(5 * time.Millisecond):
						if g := int64(runtime.NumGoroutine()); g > peak.Load() {
							peak.Store(g)
						}
					}
				}
			}()
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					addr := fmt.Sprintf("slow%d@example.com", i)
					start := time.Now()
					resp, err := c.Get(hs.URL + "/mail/config-v1.1.xml?emailaddress=" + addr)
					if err != nil {
						t.Errorf("%s: %v", addr, err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					took := time.Since(start)
					mu.Lock()
					slowest = max(slowest, took)
					mu.Unlock()
					if resp.StatusCode != tc.status {
						t.Errorf("%s: %d, want %d: %s", addr, resp.StatusCode, tc.status, body)
					} else if tc.status == 200 && !strings.Contains(string(body), "<username>"+addr+"</username>") {
						t.Errorf("%s: not the domain defaults: %s", addr, body)
					} else if tc.status == 503 && resp.Header.Get("Retry-After") == "" {
						t.Errorf("%s: 503 without Retry-After", addr)
					}
				}()
			}
			wg.Wait()
			close(stopSampling)
			t.Logf("%d requests against a directory answering after 2 s: slowest answer %v (request timeout %v); at most %d directory connections open at once (pool %d); goroutines %d before, %d at the peak",
				n, slowest.Round(time.Millisecond), cfg.LDAP.RequestTimeout, p.MaxOpen(), cfg.LDAP.PoolSize, base, peak.Load())
			if got := p.MaxOpen(); got > cfg.LDAP.PoolSize {
				t.Errorf("%d directory connections open at once; want at most ldap.pool_size = %d", got, cfg.LDAP.PoolSize)
			}
			// Each request holds a few goroutines of its own (HTTP client
			// and server, its search): nothing grows beyond that.
			if limit := int64(base + 10*n + 8*cfg.LDAP.PoolSize); peak.Load() > limit {
				t.Errorf("%d goroutines at the peak; want at most %d", peak.Load(), limit)
			}

			// Afterwards everything winds down to where it was, but for
			// the one probe of the directory's open breaker.
			c.CloseIdleConnections()
			if g := settleGoroutines(base+1, 15*time.Second); g > base+1 {
				t.Errorf("%d goroutines after the slow period; want at most the %d before it and the breaker's probe", g, base)
			}

			// And once the directory is fast again, lookups work: as
			// soon as the breaker's probe finds it.
			p.SetDelay(0)
			waitLogin(t, c, hs.URL, "alice@example.com", "alice")
			askAll(t, c, hs.URL, "alice@example.com", "alice", 200)
		})
	}
}
