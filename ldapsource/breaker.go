package ldapsource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// breakerCooldown is how long requests leave a directory server alone
// after it timed out or refused a connection, and how often the one
// background probe of that server tries it again meanwhile. Short enough
// that lookups reach a server within a few seconds of its return, long
// enough that a dead server costs one connection attempt per interval
// rather than one per request.
const breakerCooldown = 2 * time.Second

// ErrUnreachable marks a lookup refused at once because no directory
// server answers: each one timed out or refused a connection, and its
// breaker is open until a background probe finds it again. It is a
// transient failure: callers serve cached answers or defaults.
var ErrUnreachable = errors.New("directory server not answering (breaker open)")

// errBreakerOpened is the cause with which the breaker ends the searches
// and dials in flight to its server when it opens.
var errBreakerOpened = errors.New("the directory server stopped answering")

// breaker remembers that one directory server (one URL) does not answer.
// Closed, requests use the server. A request that finds the server hung
// (a dial or search that ran out of time) or gone (connection refused,
// reset) opens it: requests then skip the server without dialing it, the
// searches and dials in flight to it end at once, and one background
// probe per server tries it every breakerCooldown until it answers, which
// closes the breaker. Configuration errors (a refused password, a bad
// certificate) are answers, not silence: the bind gate (backoff.go) deals
// with those.
type breaker struct {
	url  string
	log  *slog.Logger
	open prometheus.Gauge // shared across reloads: one per source with the breaker open

	mu       sync.Mutex
	isOpen   bool
	shut     bool // the source is closed: no more probes, no more counting
	since    time.Time
	inflight map[*inflight]struct{} // searches and dials to the server under way
}

type inflight struct{ cancel context.CancelCauseFunc }

func newBreaker(url string, log *slog.Logger, open prometheus.Gauge) *breaker {
	return &breaker{url: url, log: log, open: open, inflight: make(map[*inflight]struct{})}
}

// opened reports whether requests must leave the server alone.
func (b *breaker) opened() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.isOpen
}

// track returns a context for one search or dial to the server that ends
// when the breaker opens, so that nothing waits on a server known to hang,
// and the function that releases it.
func (b *breaker) track(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	f := &inflight{cancel: cancel}
	b.mu.Lock()
	if b.isOpen {
		cancel(errBreakerOpened)
	} else {
		b.inflight[f] = struct{}{}
	}
	b.mu.Unlock()
	return ctx, func() {
		b.mu.Lock()
		delete(b.inflight, f)
		b.mu.Unlock()
		cancel(nil)
	}
}

// trip opens the breaker after err, and reports whether it was closed: the
// caller then starts the one probe. It logs the opening, not each failure.
func (b *breaker) trip(err error) bool {
	return b.openSince(time.Now(), err)
}

// openSince opens the breaker, open since then; a nil err (a breaker
// carried over a reload) logs nothing, the opening was logged already.
func (b *breaker) openSince(since time.Time, err error) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isOpen || b.shut {
		return false
	}
	b.isOpen, b.since = true, since
	b.open.Inc()
	for f := range b.inflight {
		f.cancel(errBreakerOpened)
	}
	clear(b.inflight)
	if err == nil {
		return true
	}
	b.log.Warn("directory server not answering: requests skip it (lookups fail over to another ldap.urls entry, or get cached answers and defaults at once); one background probe tries it every "+breakerCooldown.String(),
		"url", b.url, "err", err)
	return true
}

// reset closes the breaker after a probe got an answer.
func (b *breaker) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.isOpen || b.shut {
		return
	}
	b.isOpen = false
	b.open.Dec()
	b.log.Info("directory server answers again: requests use it", "url", b.url, "after", time.Since(b.since).Round(time.Millisecond).String())
}

// close stops the breaker with its source; an open one stops counting.
func (b *breaker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.isOpen && !b.shut {
		b.open.Dec()
	}
	b.shut = true
}

// interruptOn makes reads and writes on nc that block end as soon as ctx
// ends (its deadline, or the breaker opening), for go-ldap calls that only
// heed the socket's deadline. Call the returned function before nc is used
// beyond ctx; it reports false when ctx had ended.
func interruptOn(ctx context.Context, nc net.Conn) func() bool {
	return context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
}

