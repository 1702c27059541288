package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// Reloading the configuration on SIGHUP. A reload builds everything anew
// from the file; if that fails, the log says why (naming the key) and the
// running configuration keeps serving. Otherwise the new handlers are
// swapped in atomically; the old generation's directory connections are
// closed once the requests it was serving have finished. Cached answers
// survive a reload, except those of domains whose settings changed (or
// all of them, when the policy, directory or cache settings changed).

// metrics are the process's own metrics, registered once on the
// registry /metrics serves: every generation records into them.
type metrics struct {
	requests      *protocols.Metrics
	source        *ldapsource.Metrics
	resolver      *policy.Metrics
	certNotAfter  prometheus.Gauge // tls.go
	sniRefused    *prometheus.CounterVec
	reloadsOK     prometheus.Counter
	reloadsFailed prometheus.Counter
	// serving is the directory source of the generation being served,
	// for the gauges of its service account (newGeneration sets it).
	serving atomic.Pointer[ldapsource.Source]
}

func newMetrics() (*metrics, error) {
	// The registry of this server's metrics, served with the default one,
	// where the Go runtime and the process register theirs.
	reg := prometheus.NewRegistry()
	req, err := protocols.NewMetrics(reg, prometheus.Gatherers{prometheus.DefaultGatherer, reg})
	if err != nil {
		return nil, err
	}
	certNotAfter := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mailbeacon_tls_certificate_not_after_timestamp_seconds",
		Help: "Expiry (Unix time) of the certificate loaded from server.tls.cert_file; alert well before it.",
	})
	sniRefused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_tls_sni_refused_total",
		Help: "TLS handshakes refused for a server name of a domain the configuration lacks, by reason: budget (the client's unknown-address budget was spent, the directory was not asked), not_served (the directory does not serve it).",
	}, []string{"reason"})
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_config_reloads_total",
		Help: "Configuration reloads (SIGHUP) by result: ok, or failed (the previous configuration kept serving).",
	}, []string{"result"})
	m := &metrics{
		requests: req, source: ldapsource.NewMetrics(reg), resolver: policy.NewMetrics(reg), certNotAfter: certNotAfter, sniRefused: sniRefused,
		reloadsOK: reloads.WithLabelValues("ok"), reloadsFailed: reloads.WithLabelValues("failed"),
	}
	held := func(locked bool) func() float64 {
		return func() float64 {
			src := m.serving.Load()
			if src == nil {
				return 0
			}
			err := src.Held()
			if err != nil && errors.Is(err, ldapsource.ErrLockedOut) == locked {
				return 1
			}
			return 0
		}
	}
	refused := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mailbeacon_directory_service_credentials_refused",
		Help: "1 while the directory has refused the service account's configured credentials (ldap.bind_dn, the password, ldap.urls): mailbeacon does not bind with them again until they change.",
	}, held(false))
	locked := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "mailbeacon_directory_service_account_locked",
		Help: "1 while the directory reports the service account locked out (AD 775): it is tried again once per ldap.locked_retry_interval.",
	}, held(true))
	for _, c := range []prometheus.Collector{reloads, certNotAfter, sniRefused, refused, locked} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering server metrics: %w", err)
		}
	}
	return m, nil
}

// generation is what one configuration serves with. Requests hold its
// read lock while they run, so retire can wait for them.
type generation struct {
	app     *app
	handler http.Handler // a *protocols.Handler but in tests
	ops     http.Handler // operations.listen's handler; nil when unused
	mu      sync.RWMutex
	retired atomic.Bool
}

// newGeneration builds the handlers of a; prev is the generation it
// replaces (nil at start), whose per-client limits state it keeps when
// the limits are unchanged.
func newGeneration(a *app, log *slog.Logger, prev *generation) *generation {
	g := &generation{app: a}
	a.metrics.serving.Store(a.source)
	opts := a.handlerOptions(log)
	if prev != nil {
		opts.Previous, _ = prev.handler.(*protocols.Handler)
	}
	h := protocols.NewHandler(a.resolver, opts)
	g.handler = h
	if a.cfg.Operations.Listen != "" {
		g.ops = h.Operations()
	}
	return g
}

