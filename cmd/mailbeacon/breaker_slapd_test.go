package main

// A hung directory (slapd stopped with SIGSTOP: the kernel still accepts
// connections, nothing answers) through `mailbeacon serve`: cached users
// keep their answers and everybody else gets the domain defaults, at
// once, and answers come from the directory again within 5 s of SIGCONT.

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// breakerUsers are directory users whose login (w<i>.login) differs from
// the domain defaults' (the typed address).
func breakerUsersLDIF(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `dn: uid=w%[1]d.login,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
objectClass: mailUser
uid: w%[1]d.login
cn: W%[1]d
sn: W%[1]d
mail: w%[1]d@example.com
accountStatus: active
enabledService: mail
enabledService: imapsecured
enabledService: smtpsecured

`, i)
	}
	return b.String()
}

// breakerRig is serve against a slapd that the test can stop with SIGSTOP.
type breakerRig struct {
	t      *testing.T
	srv    *ldaptest.Server
	s      *serving
	c      *http.Client
	base   string
	ops    string
	resume func()
}

const breakerWarm = 10 // cached users

func newBreakerRig(t *testing.T) *breakerRig {
	t.Helper()
	srv := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(breakerUsersLDIF(breakerWarm)))
	// A short TTL: the cached answers are stale when the directory
	// hangs, so every lookup asks the directory first, as it would ten
	// minutes (cache.ttl) into a real outage. The directory timeouts are
	// the defaults (dial 2s, request 3s).
	file := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, file, slapdConfigText(t, srv, slapdOptions{extra: `
cache:
  ttl: 1s
  stale_for: 1h
limits:
  max_per_client: 0
  unknown_per_minute: 0
  requests_per_second: 10000
  burst: 10000
`}))
	s := startServe(t, []string{"--config", file, "--listen", "127.0.0.1:0"}, "operations.listen")
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	t.Cleanup(tr.CloseIdleConnections)
	return &breakerRig{t: t, srv: srv, s: s, c: &http.Client{Timeout: 10 * time.Second, Transport: tr},
		base: s.addrs["server.listen"], ops: s.addrs["operations.listen"]}
}

// login asks autoconfig for addr and returns the login in the answer and
// how long it took.
func (r *breakerRig) login(addr string) (string, time.Duration, error) {
	start := time.Now()
	resp, err := r.c.Get(r.base + "/mail/config-v1.1.xml?emailaddress=" + addr)
	if err != nil {
		return "", 0, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	m := usernameRE.FindSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		return "", took, fmt.Errorf("%s: %d %.200s", addr, resp.StatusCode, body)
	}
	return string(m[1]), took, nil
}

// hang stops slapd with SIGSTOP; SIGCONT follows in resume, and when the
// test ends whatever happened.
func (r *breakerRig) hang() {
	r.t.Helper()
	r.resume = r.srv.Hang()
}

var breakerGaugeRE = regexp.MustCompile(`(?m)^mailbeacon_directory_breaker_open\{url="[^"]*"\} (\S+)$`)

// breakerGauge reads the breaker's gauge from /metrics.
func (r *breakerRig) breakerGauge() string {
	r.t.Helper()
	code, body := get(r.t, r.c, r.ops+"/metrics", "")
	m := breakerGaugeRE.FindStringSubmatch(body)
	if code != 200 || m == nil {
		r.t.Fatalf("/metrics: %d, no breaker gauge", code)
	}
	return m[1]
}