// CarryBreakers opens the breakers of s's URLs whose breaker is open in
// old, the source a reload replaces, each with its probe: requests of the
// new configuration do not wait on a server known to hang.
func (s *Source) CarryBreakers(old *Source) {
	for j, ob := range old.breakers[:old.knownTargets()] {
		ob.mu.Lock()
		open, since := ob.isOpen && !ob.shut, ob.since
		ob.mu.Unlock()
		if !open {
			continue
		}
		for i, t := range s.targets[:s.knownTargets()] {
			if t.url == old.targets[j].url && s.breakers[i].openSince(since, nil) {
				go s.probeLoop(i)
			}
		}
	}
}

// OpenBreakers returns the URLs whose breaker is open: servers that timed
// out or refused connections and that requests leave alone until their
// probe gets an answer.
func (s *Source) OpenBreakers() []string {
	var open []string
	for i, b := range s.breakers[:s.knownTargets()] {
		if b.opened() {
			open = append(open, s.targets[i].url)
		}
	}
	return open
}

// unanswered reports whether err means the server did not answer: a
// timeout, a refused or broken connection, or the server saying it is busy
// or unavailable. An LDAP result of any other kind, and a configuration
// error, is an answer.
func unanswered(err error) bool {
	if err == nil || ConfigurationError(err) != nil || errors.Is(err, ErrInvalidCredentials) || errors.Is(err, ErrInsecureBind) {
		return false
	}
	var le *ldap.Error
	if errors.As(err, &le) && le.ResultCode < ldap.ErrorNetwork {
		return le.ResultCode == ldap.LDAPResultBusy || le.ResultCode == ldap.LDAPResultUnavailable
	}
	return true
}

// timedOut reports whether a search that failed with err ran out of the
// time ctx gave it (rather than being cancelled by its caller or by the
// breaker).
func timedOut(ctx context.Context, err error) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	// go-ldap's own timer, set to the same deadline, may fire first.
	var le *ldap.Error
	return errors.As(err, &le) && le.ResultCode == ldap.ErrorNetwork && le.Err != nil && strings.Contains(le.Err.Error(), "timed out")
}

// failed records that target idx did not answer err, unless caller (the
// context of whoever asked) ended first and so the failure is not the
// server's. Opening the breaker drops the idle connections to the server
// and starts its probe.
func (s *Source) failed(caller context.Context, idx int, err error) {
	// A dial bounded by the caller's deadline times out with it, maybe a
	// moment before the caller's own timer fires: the clock decides.
	if d, ok := caller.Deadline(); caller.Err() != nil || ok && !time.Now().Before(d) {
		return
	}
	if !unanswered(err) || errors.Is(err, errBreakerOpened) || errors.Is(err, errBindQueue) {
		return
	}
	if s.breakers[idx].trip(err) {
		s.dropIdle(idx)
		go s.probeLoop(idx)
	}
}

// skip returns the error for a target whose breaker is open, or nil.
func (s *Source) skip(idx int) error {
	if s.breakers[idx].opened() {
		return fmt.Errorf("%s: %w", s.targets[idx].url, ErrUnreachable)
	}
	return nil
}

// probeLoop tries target idx every cooldown until it answers, then closes
// its breaker. It is the only traffic the server gets while the breaker is
// open, and it ends with the source.
func (s *Source) probeLoop(idx int) {
	t := time.NewTimer(s.cooldown)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
		}
		if s.probe(idx) {
			s.breakers[idx].reset()
			return
		}
		t.Reset(s.cooldown)
	}
}

// probe reports whether target idx answers: it connects (TLS or StartTLS
// as configured) and reads the root DSE, without binding, so that a probe
// never counts as a failed logon of the service account. Any LDAP answer
// counts, a refusal too; so does a certificate the configuration rejects,
// which the bind gate reports once requests dial again.
func (s *Source) probe(idx int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	defer cancel()
	lc, _, err := s.connect(ctx, idx)
	if err != nil {
		return ConfigurationError(classify(err, s.passwordKey, s.cfg.BindDN)) != nil
	}
	defer lc.Close()
	_, err = lc.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 0, false, "(objectClass=*)", []string{"1.1"}, nil))
	return !unanswered(err)
}
