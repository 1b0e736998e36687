package auth

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

// guardRedis is a Redis for guard tests and the key prefix a test owns in it.
type guardRedis struct {
	rdb    *redis.Client
	prefix string
}

// guardBackends returns, per backend, a maker of a Redis: an embedded
// miniredis always, and the real Redis of TEST_REDIS_URL when set (keys under
// a prefix of the test's own, deleted afterwards).
func guardBackends(t *testing.T) map[string]func(t *testing.T) guardRedis {
	t.Helper()
	backends := map[string]func(t *testing.T) guardRedis{
		"miniredis": func(t *testing.T) guardRedis {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			return guardRedis{rdb: rdb, prefix: "test:"}
		},
	}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) guardRedis {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatalf("TEST_REDIS_URL: %v", err)
			}
			rdb := redis.NewClient(opt)
			b := make([]byte, 6)
			rand.Read(b)
			g := guardRedis{rdb: rdb, prefix: "test:guard:" + hex.EncodeToString(b) + ":"}
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
func (g guardRedis) keys(t *testing.T) []string {
	t.Helper()
	keys, err := g.rdb.Keys(t.Context(), g.prefix+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return keys
}
