// Package algorithms holds the rate-limiting algorithms. Each one is a single
// atomic Lua script on Redis that reads the clock with TIME, so every service
// instance sharing a Redis agrees on windows and refills.
package algorithms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// An Algorithm decides whether one more request for key may proceed, and records it if so.
type Algorithm interface {
	Allow(ctx context.Context, key string) (Decision, error)
}

// Decision is the outcome of one Allow call. Durations are relative to Now.
type Decision struct {
	Allowed    bool
	Limit      int           // requests per window; token bucket: capacity
	Window     time.Duration // the span Limit applies to
	Remaining  int           // left after this request, never negative
	ResetAfter time.Duration // until the quota is fully restored
	RetryAfter time.Duration // until a denied request could pass; 0 when Allowed
	Now        time.Time     // Redis's clock at the decision, so Reset does not wobble with ours
}

// Limit is the quota of one algorithm: Requests per Window. For token_bucket
// and gcra, Requests per Window is the refill rate and Burst the capacity.
type Limit struct {
	Requests int
	Window   time.Duration
	Burst    int // token_bucket, gcra: bucket capacity; 0 means Requests
}

// capacity is the most requests a token bucket or GCRA admits at once.
func (l Limit) capacity() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Requests
}

// ErrUnknown is returned by New for a name that is not an algorithm.
var ErrUnknown = errors.New("unknown algorithm")

// ErrInvalidLimit is returned by New for a Limit no algorithm can keep exactly.
var ErrInvalidLimit = errors.New("invalid limit")

// maxExact is 2^53: the scripts compute in Lua numbers (doubles), exact for
// integers up to here. Products of a count and a window in ms must stay below.
const maxExact = 1 << 53

// validate checks l's ranges, including that the scripts' integer arithmetic
// (count × window in ms) stays exact.
func (l Limit) validate() error {
	ms := l.Window.Milliseconds()
	switch {
	case l.Requests < 1:
		return fmt.Errorf("%w: %d requests, want at least 1", ErrInvalidLimit, l.Requests)
	case l.Burst < 0:
		return fmt.Errorf("%w: burst %d, want 0 (same as requests) or more", ErrInvalidLimit, l.Burst)
	case ms < 1:
		return fmt.Errorf("%w: window %v, want at least 1ms", ErrInvalidLimit, l.Window)
	case int64(max(l.Requests, l.capacity())) > maxExact/ms:
		return fmt.Errorf("%w: %d requests per %v is beyond exact arithmetic; use a smaller limit or window", ErrInvalidLimit, max(l.Requests, l.capacity()), l.Window)
	}
	return nil
}

// Names lists the algorithm names New accepts.
func Names() []string {
	return []string{"fixed_window", "sliding_log", "sliding_window", "token_bucket", "gcra"}
}

// New returns the algorithm called name (hyphens or underscores), keeping its
// state in rdb under keys that start with prefix.
func New(name string, rdb redis.Scripter, prefix string, l Limit) (Algorithm, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	switch strings.ReplaceAll(name, "-", "_") {
	case "fixed_window":
		return NewFixedWindow(rdb, prefix, l), nil
	case "sliding_log":
		return NewSlidingLog(rdb, prefix, l), nil
	case "sliding_window":
		return NewSlidingWindow(rdb, prefix, l), nil
	case "token_bucket":
		return NewTokenBucket(rdb, prefix, l), nil
	case "gcra":
		return NewGCRA(rdb, prefix, l), nil
	default:
		return nil, fmt.Errorf("%w %q: want one of %s", ErrUnknown, name, strings.Join(Names(), ", "))
	}
}

// decide runs script for key and turns its reply
// {allowed, remaining, reset_ms, retry_ms, now_ms} into a Decision whose
// Limit is l.Requests (pass the capacity there for bucket algorithms).
func decide(ctx context.Context, rdb redis.Scripter, s *redis.Script, key string, l Limit, args ...any) (Decision, error) {
	reply, err := s.Run(ctx, rdb, []string{key}, args...).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("run script: %w", err)
	}
	if len(reply) != 5 {
		return Decision{}, fmt.Errorf("run script: got %d values, want 5", len(reply))
	}
	return Decision{
		Allowed:    reply[0] == 1,
		Limit:      l.Requests,
		Window:     l.Window,
		Remaining:  int(max(reply[1], 0)),
		ResetAfter: time.Duration(reply[2]) * time.Millisecond,
		RetryAfter: time.Duration(reply[3]) * time.Millisecond,
		Now:        time.UnixMilli(reply[4]),
	}, nil
}
