package algorithms

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/gcra.lua
var gcraLua string

var gcra = spec{
	name: "gcra",
	bit:  4,
	args: func(l Limit) []any {
		return []any{gcraInterval(l), l.capacity()}
	},
	// The script keeps the TAT in µs since the epoch, up to burst intervals
	// ahead of now: that must stay an exact integer for centuries to come.
	validate: func(l Limit) error {
		if int64(l.capacity()) > maxExact/2/gcraInterval(l) {
			return fmt.Errorf("%w: gcra: burst %d of one request per %v is beyond exact arithmetic; use a smaller burst or a shorter window",
				ErrInvalidLimit, l.capacity(), time.Duration(gcraInterval(l))*time.Microsecond)
		}
		return nil
	},
	bucket: true,
	lua:    gcraLua,
	script: compose(gcraLua),
	new: func(rdb redis.Scripter, prefix string, l Limit) Algorithm {
		return NewGCRA(rdb, prefix, l)
	},
}

// gcraInterval is the emission interval in whole µs: whole microseconds keep
// the script's arithmetic exact; rounding up makes the rate at most a
// microsecond per request slower, never faster.
func gcraInterval(l Limit) int64 {
	requests := int64(max(l.Requests, 1))
	return max((l.Window.Microseconds()+requests-1)/requests, 1)
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
