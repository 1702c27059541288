package protocols

import "github.com/gorilla/mux"

// AutodiscoverOptions configures Microsoft Autodiscover.
type AutodiscoverOptions struct{}

func (s *Server) autodiscoverRoutes(r *mux.Router) {}

// Prepare validates the options and loads the files they name, once at
// start-up. Errors name the configuration key at fault.
func (o *AutodiscoverOptions) Prepare() error { return nil }
