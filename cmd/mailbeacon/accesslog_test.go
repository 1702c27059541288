package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/protocols"
)

// slogAccessLine is the line slog's TextHandler writes for e, the record
// built as protocols builds it when no AccessLogger takes the entry.
func slogAccessLine(t testing.TB, e *protocols.AccessEntry, level slog.Level) string {
	t.Helper()
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})
	if !h.Enabled(context.Background(), e.Level) {
		return ""
	}
	client := "unknown"
	if e.Client.IsValid() {
		client = e.Client.String()
	}
	rec := slog.NewRecord(e.Time, e.Level, "request", 0)
	rec.AddAttrs(slog.String("method", e.Method), slog.String("path", e.Path), slog.Int("status", e.Status),
		slog.Duration("duration", e.Duration), slog.String("format", e.Format), slog.String("client", client))
	if e.Domain != "" {
		rec.AddAttrs(slog.String("domain", e.Domain))
		if e.Address != "" {
			rec.AddAttrs(slog.String("address", e.Address))
		}
	}
	if err := h.Handle(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// textLogs are textLogs at each level, kept across the lines of a test so
// that their time stamps are reused.
type textLogs map[slog.Level]*textLog

// checkAccessLine asserts that textLog writes what the TextHandler would,
// or nothing when it declines; it reports whether textLog wrote the line.
func checkAccessLine(t testing.TB, logs textLogs, e *protocols.AccessEntry, level slog.Level) bool {
	t.Helper()
	var buf bytes.Buffer
	tl := logs[level]
	if tl == nil {
		tl = newTextLog(nil, &slog.HandlerOptions{Level: level})
		logs[level] = tl
	}
	tl.w = &buf
	ok := tl.LogAccess(e)
	switch want := slogAccessLine(t, e, level); {
	case ok && buf.String() != want:
		t.Fatalf("access line\n got %q\nwant %q", buf.String(), want)
	case !ok && buf.Len() > 0:
		t.Fatalf("access line declined but %q written", buf.String())
	}
	return ok
}

func TestAccessLogTextMatchesSlog(t *testing.T) {
	at := time.Date(2026, 12, 7, 14, 49, 46, 745999999, time.UTC)
	east := time.FixedZone("east", 5*3600+30*60)
	logs := textLogs{}
	base := protocols.AccessEntry{Time: at, Level: slog.LevelInfo, Method: "GET", Path: "/mail/config-v1.1.xml",
		Status: 200, Duration: 2931270 * time.Nanosecond, Format: "autoconfig",
		Client: netip.MustParseAddr("127.0.0.1"), Domain: "example.com"}
	for _, tc := range []struct {
		name     string
		edit     func(e *protocols.AccessEntry)
		level    slog.Level
		declined bool
	}{
		{name: "cached autoconfig"},
		{name: "no address", edit: func(e *protocols.AccessEntry) { e.Domain = "" }},
		{name: "full address", edit: func(e *protocols.AccessEntry) { e.Address = "bob@example.com" }},
		{name: "unknown client", edit: func(e *protocols.AccessEntry) { e.Client = netip.Addr{} }},
		{name: "ipv6 client", edit: func(e *protocols.AccessEntry) { e.Client = netip.MustParseAddr("2001:db8::1") }},
		{name: "ipv6 zone", edit: func(e *protocols.AccessEntry) { e.Client = netip.MustParseAddr("fe80::1%eth0") }},
		{name: "mapped ipv4", edit: func(e *protocols.AccessEntry) { e.Client = netip.MustParseAddr("::ffff:192.0.2.1") }},
		{name: "whole millisecond", edit: func(e *protocols.AccessEntry) { e.Time = at.Truncate(time.Second) }},
		{name: "zone", edit: func(e *protocols.AccessEntry) { e.Time = at.In(east) }},
		{name: "back from the zone", edit: func(e *protocols.AccessEntry) { e.Time = at.Add(-time.Millisecond) }},
		{name: "next second", edit: func(e *protocols.AccessEntry) { e.Time = at.Add(time.Millisecond) }},
		{name: "before 1970", edit: func(e *protocols.AccessEntry) { e.Time = time.Unix(-1, 2e6).UTC() }},
		{name: "monotonic", edit: func(e *protocols.AccessEntry) { e.Time = time.Now() }},
		{name: "long duration", edit: func(e *protocols.AccessEntry) { e.Duration = 90*time.Second + 5 }},
		{name: "zero duration", edit: func(e *protocols.AccessEntry) { e.Duration = 0 }},
		{name: "debug", edit: func(e *protocols.AccessEntry) { e.Level = slog.LevelDebug }, level: slog.LevelDebug},
		{name: "debug off", edit: func(e *protocols.AccessEntry) { e.Level = slog.LevelDebug }},
		{name: "status", edit: func(e *protocols.AccessEntry) { e.Status = 429 }},
		{name: "backslash", edit: func(e *protocols.AccessEntry) { e.Path = `/a\b` }},
		{name: "punctuation", edit: func(e *protocols.AccessEntry) { e.Path = "/!#$%&'()*+,-.:;<>?@[]^_`{|}~" }},
		{name: "space", edit: func(e *protocols.AccessEntry) { e.Path = "/a b" }, declined: true},
		{name: "equals", edit: func(e *protocols.AccessEntry) { e.Path = "/a=b" }, declined: true},
		{name: "quote", edit: func(e *protocols.AccessEntry) { e.Path = `/a"b` }, declined: true},
		{name: "control", edit: func(e *protocols.AccessEntry) { e.Path = "/a\x00b" }, declined: true},
		{name: "non-ascii", edit: func(e *protocols.AccessEntry) { e.Path = "/é" }, declined: true},
		{name: "shortened", edit: func(e *protocols.AccessEntry) { e.Path = "/aaa…" }, declined: true},
		{name: "empty method", edit: func(e *protocols.AccessEntry) { e.Method = "" }, declined: true},
		{name: "odd method", edit: func(e *protocols.AccessEntry) { e.Method = "PROP=FIND" }, declined: true},
		{name: "year 10000", edit: func(e *protocols.AccessEntry) { e.Time = at.AddDate(8000, 0, 0) }, declined: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base
			if tc.edit != nil {
				tc.edit(&e)
			}
			if got := checkAccessLine(t, logs, &e, tc.level); got == tc.declined {
				t.Errorf("written %v, want %v", got, !tc.declined)
			}
		})
	}
}

