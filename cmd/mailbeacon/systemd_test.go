package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource/ldaptest"
)

// unitLines returns the values of key= in deploy/mailbeacon.service's
// active lines, in order.
func unitLines(t *testing.T, key string) []string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/mailbeacon.service")
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), key+"="); ok {
			vals = append(vals, v)
		}
	}
	return vals
}

// notifySocket is a fake systemd notification socket: each datagram
// serve sends arrives on the channel.
func notifySocket(t *testing.T, path string) <-chan string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(c)
				return
			}
			c <- string(buf[:n])
		}
	}()
	return c
}

// TestSystemdNotifySlapd runs the unit's ExecStart= command line, with the
// unit's Environment= (the password as a credential in %d), under a fake
// NOTIFY_SOCKET and watchdog: READY=1 once it listens; RELOADING=1 with
// MONOTONIC_USEC and READY=1 on each SIGHUP, also when the reload fails
// (a rotated password the directory refuses: the file's content was read
// again); STOPPING=1 when it stops; WATCHDOG=1 pings meanwhile.
func TestSystemdNotifySlapd(t *testing.T) {
	srv := ldaptest.Slapd(t)
	dir := t.TempDir()
	if typ := unitLines(t, "Type"); len(typ) != 1 || typ[0] != "notify" {
		t.Errorf("unit Type=%q: want notify", typ)
	}
	for _, r := range unitLines(t, "ExecReload") {
		if strings.Contains(r, "config check") {
			t.Errorf("ExecReload=%s: systemd gives ExecReload= no credentials under ProtectSystem=; SIGHUP alone reloads", r)
		}
	}
	exec := unitLines(t, "ExecStart")
	if len(exec) != 1 {
		t.Fatalf("ExecStart= lines %q: want one", exec)
	}
	args := strings.Fields(exec[0])
	if args[0] != "/usr/bin/mailbeacon" {
		t.Fatalf("ExecStart=%s: not /usr/bin/mailbeacon", exec[0])
	}
	args = args[1:]
	// The configuration file is this test's.
	cfgFile := filepath.Join(dir, "config.yaml")
	for i, a := range args {
		if a == "/etc/mailbeacon/config.yaml" {
			args[i] = cfgFile
		}
	}
	// A port free now, so that the test can dial it the moment READY=1
	// arrives.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	writeFile(t, cfgFile, slapdConfigText(t, srv, slapdOptions{extra: "server:\n  listen: " + addr + "\noperations:\n  listen: 127.0.0.1:0\n"}))
	creds := filepath.Join(dir, "credentials")
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	password := filepath.Join(creds, "ldap-password")
	writeFile(t, password, ldaptest.ServicePassword+"\n")
	for _, env := range unitLines(t, "Environment") {
		k, v, _ := strings.Cut(env, "=")
		t.Setenv(k, strings.ReplaceAll(v, "%d", creds))
	}
	notes := notifySocket(t, filepath.Join(dir, "notify"))
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	binds0 := srv.BindCount()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, io.Discard, stderr) }()
	exit := -1 // serve's exit code, once it returned

	watchdogs := 0
	// next returns the next notification but watchdog pings. Those sent
	// just before serve returned are still read.
	next := func(what string) string {
		t.Helper()
		timeout := time.After(15 * time.Second)
		exited := done
		if exit >= 0 {
			exited = nil
		}
		for {
			select {
			case n := <-notes:
				if n == "WATCHDOG=1" {
					watchdogs++
					continue
				}
				return n
			case exit = <-exited:
				exited, timeout = nil, time.After(time.Second)
			case <-timeout:
				if exit >= 0 {
					t.Fatalf("serve exited %d waiting for %s: %s", exit, what, stderr.String())
				}
				t.Fatalf("no %s notification: %s", what, stderr.String())
			}
		}
	}
	lines := func(n string) []string { return strings.Split(strings.TrimSpace(n), "\n") }
	expect := func(n, first, status string) {
		t.Helper()
		l := lines(n)
		if l[0] != first || !strings.Contains(n, "STATUS="+status) {
			t.Errorf("notification %q: want %s with STATUS=%s", n, first, status)
		}
	}
	started := time.Now()
	expect(next("READY=1"), "READY=1", "serving")
	ready := time.Since(started)
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Errorf("READY=1 before server.listen was open: %v", err)
	} else {
		c.Close()
	}
	// logged: the log is flushed every logFlushInterval.
	logged := func(msg string) bool {
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if strings.Contains(stderr.String(), msg) {
				return true
			}
		}
		return false
	}
	reload := func(status string) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		n := next("RELOADING=1")
		l := lines(n)
		if l[0] != "RELOADING=1" || len(l) < 2 || !strings.HasPrefix(l[1], "MONOTONIC_USEC=") {
			t.Errorf("notification %q: want RELOADING=1 then MONOTONIC_USEC=", n)
		} else if us, err := strconv.ParseInt(strings.TrimPrefix(l[1], "MONOTONIC_USEC="), 10, 64); err != nil || us <= 0 {
			t.Errorf("MONOTONIC_USEC in %q: not a positive integer", n)
		}
		expect(next("READY=1 after the reload"), "READY=1", status)
	}
	reload("serving")
	if !logged("configuration reloaded") {
		t.Errorf("no reload in the log: %s", stderr.String())
	}
	// A rotated password in the credential the directory refuses: read
	// again, asked once, refused, and the running configuration serves on.
	writeFile(t, password, "not-the-password\n")
	reload("serving; the last reload failed")
	if !logged("configuration reload failed") {
		t.Errorf("the rotated password was not tried: %s", stderr.String())
	}
	time.Sleep(300 * time.Millisecond) // a watchdog ping or more
	cancel()
	if n := next("STOPPING=1"); lines(n)[0] != "STOPPING=1" {
		t.Errorf("notification %q: want STOPPING=1", n)
	}
	if exit < 0 {
		exit = <-done
	}
	if exit != 0 {
		t.Errorf("serve exited %d: %s", exit, stderr.String())
	}
	if watchdogs < 2 {
		t.Errorf("%d watchdog pings at WATCHDOG_USEC=200ms over %v: want some", watchdogs, time.Since(started))
	}
	t.Logf("READY=1 %v after start; %d watchdog pings; %d binds", ready.Round(time.Millisecond), watchdogs, srv.BindCount()-binds0)
}

