//go:build unix

package ldapsource

import (
	"os"
	"syscall"
)

// chownLike gives file dir's owner and group when running as root, so
// that a service running as dir's owner can rewrite it.
func chownLike(file, dir string) {
	if os.Geteuid() != 0 {
		return
	}
	if fi, err := os.Stat(dir); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			_ = os.Chown(file, int(st.Uid), int(st.Gid))
		}
	}
}