// waitGauge waits up to 5 s for the breaker gauge to read want.
func (r *breakerRig) waitGauge(want string) time.Duration {
	r.t.Helper()
	start := time.Now()
	for r.breakerGauge() != want {
		if time.Since(start) > 5*time.Second {
			r.t.Fatalf("breaker gauge %s after 5s; want %s", r.breakerGauge(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// warm caches the breakerWarm users, measures a batch of their answers
// fresh from the cache with the directory up (the baseline), and waits
// until the answers are stale.
func (r *breakerRig) warm(n int, span time.Duration) (p99 time.Duration) {
	r.t.Helper()
	for i := range breakerWarm {
		if l, _, err := r.login(fmt.Sprintf("w%d@example.com", i)); err != nil || l != fmt.Sprintf("w%d.login", i) {
			r.t.Fatalf("warming w%d: %q, %v", i, l, err)
		}
	}
	// Twice: the first batch also opens the client's connections.
	r.batch("baseline", n, span, r.cachedUser)
	took := r.batch("baseline", n, span, r.cachedUser)
	r.t.Logf("baseline, cached users fresh, directory up: %d requests, p50 %v, p99 %v", n, pct(took, .5).Round(10*time.Microsecond), pct(took, .99).Round(10*time.Microsecond))
	time.Sleep(1100 * time.Millisecond) // cache.ttl
	return pct(took, .99)
}

// cachedUser is request i's cached user and their login.
func (r *breakerRig) cachedUser(i int) (string, string) {
	return fmt.Sprintf("w%d@example.com", i%breakerWarm), fmt.Sprintf("w%d.login", i%breakerWarm)
}

// batch runs n requests, either paced over span or all at once (span 0,
// released together), for the address and expected login of request i,
// and returns their durations.
func (r *breakerRig) batch(what string, n int, span time.Duration, ask func(i int) (addr, login string)) []time.Duration {
	r.t.Helper()
	took := make([]time.Duration, n)
	one := func(i int) {
		addr, want := ask(i)
		got, d, err := r.login(addr)
		took[i] = d
		if err != nil || got != want {
			r.t.Errorf("%s %s: login %q, %v; want %q", what, addr, got, err, want)
		}
	}
	if span == 0 {
		ldaptest.Together(n, one)
	} else {
		var wg sync.WaitGroup
		tick := time.NewTicker(span / time.Duration(n))
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); one(i) }()
			<-tick.C
		}
		tick.Stop()
		wg.Wait()
	}
	return took
}

func pct(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max(0, int(float64(len(s))*p+0.999999)-1)]
}

// checkP99 logs the figures of a batch and fails when its p99 is over limit.
func (r *breakerRig) checkP99(what string, took []time.Duration, limit time.Duration) {
	r.t.Helper()
	r.t.Logf("%s: %d requests, p50 %v, p99 %v, max %v (limit %v)", what, len(took),
		pct(took, .5).Round(10*time.Microsecond), pct(took, .99).Round(10*time.Microsecond), pct(took, 1).Round(10*time.Microsecond),
		limit.Round(10*time.Microsecond))
	if p99 := pct(took, .99); p99 > limit {
		r.t.Errorf("%s: p99 %v; want at most %v", what, p99, limit)
	}
}

// recover resumes slapd and waits until a user nobody cached (dave, login
// "dave") gets their own answer rather than the defaults: at most 5 s.
func (r *breakerRig) recover() {
	r.t.Helper()
	r.resume()
	back := waitLogin(r.t, r.c, r.base, "dave@example.com", "dave")
	r.t.Logf("answers from the directory again %v after SIGCONT", back.Round(time.Millisecond))
	if g := r.breakerGauge(); g != "0" {
		r.t.Errorf("breaker gauge %s after the directory answered again; want 0", g)
	}
	// The log is flushed every interval: wait for the closing line.
	r.s.waitLog(`msg="directory server answers again`, 1)
	log := r.s.stderr.String()
	if n := strings.Count(log, `msg="directory server not answering`); n != 1 {
		r.t.Errorf("%d log lines on the breaker opening; want 1", n)
	}
	if n := strings.Count(log, `msg="directory server answers again`); n != 1 {
		r.t.Errorf("%d log lines on the breaker closing; want 1", n)
	}
}

// TestBreakerSlapdStopped: slapd hangs (SIGSTOP); 200 requests over 20 s
// for cached users get their own answers, then 200 over 20 s for
// addresses nobody cached get the domain defaults, each with p99 <= 50 ms;
// after SIGCONT answers come from the directory within 5 s.
func TestBreakerSlapdStopped(t *testing.T) {
	r := newBreakerRig(t)
	r.warm(20, time.Second)
	r.hang()
	cached := r.batch("cached", 200, 20*time.Second, r.cachedUser)
	r.checkP99("cached users, slapd stopped, 200 over 20s", cached, 50*time.Millisecond)
	if g := r.breakerGauge(); g != "1" {
		t.Errorf("breaker gauge %s with slapd stopped; want 1", g)
	}
	uncached := r.batch("uncached", 200, 20*time.Second, func(i int) (string, string) {
		a := fmt.Sprintf("nobody%d@example.com", i)
		return a, a
	})
	r.checkP99("uncached addresses, slapd stopped, 200 over 20s", uncached, 50*time.Millisecond)
	// Readiness says the directory does not answer, at once.
	start := time.Now()
	code, _ := get(t, r.c, r.ops+"/readyz", "")
	t.Logf("/readyz with the breaker open: %d in %v", code, time.Since(start).Round(time.Microsecond))
	if code != http.StatusServiceUnavailable || time.Since(start) > time.Second {
		t.Errorf("/readyz with slapd stopped: %d after %v; want 503 at once", code, time.Since(start))
	}
	r.recover()
}

// TestBreakerSlapdStoppedAtOnce: the same with 200 requests released at
// the same instant: cached users first, right after SIGSTOP, then, once
// the breaker is open, addresses nobody cached; each burst's p99 at most
// twice that of a burst answered from a fresh cache, plus 100 ms: far
// below the seconds a request waits on a hung directory.
func TestBreakerSlapdStoppedAtOnce(t *testing.T) {
	r := newBreakerRig(t)
	// 200 requests at once queue for the CPU (two cores, maybe the race
	// detector, maybe other test packages): the stale answers' background
	// searches add to the p99 of the same burst answered from a fresh
	// cache with the directory up.
	limit := 2*r.warm(200, 0) + 100*time.Millisecond
	r.hang()
	cached := r.batch("cached", 200, 0, r.cachedUser)
	r.checkP99("cached users, slapd stopped, 200 at once", cached, limit)
	// The searches the stale answers started find the server hung
	// within ldap.request_timeout and open the breaker.
	t.Logf("breaker open %v after the burst", r.waitGauge("1").Round(time.Millisecond))
	uncached := r.batch("uncached", 200, 0, func(i int) (string, string) {
		a := fmt.Sprintf("nobody%d@example.com", i)
		return a, a
	})
	r.checkP99("uncached addresses, slapd stopped, 200 at once", uncached, limit)
	r.recover()
}

// TestBreakerSlapdStoppedReload: a SIGHUP while slapd hangs does not make
// the new configuration find the hang anew: its source takes the open
// breaker over, so addresses nobody cached still get the defaults at
// once; after SIGCONT answers come from the directory within 5 s, and the
// opening and closing are logged once each across the reload.
func TestBreakerSlapdStoppedReload(t *testing.T) {
	r := newBreakerRig(t)
	r.warm(20, time.Second)
	r.hang()
	// Lookups find the hang and open the breaker.
	r.batch("cached", 20, time.Second, r.cachedUser)
	r.waitGauge("1")
	r.s.hup()
	r.s.waitLog(`msg="configuration reloaded"`, 1)
	uncached := r.batch("uncached", 100, 5*time.Second, func(i int) (string, string) {
		a := fmt.Sprintf("after-reload%d@example.com", i)
		return a, a
	})
	r.checkP99("uncached addresses after a reload, slapd stopped, 100 over 5s", uncached, 50*time.Millisecond)
	if g := r.breakerGauge(); g != "1" {
		t.Errorf("breaker gauge %s after the reload with slapd stopped; want 1", g)
	}
	r.recover()
}
