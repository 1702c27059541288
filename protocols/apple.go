package protocols

import "github.com/gorilla/mux"

// AppleOptions configures Apple configuration profiles.
type AppleOptions struct{}

func (s *Server) appleRoutes(r *mux.Router) {}

// Prepare validates the options and loads the files they name, once at
// start-up. Errors name the configuration key at fault.
func (o *AppleOptions) Prepare() error { return nil }
