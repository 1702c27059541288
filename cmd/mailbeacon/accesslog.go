package main

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailbeacon/mailbeacon/protocols"
)

// textLog is the text format's handler: slog's TextHandler, which also
// writes the access log's lines itself (protocols.AccessLogger), formatted
// by hand into a pooled buffer, byte for byte what the TextHandler writes
// for the same record. A line with a value the TextHandler would quote
// (a space, '=', '"', a control or non-ASCII byte, an empty string) is
// left to the TextHandler: such paths are rare, and quoting stays its job.
type textLog struct {
	slog.Handler // the TextHandler, on w
	w            io.Writer
	bufs         *sync.Pool // *[]byte
	stamp        *atomic.Pointer[timeStamp]
	// exact: the options change nothing of a line but its level's
	// threshold (no ReplaceAttr, no AddSource), so a line made by hand is
	// the TextHandler's.
	exact bool
}

// timeStamp is a second's time as the log writes it: lines of the same
// second and zone format only their milliseconds.
type timeStamp struct {
	sec    int64
	loc    *time.Location
	prefix []byte // up to the seconds' dot: 2006-01-02T15:04:05.
	zone   []byte // Z or -07:00
}

func newTextLog(w io.Writer, opts *slog.HandlerOptions) *textLog {
	return &textLog{
		Handler: slog.NewTextHandler(w, opts),
		w:       w,
		bufs:    &sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }},
		stamp:   new(atomic.Pointer[timeStamp]),
		exact:   opts == nil || opts.ReplaceAttr == nil && !opts.AddSource,
	}
}

// LogAccess writes e's line, unless one of its values needs quoting.
func (t *textLog) LogAccess(e *protocols.AccessEntry) bool {
	if !t.exact {
		return false
	}
	if !t.Enabled(context.Background(), e.Level) {
		return true // the TextHandler would write nothing either
	}
	bp := t.bufs.Get().(*[]byte)
	b, ok := appendAccessText((*bp)[:0], e, t.timeStamp(e.Time))
	if ok {
		_, _ = t.w.Write(b)
	}
	if cap(b) <= 4<<10 {
		*bp = b[:0]
		t.bufs.Put(bp)
	}
	return ok
}

// timeStamp returns the stamp of t's second, made anew when the second
// (or the zone) is not the last one's.
func (t *textLog) timeStamp(at time.Time) *timeStamp {
	ts := t.stamp.Load()
	if ts != nil && ts.sec == at.Unix() && ts.loc == at.Location() {
		return ts
	}
	s := at.AppendFormat(nil, "2006-01-02T15:04:05.000Z07:00")
	ts = &timeStamp{sec: at.Unix(), loc: at.Location(), prefix: s[:len("2006-01-02T15:04:05.")], zone: s[len("2006-01-02T15:04:05.000"):]}
	t.stamp.Store(ts)
	return ts
}

// appendAccessText appends e as the TextHandler writes it, its time of
// ts's second:
//
//	time=2006-01-02T15:04:05.000Z07:00 level=INFO msg=request method=GET path=/p status=200 duration=1.5ms format=f client=192.0.2.1 domain=example.com address=a@example.com
//
// ok is false when a value would be quoted.
func appendAccessText(b []byte, e *protocols.AccessEntry, ts *timeStamp) (_ []byte, ok bool) {
	year := e.Time.Year()
	if year < 0 || year > 9999 {
		return b, false
	}
	b = append(b, "time="...)
	// The TextHandler's time: truncated to the millisecond, three digits.
	ms := e.Time.Nanosecond() / int(time.Millisecond)
	b = append(b, ts.prefix...)
	b = append(b, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	b = append(b, ts.zone...)
	b = append(b, " level="...)
	b = append(b, e.Level.String()...)
	b = append(b, " msg=request method="...)
	ok = plainText(e.Method)
	b = append(b, e.Method...)
	b = append(b, " path="...)
	ok = ok && plainText(e.Path)
	b = append(b, e.Path...)
	b = append(b, " status="...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, " duration="...)
	b = append(b, e.Duration.String()...)
	b = append(b, " format="...)
	ok = ok && plainText(e.Format)
	b = append(b, e.Format...)
	b = append(b, " client="...)
	if e.Client.IsValid() {
		b = e.Client.AppendTo(b)
	} else {
		b = append(b, "unknown"...)
	}
	if e.Domain != "" {
		b = append(b, " domain="...)
		ok = ok && plainText(e.Domain)
		b = append(b, e.Domain...)
	}
	if e.Address != "" {
		b = append(b, " address="...)
		ok = ok && plainText(e.Address)
		b = append(b, e.Address...)
	}
	return append(b, '\n'), ok
}

// plainText reports whether the TextHandler writes s as is: s is not
// empty and holds printable ASCII only, without space, '"' or '='.
func plainText(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '=' {
			return false
		}
	}
	return true
}
