package algorithms

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/sliding_window.lua
var slidingWindowLua string

var slidingWindow = spec{
	name:   "sliding_window",
	bit:    2,
	args:   func(l Limit) []any { return []any{l.Requests, l.Window.Milliseconds()} },
	lua:    slidingWindowLua,
	script: compose(slidingWindowLua),
	new: func(rdb redis.Scripter, prefix string, l Limit) Algorithm {
		return NewSlidingWindow(rdb, prefix, l)
	},
}

// SlidingWindow approximates a sliding log with two counters per identity, the
// current and the previous fixed window, weighting the previous one by how much
// of it the last Limit.Window still covers. No aligned window ever admits more
// than Limit.Requests; a window-long span straddling two windows admits at most
// 2×Limit.Requests-1 when traffic bunches at window ends, and about
// Limit.Requests when traffic is even (see docs/algorithms.md).
type SlidingWindow struct {
	rdb    redis.Scripter
	prefix string
	limit  Limit
}

var _ Algorithm = (*SlidingWindow)(nil)

// NewSlidingWindow returns a sliding window limiter keeping its counters in rdb
// under prefix + "sliding_window:".
func NewSlidingWindow(rdb redis.Scripter, prefix string, l Limit) *SlidingWindow {
	return &SlidingWindow{rdb: rdb, prefix: prefix + "sliding_window:", limit: l}
}

// Allow admits one request for key if the weighted count of the last window
// plus this request stays within Limit.Requests.
func (sw *SlidingWindow) Allow(ctx context.Context, key string) (Decision, error) {
	return allowOne(ctx, sw.rdb, slidingWindow, sw.prefix+key, sw.limit)
}
