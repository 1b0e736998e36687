package middleware

import (
	"io"
	"sync"
	"time"
)

// logBufferSize is how much LogWriter holds before it writes: a few hundred
// access lines.
const logBufferSize = 64 << 10

// LogWriter collects log lines for w and writes them in batches: when its
// buffer is full, at every tick of its interval, and at Flush and Close.
// A write system call per line (the access log's, under load) costs about as
// much as formatting the line; one per batch costs next to nothing. Lines
// keep their order, and nothing is lost as long as Close (or Flush) is
// called before the process exits: run defers Close. After Close, lines are
// written at once.
type LogWriter struct {
	mu     sync.Mutex
	w      io.Writer
	buf    []byte
	closed bool
	stop   chan struct{} // closed by Close: the ticker's goroutine ends
	done   chan struct{} // closed when it has
}

// NewLogWriter returns a LogWriter writing to w at least every interval
// (it must be > 0). Close it to stop its goroutine and write what it holds.
func NewLogWriter(w io.Writer, interval time.Duration) *LogWriter {
	lw := &LogWriter{w: w, buf: make([]byte, 0, logBufferSize), stop: make(chan struct{}), done: make(chan struct{})}
	go lw.tick(interval)
	return lw
}

func (lw *LogWriter) tick(interval time.Duration) {
	defer close(lw.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-lw.stop:
			return
		case <-t.C:
			_ = lw.Flush() // a log that cannot be written has nowhere to say so; the next batch tries again
		}
	}
}

// Write adds p, a whole line or lines, to the batch; it writes the batch
// first when p does not fit, and p itself when it is larger than the
// buffer or the LogWriter is closed. The error is w's, if it wrote: p is
// kept even when the batch before it could not be written.
func (lw *LogWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var err error
	if len(lw.buf)+len(p) > cap(lw.buf) {
		err = lw.flushLocked()
	}
	if lw.closed || len(p) > cap(lw.buf) {
		n, werr := lw.w.Write(p)
		if werr != nil {
			err = werr
		}
		return n, err
	}
	lw.buf = append(lw.buf, p...)
	return len(p), err
}

// Flush writes what the LogWriter holds.
func (lw *LogWriter) Flush() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.flushLocked()
}

// flushLocked writes the batch, with lw.mu held. On an error the batch is
// dropped all the same: a full buffer must not stop the service.
func (lw *LogWriter) flushLocked() error {
	if len(lw.buf) == 0 {
		return nil
	}
	_, err := lw.w.Write(lw.buf)
	lw.buf = lw.buf[:0]
	return err
}

// Close stops the interval's writes and writes what the LogWriter holds;
// later lines are written at once. Calling it again does nothing more.
func (lw *LogWriter) Close() error {
	lw.mu.Lock()
	if lw.closed {
		lw.mu.Unlock()
		return nil
	}
	lw.closed = true
	close(lw.stop)
	err := lw.flushLocked()
	lw.mu.Unlock()
	<-lw.done
	return err
}
