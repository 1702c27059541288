//go:build unix

package ldaptest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

const supported = true

// alive reports whether pid is a process that has not exited. A zombie
// (exited, not yet reaped: slapd daemonizes, so its parent is init, which
// in a container may never reap it) counts as dead.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist) || !procAvailable()
	}
	// pid (comm) state ...: comm may contain spaces and parentheses.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}

func procAvailable() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// ours reports whether pid runs slapd with our configuration file, so that
// a stale pidfile never makes us signal an unrelated process. Without
// /proc there is no way to tell, and the pidfile is trusted.
func ours(pid int, conf string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return !procAvailable()
	}
	return bytes.Contains(b, []byte(conf))
}

func terminate(pid int) error { return syscall.Kill(pid, syscall.SIGTERM) }
func kill(pid int) error      { return syscall.Kill(pid, syscall.SIGKILL) }

// detach keeps terminal signals (Ctrl-C to the foreground process group)
// away from the watchdog, which must outlive the test process.
func detach(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }
