package protocols

import "github.com/gorilla/mux"

// AppleOptions configures Apple configuration profiles.
type AppleOptions struct{}

func (s *Server) appleRoutes(r *mux.Router) {}
