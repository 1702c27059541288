package protocols

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Operations: Prometheus metrics, health and readiness checks, profiling,
// and the access log. Every request ends in record.

// OperationsOptions configures metrics, health checks and the access log:
// the operations section of the configuration. The zero value serves
// /healthz and /readyz but no /metrics and logs no requests;
// DefaultOperationsOptions holds the configuration's defaults.
type OperationsOptions struct {
	// Listen, when set (host:port), moves /metrics, /healthz and /readyz
	// off the public router onto a listener of their own, which the
	// command starts, with net/http/pprof under /debug/pprof/; the
	// handler is Handler.Operations. The default is a loopback address:
	// metrics say which addresses were asked about and how often.
	Listen string `mapstructure:"listen"`
	// Metrics serves Prometheus metrics at /metrics.
	Metrics bool `mapstructure:"metrics"`
	// ReadyTimeout bounds the directory check of /readyz; default 2s.
	ReadyTimeout time.Duration `mapstructure:"ready_timeout"`
	// AccessLog logs one line per request (health checks and metrics
	// scrapes at debug level only).
	AccessLog bool `mapstructure:"access_log"`
	// LogAddresses logs the full e-mail address a request asks about;
	// by default only its domain is logged.
	LogAddresses bool `mapstructure:"log_addresses"`
}

const (
	defaultReadyTimeout = 2 * time.Second
	maxReadyTimeout     = 30 * time.Second
	// DefaultOperationsListen is operations.listen's default: loopback,
	// on a port that Prometheus itself (9090) and the common exporters do
	// not use, so a monitoring stack on the same host does not collide.
	DefaultOperationsListen = "127.0.0.1:9734"
)

// DefaultOperationsOptions are the defaults documented in config.example.yaml.
func DefaultOperationsOptions() OperationsOptions {
	return OperationsOptions{Listen: DefaultOperationsListen, Metrics: true, AccessLog: true, ReadyTimeout: defaultReadyTimeout}
}

// Prepare validates the options once at start-up. Errors name the
// configuration key at fault.
func (o *OperationsOptions) Prepare() error {
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = defaultReadyTimeout
	}
	if o.ReadyTimeout < 0 || o.ReadyTimeout > maxReadyTimeout {
		return fmt.Errorf("operations.ready_timeout: %s is out of range: give a short positive duration up to %s, e.g. 2s", o.ReadyTimeout, maxReadyTimeout)
	}
	if o.Listen != "" {
		if _, _, err := net.SplitHostPort(o.Listen); err != nil {
			return fmt.Errorf("operations.listen: %q is not host:port, e.g. 127.0.0.1:9734", o.Listen)
		}
	}
	return nil
}

// operationsRoutes are the health, readiness and metrics endpoints.
func (h *Handler) operationsRoutes() []route {
	get := []string{http.MethodGet, http.MethodHead}
	readyz := h.readyz()
	rs := []route{
		{name: "operations", match: paths("/healthz"), methods: get, ops: true, serve: healthz},
		{name: "operations", match: paths("/readyz"), methods: get, ops: true, serve: readyz},
		{name: "operations", match: paths("/readyz/serving"), methods: get, ops: true, serve: h.servingReadyz(readyz)},
	}
	if h.opts.Operations.Metrics {
		metrics := promhttp.HandlerFor(h.met.gatherer, promhttp.HandlerOpts{})
		rs = append(rs, route{name: "operations", match: paths("/metrics"), methods: get, ops: true,
			serve: func(c *call) error { c.status = http.StatusOK; metrics.ServeHTTP(c.w, c.r); return nil }})
	}
	return rs
}

// pprofRoutes profile the live process: the operations listener only.
func pprofRoutes() []route {
	serve := func(f http.HandlerFunc) func(*call) error {
		return func(c *call) error { c.status = http.StatusOK; f(c.w, c.r); return nil }
	}
	prefix := func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/debug/pprof/") }
	return []route{
		{name: "operations", match: paths("/debug/pprof/cmdline"), ops: true, serve: serve(pprof.Cmdline)},
		{name: "operations", match: paths("/debug/pprof/profile"), ops: true, serve: serve(pprof.Profile)},
		{name: "operations", match: paths("/debug/pprof/symbol"), ops: true, serve: serve(pprof.Symbol)},
		{name: "operations", match: paths("/debug/pprof/trace"), ops: true, serve: serve(pprof.Trace)},
		{name: "operations", match: prefix, ops: true, serve: serve(pprof.Index)},
	}
}

// Operations returns the handler of the listener operations.listen names:
// health, readiness, metrics and net/http/pprof, with this handler's
// metrics and without the per-client limits.
func (h *Handler) Operations() http.Handler {
	o := h.opts
	o.Limits = LimitOptions{}
	o.Autodiscover = AutodiscoverOptions{}
	o.Previous = nil
	o.Metrics = h.met
	ops := newHandler(h.res, o)
	ops.routes = append(ops.operationsRoutes(), pprofRoutes()...)
	ops.finishRoutes()
	return ops
}

