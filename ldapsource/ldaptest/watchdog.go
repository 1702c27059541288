package ldaptest

import (
	"os"
	"os/exec"
	"time"
)

// Watchdog runs a shell script that waits for its standard input to reach
// EOF and then cleans up. EOF comes when the test process exits by any
// means, including those that skip t.Cleanup (a test timeout's panic,
// SIGKILL, Ctrl-C), so servers started by tests never outlive them. Test
// directory servers share it.
type Watchdog struct {
	cmd  *exec.Cmd
	pipe *os.File
}

// StartWatchdog starts /bin/sh -c script with args ($0 is name). env, when
// not nil, replaces the environment.
func StartWatchdog(script, name string, env []string, args ...string) (*Watchdog, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, name}, args...)...)
	cmd.Env = env
	cmd.Stdin = r // only the watchdog holds the read end; the write end is close-on-exec
	detach(cmd)   // Ctrl-C to the test's process group must not reach it
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, err
	}
	return &Watchdog{cmd: cmd, pipe: w}, nil
}

// Stop lets the watchdog run its cleanup now (there should be nothing left
// for it to do) and waits for it, killing it after timeout. A nil Watchdog
// is a no-op.
func (wd *Watchdog) Stop(timeout time.Duration) {
	if wd == nil {
		return
	}
	wd.pipe.Close()
	done := make(chan struct{})
	go func() { _ = wd.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		_ = wd.cmd.Process.Kill()
		<-done
	}
}
