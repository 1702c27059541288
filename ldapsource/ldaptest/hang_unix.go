//go:build unix

package ldaptest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Hang stops the running server with SIGSTOP, as a directory that hangs
// without closing anything, and returns once every one of its threads has
// stopped: kill returns before that, and a thread already at work could
// still answer. resume sends SIGCONT; it also runs when the test ends.
func (s *Server) Hang() (resume func()) {
	s.t.Helper()
	pid := s.PID()
	if pid == 0 {
		s.t.Fatal("ldaptest: Hang: slapd is not running")
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	s.t.Cleanup(resume)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		s.t.Fatalf("ldaptest: SIGSTOP: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); !allStopped(pid); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			s.t.Fatalf("ldaptest: slapd (pid %d) has threads running 5s after SIGSTOP", pid)
		}
	}
	return resume
}

// allStopped reports whether every thread of pid is stopped (state T), as
// /proc tells; without /proc it cannot tell and says yes.
func allStopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return !procAvailable()
	}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread exited
		}
		// tid (comm) state ...: comm may contain spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}
