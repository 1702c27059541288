package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"

	"github.com/mailbeacon/mailbeacon/protocols"
)

// Under systemd, stderr is a stream to the journal, which reads a leading
// "<N>" of each line as its syslog priority (SyslogLevelPrefix=, on by
// default): with it `journalctl -p err` shows the errors alone.

// journalStream reports whether w is the stream systemd connected to the
// journal: $JOURNAL_STREAM names its device and inode. A file the output
// was redirected to, or a pipe, is not, and gets plain lines.
func journalStream(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	want := os.Getenv("JOURNAL_STREAM")
	if want == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return want == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// Syslog priorities of the slog levels.
const (
	prioError   = "<3>"
	prioWarning = "<4>"
	prioInfo    = "<6>"
	prioDebug   = "<7>"
)

func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return prioError
	case l >= slog.LevelWarn:
		return prioWarning
	case l >= slog.LevelInfo:
		return prioInfo
	}
	return prioDebug
}

// newJournalLogger is newLogger with each line prefixed by its priority.
func newJournalLogger(lw *logWriter, c logConfig) (*slog.Logger, error) {
	var h priorityHandler
	for i, p := range []string{prioError, prioWarning, prioInfo, prioDebug} {
		l, err := newLogger(prefixWriter{lw, p}, c)
		if err != nil {
			return nil, err
		}
		h[i] = l.Handler()
	}
	return slog.New(h), nil
}

// priorityHandler sends each record to the handler that writes its
// level's prefix: error, warning, info, debug.
type priorityHandler [4]slog.Handler

func (h priorityHandler) pick(l slog.Level) slog.Handler {
	switch priority(l) {
	case prioError:
		return h[0]
	case prioWarning:
		return h[1]
	case prioInfo:
		return h[2]
	}
	return h[3]
}

func (h priorityHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick(l).Enabled(ctx, l)
}

func (h priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

// LogAccess hands e to the handler of its level, when that one writes
// access-log lines itself (protocols.AccessLogger).
func (h priorityHandler) LogAccess(e *protocols.AccessEntry) bool {
	a, ok := h.pick(e.Level).(protocols.AccessLogger)
	return ok && a.LogAccess(e)
}

func (h priorityHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var n priorityHandler
	for i := range h {
		n[i] = h[i].WithAttrs(attrs)
	}
	return n
}

func (h priorityHandler) WithGroup(name string) slog.Handler {
	var n priorityHandler
	for i := range h {
		n[i] = h[i].WithGroup(name)
	}
	return n
}

// prefixWriter writes each line a handler hands it (one Write per record)
// after prefix, under one lock so lines of other goroutines never come
// between the two.
type prefixWriter struct {
	lw     *logWriter
	prefix string
}

func (p prefixWriter) Write(b []byte) (int, error) {
	return p.lw.writePrefixed(p.prefix, b)
}
