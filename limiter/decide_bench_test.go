package limiter

import (
	"context"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/algorithms"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// BenchmarkDecide measures one decision per algorithm: against real Redis when
// TEST_REDIS_URL is set, else against the embedded one. 1000 identities at 100
// requests a minute give a mix of admitted and denied requests, as in service.
func BenchmarkDecide(b *testing.B) {
	rdb := benchRedis(b)
	benchAlgorithms(b, rdb, New(rdb, Options{}))
}

// benchAlgorithms runs one sub-benchmark per algorithm: parallel decisions
// of 1000 identities by l, keys under a prefix of their own, deleted
// afterwards.
func benchAlgorithms(b *testing.B, rdb redis.UniversalClient, l *Limiter) {
	limit := algorithms.Limit{Requests: 100, Window: time.Minute}
	for _, name := range algorithms.Names() {
		b.Run(name, func(b *testing.B) {
			prefix := "bench:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
			a := single{l: l, name: name, prefix: prefix, limit: limitFor(name, limit)}
			b.Cleanup(func() { deleteBenchKeys(b, rdb, prefix) })
			var n atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					key := "user-" + strconv.FormatInt(n.Add(1)%1000, 10)
					if _, err := a.decide(ctx, key); err != nil {
						b.Errorf("Decide(%q): %v", key, err)
						return
					}
				}
			})
		})
	}
}

func benchRedis(b *testing.B) redis.UniversalClient {
	b.Helper()
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		opt, err := redis.ParseURL(url)
		if err != nil {
			b.Fatalf("TEST_REDIS_URL: %v", err)
		}
		rdb := redis.NewClient(opt)
		b.Cleanup(func() { rdb.Close() })
		return rdb
	}
	m := miniredis.RunT(b)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	b.Cleanup(func() { rdb.Close() })
	return rdb
}

// deleteBenchKeys removes the benchmark's keys from a shared Redis.
func deleteBenchKeys(b *testing.B, rdb redis.UniversalClient, prefix string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		b.Errorf("SCAN %s*: %v", prefix, err)
		return
	}
	if len(keys) > 0 {
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			b.Errorf("DEL: %v", err)
		}
	}
}
