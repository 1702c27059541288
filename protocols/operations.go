package protocols

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Operations: Prometheus metrics, health and readiness checks, and the
// access log. Every request passes through instrument, outermost.

// OperationsOptions configures metrics, health checks and the access log:
// the operations section of the configuration. The zero value serves
// /healthz and /readyz but no /metrics and logs no requests;
// DefaultOperationsOptions holds the configuration's defaults.
type OperationsOptions struct {
	// Listen, when set (host:port), moves /metrics, /healthz and /readyz
	// off the public router onto a listener of their own, which the
	// command starts; the handler is OperationsHandler.
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

	// ClientAddr returns the client address for the access log; nil means
	// the host part of r.RemoteAddr. The seam for trusted-proxy handling.
	// Not configurable in YAML.
	ClientAddr func(r *http.Request) string `mapstructure:"-"`
}

const (
	defaultReadyTimeout = 2 * time.Second
	maxReadyTimeout     = 30 * time.Second
)

// DefaultOperationsOptions are the defaults documented in config.example.yaml.
func DefaultOperationsOptions() OperationsOptions {
	return OperationsOptions{Metrics: true, AccessLog: true, ReadyTimeout: defaultReadyTimeout}
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
			return fmt.Errorf("operations.listen: %q is not host:port, e.g. 127.0.0.1:9090", o.Listen)
		}
	}
	return nil
}

func (s *Server) operationsRoutes(r *mux.Router) {
	if s.opts.Operations.Listen != "" {
		return // served by OperationsHandler on its own listener
	}
	s.addOperationsRoutes(r)
}

func (s *Server) addOperationsRoutes(r *mux.Router) {
	get := []string{http.MethodGet, http.MethodHead}
	routes := map[string]http.HandlerFunc{
		"/healthz": healthz,
		"/readyz":  s.readyz(),
	}
	if s.opts.Operations.Metrics {
		routes["/metrics"] = promhttp.Handler().ServeHTTP
	}
	for p, h := range routes {
		r.HandleFunc(p, h).Methods(get...)
		r.HandleFunc(p, methodNotAllowed(get...))
	}
}

// OperationsHandler serves /healthz, /readyz and (if enabled) /metrics
// alone, for the listener that operations.listen names.
func OperationsHandler(opts Options) http.Handler {
	s := &Server{log: opts.Log, opts: opts}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	r := mux.NewRouter()
	s.addOperationsRoutes(r)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		textError(w, http.StatusNotFound, "not found")
	})
	return s.instrument(r)
}

// healthz says the process is alive and serving HTTP.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// readyz says whether the directory answers within ready_timeout. The
// body is a fixed message: the error (host names, DNs) goes to the log,
// once per change of state, not to whoever probes.
func (s *Server) readyz() http.HandlerFunc {
	timeout := s.opts.Operations.ReadyTimeout
	if timeout <= 0 {
		timeout = defaultReadyTimeout
	}
	var down atomic.Bool
	return func(w http.ResponseWriter, r *http.Request) {
		var err error
		if s.opts.Ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			err = s.opts.Ready(ctx)
			cancel()
		}
		if err != nil {
			if !down.Swap(true) {
				s.log.Warn("not ready: directory check failed", "err", err)
			}
			w.Header().Set("Retry-After", "5")
			textError(w, http.StatusServiceUnavailable, "not ready: directory unreachable")
			return
		}
		if down.Swap(false) {
			s.log.Info("ready again: directory reachable")
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ready\n"))
	}
}

// reqFormat is the client format a request asked for: a metric label.
type reqFormat int

const (
	fmtAutoconfig reqFormat = iota
	fmtAutodiscover
	fmtAutodiscoverJSON
	fmtAppleProfile
	fmtSetupPage
	fmtDAVRedirect
	fmtOperations
	fmtOther
	numFormats
)

var formatNames = [numFormats]string{
	fmtAutoconfig: "autoconfig", fmtAutodiscover: "autodiscover", fmtAutodiscoverJSON: "autodiscover_json",
	fmtAppleProfile: "apple_profile", fmtSetupPage: "setup_page", fmtDAVRedirect: "dav_redirect",
	fmtOperations: "operations", fmtOther: "other",
}

