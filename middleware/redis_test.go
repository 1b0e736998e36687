package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// testRedis is a Redis for tests and the key prefix a test owns in it.
type testRedis struct {
	rdb    *redis.Client
	prefix string
}

// redisBackends returns, per backend, a maker of a Redis: an embedded
// miniredis always, and the real Redis of TEST_REDIS_URL when set (keys under
// a prefix of the test's own, deleted afterwards).
func redisBackends(t *testing.T) map[string]func(t *testing.T) testRedis {
	t.Helper()
	backends := map[string]func(t *testing.T) testRedis{
		"miniredis": func(t *testing.T) testRedis {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			return testRedis{rdb: rdb, prefix: "test:"}
		},
	}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) testRedis {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatalf("TEST_REDIS_URL: %v", err)
			}
			rdb := redis.NewClient(opt)
			b := make([]byte, 6)
			rand.Read(b)
			g := testRedis{rdb: rdb, prefix: "test:middleware:" + hex.EncodeToString(b) + ":"}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if keys, err := rdb.Keys(ctx, g.prefix+"*").Result(); err == nil && len(keys) > 0 {
					rdb.Del(ctx, keys...)
				}
				rdb.Close()
			})
			return g
		}
	}
	return backends
}

// keys lists the Redis keys under the test's prefix.
func (g testRedis) keys(t *testing.T) []string {
	t.Helper()
	keys, err := g.rdb.Keys(t.Context(), g.prefix+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return keys
}