// Options that change what the TextHandler writes leave every line to it.
func TestAccessLogTextOptions(t *testing.T) {
	e := protocols.AccessEntry{Time: time.Now(), Level: slog.LevelInfo, Method: "GET", Path: "/", Status: 200,
		Format: "setup_page", Client: netip.MustParseAddr("192.0.2.1")}
	for _, opts := range []*slog.HandlerOptions{
		{AddSource: true},
		{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return a }},
	} {
		var buf bytes.Buffer
		if newTextLog(&buf, opts).LogAccess(&e) || buf.Len() > 0 {
			t.Errorf("options %+v: the line was written by hand", opts)
		}
	}
	if !newTextLog(io.Discard, nil).LogAccess(&e) {
		t.Error("no options: the line was left to the TextHandler")
	}
}

func FuzzAccessLogText(f *testing.F) {
	f.Add("GET", "/mail/config-v1.1.xml", "autoconfig", "example.com", "", int64(1765118986745999999), int64(2931270), uint8(0))
	f.Add("POST", "/autodiscover/autodiscover.xml", "autodiscover", "example.com", "bob@example.com", int64(0), int64(-1), uint8(1))
	f.Add("PROPFIND", `/.well-known/caldav\x`, "dav_redirect", "", "", int64(-62135596800000000), int64(1<<62), uint8(2))
	f.Add("GET", "/a b=\"c\"\x7f\xff", "other", "é.example", "a b", int64(253402300799999999), int64(999), uint8(3))
	logs := textLogs{}
	f.Fuzz(func(t *testing.T, method, path, format, domain, address string, unixNano, dur int64, client uint8) {
		e := protocols.AccessEntry{Time: time.Unix(0, unixNano).UTC(), Level: slog.LevelInfo, Method: method, Path: path,
			Status: 200, Duration: time.Duration(dur), Format: format, Domain: domain}
		if domain != "" {
			e.Address = address
		}
		switch client % 3 {
		case 1:
			e.Client = netip.AddrFrom4([4]byte{192, 0, 2, client})
		case 2:
			e.Client = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: client})
		}
		checkAccessLine(t, logs, &e, slog.LevelInfo)
	})
}

