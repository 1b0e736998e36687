package limiter

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrCircuitOpen is returned while the breaker keeps calls away from a
// failing Redis.
var ErrCircuitOpen = errors.New("rate limiter circuit open")

// breaker is a circuit breaker around a stage. After Failures
// consecutive errors it opens: calls fail at once with ErrCircuitOpen instead
// of each waiting for its timeout on a dead Redis. After Cooldown one call is
// let through as a probe; its success closes the circuit, its failure opens it
// for another Cooldown.
type breaker struct {
	next     decider
	failures int
	cooldown time.Duration
	now      func() time.Time

	mu        sync.Mutex
	failed    int       // consecutive failures while closed
	openUntil time.Time // zero while closed
	probing   bool      // a probe is under way
}

var _ decider = (*breaker)(nil)

// newBreaker wraps next in a circuit breaker that opens after failures
// consecutive errors and probes again after cooldown.
func newBreaker(next decider, failures int, cooldown time.Duration) *breaker {
	return &breaker{next: next, failures: max(failures, 1), cooldown: cooldown, now: time.Now}
}

// decide asks the wrapped stage, unless the circuit is open.
func (b *breaker) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	probe, err := b.admit()
	if err != nil {
		return nil, false, err
	}
	ds, allowed, err := b.next.decide(ctx, rules, commit)
	// A caller that went away says nothing about Redis's health; a probe is
	// settled either way, or the circuit would wait for it forever.
	if errors.Is(err, context.Canceled) && ctx.Err() != nil && !probe {
		return ds, allowed, err
	}
	b.record(probe, err)
	return ds, allowed, err
}

// open reports whether calls are currently refused.
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openUntil.IsZero()
}

func (b *breaker) admit() (probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.openUntil.IsZero() {
		return false, nil
	}
	if b.probing || b.now().Before(b.openUntil) {
		return false, ErrCircuitOpen
	}
	b.probing = true
	return true, nil
}

func (b *breaker) record(probe bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	if err == nil {
		b.failed, b.openUntil = 0, time.Time{}
		return
	}
	if probe {
		b.openUntil = b.now().Add(b.cooldown)
		return
	}
	b.failed++
	if b.failed >= b.failures && b.openUntil.IsZero() {
		b.openUntil = b.now().Add(b.cooldown)
	}
}