// stderrFile is a file to hand serve as its stderr, with its
// JOURNAL_STREAM value (device:inode).
func stderrFile(t *testing.T, name string) (*os.File, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// TestJournalPriorityPrefix: with stderr the stream $JOURNAL_STREAM names,
// each log line starts with its syslog priority, and so does the error a
// command exits with; with $JOURNAL_STREAM unset or naming another
// stream, lines are plain.
func TestJournalPriorityPrefix(t *testing.T) {
	other, otherStream := stderrFile(t, "other")
	other.Close()
	for _, tc := range []struct {
		name    string
		env     func(own string) string
		journal bool
	}{
		{"journal", func(own string) string { return own }, true},
		{"unset", func(string) string { return "" }, false},
		{"another stream", func(string) string { return otherStream }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, own := stderrFile(t, "stderr")
			t.Setenv("JOURNAL_STREAM", tc.env(own))
			if got := journalStream(f); got != tc.journal {
				t.Fatalf("journalStream = %v, want %v", got, tc.journal)
			}
			// The logger serve builds, at every level.
			_, log, cleanup, err := setup(commonFlags{demo: true}, f)
			if err != nil {
				t.Fatal(err)
			}
			log.Warn("a warning")
			log.Error("an error", "err", "boom")
			cleanup()
			// The error a command exits with.
			if code := run(context.Background(), []string{"serve", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, io.Discard, f); code != exitConfig {
				t.Errorf("serve with a missing file exited %d", code)
			}
			b, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"demo directory started": "<6>", "a warning": "<4>", "an error": "<3>", "mailbeacon: --config": "<3>"}
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				for msg, prio := range want {
					if !strings.Contains(l, msg) {
						continue
					}
					delete(want, msg)
					if tc.journal != strings.HasPrefix(l, prio) || (!tc.journal && strings.HasPrefix(l, "<")) {
						t.Errorf("journal %v: line %q, want prefix %q: %v", tc.journal, l, prio, tc.journal)
					}
				}
			}
			for msg := range want {
				t.Errorf("no line %q in %s", msg, b)
			}
		})
	}
	// Debug, with the level on: <7>.
	f, _ := stderrFile(t, "debug")
	lw := newLogWriter(f, time.Hour)
	log, err := newJournalLogger(lw, logConfig{Level: "debug", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	log.With("k", "v").WithGroup("g").Debug("detail", "n", 1)
	log.Log(context.Background(), slog.LevelError+4, "worse than an error")
	lw.Close()
	b, _ := os.ReadFile(f.Name())
	if want := "<7>{"; !strings.HasPrefix(string(b), want) || !strings.Contains(string(b), `"k":"v","g":{"n":1}`) {
		t.Errorf("debug line %q: want prefix %q and the attributes", b, want)
	}
	if !strings.Contains(string(b), "\n<3>{") {
		t.Errorf("a level above error: %q, want <3>", b)
	}

	// 300 goroutines at once, each at its own level: every line keeps
	// its own prefix, whole.
	f, _ = stderrFile(t, "together")
	lw = newLogWriter(f, time.Millisecond)
	log, err = newJournalLogger(lw, logConfig{Level: "debug", Format: "text"})
	if err != nil {
		t.Fatal(err)
	}
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}
	const n, each = 300, 20
	ldaptest.Together(n, func(i int) {
		l := log.With("g", i)
		for j := range each {
			l.Log(context.Background(), levels[i%4], "line", "j", j)
		}
	})
	lw.Close()
	b, _ = os.ReadFile(f.Name())
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != n*each {
		t.Fatalf("%d lines, want %d", len(lines), n*each)
	}
	for _, l := range lines {
		var g, j int
		var level, prio string
		if _, err := fmt.Sscanf(l[strings.Index(l, "level="):], "level=%s msg=line g=%d j=%d", &level, &g, &j); err != nil || !strings.HasPrefix(l, "<") {
			t.Fatalf("line %q: %v", l, err)
		}
		prio = l[:3]
		if want := priority(levels[g%4]); prio != want || level != levels[g%4].String() {
			t.Fatalf("line %q: prefix %s, want %s", l, prio, want)
		}
	}
}