// TestAccessLogServedLikeSlog serves the same requests through a handler
// logging with textLog and one logging with slog's TextHandler: the lines
// are the same but for their time and duration, and textLog wrote them.
func TestAccessLogServedLikeSlog(t *testing.T) {
	cfg, _ := demoTestConfig(t, demoConfig)
	a, err := build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.source.Close)
	reqs := []func() *http.Request{
		func() *http.Request {
			return httptest.NewRequest("GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", nil)
		},
		func() *http.Request {
			return httptest.NewRequest("POST", "https://autodiscover.example.com/autodiscover/autodiscover.xml",
				strings.NewReader(`<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>bob@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`))
		},
		func() *http.Request { return httptest.NewRequest("GET", "/nothing%20here", nil) },
		func() *http.Request {
			r := httptest.NewRequest("GET", "/setup.css", nil)
			r.RemoteAddr = "pipe"
			return r
		},
	}
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	serve := func(log *slog.Logger) {
		hopts := a.handlerOptions(log)
		hopts.Operations.AccessLog = true
		srv := protocols.NewHandler(a.resolver, hopts)
		for _, r := range reqs {
			srv.ServeHTTP(httptest.NewRecorder(), r())
		}
	}
	var fastBuf, slogBuf bytes.Buffer
	tl := newTextLog(&fastBuf, opts)
	lc := &lineCounter{w: &fastBuf}
	tl.w = lc // the lines textLog formats itself, counted
	serve(slog.New(tl))
	serve(slog.New(slog.NewTextHandler(&slogBuf, opts)))
	fast := fastBuf.String()
	mask := regexp.MustCompile(`time=\S+|duration=\S+`)
	got, want := mask.ReplaceAllString(fast, "-"), mask.ReplaceAllString(slogBuf.String(), "-")
	if got != want || strings.Count(want, "\n") != len(reqs) {
		t.Fatalf("access log\n got %s\nwant %s", got, want)
	}
	if lc.lines != 3 { // the path with a space is quoted by slog
		t.Errorf("textLog wrote %d of the lines, want 3", lc.lines)
	}
}

type lineCounter struct {
	w     *bytes.Buffer
	lines int
}

func (l *lineCounter) Write(b []byte) (int, error) {
	l.lines++
	return l.w.Write(b)
}

// processCPU is the CPU time the process has spent (user and system, all
// threads): per operation, it is far steadier than ns/op on a machine
// other work shares.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discardResponse struct{ h http.Header }

func (w *discardResponse) Header() http.Header         { return w.h }
func (w *discardResponse) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardResponse) WriteHeader(int)             {}

// SetReadDeadline is the server's (http.ResponseController): the body
// deadline of a POST costs what it costs there, less the system's part.
func (w *discardResponse) SetReadDeadline(time.Time) error { return nil }

// BenchmarkAccessLog is the whole handler of `serve --demo` on cached
// answers, limits lifted as bench/ lifts them, its access log written as
// text to nowhere: by slog's TextHandler alone, and by textLog.
func BenchmarkAccessLog(b *testing.B) {
	cfg, _ := demoTestConfig(b, demoConfig+"limits:\n  requests_per_second: 10000000\n  burst: 10000000\n  unknown_per_minute: 600000000\n  unknown_burst: 10000000\n  max_per_client: 0\n  max_concurrent: 0\n")
	a, err := build(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(a.source.Close)
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	const pox = `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>bob@example.com</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	for _, lg := range []struct {
		name string
		h    slog.Handler
	}{
		{"slog", slog.NewTextHandler(io.Discard, opts)},
		{"text", newTextLog(io.Discard, opts)},
	} {
		for _, tc := range []struct{ name, method, target, body string }{
			{"autoconfig", "GET", "/mail/config-v1.1.xml?emailaddress=bob@example.com", ""},
			{"autodiscover", "POST", "/autodiscover/autodiscover.xml", pox},
		} {
			b.Run(tc.name+"_"+lg.name, func(b *testing.B) {
				h := protocols.NewHandler(a.resolver, a.handlerOptions(slog.New(lg.h)))
				body := strings.NewReader(tc.body)
				req := httptest.NewRequest(tc.method, tc.target, body)
				w := &discardResponse{h: http.Header{}}
				h.ServeHTTP(w, req)
				b.ReportAllocs()
				cpu := processCPU(b)
				for b.Loop() {
					clear(w.h)
					body.Reset(tc.body)
					h.ServeHTTP(w, req)
				}
				b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// Under the journal, the text format's access lines are written by hand
// too, each after its level's priority, as slog's lines are.
func TestAccessLogJournal(t *testing.T) {
	for _, tc := range []struct {
		level  slog.Level
		prefix string
	}{
		{slog.LevelInfo, prioInfo},
		{slog.LevelDebug, prioDebug},
	} {
		var out syncBuffer
		lw := newLogWriter(&out, time.Hour)
		log, err := newJournalLogger(lw, logConfig{Format: "text", Level: "debug"})
		if err != nil {
			t.Fatal(err)
		}
		a, ok := log.Handler().(protocols.AccessLogger)
		if !ok {
			t.Fatal("the journal's text logger writes no access lines itself")
		}
		e := protocols.AccessEntry{Time: time.Date(2026, 12, 7, 14, 49, 46, 745e6, time.UTC), Level: tc.level,
			Method: "GET", Path: "/healthz", Status: 200, Duration: time.Millisecond, Format: "operations",
			Client: netip.MustParseAddr("127.0.0.1")}
		if !a.LogAccess(&e) {
			t.Fatal("a plain line declined")
		}
		lw.Close()
		if want := tc.prefix + slogAccessLine(t, &e, slog.LevelDebug); out.String() != want {
			t.Errorf("journal line\n got %q\nwant %q", out.String(), want)
		}
	}
}
