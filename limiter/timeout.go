package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// timeout bounds every call of a stage in time. A context with its own
// deadline costs a timer, a channel and the parent's bookkeeping on every
// call, a measurable share of a decision at tens of thousands a second
// (docs/BENCHMARKS.md); so calls that start within the same slice of time
// (a sixteenth of the timeout) share one context, and each call's deadline
// falls between timeout minus a slice and timeout after it starts. The shared
// context does not end with the caller's (a client that went away): such a
// call still ends by its deadline. New puts it behind the deny cache, so
// that answers from memory need no deadline at all.
type timeout struct {
	next    stage
	timeout time.Duration
	slice   time.Duration

	shared atomic.Pointer[sharedDeadline]
	mu     sync.Mutex // makes the next shared context
}

// sharedDeadline is a context handed to the calls that start before until.
type sharedDeadline struct {
	ctx   context.Context
	until time.Time
	// cancel is never called: calls may still use ctx when the next one
	// replaces it; its timer releases it at the deadline.
	cancel context.CancelFunc
}

var _ stage = (*timeout)(nil)

// newTimeout wraps next so that each of its calls ends within d (and
// gets at least fifteen sixteenths of it).
func newTimeout(next stage, d time.Duration) *timeout {
	return &timeout{next: next, timeout: d, slice: max(d/16, time.Microsecond)}
}

// decide calls the wrapped stage under the deadline, unless ctx is done.
func (t *timeout) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	return t.next.decide(t.context(time.Now()), rules, commit)
}

// context returns the shared context of calls starting at now.
func (t *timeout) context(now time.Time) context.Context {
	if s := t.shared.Load(); s != nil && now.Before(s.until) {
		return s.ctx
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.shared.Load(); s != nil && now.Before(s.until) {
		return s.ctx // made by another call meanwhile
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(t.timeout))
	t.shared.Store(&sharedDeadline{ctx: ctx, until: now.Add(t.slice), cancel: cancel})
	return ctx
}
