package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The access log is buffered and written every logFlushInterval: a line
// still in the buffer when SIGHUP reloads or SIGTERM stops the real binary
// is written all the same. Requests are sent right before each signal, so
// that their lines are in the buffer when it arrives.
func TestAccessLogKeptAcrossReloadAndSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the binary: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mailbeacon")
	build := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	demo, err := os.ReadFile("demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	port, opsPort := freePort(t), freePort(t)
	cfg := filepath.Join(dir, "mailbeacon.yaml")
	writeFile(t, cfg, fmt.Sprintf("%s\noperations:\n  listen: 127.0.0.1:%d\n  access_log: true\n", demo, opsPort))

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--demo", "--config", cfg, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	var stderr lockedWriter
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	client := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, stderr.String, func() bool {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", opsPort))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	url := fmt.Sprintf("http://127.0.0.1:%d/mail/config-v1.1.xml?emailaddress=bob@example.com", port)
	send := func(n int) {
		t.Helper()
		for range n {
			resp, err := client.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("autoconfig: %d", resp.StatusCode)
			}
		}
	}

	const perPhase = 100
	send(perPhase)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr.String, func() bool { return strings.Contains(stderr.String(), "configuration reloaded") })
	send(perPhase)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("serve did not stop after SIGTERM\n%s", stderr.String())
	}

	lines := 0
	for line := range strings.SplitSeq(stderr.String(), "\n") {
		if strings.Contains(line, "msg=request") && strings.Contains(line, "path=/mail/config-v1.1.xml") && strings.Contains(line, "status=200") {
			lines++
		}
	}
	if lines != 2*perPhase {
		t.Errorf("%d access-log lines for %d requests\n%s", lines, 2*perPhase, stderr.String())
	}
}

// waitFor polls cond for up to ten seconds; out tells what the process
// said when it never holds.
func waitFor(t *testing.T, out func() string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out\n%s", out())
		}
	}
}