// healthz says the process is alive and serving HTTP.
func healthz(c *call) error {
	c.send(http.StatusOK, textContentType, noStore, []byte("ok\n"))
	return nil
}

// NotReadyError is a failed readiness check whose Reason /readyz may show
// whoever probes: words and configuration keys, no host names or DNs.
type NotReadyError struct {
	Reason string
	Err    error
}

func (e *NotReadyError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *NotReadyError) Unwrap() error { return e.Err }

// readyz says whether the directory answers within ready_timeout. The
// body is a fixed message: the error (host names, DNs) goes to the log,
// once per change of state, not to whoever probes.
func (h *Handler) readyz() func(*call) error {
	timeout := h.opts.Operations.ReadyTimeout
	if timeout <= 0 {
		timeout = defaultReadyTimeout
	}
	var down atomic.Bool
	return func(c *call) error {
		var err error
		if h.opts.Ready != nil {
			ctx, cancel := context.WithTimeout(c.r.Context(), timeout)
			err = h.opts.Ready(ctx)
			cancel()
		}
		if err != nil {
			if !down.Swap(true) {
				h.log.Warn("not ready: directory check failed", "err", err)
			}
			msg := "not ready: directory unreachable"
			var nr *NotReadyError
			if errors.As(err, &nr) {
				msg = "not ready: " + nr.Reason
			}
			c.w.Header().Set("Retry-After", "5")
			c.text(http.StatusServiceUnavailable, msg)
			return nil
		}
		if down.Swap(false) {
			h.log.Info("ready again: directory reachable")
		}
		c.send(http.StatusOK, textContentType, noStore, []byte("ready\n"))
		return nil
	}
}

// servingReadyz says whether this process can answer lookups, for a load
// balancer's readiness probe: /readyz takes every replica out of service
// during a directory outage, although with cache.on_directory_error:
// defaults each answers from its cache or with the domain's defaults.
// Then it is ready without asking the directory; under "fail" an address
// not cached gets 503, so it is /readyz, the directory check.
func (h *Handler) servingReadyz(readyz func(*call) error) func(*call) error {
	return func(c *call) error {
		if !h.opts.AnswersWithoutDirectory {
			return readyz(c)
		}
		c.send(http.StatusOK, textContentType, noStore, []byte("ready: answering from the directory, the cache or the domain defaults\n"))
		return nil
	}
}

// reqOutcome is how a request ended, from its status: a metric label.
// Autodiscover reports its own errors inside HTTP 200, which count as ok.
type reqOutcome int

const (
	outOK reqOutcome = iota
	outRedirect
	outBadRequest
	outUnauthorized
	outNotFound
	outRateLimited
	outUnavailable
	outError
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	outOK: "ok", outRedirect: "redirect", outBadRequest: "bad_request", outUnauthorized: "unauthorized",
	outNotFound: "not_found", outRateLimited: "rate_limited", outUnavailable: "unavailable", outError: "error",
}

func statusOutcome(code int) reqOutcome {
	switch {
	case code < 300:
		return outOK
	case code < 400:
		return outRedirect
	case code == http.StatusUnauthorized:
		return outUnauthorized
	case code == http.StatusNotFound:
		return outNotFound
	case code == http.StatusTooManyRequests:
		return outRateLimited
	case code < 500:
		return outBadRequest
	case code == http.StatusServiceUnavailable:
		return outUnavailable
	}
	return outError
}

// Metrics are the request metrics of the handlers of one process. A
// reload's new handler takes the same Metrics: a registry accepts a
// metric once.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	limited  [numLimitReasons]prometheus.Counter
	gatherer prometheus.Gatherer
}

// NewMetrics registers the request metrics on reg; /metrics serves g.
func NewMetrics(reg prometheus.Registerer, g prometheus.Gatherer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailbeacon_http_requests_total",
			Help: "HTTP requests by client format and outcome (from the status; Autodiscover error documents travel in HTTP 200 and count as ok).",
		}, []string{"format", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mailbeacon_http_request_duration_seconds",
			Help:    "Time from a request's arrival until its handler returned, by client format.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"format"}),
		gatherer: g,
	}
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_rate_limited_requests_total",
		Help: "Requests refused by the limits, by reason: requests (per-client request rate), unknown_addresses (per-client budget of unknown-address lookups), client_concurrency (limits.max_per_client), concurrency (limits.max_concurrent), body_too_large (limits.max_body_bytes), body_timeout (limits.body_timeout), body_unreadable.",
	}, []string{"reason"})
	for r := range numLimitReasons {
		m.limited[r] = limited.WithLabelValues(limitReasonNames[r])
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, limited} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering request metrics: %w", err)
		}
	}
	return m, nil
}