// TestHealthCommand: health exits 0 against a running serve's operations
// listener, 1 at once against a closed port, and 1 within --timeout
// against a port that accepts but never answers.
func TestHealthCommand(t *testing.T) {
	s := startServe(t, []string{"--demo", "--listen", "127.0.0.1:0"}, "operations.listen")
	ops := s.addrs["operations.listen"]
	health := func(args ...string) (int, string, time.Duration) {
		var out, errb syncBuffer
		start := time.Now()
		code := run(context.Background(), append([]string{"health"}, args...), &out, &errb)
		return code, out.String() + errb.String(), time.Since(start)
	}
	if code, out, d := health("--url", ops+"/healthz"); code != 0 {
		t.Errorf("health against serve: exit %d: %s", code, out)
	} else {
		t.Logf("healthy: %v", d.Round(time.Microsecond))
	}
	if code, out, _ := health("--url", ops+"/no-such-path"); code == 0 {
		t.Errorf("health against a 404: exit 0: %s", out)
	}
	// --config: the file's operations.listen, a wildcard host asked on
	// the loopback.
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(ops, "http://"))
	writeFile(t, cfgFile, demoConfig+`
ldap:
  urls: ["ldap://127.0.0.1:1"]
  bind_dn: cn=svc,dc=example,dc=com
  bind_password: secret
  base_dn: dc=example,dc=com
operations:
  listen: ":`+port+`"
`)
	if code, out, _ := health("--config", cfgFile); code != 0 {
		t.Errorf("health --config with operations.listen :%s: exit %d: %s", port, code, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := ln.Addr().String()
	code, out, d := health("--url", "http://"+silent+"/healthz", "--timeout", "300ms")
	if code != 1 || d > 2*time.Second {
		t.Errorf("health against a silent port: exit %d after %v: %s", code, d, out)
	}
	t.Logf("silent port, --timeout 300ms: exit %d after %v", code, d.Round(time.Millisecond))
	ln.Close()
	code, out, d = health("--url", "http://"+silent+"/healthz")
	if code != 1 || d > time.Second {
		t.Errorf("health against a closed port: exit %d after %v: %s", code, d, out)
	}
	t.Logf("closed port: exit %d after %v", code, d.Round(time.Microsecond))
	for listen, want := range map[string]string{":9090": "127.0.0.1:9090", "0.0.0.0:1": "127.0.0.1:1", "[::]:2": "[::1]:2", "10.0.0.1:3": "10.0.0.1:3"} {
		if got := localAddr(listen); got != want {
			t.Errorf("localAddr(%q) = %q, want %q", listen, got, want)
		}
	}
}
