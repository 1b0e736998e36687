package limiter

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"tollgate/algorithms"

	"github.com/redis/go-redis/v9"
)

// ErrCircuitOpen is returned while the breaker keeps calls away from a
// failing Redis.
var ErrCircuitOpen = errors.New("rate limiter circuit open")

// breaker is a circuit breaker around a stage. After Failures
// consecutive errors (Redis faults, of calls each started after the
// previous one failed: see record) it opens: calls fail at once with ErrCircuitOpen instead
// of each waiting for its timeout on a dead Redis. After Cooldown one call is
// let through as a probe; its success closes the circuit, its failure opens it
// for another Cooldown.
type breaker struct {
	next     stage
	failures int
	cooldown time.Duration
	now      func() time.Time

	mu     sync.Mutex
	failed int // consecutive failures while closed
	// failedAt is when the last counted failure was seen: a call started
	// before it failed in the same slow moment, and is not counted again.
	failedAt  time.Time
	openUntil time.Time // zero while closed
	probing   bool      // a probe is under way
}

var _ stage = (*breaker)(nil)

// newBreaker wraps next in a circuit breaker that opens after failures
// consecutive errors and probes again after cooldown.
func newBreaker(next stage, failures int, cooldown time.Duration) *breaker {
	return &breaker{next: next, failures: max(failures, 1), cooldown: cooldown, now: time.Now}
}

// decide asks the wrapped stage, unless the circuit is open.
func (b *breaker) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	start := b.now()
	probe, err := b.admit()
	if err != nil {
		return nil, false, err
	}
	ds, allowed, err := b.next.decide(ctx, rules, commit)
	switch {
	case err == nil || answered(err):
		b.record(probe, nil, start)
	case refused(ctx, err):
		// Nothing learnt of Redis's health; a probe is settled all the
		// same, or the circuit would wait for it forever: the next call
		// probes.
		if probe {
			b.mu.Lock()
			b.probing = false
			b.mu.Unlock()
		}
	default:
		b.record(probe, err, start)
	}
	return ds, allowed, err
}

// refused reports whether err ended a call without a word from Redis that
// says nothing of its health: rules the engine refused before sending them
// (ErrInvalidRule, an invalid limit, an unknown algorithm), or a caller that
// went away. A rule set with a bad argument must not turn every limit off.
func refused(ctx context.Context, err error) bool {
	return errors.Is(err, ErrInvalidRule) || errors.Is(err, algorithms.ErrInvalidLimit) ||
		errors.Is(err, algorithms.ErrUnknown) || errors.Is(err, context.Canceled) && ctx.Err() != nil
}

// answered reports whether err is Redis's reply: a script's error (an
// argument it refused, "more than a period away"), so Redis is up, unless
// the reply says Redis cannot serve (loading, busy with a slow script,
// a replica or cluster that cannot take writes, out of memory).
func answered(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	code, _, _ := strings.Cut(msg, " ")
	switch code {
	case "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "NOREPLICAS", "OOM", "MISCONF":
		return false
	}
	return !strings.Contains(msg, "max number of clients")
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

// record settles a call started at start. Consecutive failures are
// counted as evidence one after another: calls under way together that
// fail together (a Redis busy with one long script: each times out) count
// once, so a slow moment shorter than a few timeouts never opens the
// circuit, while a Redis that stays away opens it after Failures rounds
// (connection errors come at once: rounds take no time).
func (b *breaker) record(probe bool, err error, start time.Time) {
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
	if start.Before(b.failedAt) {
		return // the slow moment already counted
	}
	b.failed++
	b.failedAt = b.now()
	if b.failed >= b.failures && b.openUntil.IsZero() {
		b.openUntil = b.now().Add(b.cooldown)
	}
}

// Apart returns an engine for decisions that must never change the ones
// of l (a candidate policy file's, shadow limits): on the same Redis, but
// with a breaker and deadlines of its own (Options.Timeout and the
// breaker's settings of l), so that its timeouts and errors never open l's
// circuit, and without l's pipeline (a live call never waits in a batch
// behind a slow one), deny caches or leases. Its Results are released
// through it. Its Close stops the retries of its failed releases.
func (l *Limiter) Apart() *Limiter {
	rdb := l.scripts.rdb
	if p, ok := rdb.(*pipeline); ok {
		rdb = p.rdb
	}
	s := newScripts(rdb)
	s.now = l.scripts.now
	a := &Limiter{scripts: s, releaseTimeout: l.releaseTimeout, timeout: l.timeout, unreleased: newUnreleased(s.release, l.releaseTimeout)}
	a.breaker = newBreaker(s, l.breaker.failures, l.breaker.cooldown)
	a.chain = a.breaker
	if l.timeout > 0 {
		a.chain = newTimeout(a.chain, l.timeout)
	}
	return a
}
