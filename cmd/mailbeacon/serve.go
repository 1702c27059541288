package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	fs.BoolVar(&c.demoSign, "demo-sign", false, "with --demo: sign Apple profiles with a throwaway CA made at start (its files are logged)")
	listen := fs.String("listen", "", "listen `address` host:port, overriding server.listen (default 127.0.0.1:8080)")
	opsListen := fs.String("operations-listen", "", "operations listener `address` host:port (metrics, health, pprof), overriding operations.listen (default 127.0.0.1:9734)")
	degraded := fs.Bool("start-degraded", false, "start even if the directory refuses the configuration (as ldap.start_degraded: true)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mailbeacon serve [--config FILE] [--listen ADDR] [--operations-listen ADDR] [--start-degraded] [--demo [--demo-sign]]\n\n"+
			"Serve client discovery requests over HTTP (HTTPS with server.tls or server.acme)\n"+
			"until SIGINT or SIGTERM, which drain requests in flight. SIGHUP reloads the\n"+
			"configuration; an invalid one is logged and the running one keeps serving.\n\n"+
			"At start the directory is asked once: if it refuses the configuration (service\n"+
			"account's credentials, certificate, TLS), serve exits naming the key at fault,\n"+
			"unless --start-degraded or ldap.start_degraded says to serve domain defaults.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	a, log, cleanup, err := setup(c, stderr)
	if err != nil {
		if errors.Is(err, errDemoSignNeedsDemo) {
			return err
		}
		return &exitError{exitConfig, err}
	}
	defer cleanup()
	// The watchdog (WatchdogSec=) runs from here to the end of draining:
	// the directory check at start and a slow shutdown are covered too.
	wctx, stopWatchdog := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWatchdog()
	go notifier{log}.watchdog(wctx)
	if !c.demo { // the demo's domain is example.com
		for _, w := range a.cfg.warnings {
			log.Warn(w) // as config check prints them
		}
	}
	if a.refusals.File() == "" && !c.demo && (a.cfg.LDAP.BindDN != "" || a.cfg.LDAP.Bind == ldapsource.BindGSSAPI) {
		log.Warn("no state directory: refused service-account credentials are remembered until the process exits, so each restart binds with them once more; set state_dir (systemd's StateDirectory= sets it)")
	}
	// The flags win over the file, at start and at every reload.
	override := func(cfg *config) {
		if *listen != "" {
			cfg.Server.Listen = *listen
		}
		if *opsListen != "" {
			cfg.Operations.Listen = *opsListen
		}
	}
	override(&a.cfg)
	if reread := a.reread; reread != nil {
		a.reread = func() (config, error) {
			cfg, err := reread()
			override(&cfg)
			return cfg, err
		}
	}
	if err := checkDirectory(ctx, a, *degraded || a.cfg.LDAP.StartDegraded, log); err != nil {
		a.source.Close()
		return &exitError{exitConfig, fmt.Errorf("%w (%s)", err, errDegradedHint)}
	}
	s, err := newServer(a, log)
	if err != nil {
		return &exitError{exitConfig, err}
	}
	defer s.close()
	return s.run(ctx)
}

// opsWriteTimeout is the least write timeout of the operations listener:
// longer than a default CPU profile (/debug/pprof/profile, 30 s).
const opsWriteTimeout = time.Minute

// descriptorReserve is the file descriptors a derived
// limits.max_connections leaves to the rest of the process: directory
// connections (ldap.pool_size, twice while a reload retires the old
// pool), the listeners, the operations listener's connections, log and
// state files, ACME and the runtime's own.
func descriptorReserve(cfg config) int {
	return 256 + 2*cfg.LDAP.PoolSize
}

// errDegradedHint is how to start anyway.
const errDegradedHint = "to start anyway and answer with the domain defaults until it is fixed: serve --start-degraded, or ldap.start_degraded: true"

// checkDirectory asks the directory once, as serve starts. A configuration
// error (the service account's credentials refused, the certificate not
// verified, TLS required, base DN missing) is fatal unless degraded: served
// as an outage it would answer every address with the domain defaults for
// as long as it runs. A directory that is down (transient) is logged, and
// the server answers from defaults until it comes back.
func checkDirectory(ctx context.Context, a *app, degraded bool, log *slog.Logger) error {
	type check struct {
		what string
		ping func(context.Context) error
	}
	checks := []check{{"directory", a.source.Ping}}
	if a.domains != nil {
		checks = append(checks, check{"domain_source", a.domains.Ping})
	}
	if a.resolver.HasLinked() {
		checks = append(checks, check{"policy.linked", a.resolver.PingLinked})
	}
	for _, c := range checks {
		err := c.ping(ctx)
		switch {
		case err == nil:
			log.Info(c.what+" reachable", "urls", a.cfg.LDAP.URLs)
			continue
		case ldapsource.ConfigurationError(err) == nil:
			log.Error(c.what+" check failed; answering with domain defaults until it recovers", "kind", "transient", "err", err)
			return nil // the next check would fail the same way
		case degraded:
			// The process goes on running: say when it asks again.
			ce := ldapsource.ConfigurationError(err)
			next := heldState(a.source)
			if next == "" {
				next = "the service account binds again at most once per backoff interval (up to a minute)"
			}
			log.Error("starting degraded: the directory refuses the configuration; answering with the domain defaults until it is fixed; "+next,
				"key", ce.Key, "fix", ce.Fix)
			continue
		}
		return fmt.Errorf("%s check: %w", c.what, err)
	}
	return nil
}

