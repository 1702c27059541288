package protocols

import "github.com/gorilla/mux"

// AutodiscoverOptions configures Microsoft Autodiscover.
type AutodiscoverOptions struct{}

func (s *Server) autodiscoverRoutes(r *mux.Router) {}
