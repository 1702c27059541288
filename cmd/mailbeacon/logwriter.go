package main

import (
	"io"
	"sync"
	"time"
)

// logWriterSize is the buffer a logWriter fills before it writes at once.
const logWriterSize = 64 << 10

// logWriter buffers log output and flushes it every interval, when the
// buffer is full, and on Close. With the access log on, one unbuffered
// write per request cost about a fifth of the throughput of cached answers
// (bench/); a line now waits at most one interval.
//
// Lines are appended under mu, which is held for a copy only: a flush
// takes the filled buffer and writes it with mu released, so requests
// logging meanwhile wait neither for the system call nor for the file.
type logWriter struct {
	out io.Writer

	mu  sync.Mutex
	buf []byte // lines not yet handed to out

	wmu   sync.Mutex // held while writing to out: flushes stay in order
	spare []byte     // the buffer last written, reused; under wmu

	stop chan struct{}
	done chan struct{}
}

func newLogWriter(w io.Writer, interval time.Duration) *logWriter {
	lw := &logWriter{
		out:   w,
		buf:   make([]byte, 0, logWriterSize),
		spare: make([]byte, 0, logWriterSize),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go func() {
		defer close(lw.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				lw.flush()
			case <-lw.stop:
				lw.flush()
				return
			}
		}
	}()
	return lw
}

func (lw *logWriter) Write(p []byte) (int, error) {
	return lw.writePrefixed("", p)
}

// writePrefixed writes prefix then p as one line of output. A line that
// fits is appended under one lock; one that does not first flushes.
func (lw *logWriter) writePrefixed(prefix string, p []byte) (int, error) {
	for flushed := false; ; flushed = true {
		lw.mu.Lock()
		if flushed || len(lw.buf) == 0 || len(lw.buf)+len(prefix)+len(p) <= logWriterSize {
			lw.buf = append(append(lw.buf, prefix...), p...)
			lw.mu.Unlock()
			return len(p), nil
		}
		lw.mu.Unlock()
		lw.flush()
	}
}

// flush writes what is buffered.
func (lw *logWriter) flush() {
	lw.wmu.Lock()
	defer lw.wmu.Unlock()
	lw.mu.Lock()
	b := lw.buf
	lw.buf = lw.spare[:0]
	lw.mu.Unlock()
	if len(b) > 0 {
		_, _ = lw.out.Write(b)
	}
	if cap(b) > 2*logWriterSize {
		b = make([]byte, 0, logWriterSize) // a huge line's buffer is not kept
	}
	lw.spare = b
}

// Close flushes what is buffered and stops the flusher. Writes after Close
// stay buffered until the next Close; there are none in practice.
func (lw *logWriter) Close() {
	select {
	case <-lw.stop:
	default:
		close(lw.stop)
	}
	<-lw.done
}
