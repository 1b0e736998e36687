package models

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestFailedQueriesLogThrottled: with the database gone, every query fails
// and its caller gets the error, but the log gets one line for them all
// within 10 seconds, not one per query.
func TestFailedQueriesLogThrottled(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := Open(ctx, slog.New(slog.NewJSONHandler(logs, nil)), "sqlite", filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	seed(t, db)
	s := testStore(t, db)
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("DB: %v", err)
	}
	sqlDB.Close() // every query fails from here on
	for i := range 50 {
		if _, _, _, err := s.CheckPassword(ctx, "john_doe", "guess"); err == nil {
			t.Fatalf("CheckPassword %d on a closed database: nil error", i)
		}
		if _, err := s.Overrides(ctx, time.Now()); err == nil {
			t.Fatalf("Overrides %d on a closed database: nil error", i)
		}
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Errorf("100 failed queries logged %d lines, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "john_doe") {
		t.Errorf("the log shows a query's values:\n%s", logs)
	}
}

func TestThrottle(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	th := throttle{period: 10 * time.Second, now: func() time.Time { return now }}
	type step struct {
		after    time.Duration
		ok       bool
		heldBack int
	}
	steps := []step{
		{0, true, 0},
		{time.Second, false, 0},
		{8 * time.Second, false, 0},
		{time.Second, true, 2}, // 10s after the first
		{9 * time.Second, false, 0},
		{time.Minute, true, 1},
	}
	for i, s := range steps {
		now = now.Add(s.after)
		ok, held := th.allow()
		if ok != s.ok || held != s.heldBack {
			t.Errorf("step %d: allow() = %v, %d; want %v, %d", i, ok, held, s.ok, s.heldBack)
		}
	}
}
