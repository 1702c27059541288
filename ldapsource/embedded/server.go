// Package embedded is an in-process LDAP server over a small in-memory
// directory, for the zero-install demo and for fast unit tests. It speaks
// real LDAP over TCP (gldap), so the production ldapsource client is what
// talks to it. It is not evidence of OpenLDAP or Active Directory support:
// integration tests run against real servers for that.
package embedded

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jimlambrt/gldap"
)

// Server is a running embedded LDAP server.
type Server struct {
	URL      string
	srv      *gldap.Server
	searches atomic.Int64
	binds    atomic.Int64
	// handled orders every handled request before Close: gldap adds to a
	// WaitGroup per accepted connection and waits on it in Stop, and the
	// race detector needs that Add to happen before the Wait.
	handled  sync.Mutex
	requests int // guarded by handled
}

// Searches counts the search requests served so far (tests use it to check
// that the cache collapses lookups).
func (s *Server) Searches() int64 { return s.searches.Load() }

// Binds counts the bind requests served so far.
func (s *Server) Binds() int64 { return s.binds.Load() }

// Close stops the server.
func (s *Server) Close() error {
	s.handled.Lock()
	defer s.handled.Unlock()
	return s.srv.Stop()
}

func (s *Server) touch() {
	s.handled.Lock()
	s.requests++
	s.handled.Unlock()
}

// Start serves dir on 127.0.0.1 at a free port; with tlsCfg the listener is
// ldaps://. Like the OpenLDAP test directory's ACL, anonymous searches are
// refused: clients must bind first.
func Start(dir *Dir, tlsCfg *tls.Config) (*Server, error) {
	g, err := gldap.NewServer(gldap.WithLogger(hclog.New(&hclog.LoggerOptions{Level: hclog.Off})))
	if err != nil {
		return nil, fmt.Errorf("embedded ldap: %w", err)
	}
	s := &Server{srv: g}
	var bound sync.Map // connection id -> bind DN
	mux, err := gldap.NewMux()
	if err != nil {
		return nil, fmt.Errorf("embedded ldap: %w", err)
	}
	if err := mux.Bind(func(w *gldap.ResponseWriter, r *gldap.Request) {
		s.touch()
		s.binds.Add(1)
		resp := r.NewBindResponse(gldap.WithResponseCode(gldap.ResultInvalidCredentials))
		defer func() { _ = w.Write(resp) }()
		m, err := r.GetSimpleBindMessage()
		if err == nil && dir.Bind(m.UserName, string(m.Password)) {
			bound.Store(r.ConnectionID(), m.UserName)
			resp.SetResultCode(gldap.ResultSuccess)
		} else {
			bound.Delete(r.ConnectionID())
		}
	}); err != nil {
		return nil, fmt.Errorf("embedded ldap: %w", err)
	}
	if err := mux.Search(func(w *gldap.ResponseWriter, r *gldap.Request) {
		s.touch()
		s.searches.Add(1)
		done := r.NewSearchDoneResponse(gldap.WithResponseCode(gldap.ResultSuccess))
		defer func() { _ = w.Write(done) }()
		if _, ok := bound.Load(r.ConnectionID()); !ok {
			done.SetResultCode(gldap.ResultInsufficientAccessRights)
			return
		}
		m, err := r.GetSearchMessage()
		if err != nil {
			done.SetResultCode(gldap.ResultProtocolError)
			return
		}
		entries, err := dir.Search(m.BaseDN, int(m.Scope), m.Filter)
		if err != nil {
			done.SetResultCode(gldap.ResultUnwillingToPerform)
			done.SetDiagnosticMessage(err.Error())
			return
		}
		for i, e := range entries {
			if m.SizeLimit > 0 && int64(i) >= m.SizeLimit {
				done.SetResultCode(gldap.ResultSizeLimitExceeded)
				return
			}
			out := r.NewSearchResponseEntry(e.DN)
			for k, v := range e.Attrs {
				if wanted(m.Attributes, k) && !strings.EqualFold(k, "userPassword") {
					out.AddAttribute(k, v)
				}
			}
			_ = w.Write(out)
		}
	}); err != nil {
		return nil, fmt.Errorf("embedded ldap: %w", err)
	}
	if err := g.Router(mux); err != nil {
		return nil, fmt.Errorf("embedded ldap: %w", err)
	}
	// gldap does not take a listener: find a free port, release it, and
	// let gldap listen there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("embedded ldap: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	var opts []gldap.Option
	scheme := "ldap"
	if tlsCfg != nil {
		opts, scheme = append(opts, gldap.WithTLSConfig(tlsCfg)), "ldaps"
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Run(addr, opts...) }()
	// Poll Ready rather than dialing: a probe connection would be one more
	// connection for Stop to wait on. Ready is also set when listening
	// failed, and Run returns that error right after.
	for deadline := time.Now().Add(5 * time.Second); !g.Ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			_ = g.Stop()
			return nil, errors.New("embedded ldap: server did not start on " + addr)
		}
	}
	select {
	case err := <-errc:
		return nil, fmt.Errorf("embedded ldap: %w", err)
	case <-time.After(20 * time.Millisecond):
	}
	s.URL = scheme + "://" + addr
	return s, nil
}

// wanted reports whether attribute a was asked for ("1.1" asks for none).
func wanted(req []string, a string) bool {
	if len(req) == 0 {
		return true
	}
	for _, r := range req {
		if r == "*" || strings.EqualFold(r, a) {
			return true
		}
	}
	return false
}
