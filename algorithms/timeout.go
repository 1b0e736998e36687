package algorithms

import (
	"context"
	"time"
)

// Timeout bounds every call of a Decider: the call gets a context that ends
// after the timeout. Put it behind a DenyingDecider, so that answers from
// memory cost no timer.
type Timeout struct {
	next    Decider
	timeout time.Duration
}

var _ Decider = (*Timeout)(nil)

// NewTimeout wraps next so that each of its calls ends within timeout.
func NewTimeout(next Decider, timeout time.Duration) *Timeout {
	return &Timeout{next: next, timeout: timeout}
}

// Decide calls the wrapped Decider under the deadline.
func (t *Timeout) Decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	return t.next.Decide(ctx, rules, commit)
}