// retire waits for the requests in flight on g, then closes its
// directory connections. Call it after g stopped being current.
func (g *generation) retire() {
	g.retired.Store(true)
	g.mu.Lock()
	g.app.source.Close()
	g.mu.Unlock()
}

// liveHandler sends each request to the current generation.
type liveHandler struct{ cur atomic.Pointer[generation] }

func (l *liveHandler) load() *generation   { return l.cur.Load() }
func (l *liveHandler) store(g *generation) { l.cur.Store(g) }

// enter returns the current generation with its read lock held.
func (l *liveHandler) enter() *generation {
	for {
		g := l.cur.Load()
		g.mu.RLock()
		if !g.retired.Load() {
			return g
		}
		// Swapped out between Load and RLock: the new one is current.
		g.mu.RUnlock()
	}
}

func (l *liveHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := l.enter()
	defer g.mu.RUnlock()
	g.handler.ServeHTTP(w, r)
}

// operationsView serves the current generation's operations handler.
type operationsView struct{ l *liveHandler }

func (o operationsView) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := o.l.enter()
	defer g.mu.RUnlock()
	if g.ops == nil {
		// operations.listen was turned off by a reload: it still listens
		// until a restart, with the usual routes.
		g.handler.ServeHTTP(w, r)
		return
	}
	g.ops.ServeHTTP(w, r)
}

// reload reads and builds the configuration again and swaps it in. On
// error nothing changes.
func (s *server) reload() error {
	old := s.cur.load()
	s.log.Info("SIGHUP: reloading the configuration")
	// Read again: removing the file of refused credentials and reloading
	// lets mailbeacon try them once more.
	if err := old.app.refusals.Reload(); err != nil {
		s.log.Error("could not read the state directory again; keeping the refusals it held", "err", err)
	}
	a, err := rebuild(old.app, s.log)
	if err == nil && verifyDirectory(old.app, a) {
		// A new password (the password file's content, not its name) or
		// CA the directory refuses would turn every answer into the
		// defaults: keep the running configuration. Credentials it
		// refused before are not sent again to find out.
		if err = checkDirectory(context.Background(), a, false, s.log); err != nil {
			a.source.Close()
			err = fmt.Errorf("the directory refuses the new configuration: %w", err)
		}
	}
	if err == nil {
		if err = s.tls.update(a.cfg); err != nil {
			a.source.Close()
		}
	}
	if err != nil {
		s.metrics.reloadsFailed.Inc()
		s.log.Error("configuration reload failed; still serving the previous configuration", "err", err)
		return err
	}
	for _, key := range needRestart(old.app.cfg, a.cfg) {
		s.log.Warn("configuration reload: this key changed but takes effect only after a restart", "key", key)
	}
	// The routes follow the listeners that run, not those the file asks for.
	a.cfg.Operations.Listen = old.app.cfg.Operations.Listen
	kept, changed := carryCache(old.app, a)
	// Refused binds per account are counted across reloads: a SIGHUP must
	// not give every account its bind_failures anew.
	a.resolver.CarryAuthentication(old.app.resolver, reflect.DeepEqual(old.app.cfg.LDAP, a.cfg.LDAP))
	a.source.CarryBreakers(old.app.source)
	s.cur.store(newGeneration(a, s.log, old))
	s.retiring.Add(1)
	go func() {
		defer s.retiring.Done()
		old.retire()
	}()
	s.metrics.reloadsOK.Inc()
	s.log.Info("configuration reloaded", "domains", len(a.cfg.Domains), "changed_domains", changed, "cached_answers_kept", kept)
	return nil
}

// verifyDirectory reports whether a reload from old to a must ask the
// directory before it swaps: when the service account binds otherwise (the
// password file's content, not only its name, counts), or when other ldap
// keys changed while the directory accepts the running credentials. With
// the same credentials held back as refused there is nothing to ask.
func verifyDirectory(old, a *app) bool {
	if !a.source.SameBind(old.source) {
		return true
	}
	return !reflect.DeepEqual(old.cfg.LDAP, a.cfg.LDAP) && old.source.Held() == nil
}

