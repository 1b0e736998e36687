package limiter

import (
	"context"
	"testing"
	"time"
)

// BenchmarkPipelined is BenchmarkDecide with the script calls pipelined and
// denials cached.
func BenchmarkPipelined(b *testing.B) {
	rdb := benchRedis(b)
	l := New(rdb, Options{PipelineBatch: 16, PipelineConns: 4, DenyCacheSize: 10_000})
	b.Cleanup(l.Close)
	benchAlgorithms(b, rdb, l)
}

// BenchmarkDenyCacheHit is a denial answered from memory: what a flood from
// one identity over its limit costs.
func BenchmarkDenyCacheHit(b *testing.B) {
	dc := newDenyCache(&fakeDecider{retry: time.Hour}, 10_000)
	rules := []Rule{{Key: "k"}} // made once, as the middleware's are per request
	ctx := context.Background()
	if _, _, err := dc.decide(ctx, rules, true); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, allowed, _ := dc.decide(ctx, rules, true); allowed {
				b.Fatal("decide() admitted a cached denial")
			}
		}
	})
}
