package middleware

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe to write from the LogWriter's
// goroutine while the test reads it; it counts the writes it gets.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestLogWriterBatches: lines wait in the batch until Flush or Close, then
// arrive whole, in order, in one write; lines after Close are written at
// once.
func TestLogWriterBatches(t *testing.T) {
	t.Parallel()
	var out lockedBuffer
	lw := NewLogWriter(&out, time.Hour)
	for _, l := range []string{"a\n", "b\n", "c\n"} {
		if n, err := lw.Write([]byte(l)); n != len(l) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want %d, nil", l, n, err, len(l))
		}
	}
	if got := out.String(); got != "" {
		t.Errorf("before Flush, w has %q, want nothing", got)
	}
	if err := lw.Flush(); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	if got := out.String(); got != "a\nb\nc\n" {
		t.Errorf("after Flush, w has %q, want %q", got, "a\nb\nc\n")
	}
	if out.writes != 1 {
		t.Errorf("Flush wrote %d times, want 1", out.writes)
	}
	if _, err := lw.Write([]byte("d\n")); err != nil {
		t.Fatal(err)
	}
	if err := lw.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if got := out.String(); got != "a\nb\nc\nd\n" {
		t.Errorf("after Close, w has %q, want the line held too", got)
	}
	if _, err := lw.Write([]byte("e\n")); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); !strings.HasSuffix(got, "d\ne\n") {
		t.Errorf("a line after Close: w has %q, want it written at once", got)
	}
	if err := lw.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
}

// TestLogWriterFull: a line that does not fit writes the batch before it,
// and a line larger than the buffer is written whole, after the batch.
func TestLogWriterFull(t *testing.T) {
	t.Parallel()
	var out lockedBuffer
	lw := NewLogWriter(&out, time.Hour)
	t.Cleanup(func() { lw.Close() })
	line := strings.Repeat("x", 99) + "\n"
	var want strings.Builder
	for range logBufferSize/len(line) + 1 {
		want.WriteString(line)
		if _, err := lw.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	if got, n := out.String(), logBufferSize/len(line)*len(line); len(got) != n {
		t.Errorf("after one line too many, w has %d bytes, want the %d of the full batch", len(got), n)
	}
	big := strings.Repeat("y", logBufferSize+1) + "\n"
	want.WriteString(big)
	if _, err := lw.Write([]byte(big)); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != want.String() {
		t.Errorf("after a line larger than the buffer, w has %d bytes, want %d, in order", len(got), want.Len())
	}
}

// TestLogWriterInterval: a line held is written within the interval
// without Flush (polled: no timing asserted but "eventually").
func TestLogWriterInterval(t *testing.T) {
	t.Parallel()
	var out lockedBuffer
	lw := NewLogWriter(&out, time.Millisecond)
	t.Cleanup(func() { lw.Close() })
	if _, err := lw.Write([]byte("tick\n")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); out.String() == ""; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the line held was not written within 10s of 1ms intervals")
		}
	}
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestLogWriterError: w's error comes back from the call that wrote, and
// the LogWriter goes on (the line given to a failing Write is kept).
func TestLogWriterError(t *testing.T) {
	t.Parallel()
	lw := NewLogWriter(failingWriter{}, time.Hour)
	if _, err := lw.Write([]byte("a\n")); err != nil {
		t.Fatalf("Write into the batch = %v, want nil", err)
	}
	if err := lw.Flush(); err == nil {
		t.Error("Flush() to a failing writer = nil, want its error")
	}
	if err := lw.Flush(); err != nil {
		t.Errorf("Flush() of an empty batch = %v, want nil", err)
	}
	if _, err := lw.Write([]byte("b\n")); err != nil {
		t.Fatal(err)
	}
	if err := lw.Close(); err == nil {
		t.Error("Close() with a line held for a failing writer = nil, want its error")
	}
}
