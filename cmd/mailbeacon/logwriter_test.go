package main

import (
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
