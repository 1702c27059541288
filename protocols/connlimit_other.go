//go:build !unix

package protocols

// descriptorLimit is unknown here: MaxConnections takes its fallback.
func descriptorLimit() int { return 0 }
