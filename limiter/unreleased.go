package limiter

import (
	"context"
	"sync"
	"time"
)

// unreleased keeps the places whose Release failed (Redis stalled or down,
// the circuit open) and gives them back once Redis answers again, in the
// background. Without it, a place stays taken for its whole timeout (minutes)
// whenever a stall outlasts the release's deadline, and a decision that
// failed may take its places only when Redis resumes: its release, with the
// mark that stops it (Decide), must reach Redis some time, in any order.
type unreleased struct {
	release func(ctx context.Context, hs []*held) error
	timeout time.Duration // of each attempt
	every   time.Duration // between rounds of attempts

	mu      sync.Mutex
	pending []pendingRelease
	running bool // a goroutine retries; it ends when pending is empty
	stopped bool
	stop    chan struct{}
}

// pendingRelease is one failed Release's places; until: they have expired
// in Redis by then (marks too), so giving them back is moot.
type pendingRelease struct {
	hs    []*held
	until time.Time
}

// maxUnreleased bounds the failed releases kept: beyond it the oldest are
// dropped (their places expire after their timeout, as before).
const maxUnreleased = 100_000

func newUnreleased(release func(ctx context.Context, hs []*held) error, timeout time.Duration) *unreleased {
	return &unreleased{release: release, timeout: timeout, every: max(timeout, 100*time.Millisecond), stop: make(chan struct{})}
}

// add keeps hs, to be given back by the retrying goroutine (started if
// none runs).
func (u *unreleased) add(hs []*held) {
	var life time.Duration
	for _, h := range hs {
		life = max(life, h.rule.limit.Window)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		return
	}
	if len(u.pending) >= maxUnreleased {
		u.pending = u.pending[1:]
	}
	u.pending = append(u.pending, pendingRelease{hs: hs, until: time.Now().Add(life)})
	if !u.running {
		u.running = true
		go u.retry()
	}
}

// retry tries every pending release each round, in the order they failed,
// until none is left; a round stops at the first failure (Redis is still
// away: the others would only wait out their deadlines too).
func (u *unreleased) retry() {
	tick := time.NewTicker(u.every)
	defer tick.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-tick.C:
		}
		u.mu.Lock()
		batch := u.pending
		u.pending = nil
		u.mu.Unlock()
		var left []pendingRelease
		for i, p := range batch {
			if time.Now().After(p.until) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), u.timeout)
			err := u.release(ctx, p.hs)
			cancel()
			if err != nil {
				left = append(left, batch[i:]...)
				break
			}
		}
		u.mu.Lock()
		u.pending = append(left, u.pending...)
		if len(u.pending) == 0 {
			u.running = false
			u.mu.Unlock()
			return
		}
		u.mu.Unlock()
	}
}

// close stops the retrying; what is pending expires in Redis.
func (u *unreleased) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.stopped {
		u.stopped = true
		close(u.stop)
	}
}

// size returns how many failed releases are pending (tests).
func (u *unreleased) size() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.pending)
}
