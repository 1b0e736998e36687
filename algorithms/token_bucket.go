package algorithms

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/token_bucket.lua
var tokenBucketLua string

var tokenBucket = spec{
	name: "token_bucket",
	bit:  3,
	args: func(l Limit) []any {
		return []any{l.Requests, l.Window.Milliseconds(), l.capacity()}
	},
	bucket: true,
	lua:    tokenBucketLua,
	script: compose(tokenBucketLua),
	new: func(rdb redis.Scripter, prefix string, l Limit) Algorithm {
		return NewTokenBucket(rdb, prefix, l)
	},
}

// TokenBucket admits bursts of up to Limit.Burst requests (Limit.Requests when
// Burst is 0) and refills Limit.Requests tokens per Limit.Window, continuously,
// so after a burst one request passes every Window/Requests.
type TokenBucket struct {
	rdb    redis.Scripter
	prefix string
	limit  Limit
}

var _ Algorithm = (*TokenBucket)(nil)

// NewTokenBucket returns a token bucket limiter keeping its buckets in rdb
// under prefix + "token_bucket:".
func NewTokenBucket(rdb redis.Scripter, prefix string, l Limit) *TokenBucket {
	return &TokenBucket{rdb: rdb, prefix: prefix + "token_bucket:", limit: l}
}

// Allow admits one request for key if its bucket holds a whole token. The
// Decision's Limit is the bucket capacity.
func (tb *TokenBucket) Allow(ctx context.Context, key string) (Decision, error) {
	return allowOne(ctx, tb.rdb, tokenBucket, tb.prefix+key, tb.limit)
}
