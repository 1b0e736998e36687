package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/algorithms"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
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
	_ = call() // a failure, on purpose
	_ = call() // a failure, on purpose
	next.set(nil, nil)
	_ = call() // a failure, on purpose
	next.set(down, nil)
	_ = call() // a failure, on purpose
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
	_, _, _ = b.decide(context.Background(), nil, true)
	now = now.Add(time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	next.set(context.Canceled, nil)
	_, _, _ = b.decide(ctx, nil, true) // the probe's caller went away
	now = now.Add(time.Second)
	next.set(nil, nil)
	if _, _, err := b.decide(context.Background(), nil, true); err != nil {
		t.Errorf("probe after a canceled probe and a cooldown: Decide() error = %v, want nil", err)
	}
}

// TestBreakerCountsOnlyRedisFaults: errors that say nothing of Redis's
// health (rules refused before Redis, a script's own error reply, a caller
// that went away) never open the circuit, however many; connection errors,
// timeouts and Redis's unavailability replies do.
func TestBreakerCountsOnlyRedisFaults(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	// reply returns the error Redis's reply err makes, as go-redis types it.
	reply := func(err string) error {
		t.Helper()
		e := rdb.Eval(context.Background(), "return redis.error_reply(ARGV[1])", nil, err).Err()
		var re redis.Error
		if !errors.As(e, &re) {
			t.Fatalf("error reply %q: got %v, want a redis.Error", err, e)
		}
		return fmt.Errorf("run script: %w", e)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		err   error
		opens bool
	}{
		{name: "invalid rule", err: fmt.Errorf("rule 0: %w: cost -1", ErrInvalidRule)},
		{name: "invalid limit", err: fmt.Errorf("rule 0: %w: limit 0", algorithms.ErrInvalidLimit)},
		{name: "unknown algorithm", err: fmt.Errorf("rule 0: %w: leaky", algorithms.ErrUnknown)},
		{name: "script error", err: reply("ERR user_script:25: calendar: Redis clock 1 is more than a period away from the caller's")},
		{name: "error reply", err: reply("unknown mode x")},
		{name: "caller went away", ctx: canceled, err: context.Canceled},
		{name: "connection error", err: errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), opens: true},
		{name: "timeout", err: context.DeadlineExceeded, opens: true},
		{name: "loading", err: reply("LOADING Redis is loading the dataset in memory"), opens: true},
		{name: "busy", err: reply("BUSY Redis is busy running a script"), opens: true},
		{name: "read only", err: reply("READONLY You can't write against a read only replica."), opens: true},
		{name: "cluster down", err: reply("CLUSTERDOWN The cluster is down"), opens: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := &scripted{}
			next.set(tt.err, nil)
			b := newBreaker(next, 3, time.Second)
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			for range 10 {
				_, _, _ = b.decide(ctx, nil, true)
			}
			if b.open() != tt.opens {
				t.Errorf("after 10 errors %v: open() = %v, want %v", tt.err, b.open(), tt.opens)
			}
		})
	}
}

// TestBreakerCountsOneSlowMomentOnce: calls that were under way together
// and time out together (a Redis busy with one long script) are one piece
// of evidence, not many: the circuit opens only after failures of calls
// each started after the previous failure was seen.
func TestBreakerCountsOneSlowMomentOnce(t *testing.T) {
	next := &scripted{}
	b := newBreaker(next, 3, time.Second)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	b.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func() {
		mu.Lock()
		now = now.Add(100 * time.Millisecond)
		mu.Unlock()
	}
	release := make(chan struct{})
	next.set(context.DeadlineExceeded, release)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() { _, _, _ = b.decide(context.Background(), nil, true) })
	}
	for next.calls.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	advance() // the calls time out together, 100ms after they started
	close(release)
	wg.Wait()
	if b.open() {
		t.Fatal("after 10 calls under way together timed out: open() = true, want false (one slow moment)")
	}
	next.set(context.DeadlineExceeded, nil)
	for i := range 2 {
		advance()
		_, _, _ = b.decide(context.Background(), nil, true)
		if got, want := b.open(), i == 1; got != want {
			t.Errorf("after %d more failures, each started after the last: open() = %v, want %v", i+1, got, want)
		}
	}
}
