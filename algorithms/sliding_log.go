package algorithms

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/sliding_log.lua
var slidingLogLua string

// The sliding log keeps one sorted-set member per admitted unit: a limit
// caps the set's size per identity, a cost the members one call writes (one
// request of cost 200000 ran a second in Redis and wrote 28 MB).
const (
	slidingLogMaxLimit = 1_000_000
	slidingLogMaxCost  = 10_000
)

var slidingLog = spec{
	name: "sliding_log",
	bit:  1,
	args: func(l Limit) []any { return []any{l.Requests, l.Window.Milliseconds()} },
	validate: func(l Limit) error {
		if l.Requests > slidingLogMaxLimit {
			return fmt.Errorf("%w: sliding_log keeps one entry per request: limit %d, want at most %d (or fixed_window, sliding_window, token_bucket, gcra for larger limits)",
				ErrInvalidLimit, l.Requests, slidingLogMaxLimit)
		}
		return nil
	},
	maxCost: slidingLogMaxCost,
	lua:     slidingLogLua,
	script:  compose(slidingLogLua),
	new: func(rdb redis.Scripter, prefix string, l Limit) Algorithm {
		return NewSlidingLog(rdb, prefix, l)
	},
}

// SlidingLog admits Limit.Requests in any Limit.Window-long span, exactly: it
// keeps the time of every admitted request of the last window in a sorted set,
// so memory grows with the limit (at most Limit.Requests members per identity).
type SlidingLog struct {
	rdb    redis.Scripter
	prefix string
	limit  Limit
}

var _ Algorithm = (*SlidingLog)(nil)

// NewSlidingLog returns a sliding log limiter keeping its sorted sets in rdb
// under prefix + "sliding_log:".
func NewSlidingLog(rdb redis.Scripter, prefix string, l Limit) *SlidingLog {
	return &SlidingLog{rdb: rdb, prefix: prefix + "sliding_log:", limit: l}
}

// Allow admits one request for key if fewer than Limit.Requests were admitted
// during the last window.
func (sl *SlidingLog) Allow(ctx context.Context, key string) (Decision, error) {
	return allowOne(ctx, sl.rdb, slidingLog, sl.prefix+key, sl.limit)
}
