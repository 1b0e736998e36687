package algorithms

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/gcra.lua
var gcraLua string

var gcra = spec{
	name: "gcra",
	bit:  4,
	args: func(l Limit) []any {
		// Whole microseconds keep the script's arithmetic exact; rounding up
		// makes the rate at most a microsecond per request slower, never faster.
		requests := int64(max(l.Requests, 1))
		interval := (l.Window.Microseconds() + requests - 1) / requests
		return []any{max(interval, 1), l.capacity()}
	},
	bucket: true,
	lua:    gcraLua,
	script: compose(gcraLua),
	new: func(rdb redis.Scripter, prefix string, l Limit) Algorithm {
		return NewGCRA(rdb, prefix, l)
	},
}

// GCRA is the generic cell rate algorithm: a token bucket of capacity
// Limit.Burst (Limit.Requests when Burst is 0) refilled at Limit.Requests per
// Limit.Window, stored as a single timestamp per identity.
type GCRA struct {
	rdb    redis.Scripter
	prefix string
	limit  Limit
}

var _ Algorithm = (*GCRA)(nil)

// NewGCRA returns a GCRA limiter keeping its timestamps in rdb under
// prefix + "gcra:".
func NewGCRA(rdb redis.Scripter, prefix string, l Limit) *GCRA {
	return &GCRA{rdb: rdb, prefix: prefix + "gcra:", limit: l}
}

// Allow admits one request for key if it conforms to the rate and burst. The
// Decision's Limit is the burst.
func (g *GCRA) Allow(ctx context.Context, key string) (Decision, error) {
	return allowOne(ctx, g.rdb, gcra, g.prefix+key, g.limit)
}
