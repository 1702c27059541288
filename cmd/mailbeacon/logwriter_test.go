package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestLogWriterFlushes(t *testing.T) {
	var out syncBuffer
	lw := newLogWriter(&out, 10*time.Millisecond)
	if _, err := lw.Write([]byte("first\n")); err != nil {
		t.Fatal(err)
	}
	// The ticker flushes without Close.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(out.String(), "first"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("buffered line never flushed")
		}
	}
	_, _ = lw.Write([]byte("second\n"))
	lw.Close()
	lw.Close() // a second Close is harmless
	if out.String() != "first\nsecond\n" {
		t.Errorf("log output %q", out.String())
	}
}

// blockingWriter holds every Write until release is closed.
type blockingWriter struct {
	syncBuffer
	entered chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	return w.syncBuffer.Write(p)
}

// A flush writing to a slow file holds up no one who logs meanwhile (until
// the buffer is full), and no line is lost or reordered: requests log
// while the access log is written.
func TestLogWriterDoesNotWaitForTheFile(t *testing.T) {
	out := &blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	lw := newLogWriter(out, time.Hour)
	_, _ = lw.Write([]byte("first\n"))
	go lw.flush()
	<-out.entered // the flush is in the file's Write
	wrote := make(chan struct{})
	go func() {
		_, _ = lw.Write([]byte("second\n"))
		close(wrote)
	}()
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("Write waited for the flush's system call")
	}
	close(out.release)
	_, _ = lw.Write([]byte(strings.Repeat("x", logWriterSize) + "\n")) // over the buffer's size: what was buffered goes first
	if want := "first\nsecond\n"; out.String() != want {
		t.Errorf("before a line that does not fit: %q, want %q", out.String(), want)
	}
	_, _ = lw.Write([]byte("third\n"))
	lw.Close()
	if want := "first\nsecond\n" + strings.Repeat("x", logWriterSize) + "\nthird\n"; out.String() != want {
		t.Errorf("log output %d bytes, want %d: %.40q", len(out.String()), len(want), out.String())
	}
}

// BenchmarkLogWriter is an access-log line written by many goroutines at
// once, as requests write them.
func BenchmarkLogWriter(b *testing.B) {
	lw := newLogWriter(io.Discard, 100*time.Millisecond)
	defer lw.Close()
	line := []byte("time=2026-12-07T14:49:46.745Z level=INFO msg=request method=GET path=/mail/config-v1.1.xml status=200 duration=2.93127ms format=autoconfig client=127.0.0.1 domain=example.com\n")
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = lw.Write(line)
		}
	})
}