// privateMetrics are a handler's own, on a registry of their own, served
// with the default registry's (the Go runtime's and the process's).
func privateMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg, prometheus.Gatherers{reg, prometheus.DefaultGatherer})
	if err != nil {
		panic(err) // a new registry accepts them
	}
	return m
}

// routeStats are a route's metric children, resolved once: recording a
// request costs two atomic adds and no allocation.
type routeStats struct {
	requests [numOutcomes]prometheus.Counter
	duration prometheus.Observer
}

func (m *Metrics) forRoute(name string) routeStats {
	var s routeStats
	s.duration = m.duration.WithLabelValues(name)
	for o := range numOutcomes {
		s.requests[o] = m.requests.WithLabelValues(name, outcomeNames[o])
	}
	return s
}

// record counts the request and writes its access log line.
func (h *Handler) record(c *call) {
	status := c.status
	if status == 0 {
		status = http.StatusOK // the handler wrote nothing
	}
	elapsed := time.Since(c.start)
	c.rt.stats.requests[statusOutcome(status)].Inc()
	c.rt.stats.duration.Observe(elapsed.Seconds())
	o := h.opts.Operations
	if !o.AccessLog {
		return
	}
	level := slog.LevelInfo
	if c.rt.ops {
		level = slog.LevelDebug // probes and scrapes would drown the log
	}
	if !h.log.Enabled(c.r.Context(), level) {
		return
	}
	e := c.accessEntry(level, status, elapsed, o.LogAddresses)
	// The entry's zero values mean "unknown" and "none": an entry that
	// would need them as values goes to the handler.
	exact := (!c.peerOK || c.ip.IsValid()) && (!c.hasAddr || c.addr.Domain != "")
	if h.access != nil && exact && h.access.LogAccess(e) {
		return
	}
	client := "unknown"
	if c.peerOK {
		client = c.ip.String()
	}
	h.logRecord(c.r.Context(), e, client, c.hasAddr)
}

// accessEntry fills the call's access-log entry. Its time is the
// request's start plus its duration: the clock is read once for both.
func (c *call) accessEntry(level slog.Level, status int, elapsed time.Duration, fullAddress bool) *AccessEntry {
	p := c.r.URL.Path
	if c.rt.logPath != nil && !fullAddress {
		p = c.rt.logPath(p)
	}
	if len(p) > maxLoggedPath {
		p = p[:maxLoggedPath] + "…"
	}
	e := &c.entry
	*e = AccessEntry{Time: c.start.Add(elapsed), Level: level, Method: c.r.Method, Path: p,
		Status: status, Duration: elapsed, Format: c.rt.name}
	if c.peerOK {
		e.Client = c.ip
	}
	if c.hasAddr {
		e.Domain = c.addr.Domain
		if fullAddress {
			e.Address = c.addr.String()
		}
	}
	return e
}

// logRecord writes e through the log handler, as a slog record.
// client names the client; hasAddr says the request asked about an
// address (whose domain is logged even when empty).
func (h *Handler) logRecord(ctx context.Context, e *AccessEntry, client string, hasAddr bool) {
	// A record without a caller's PC: Logger.LogAttrs would walk the
	// stack for one on every request, and the source of an access-log
	// line says nothing.
	// The attributes are added at once: past the five a Record holds
	// inline, each AddAttrs call grows its slice anew.
	rec := slog.NewRecord(e.Time, e.Level, "request", 0)
	attrs := [8]slog.Attr{
		slog.String("method", e.Method),
		slog.String("path", e.Path),
		slog.Int("status", e.Status),
		slog.Duration("duration", e.Duration),
		slog.String("format", e.Format),
		slog.String("client", client),
	}
	n := 6
	if hasAddr {
		attrs[n] = slog.String("domain", e.Domain)
		n++
		if e.Address != "" {
			attrs[n] = slog.String("address", e.Address)
			n++
		}
	}
	rec.AddAttrs(attrs[:n]...)
	_ = h.log.Handler().Handle(ctx, rec)
}

// AccessEntry is one line of the access log: what a slog record of the
// message "request" holds, in its attributes' order.
type AccessEntry struct {
	Time     time.Time
	Level    slog.Level
	Method   string
	Path     string // as logged: without the query, shortened
	Status   int
	Duration time.Duration
	Format   string     // the route's name
	Client   netip.Addr // the zero Addr: the client is unknown
	Domain   string     // the asked address's domain; "": none asked
	Address  string     // the asked address, when logged in full; "": not
}

// AccessLogger writes access-log lines without building a slog record:
// one formatted by hand costs a fraction of one. When the handler of
// Options.Log implements it, the access log goes to LogAccess first;
// LogAccess writes exactly the line the handler would write for the
// record, or reports false and writes nothing (a value it does not
// format), and the record then goes to the handler.
type AccessLogger interface {
	LogAccess(e *AccessEntry) bool
}

// maxLoggedPath bounds what a request can make the log hold.
const maxLoggedPath = 200