// rebuild reads the configuration the way old was made and builds it,
// recording into old's metrics.
func rebuild(old *app, log *slog.Logger) (*app, error) {
	if old.reread == nil {
		return nil, fmt.Errorf("this server cannot reload its configuration")
	}
	cfg, err := old.reread()
	if err != nil {
		return nil, err
	}
	a, err := buildWith(cfg, log, old.metrics, old.refusals)
	if err != nil {
		return nil, err
	}
	a.reread = old.reread
	return a, nil
}

// carryCache moves old's cached answers into a, except those of domains
// whose settings changed or went away; when what decides every answer
// (policy, directory, cache settings) changed, nothing is carried. It
// returns how many answers were kept and which domains changed ("*" for
// all).
func carryCache(old, a *app) (kept int, changed []string) {
	o, n := old.cfg, a.cfg
	if !reflect.DeepEqual(o.Policy, n.Policy) || !reflect.DeepEqual(o.LDAP, n.LDAP) || o.Cache != n.Cache {
		return 0, []string{"*"}
	}
	before := map[string]policy.DomainConfig{}
	for _, d := range o.Domains {
		before[domainKey(d.Name)] = d
	}
	after := map[string]bool{}
	for _, d := range n.Domains {
		name := domainKey(d.Name)
		after[name] = true
		if prev, ok := before[name]; !ok || !reflect.DeepEqual(prev, d) {
			changed = append(changed, name)
		}
	}
	for name := range before {
		if !after[name] {
			changed = append(changed, name)
		}
	}
	// The directory's domains are kept only under the same template: a
	// changed one drops them, to be built anew.
	if od, nd := old.resolver.DomainSource(), a.resolver.DomainSource(); od != nil && nd != nil {
		if nd.CarryFrom(od) == 0 && od.Len() > 0 {
			changed = append(changed, "domain_source")
		}
	}
	slices.Sort(changed)
	kept = a.resolver.CarryCache(old.resolver, func(d string) bool { return !slices.Contains(changed, d) })
	return kept, changed
}

func domainKey(name string) string {
	if n, err := policy.NormalizeDomain(name); err == nil {
		return n
	}
	return strings.ToLower(name)
}

// needRestart lists the keys that changed but apply only at start-up.
func needRestart(o, n config) []string {
	var keys []string
	check := func(key string, changed bool) {
		if changed {
			keys = append(keys, key)
		}
	}
	so, sn := o.Server, n.Server
	check("server.listen", so.Listen != sn.Listen)
	check("server.http_listen", so.HTTPListen != sn.HTTPListen)
	check("server.read_header_timeout", so.ReadHeaderTimeout != sn.ReadHeaderTimeout)
	check("server.read_timeout", so.ReadTimeout != sn.ReadTimeout)
	check("server.write_timeout", so.WriteTimeout != sn.WriteTimeout)
	check("server.idle_timeout", so.IdleTimeout != sn.IdleTimeout)
	check("server.shutdown_timeout", so.ShutdownTimeout != sn.ShutdownTimeout)
	// The names ACME may ask for follow the domains at once; the account
	// and the CA do not.
	ao, an := so.ACME, sn.ACME
	ao.BareDomains, an.BareDomains = false, false
	check("server.acme", ao != an)
	check("operations.listen", o.Operations.Listen != n.Operations.Listen)
	check("limits.max_connections_per_client", o.Limits.MaxConnsPerClient != n.Limits.MaxConnsPerClient)
	check("limits.max_connections", o.Limits.MaxConns != n.Limits.MaxConns)
	// The /48 budgets follow at once; its connection share does not.
	check("limits.clients_per_48", o.Limits.Clients48 != n.Limits.Clients48)
	check("log", o.Log != n.Log)
	check("state_dir", o.StateDir != n.StateDir)
	return keys
}
