//go:build !linux

package sambatest

import "testing"

// DC needs Linux network namespaces: elsewhere it skips the test (or fails
// it under CI=true).
func DC(t testing.TB) *Server {
	t.Helper()
	unavailable(t, "a Samba DC in a network namespace needs Linux")
	return nil
}
