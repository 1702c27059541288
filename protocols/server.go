// Package protocols speaks to mail clients: the HTTP routes, where each
// request is parsed, and one renderer per client format. Decisions about
// what a user gets are made in policy; this package only asks the Resolver
// and renders the Account it returns.
package protocols

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/mailbeacon/mailbeacon/policy"
)

// Resolver is what the handlers need from policy.
type Resolver interface {
	Resolve(ctx context.Context, addr policy.Address) (*policy.Account, error)
	// Domain returns the served domain; the error wraps
	// policy.ErrUnknownDomain or policy.ErrDirectoryUnavailable.
	Domain(ctx context.Context, name string) (*policy.Domain, error)
}

// Options configures the handler.
type Options struct {
	Log          *slog.Logger
	Autodiscover AutodiscoverOptions
	Apple        AppleOptions
	Operations   OperationsOptions // operations.go
	Limits       LimitOptions      // limits.go
	// Ready reports whether the directory can be reached (for /readyz).
	Ready func(context.Context) error
}

// Server holds the HTTP handlers.
type Server struct {
	res  Resolver
	log  *slog.Logger
	opts Options
	lim  *limiter // limits.go
}

// NewHandler returns the router with every client endpoint.
func NewHandler(res Resolver, opts Options) http.Handler {
	s := &Server{res: res, log: opts.Log, opts: opts}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// limits.go: before the routes, because it wraps s.res to count
	// lookups of unknown addresses per client.
	s.setupLimits()
	r := mux.NewRouter()
	// Thunderbird autoconfig (CLIENTS.md §1): the autoconfig.<domain>
	// path and the .well-known path on the bare domain.
	for _, p := range []string{"/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"} {
		r.HandleFunc(p, s.autoconfig).Methods(http.MethodGet, http.MethodHead)
		r.HandleFunc(p, methodNotAllowed(http.MethodGet, http.MethodHead))
	}
	s.autodiscoverRoutes(r) // autodiscover.go: Outlook, ActiveSync, Autodiscover v2 JSON
	s.appleRoutes(r)        // apple.go: configuration profiles, setup page, RFC 6764
	s.operationsRoutes(r)   // operations.go: metrics and health
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		textError(w, http.StatusNotFound, "not found")
	})
	// Outermost first: metrics and access log see every request, including
	// those the per-client limits refuse.
	return s.instrument(s.limit(r))
}

func methodNotAllowed(allowed ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		textError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

// textError answers with a short plain-text body. Messages are fixed
// strings: nothing from the request is echoed.
func textError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// resolveError maps a resolver error to an HTTP status and message.
func (s *Server) resolveError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, policy.ErrUnknownDomain):
		textError(w, http.StatusNotFound, "domain not served here")
	case errors.Is(err, policy.ErrRejected):
		textError(w, http.StatusNotFound, "no configuration for this address")
	case errors.Is(err, policy.ErrDirectoryUnavailable):
		w.Header().Set("Retry-After", "30")
		textError(w, http.StatusServiceUnavailable, "directory unavailable, try again later")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		textError(w, http.StatusServiceUnavailable, "request timed out")
	default:
		s.log.Error("resolve failed", "err", err)
		textError(w, http.StatusInternalServerError, "internal error")
	}
}

// hostDomain returns the configured domain a request's Host header names,
// either directly or as autoconfig.<domain> / autodiscover.<domain>.
func (s *Server) hostDomain(r *http.Request, prefixes ...string) (*policy.Domain, bool) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	name, err := policy.NormalizeDomain(host)
	if err != nil {
		return nil, false
	}
	// The prefixed names first: each name asked of a directory domain
	// source costs a search (a negative one for autoconfig.<d> itself).
	for _, p := range prefixes {
		if rest, ok := strings.CutPrefix(name, p); ok {
			if d, err := s.res.Domain(r.Context(), rest); err == nil {
				return d, true
			}
		}
	}
	if d, err := s.res.Domain(r.Context(), name); err == nil {
		return d, true
	}
	return nil, false
}
