package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/mailbeacon/mailbeacon/protocols"
)

// healthCmd asks a running serve's /healthz, for a container's health
// check: the image has no shell and no curl.
func healthCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	url := fs.String("url", "", "the `URL` to ask (default http://OPERATIONS_LISTEN/healthz, from --config or "+protocols.DefaultOperationsListen+")")
	cfgFile := fs.String("config", "", "configuration `file` whose operations.listen to ask")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this `duration`")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: mailbeacon health [--url URL | --config FILE] [--timeout DURATION]\n\n"+
			"Ask a running mailbeacon serve whether it is alive: exit 0 when its /healthz\n"+
			"answers 200 OK, 1 otherwise (not listening, timeout, another status).\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "health: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	if *url == "" {
		addr := protocols.DefaultOperationsListen
		if *cfgFile != "" {
			cfg, err := readConfig(commonFlags{config: *cfgFile})
			if err != nil {
				return err
			}
			if cfg.Operations.Listen == "" {
				return fmt.Errorf("operations.listen is off in %s: give --url", *cfgFile)
			}
			addr = cfg.Operations.Listen
		}
		*url = "http://" + localAddr(addr) + "/healthz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s answered %s", *url, resp.Status)
	}
	fmt.Fprintln(stdout, "healthy")
	return nil
}

// localAddr turns a listen address into one to dial on this host: a
// wildcard host (":9090", "0.0.0.0", "::") becomes the loopback.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}
