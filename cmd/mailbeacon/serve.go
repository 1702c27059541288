package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/mailbeacon/mailbeacon/protocols"
)

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	fs.BoolVar(&c.demoSign, "demo-sign", false, "with --demo: sign Apple profiles with a throwaway CA made at start (its files are logged)")
	listen := fs.String("listen", "", "listen `address` host:port, overriding server.listen (default 127.0.0.1:8080)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mailbeacon serve [--config FILE] [--listen ADDR] [--demo [--demo-sign]]\n\nServe client discovery requests over HTTP until SIGINT or SIGTERM.\n\n")
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
		return err
	}
	defer cleanup()
	if *listen != "" {
		a.cfg.Server.Listen = *listen
	}
	sc := a.cfg.Server
	ln, err := net.Listen("tcp", sc.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	srv := &http.Server{
		Handler:           protocols.NewHandler(a.resolver, a.handlerOptions(log)),
		ReadHeaderTimeout: sc.ReadHeaderTimeout,
		ReadTimeout:       sc.ReadTimeout,
		WriteTimeout:      sc.WriteTimeout,
		IdleTimeout:       sc.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
	}
	// A directory that is down at start-up is logged, not fatal: the
	// server answers with domain defaults until it comes back.
	go func() {
		if err := a.source.Ping(ctx); err != nil {
			log.Error("directory check failed; answering with domain defaults until it recovers", "err", err)
		} else {
			log.Info("directory reachable", "urls", a.cfg.LDAP.URLs)
		}
	}()
	log.Info("mailbeacon listening", "addr", "http://"+ln.Addr().String(), "version", versionString())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests", "timeout", sc.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sc.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}
