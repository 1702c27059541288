package ldapsource_test

// The breaker per directory server, against real slapd processes stopped
// with SIGSTOP: a hung server that accepts connections (the kernel does)
// and never answers.

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// waitBreaker waits up to 5 s until the breaker of src's i-th URL is open
// (or closed), and returns how long that took.
func waitBreaker(t *testing.T, src *ldapsource.Source, i int, open bool) time.Duration {
	t.Helper()
	start := time.Now()
	for ldapsource.BreakerOpen(src, i) != open {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("breaker of URL %d: open %v after 5s; want %v", i, !open, open)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[max(0, int(float64(len(s))*p+0.999999)-1)]
}

// TestBreakerStates walks one server's breaker through its states: closed
// while the server answers; open after a search times out on the hung
// server; while open no request dials it (lookups and user binds fail at
// once with ErrUnreachable) and one probe per cool-down does; closed again
// once a probe gets an answer after SIGCONT.
func TestBreakerStates(t *testing.T) {
	t.Parallel()
	srv := ldaptest.Slapd(t)
	p := ldaptest.NewProxy(t, strings.TrimPrefix(srv.URL, "ldap://"))
	cfg := slapdConfig(srv.CAFile, true, "ldap://"+p.Addr)
	cfg.ServerName = "127.0.0.1"
	cfg.DialTimeout, cfg.RequestTimeout = 300*time.Millisecond, 600*time.Millisecond
	reg := prometheus.NewRegistry()
	src, err := ldapsource.New(cfg, []string{"uid"}, nil, ldapsource.NewMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	const cooldown = 400 * time.Millisecond
	ldapsource.SetBreakerCooldown(src, cooldown)
	gauge := func() float64 {
		t.Helper()
		n, err := testutil.GatherAndCount(reg, "mailbeacon_directory_breaker_open")
		if err != nil || n != 1 {
			t.Fatalf("breaker gauge: %d series, %v", n, err)
		}
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "mailbeacon_directory_breaker_open" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}

	// Closed: lookups work and leave pooled connections behind.
	ldaptest.Together(4, func(int) {
		if _, err := lookup(src, "alice@example.com"); err != nil {
			t.Errorf("lookup before the hang: %v", err)
		}
	})
	if ldapsource.BreakerOpen(src, 0) || gauge() != 0 {
		t.Fatalf("breaker open (gauge %v) while the server answers", gauge())
	}
	pooled := p.MaxOpen()

	resume := srv.Hang()
	// The first lookup finds the server hung on a pooled connection: it
	// waits its request timeout, once, and opens the breaker.
	start := time.Now()
	_, err = lookup(src, "alice@example.com")
	first := time.Since(start)
	if err == nil || ldapsource.KindOf(err) != ldapsource.Transient {
		t.Fatalf("lookup on the hung server: %v; want a transient error", err)
	}
	if !ldapsource.BreakerOpen(src, 0) || gauge() != 1 {
		t.Fatalf("breaker closed (gauge %v) after a search timed out", gauge())
	}
	t.Logf("first lookup on the hung server: %v (request timeout %v)", first.Round(time.Millisecond), cfg.RequestTimeout)
	// The connections pooled to the hung server are closed (the proxy
	// sees them go); only a probe's may be open.
	var open int
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		p.ResetMax()
		if open = p.MaxOpen(); open <= 1 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("connections to the server: %d pooled before the hang, %d open after the breaker opened", pooled, open)
	if open > 1 {
		t.Errorf("%d connections still open to the hung server; want its pooled ones dropped", open)
	}
	if first > cfg.RequestTimeout+500*time.Millisecond {
		t.Errorf("first lookup took %v; want about the request timeout %v", first, cfg.RequestTimeout)
	}

	// Open: 300 lookups and user binds at once, then more over a few
	// cool-downs: none dials, each fails at once with ErrUnreachable. The
	// only connections are the probe's, one per cool-down at most.
	accepted := p.Accepted()
	openedAt := time.Now()
	var mu sync.Mutex
	var took []time.Duration
	check := func(err error, d time.Duration, what string) {
		if !errors.Is(err, ldapsource.ErrUnreachable) || ldapsource.KindOf(err) != ldapsource.Transient {
			t.Errorf("%s while the breaker is open: %v; want ErrUnreachable", what, err)
		}
		mu.Lock()
		took = append(took, d)
		mu.Unlock()
	}
	ldaptest.Together(300, func(i int) {
		start := time.Now()
		if i%3 == 0 {
			err := src.Authenticate(context.Background(), aliceDN, ldaptest.UserPassword)
			check(err, time.Since(start), "Authenticate")
			return
		}
		_, err := lookup(src, "alice@example.com")
		check(err, time.Since(start), "lookup")
	})
	for time.Since(openedAt) < 3*cooldown {
		start := time.Now()
		_, err := lookup(src, "bob@example.com")
		check(err, time.Since(start), "lookup")
		time.Sleep(10 * time.Millisecond)
	}
	if err := ping(src); !errors.Is(err, ldapsource.ErrUnreachable) {
		t.Errorf("Ping while the breaker is open: %v; want ErrUnreachable", err)
	}
	elapsed := time.Since(openedAt)
	dials := p.Accepted() - accepted
	// A probe every cool-down plus its dial timeout, at most.
	maxProbes := int(elapsed/cooldown) + 1
	t.Logf("breaker open for %v: %d requests, p50 %v, p99 %v, max %v; %d connections to the server (probes), at most %d allowed",
		elapsed.Round(time.Millisecond), len(took), percentile(took, .5), percentile(took, .99), percentile(took, 1), dials, maxProbes)
	if dials < 1 || dials > maxProbes {
		t.Errorf("%d connections to the hung server while its breaker was open for %v; want 1 to %d (one probe per cool-down, none per request)", dials, elapsed, maxProbes)
	}

	// SIGCONT: the probe gets an answer and closes the breaker; lookups
	// reach the server again.
	resume()
	closed := waitBreaker(t, src, 0, false)
	t.Logf("breaker closed %v after SIGCONT (cool-down %v)", closed.Round(time.Millisecond), cooldown)
	if e, err := lookup(src, "alice@example.com"); err != nil || e.DN != aliceDN {
		t.Fatalf("lookup after the server came back: %v, %v", e, err)
	}
	if err := src.Authenticate(context.Background(), aliceDN, ldaptest.UserPassword); err != nil {
		t.Errorf("Authenticate after the server came back: %v", err)
	}
	if gauge() != 0 {
		t.Errorf("breaker gauge %v after it closed; want 0", gauge())
	}
}

// TestBreakerHungAndHealthyServer: of two URLs, the first hangs. Lookups
// in flight when it hangs end within the request timeout; once its
// breaker is open, every lookup goes to the second server at once, without
// waiting for the first.
func TestBreakerHungAndHealthyServer(t *testing.T) {
	t.Parallel()
	s1 := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(markerLDIF("on-first")))
	s2 := ldaptest.Slapd(t, ldaptest.WithExtraLDIF(markerLDIF("on-second")))
	cfg := slapdConfig(ldaptest.CABundle(t, s1, s2), true, s1.URL, s2.URL)
	cfg.DialTimeout, cfg.RequestTimeout, cfg.PoolSize = 500*time.Millisecond, time.Second, 8
	src := slapdSource(t, cfg, "uid")

	// Both up: the first URL answers, and its connections fill the pool.
	ldaptest.Together(8, func(int) {
		if _, err := lookup(src, "on-first@example.com"); err != nil {
			t.Errorf("lookup before the hang: %v", err)
		}
	})

	s1.Hang()
	// 40 lookups at once on a pool of connections to a server that just
	// hung: 8 wait on its pooled connections, the others for a pool slot;
	// none outlives the request timeout by much.
	var mu sync.Mutex
	var took []time.Duration
	var second int
	ldaptest.Together(40, func(int) {
		start := time.Now()
		_, err := lookup(src, "on-second@example.com")
		d := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		took = append(took, d)
		if err == nil {
			second++
		}
	})
	t.Logf("40 lookups in flight when the first server hung: %d answered by the second; p50 %v, max %v (request timeout %v)",
		second, percentile(took, .5), percentile(took, 1), cfg.RequestTimeout)
	if m := percentile(took, 1); m > cfg.RequestTimeout+500*time.Millisecond {
		t.Errorf("a lookup in flight took %v; want at most the request timeout %v", m, cfg.RequestTimeout)
	}
	if !ldapsource.BreakerOpen(src, 0) || ldapsource.BreakerOpen(src, 1) {
		t.Fatalf("breakers open: first %v, second %v; want the first only", ldapsource.BreakerOpen(src, 0), ldapsource.BreakerOpen(src, 1))
	}

	// Open: every lookup is answered by the second server, at once.
	took = took[:0]
	for range 50 {
		start := time.Now()
		e, err := lookup(src, "on-second@example.com")
		took = append(took, time.Since(start))
		if err != nil || !strings.HasPrefix(e.DN, "uid=on-second,") {
			t.Fatalf("lookup with the first server hung: %v, %v; want the second server's entry", e, err)
		}
	}
	t.Logf("50 lookups with the first server's breaker open: p50 %v, p99 %v", percentile(took, .5), percentile(took, .99))
	if p99 := percentile(took, .99); p99 > 50*time.Millisecond {
		t.Errorf("p99 %v with a healthy second server; want no wait for the hung first one", p99)
	}
}

// TestBreakerUserBind: a user bind that finds the server hung opens the
// breaker like a lookup does; the next binds and lookups fail at once.
func TestBreakerUserBind(t *testing.T) {
	t.Parallel()
	srv := ldaptest.Slapd(t)
	cfg := slapdConfig(srv.CAFile, true, srv.URL)
	cfg.DialTimeout, cfg.RequestTimeout = 300*time.Millisecond, 600*time.Millisecond
	src := slapdSource(t, cfg, "uid")
	ctx := context.Background()
	if err := src.Authenticate(ctx, aliceDN, ldaptest.UserPassword); err != nil {
		t.Fatalf("Authenticate while the server answers: %v", err)
	}
	srv.Hang()
	start := time.Now()
	err := src.Authenticate(ctx, aliceDN, ldaptest.UserPassword)
	t.Logf("user bind on the hung server: %v after %v", err, time.Since(start).Round(time.Millisecond))
	if err == nil || errors.Is(err, ldapsource.ErrInvalidCredentials) || !ldapsource.BreakerOpen(src, 0) {
		t.Fatalf("user bind on the hung server: %v, breaker open %v; want a failure that opens the breaker", err, ldapsource.BreakerOpen(src, 0))
	}
	for _, f := range []func() error{
		func() error { return src.Authenticate(ctx, aliceDN, ldaptest.UserPassword) },
		func() error { _, err := lookup(src, "alice@example.com"); return err },
	} {
		start := time.Now()
		err := f()
		if took := time.Since(start); !errors.Is(err, ldapsource.ErrUnreachable) || took > cfg.DialTimeout/2 {
			t.Errorf("with the breaker open: %v after %v; want ErrUnreachable at once", err, took)
		}
	}
}

// TestBreakerNotOpenedByBindQueue: a dial that runs out of its
// dial_timeout waiting for another service-account bind to end (binds go
// one at a time) says nothing about the server, which answered its
// connection at once: its breaker stays closed, and the next lookup uses
// it.
func TestBreakerNotOpenedByBindQueue(t *testing.T) {
	srv := ldaptest.Slapd(t)
	cfg := slapdConfig(srv.CAFile, true, srv.URL)
	cfg.DialTimeout, cfg.RequestTimeout = 300*time.Millisecond, 2*time.Second
	src := slapdSource(t, cfg, "uid")
	release := ldapsource.HoldServiceBinds(src)
	_, err := lookup(src, "alice@example.com")
	release()
	if err == nil {
		t.Fatal("a lookup found the service-account bind slot held and still bound")
	}
	if ldapsource.BreakerOpen(src, 0) {
		t.Fatalf("the breaker opened after a dial that waited for the bind queue: %v", err)
	}
	if _, err := lookup(src, "alice@example.com"); err != nil {
		t.Errorf("lookup once the bind slot is free: %v", err)
	}
}
