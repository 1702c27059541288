package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/policy"
	"github.com/mailbeacon/mailbeacon/protocols"
)

// config is the whole configuration file. Every key is documented in
// config.example.yaml; environment variables MAILBEACON_<SECTION>_<KEY>
// (e.g. MAILBEACON_LDAP_BIND_PASSWORD) override the file.
type config struct {
	Server       serverConfig                  `mapstructure:"server"`
	Log          logConfig                     `mapstructure:"log"`
	LDAP         ldapsource.Config             `mapstructure:"ldap"`
	Cache        policy.CacheConfig            `mapstructure:"cache"`
	Policy       policy.Config                 `mapstructure:"policy"`
	Domains      []policy.DomainConfig         `mapstructure:"domains"`
	DomainSource policy.DomainSourceConfig     `mapstructure:"domain_source"`
	Autodiscover protocols.AutodiscoverOptions `mapstructure:"autodiscover"`
	Apple        protocols.AppleOptions        `mapstructure:"apple"`
	Operations   protocols.OperationsOptions   `mapstructure:"operations"`
	Limits       protocols.LimitOptions        `mapstructure:"limits"`
	// StateDir keeps what must outlive a restart: the service-account
	// credentials the directory refused (state.go).
	StateDir string `mapstructure:"state_dir"`
	// newSource makes the directory source when set, instead of
	// ldapsource.New (init: lookups over its probe's one bound connection,
	// refusals remembered in memory: noState).
	newSource func(ldapsource.Config, []string, *slog.Logger, *ldapsource.Metrics) (*ldapsource.Source, error)

	// noState: remember refusals in memory only (--demo).
	noState bool
	// warnings are about config.example.yaml's placeholder hosts and
	// domains left in place, and deprecated names (configwarn.go).
	warnings []string
}

type serverConfig struct {
	Listen            string        `mapstructure:"listen"`
	HTTPListen        string        `mapstructure:"http_listen"`      // tls.go: plain HTTP beside HTTPS
	PublicHost        string        `mapstructure:"public_host"`      // dns.go: CNAME and SRV target
	PublicAddresses   []string      `mapstructure:"public_addresses"` // dns.go: A/AAAA instead
	TLS               tlsFiles      `mapstructure:"tls"`              // tls.go
	ACME              acmeConfig    `mapstructure:"acme"`             // tls.go
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	ReadTimeout       time.Duration `mapstructure:"read_timeout"`
	WriteTimeout      time.Duration `mapstructure:"write_timeout"`
	IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
	ShutdownTimeout   time.Duration `mapstructure:"shutdown_timeout"`
}

type logConfig struct {
	Format string `mapstructure:"format"` // text or json
	Level  string `mapstructure:"level"`  // debug, info, warn, error
}

func defaultConfig() config {
	return config{
		Server: serverConfig{
			Listen:            "127.0.0.1:8080",
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      15 * time.Second,
			IdleTimeout:       90 * time.Second,
			ShutdownTimeout:   10 * time.Second,
		},
		Log:   logConfig{Format: "text", Level: "info"},
		LDAP:  ldapsource.DefaultConfig(),
		Cache: policy.DefaultCacheConfig(),
		// protocols/limits.go: per-client limits, on by default.
		Limits: protocols.DefaultLimitOptions(),
		// protocols/operations.go: metrics and access log on by default.
		Operations: protocols.DefaultOperationsOptions(),
	}
}

// demoConfig is the configuration of `serve --demo` when no file is given:
// the demo domain example.com against the embedded demo directory.
//
//go:embed demo.yaml
var demoConfig string

// loadConfig reads YAML from r (nil: no file) over the defaults, applies
// environment overrides, and rejects unknown keys. A file over
// maxConfigBytes or nested deeper than maxConfigDepth is refused before
// viper reads it (configbounds.go).
func loadConfig(r io.Reader, name string) (config, error) {
	v := viper.NewWithOptions(viper.ExperimentalBindStruct())
	v.SetConfigType("yaml")
	v.SetEnvPrefix("MAILBEACON")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if r != nil {
		b, err := readBoundedConfig(r, name)
		if err != nil {
			return config{}, err
		}
		if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
			return config{}, fmt.Errorf("%s: not valid YAML: %w", name, err)
		}
	}
	cfg := defaultConfig()
	if err := v.UnmarshalExact(&cfg); err != nil {
		return config{}, fmt.Errorf("%s: %w", name, decodeErrors(err, v.AllSettings()))
	}
	cfg.warnings = append(placeholders(v.AllSettings()), deprecated(cfg)...)
	return cfg, nil
}

// app is everything built from a configuration.
type app struct {
	cfg      config
	source   *ldapsource.Source
	resolver *policy.Resolver
	// metrics are served by /metrics; a reload hands them to the next app.
	metrics *metrics
	// refusals remembers refused service-account credentials; a reload
	// hands it to the next app, like metrics.
	refusals *ldapsource.Refusals
	domains  *ldapsource.DomainSearch // domain_source; nil without one
	// reread loads the configuration again the way setup did (serve's
	// reload on SIGHUP); nil for an app not made by setup.
	reread func() (config, error)
}

