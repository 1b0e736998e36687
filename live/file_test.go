package live

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/policy"
)

// writeAtomically replaces the file at path with text, as an operator's
// deploy tool would: a reader sees the old file or the new one.
func writeAtomically(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s: %v", tmp, err)
	}
}

// TestWatcherReadsOnlyChangedFiles: an unchanged file is only stat'ed at
// each check, never read again (a 900 KB file was read and hashed every
// 3 seconds); a change is read once, once it settled.
func TestWatcherReadsOnlyChangedFiles(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	text := "policies:\n  - name: p\n    key: user_or_ip\n    limits: [{algorithm: fixed_window, limit: 5, window: 1h}]\n" +
		strings.Repeat("# a comment to make the file big\n", 900_000/33)
	writeAtomically(t, path, text)
	_, v, err := ReadFile(path, nil)
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	var reads atomic.Int64
	f := &policyFile{kind: "live", path: path, seen: v, settle: 20 * time.Millisecond,
		read:    func(path string) ([]policy.Policy, string, error) { reads.Add(1); return ReadFile(path, nil) },
		use:     func([]policy.Policy, string) error { return nil },
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reloads"}, []string{"result"})}
	watch := func(d time.Duration) {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		watchPolicies(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), []*policyFile{f}, nil, 5*time.Millisecond)
	}
	watch(500 * time.Millisecond)
	if got := reads.Load(); got > 1 {
		t.Errorf("an unchanged file read %d times in 0.5s of checks every 5ms, want at most once", got)
	}
	reads.Store(0)
	writeAtomically(t, path, strings.Replace(text, "limit: 5", "limit: 6", 1))
	watch(500 * time.Millisecond)
	if got := reads.Load(); got != 1 {
		t.Errorf("a changed file read %d times in 0.5s of checks every 5ms, want once", got)
	}
}
