package limiter

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scripted answers decide with err, counting calls; block makes calls wait
// until released.
type scripted struct {
	calls atomic.Int64
	mu    sync.Mutex
	err   error
	block chan struct{}
}

func (s *scripted) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	s.calls.Add(1)
	s.mu.Lock()
	err, block := s.err, s.block
	s.mu.Unlock()
	if block != nil {
		<-block
	}
	return []Decision{{Allowed: err == nil}}, err == nil, err
}

func (s *scripted) set(err error, block chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err, s.block = err, block
}

func TestBreaker(t *testing.T) {
	down := errors.New("redis down")
	next := &scripted{}
	b := newBreaker(next, 3, time.Second)
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	call := func() error {
		_, _, err := b.decide(context.Background(), nil, true)
		return err
	}

	if err := call(); err != nil {
		t.Fatalf("closed, Redis up: Decide() error = %v, want nil", err)
	}
	next.set(down, nil)
	for i := range 3 {
		if err := call(); !errors.Is(err, down) {
			t.Fatalf("failure %d: Decide() error = %v, want the Redis error", i+1, err)
		}
	}
	if !b.open() {
		t.Fatal("after 3 consecutive failures: Open() = false, want true")
	}
	before := next.calls.Load()
	for range 10 {
		if err := call(); !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("open: Decide() error = %v, want ErrCircuitOpen", err)
		}
	}
	if n := next.calls.Load() - before; n != 0 {
		t.Errorf("open: %d calls reached Redis, want 0", n)
	}

	// After the cooldown exactly one probe goes through; it fails and the
	// circuit stays open for another cooldown.
	now = now.Add(time.Second)
	release := make(chan struct{})
	next.set(down, release)
	probeErr := make(chan error)
	go func() { probeErr <- call() }()
	for next.calls.Load() == before {
		time.Sleep(time.Millisecond)
	}
	if err := call(); !errors.Is(err, ErrCircuitOpen) {
		t.Errorf("while a probe is under way: Decide() error = %v, want ErrCircuitOpen", err)
	}
	close(release)
	if err := <-probeErr; !errors.Is(err, down) {
		t.Errorf("failed probe: Decide() error = %v, want the Redis error", err)
	}
	if err := call(); !errors.Is(err, ErrCircuitOpen) {
		t.Errorf("after a failed probe: Decide() error = %v, want ErrCircuitOpen", err)
	}

	// Redis is back: the next probe closes the circuit.
	now = now.Add(time.Second)
	next.set(nil, nil)
	if err := call(); err != nil {
		t.Errorf("successful probe: Decide() error = %v, want nil", err)
	}
	if b.open() {
		t.Error("after a successful probe: Open() = true, want false")
	}
	// Failures below the threshold do not open it again.
	next.set(down, nil)
	call()
	call()
	next.set(nil, nil)
	call()
	next.set(down, nil)
	call()
	if b.open() {
		t.Error("non-consecutive failures: Open() = true, want false")
	}
}

func TestBreakerCanceledProbeDoesNotWedge(t *testing.T) {
	next := &scripted{}
	b := newBreaker(next, 1, time.Second)
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	next.set(errors.New("down"), nil)
	b.decide(context.Background(), nil, true)
	now = now.Add(time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	next.set(context.Canceled, nil)
	b.decide(ctx, nil, true) // the probe's caller went away
	now = now.Add(time.Second)
	next.set(nil, nil)
	if _, _, err := b.decide(context.Background(), nil, true); err != nil {
		t.Errorf("probe after a canceled probe and a cooldown: Decide() error = %v, want nil", err)
	}
}
