package algorithms

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/fixed_window.lua
var fixedWindowLua string

var fixedWindow = spec{
	name:   "fixed_window",
	bit:    0,
	args:   func(l Limit) []any { return []any{l.Requests, l.Window.Milliseconds()} },
	lua:    fixedWindowLua,
	script: compose(fixedWindowLua),
	new: func(rdb redis.Scripter, prefix string, l Limit) Algorithm {
		return NewFixedWindow(rdb, prefix, l)
	},
}

// FixedWindow admits Limit.Requests per window; a window opens with the first
// request after the previous one closed. Up to twice the limit can pass within
// one window length across a window edge (the end of one window and the start
// of the next).
type FixedWindow struct {
	rdb    redis.Scripter
	prefix string
	limit  Limit
}

var _ Algorithm = (*FixedWindow)(nil)

// NewFixedWindow returns a fixed window limiter keeping its counters in rdb
// under prefix + "fixed_window:".
func NewFixedWindow(rdb redis.Scripter, prefix string, l Limit) *FixedWindow {
	return &FixedWindow{rdb: rdb, prefix: prefix + "fixed_window:", limit: l}
}

// Allow admits one request for key if the current window has room.
func (fw *FixedWindow) Allow(ctx context.Context, key string) (Decision, error) {
	return allowOne(ctx, fw.rdb, fixedWindow, fw.prefix+key, fw.limit)
}