// requestFormat classifies a path the way the router does, without
// allocating.
func requestFormat(p string) reqFormat {
	switch p {
	case "/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml":
		return fmtAutoconfig
	case "/mobileconfig":
		return fmtAppleProfile
	case "/", "/setup.css":
		return fmtSetupPage
	case "/.well-known/caldav", "/.well-known/carddav":
		return fmtDAVRedirect
	case "/healthz", "/readyz", "/metrics":
		return fmtOperations
	}
	if strings.EqualFold(p, poxPath) {
		return fmtAutodiscover
	}
	if _, ok := jsonPathEmail(p); ok {
		return fmtAutodiscoverJSON
	}
	return fmtOther
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

var (
	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "mailbeacon_http_requests_total",
		Help: "HTTP requests by client format and outcome (from the status; Autodiscover error documents travel in HTTP 200 and count as ok).",
	}, []string{"format", "outcome"})
	requestDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mailbeacon_http_request_duration_seconds",
		Help:    "Time from a request's arrival until its handler returned, by client format.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"format"})

	// Label children resolved once: recording a request costs two atomic
	// adds and no allocation.
	requestCounters  [numFormats][numOutcomes]prometheus.Counter
	requestDurations [numFormats]prometheus.Observer
)

func init() {
	for f := range numFormats {
		requestDurations[f] = requestDuration.WithLabelValues(formatNames[f])
		for o := range numOutcomes {
			requestCounters[f][o] = requestsTotal.WithLabelValues(formatNames[f], outcomeNames[o])
		}
	}
}

// recorder captures the status of a response and the address a handler
// says the request was about (noteAddress). Pooled: one per request in
// flight.
type recorder struct {
	http.ResponseWriter
	status  int
	addr    policy.Address
	hasAddr bool
}

var recorders = sync.Pool{New: func() any { return new(recorder) }}

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// noteAddress tells the access log which address a request asked about,
// for handlers that learn it from the body (Autodiscover POX). Requests
// that carry it in the URL need not call it.
func noteAddress(w http.ResponseWriter, a policy.Address) {
	for {
		switch x := w.(type) {
		case *recorder:
			x.addr, x.hasAddr = a, true
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}

// instrument wraps every request with metrics and the access log.
func (s *Server) instrument(h http.Handler) http.Handler {
	o := s.opts.Operations
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := recorders.Get().(*recorder)
		rec.ResponseWriter = w
		defer func() {
			*rec = recorder{}
			recorders.Put(rec)
		}()
		h.ServeHTTP(rec, r)
		status := rec.status
		if status == 0 {
			status = http.StatusOK // the handler wrote nothing
		}
		elapsed := time.Since(start)
		f := requestFormat(r.URL.Path)
		requestCounters[f][statusOutcome(status)].Inc()
		requestDurations[f].Observe(elapsed.Seconds())
		if !o.AccessLog {
			return
		}
		level := slog.LevelInfo
		if f == fmtOperations {
			level = slog.LevelDebug // probes and scrapes would drown the log
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		client := ""
		if o.ClientAddr != nil {
			client = o.ClientAddr(r)
		} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			client = host
		} else {
			client = r.RemoteAddr
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("path", logPath(r.URL.Path, f, o.LogAddresses)),
			slog.Int("status", status),
			slog.Duration("duration", elapsed),
			slog.String("format", formatNames[f]),
			slog.String("client", client),
		}
		if a, ok := askedAddress(r, f, rec); ok {
			attrs = append(attrs, slog.String("domain", a.Domain))
			if o.LogAddresses {
				attrs = append(attrs, slog.String("address", a.String()))
			}
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

// maxLoggedPath bounds what a request can make the log hold.
const maxLoggedPath = 200

// logPath is the path as logged: without the query, shortened, and with
// the address of an Autodiscover v2 path (…/v1.0/<address>) replaced
// unless addresses are logged.
func logPath(p string, f reqFormat, withAddresses bool) string {
	if f == fmtAutodiscoverJSON && !withAddresses {
		if email, ok := jsonPathEmail(p); ok && email != "" {
			p = p[:len(p)-len(email)] + "{address}"
		}
	}
	if len(p) > maxLoggedPath {
		p = p[:maxLoggedPath] + "…"
	}
	return p
}

// askedAddress finds the address a request asked about: noted by the
// handler, or in the URL. Invalid addresses are not logged.
func askedAddress(r *http.Request, f reqFormat, rec *recorder) (policy.Address, bool) {
	if rec.hasAddr {
		return rec.addr, true
	}
	var raw string
	switch f {
	case fmtAutoconfig, fmtAppleProfile:
		raw = queryValue(r, "emailaddress")
	case fmtAutodiscoverJSON:
		if email, ok := jsonPathEmail(r.URL.Path); ok && email != "" {
			raw = email
		} else {
			raw = queryValue(r, "Email")
		}
	default:
		return policy.Address{}, false
	}
	if raw == "" {
		return policy.Address{}, false
	}
	a, err := policy.ParseAddress(strings.TrimSpace(raw))
	return a, err == nil
}
