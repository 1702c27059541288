//go:build unix

package protocols

import (
	"math"
	"syscall"
)

// descriptorLimit is the soft RLIMIT_NOFILE, or 0 when unknown.
func descriptorLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return int(min(r.Cur, math.MaxInt32))
}
