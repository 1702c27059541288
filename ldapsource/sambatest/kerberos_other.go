//go:build !linux

package sambatest

import "testing"

// ExportKeytab is not reached where DC skips.
func (s *Server) ExportKeytab(t testing.TB, principal string) string {
	t.Helper()
	unavailable(t, "a Samba DC in a network namespace needs Linux")
	return ""
}