// build validates cfg and wires the directory, policy and resolver, with
// metrics on a registry of their own. Errors name the key at fault.
func build(cfg config, log *slog.Logger) (*app, error) {
	m, err := newMetrics()
	if err != nil {
		return nil, err
	}
	r, err := openState(cfg, log)
	if err != nil {
		return nil, err
	}
	return buildWith(cfg, log, m, r)
}

// buildWith is build recording into m and remembering refusals in r,
// which a reload keeps: the metrics are registered once, and refused
// credentials stay refused.
func buildWith(cfg config, log *slog.Logger, m *metrics, r *ldapsource.Refusals) (*app, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pol, err := policy.New(cfg.Policy)
	if err != nil {
		return nil, err
	}
	domains, err := cfg.staticDomains()
	if err != nil {
		return nil, err
	}
	var tmpl *policy.DomainTemplate
	if cfg.DomainSource.Active() {
		if tmpl, err = policy.NewDomainTemplate(cfg.DomainSource); err != nil {
			return nil, err
		}
	}
	if err := cfg.Autodiscover.Prepare(); err != nil {
		return nil, err
	}
	if err := cfg.Apple.Prepare(); err != nil {
		return nil, err
	}
	if err := cfg.Operations.Prepare(); err != nil {
		return nil, err
	}
	if err := cfg.Limits.Prepare(); err != nil {
		return nil, err
	}
	if cfg.LDAP.Filter == "" {
		cfg.LDAP.Filter = pol.Filter()
	}
	newSource := ldapsource.New
	if cfg.newSource != nil {
		newSource = cfg.newSource
	}
	src, err := newSource(cfg.LDAP, pol.Attributes(), log, m.source)
	if err != nil {
		return nil, err
	}
	src.UseRefusals(r)
	res, err := policy.NewResolver(src, pol, domains, cfg.Cache, log, m.resolver)
	if err != nil {
		src.Close()
		return nil, err
	}
	res.SetAuthCacheTTL(cfg.Autodiscover.BindMemory())
	res.SetBindLockout(cfg.Autodiscover.BindLockout())
	a := &app{cfg: cfg, source: src, resolver: res, metrics: m, refusals: r}
	if tmpl != nil {
		if a.domains, err = useDomainSource(res, src, tmpl, cfg.Cache, log); err != nil {
			src.Close()
			return nil, err
		}
	}
	return a, nil
}

// staticDomains validates the domains list, which may be empty when the
// directory's domain_source serves the domains.
func (c config) staticDomains() (map[string]*policy.Domain, error) {
	if len(c.Domains) == 0 && c.DomainSource.Active() {
		return map[string]*policy.Domain{}, nil
	}
	return policy.NewDomains(c.Domains)
}

// useDomainSource makes res serve the domains the directory holds.
func useDomainSource(res *policy.Resolver, src *ldapsource.Source, tmpl *policy.DomainTemplate, cache policy.CacheConfig, log *slog.Logger) (*ldapsource.DomainSearch, error) {
	search, err := src.DomainSearch(tmpl.Search(), tmpl.Attributes())
	if err != nil {
		return nil, err
	}
	ds, err := policy.NewDomainSource(search, tmpl, cache, log)
	if err != nil {
		return nil, err
	}
	res.UseDomainSource(ds)
	return search, nil
}

func (c config) validate() error {
	s := c.Server
	for key, d := range map[string]time.Duration{
		"server.read_header_timeout": s.ReadHeaderTimeout, "server.read_timeout": s.ReadTimeout,
		"server.write_timeout": s.WriteTimeout, "server.idle_timeout": s.IdleTimeout,
		"server.shutdown_timeout": s.ShutdownTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s: must be a positive duration such as 10s", key)
		}
	}
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		return fmt.Errorf("server.listen: %q is not host:port: give e.g. 127.0.0.1:8080 or :443", s.Listen)
	}
	if _, err := newLogger(io.Discard, c.Log); err != nil {
		return err
	}
	return s.validateTLS() // tls.go: server.tls, server.acme, public names
}

func newLogger(w io.Writer, c logConfig) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.Format {
	case "text", "":
		return slog.New(newTextLog(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format: %q is not one of text, json", c.Format)
}

// handlerOptions are the protocols options from the configuration.
func (a *app) handlerOptions(log *slog.Logger) protocols.Options {
	lim := a.cfg.Limits
	// A body's own deadline never outlasts the server's read timeout:
	// setting it replaces the connection's deadline.
	if rt := a.cfg.Server.ReadTimeout; rt > 0 && (lim.BodyTimeout == 0 || lim.BodyTimeout > rt) {
		lim.BodyTimeout = rt
	}
	// Under strict privacy a known address spends the budget too: its
	// token given back would tell that it exists.
	lim.KeepKnownTokens = a.cfg.Policy.Privacy == policy.PrivacyStrict
	return protocols.Options{
		Log: log, Autodiscover: a.cfg.Autodiscover, Apple: a.cfg.Apple,
		Operations: a.cfg.Operations, Limits: lim, Ready: a.ready,
		ReadTimeout: a.cfg.Server.ReadTimeout, Metrics: a.metrics.requests,
		// Every address gets an answer while the directory fails, unless
		// the configuration says to fail, or the domains themselves come
		// from the directory (one not cached cannot be known).
		AnswersWithoutDirectory: a.cfg.Cache.OnDirectoryError != "fail" && !a.cfg.DomainSource.Active(),
	}
}
