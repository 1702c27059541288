package ldapsource

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// errUntrusted is a configuration error that is not a refusal of the
// credentials: it is backed off, not remembered.
var errUntrusted = &Error{Kind: Configuration, Key: "ldap.ca_file", Reason: "certificate not trusted", Fix: "fix it", Err: errors.New("x509")}

// fakeGate returns a gate on a clock the test moves, and a dial that
// counts its calls and fails with *fail (nil: succeeds).
func fakeGate() (g *bindGate, clock *time.Time, calls *atomic.Int32, fail *error) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock = &now
	cfg := Config{URLs: []string{"ldap://ldap.example.com"}, BindDN: "cn=svc", BindPassword: "secret", LockedRetryInterval: DefaultLockedRetryInterval}
	g = newBindGate(&cfg, NewRefusals(), passwordFileClassifier(cfg.BindDN), slog.New(slog.DiscardHandler), NewMetrics(nil).bindBackoffs)
	g.now = func() time.Time { return *clock }
	calls = new(atomic.Int32)
	fail = new(error)
	return g, clock, calls, fail
}

// Over three minutes of requests every 100ms against a certificate the
// service does not trust, it dials at 0, 5, 15, 35, 75 and 135s: the interval doubles
// from 5s up to the one-minute cap, and one success resets it.
func TestBindGateBackoff(t *testing.T) {
	g, clock, calls, fail := fakeGate()
	*fail = errUntrusted
	try := func() (*conn, error) { calls.Add(1); return nil, *fail }
	var at []time.Duration
	start := *clock
	for range 10 * 60 * 3 { // three minutes
		before := calls.Load()
		_, err := g.dial(context.Background(), try)
		if ConfigurationError(err) == nil {
			t.Fatalf("dial = %v; want the configuration error", err)
		}
		if calls.Load() > before {
			at = append(at, clock.Sub(start))
		}
		*clock = clock.Add(100 * time.Millisecond)
	}
	want := []time.Duration{0, 5 * time.Second, 15 * time.Second, 35 * time.Second, 75 * time.Second, 135 * time.Second}
	if len(at) != len(want) {
		t.Fatalf("binds at %v; want %v", at, want)
	}
	for i := range want {
		if at[i] != want[i] {
			t.Fatalf("binds at %v; want %v", at, want)
		}
	}
	// Each refused bind starts one backoff interval.
	if got := testutil.ToFloat64(g.backoffs); got != float64(len(want)) {
		t.Errorf("mailbeacon_directory_bind_backoffs_total = %v, want %d", got, len(want))
	}
	// Fixed: the next attempt after the interval works and resets it.
	*fail = nil
	*clock = clock.Add(time.Minute)
	if _, err := g.dial(context.Background(), try); err != nil {
		t.Fatal(err)
	}
	*fail = errUntrusted
	g.dial(context.Background(), try)
	if g.delay != firstBackoff {
		t.Errorf("after a success the interval is %v, want %v", g.delay, firstBackoff)
	}
}

// Before the first bind has worked, hundreds of concurrent dials share
// one attempt; transient failures are shared too, without a backoff.
func TestBindGateCollapses(t *testing.T) {
	for _, failure := range []error{errUntrusted, errors.New("connection refused")} {
		g, _, calls, fail := fakeGate()
		*fail = failure
		release := make(chan struct{})
		try := func() (*conn, error) { calls.Add(1); <-release; return nil, *fail }
		const n = 300
		go func() {
			for calls.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // let the others queue behind the first
			close(release)
		}()
		ldaptest.Together(n, func(int) {
			if _, err := g.dial(context.Background(), try); !errors.Is(err, failure) {
				t.Errorf("dial = %v; want %v", err, failure)
			}
		})
		if got := calls.Load(); got < 1 || (got > 1 && KindOf(failure) == Configuration) {
			t.Errorf("%v: %d dials for %d callers", failure, got, n)
		}
		if KindOf(failure) == Transient && g.err != nil {
			t.Errorf("a transient failure started a backoff")
		}
	}
}

// passwordFileClassifier classifies as a Source with a password file
// and bind DN bindDN does.
func passwordFileClassifier(bindDN string) func(error) error {
	return func(err error) error { return classify(err, "ldap.bind_password_file", bindDN) }
}