// server runs the listeners of one serve command across reloads.
type server struct {
	log      *slog.Logger
	metrics  *metrics
	cur      liveHandler    // the generation requests go to
	tls      *tlsServing    // nil: plain HTTP
	retiring sync.WaitGroup // generations draining after a reload
}

func newServer(a *app, log *slog.Logger) (*server, error) {
	t, err := newTLSServing(a.cfg, log, a.metrics.certNotAfter)
	if err != nil {
		return nil, err
	}
	s := &server{log: log, tls: t, metrics: a.metrics}
	s.cur.store(newGeneration(a, log, nil))
	if t != nil {
		t.domain = func(ctx context.Context, name string) (*policy.Domain, error) {
			return s.cur.load().app.resolver.Domain(ctx, name)
		}
		// The current generation's budget: its limiter is the one a
		// reload carries over (protocols.Options.Previous).
		t.budget = func(peer netip.Addr) (func(bool), bool) {
			if h, ok := s.cur.load().handler.(*protocols.Handler); ok {
				return h.ReserveLookup(peer)
			}
			return func(bool) {}, true
		}
		t.refused = a.metrics.sniRefused
	}
	return s, nil
}

// close waits for retired generations and closes the current one's
// directory connections.
func (s *server) close() {
	s.retiring.Wait()
	s.cur.load().app.source.Close()
}

// run listens until ctx ends, then drains requests in flight.
func (s *server) run(ctx context.Context) error {
	cfg := s.cur.load().app.cfg
	sc := cfg.Server
	type listener struct {
		srv    *http.Server
		ln     net.Listener
		tls    bool
		key    string
		scheme string
	}
	var ls []listener
	// One bound on the connections of the public listeners together.
	conns := protocols.NewConnLimiter(cfg.Limits, protocols.MaxConnections(cfg.Limits, descriptorReserve(cfg)))
	defer func() {
		for _, l := range ls {
			l.ln.Close()
		}
	}()
	add := func(key, addr string, h http.Handler, useTLS, plainOfTLS bool) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		public := key != "operations.listen"
		if public {
			ln = conns.Listener(ln)
		}
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: sc.ReadHeaderTimeout,
			ReadTimeout:       sc.ReadTimeout,
			WriteTimeout:      sc.WriteTimeout,
			IdleTimeout:       sc.IdleTimeout,
			MaxHeaderBytes:    16 << 10,
			// TLS handshake failures from scanners are no news.
			ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		}
		if public {
			srv.ConnState = conns.ConnState
		}
		if plainOfTLS {
			// The Autodiscover redirect probe redirects what arrives here.
			srv.BaseContext = func(net.Listener) context.Context { return protocols.OverPlainHTTP(context.Background()) }
		}
		scheme := "http"
		if useTLS {
			srv.TLSConfig = s.tls.config()
			scheme = "https"
		}
		ls = append(ls, listener{srv: srv, ln: ln, tls: useTLS, key: key, scheme: scheme})
		return nil
	}
	if err := add("server.listen", sc.Listen, &s.cur, s.tls != nil, false); err != nil {
		return err
	}
	if sc.HTTPListen != "" {
		if err := add("server.http_listen", sc.HTTPListen, s.tls.httpHandler(&s.cur), false, s.tls != nil); err != nil {
			return err
		}
	}
	if cfg.Operations.Listen != "" {
		if err := add("operations.listen", cfg.Operations.Listen, operationsView{&s.cur}, false, false); err != nil {
			return err
		}
		// A CPU profile streams for 30 s by default (go tool pprof).
		ops := ls[len(ls)-1].srv
		ops.WriteTimeout = max(ops.WriteTimeout, opsWriteTimeout)
	}

	// SIGHUP reloads; registered before the listeners report ready, so a
	// HUP sent once they are never kills the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.tls.watch(wctx)
	sd := notifier{s.log}

	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() {
			var err error
			if l.tls {
				err = l.srv.ServeTLS(l.ln, "", "")
			} else {
				err = l.srv.Serve(l.ln)
			}
			errc <- err
		}()
	}
	all, perClient, perSite := conns.Bounds()
	s.log.Info("connection bounds", "max_connections", all, "per_client", perClient, "per_ipv6_48", perSite)
	for _, l := range ls {
		if l.key == "server.listen" {
			s.log.Info("mailbeacon listening", "addr", l.scheme+"://"+l.ln.Addr().String(), "version", versionString())
		} else {
			s.log.Info("listening", "key", l.key, "addr", l.scheme+"://"+l.ln.Addr().String())
		}
	}
	sd.ready("serving")

	for {
		select {
		case err := <-errc:
			sd.stopping()
			return fmt.Errorf("http server: %w", err)
		case <-hup:
			// READY=1 after a failed reload too: the previous
			// configuration goes on serving.
			sd.reloading()
			if err := s.reload(); err != nil {
				sd.ready("serving; the last reload failed, see the journal")
			} else {
				sd.ready("serving")
			}
			continue
		case <-ctx.Done():
		}
		break
	}
	sd.stopping()
	s.log.Info("shutting down: draining requests", "timeout", sc.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sc.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	shutdownErrs := make([]error, len(ls))
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				shutdownErrs[i] = fmt.Errorf("shutdown %s: %w", l.key, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(shutdownErrs...); err != nil {
		return err
	}
	for range ls {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	s.log.Info("stopped")
	return nil
}
