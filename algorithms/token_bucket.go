package algorithms

import (
	"context"
	_ "embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/token_bucket.lua
var tokenBucketLua string

var tokenBucketScript = redis.NewScript(tokenBucketLua)

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
	capacity := tb.limit.capacity()
	return decide(ctx, tb.rdb, tokenBucketScript, tb.prefix+key,
		Limit{Requests: capacity, Window: tb.limit.Window},
		tb.limit.Requests, tb.limit.Window.Milliseconds(), capacity)
}
