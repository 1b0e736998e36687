package algorithms

import (
	"context"
	"testing"
	"time"
)

// BenchmarkPipelined is BenchmarkAllow with the script calls pipelined and
// denials cached.
func BenchmarkPipelined(b *testing.B) {
	rdb := benchRedis(b)
	benchAlgorithms(b, rdb, func(b *testing.B, name, prefix string) Algorithm {
		p := NewPipeline(rdb, 16, 0, 4)
		b.Cleanup(p.Close)
		a, err := New(name, p, prefix, Limit{Requests: 100, Window: time.Minute})
		if err != nil {
			b.Fatalf("New(%q): %v", name, err)
		}
		return NewDenyCache(a, 10_000)
	})
}

// BenchmarkDenyCacheHit is a denial answered from memory: what a flood from
// one identity over its limit costs.
func BenchmarkDenyCacheHit(b *testing.B) {
	dc := NewDenyCache(&fakeAlgorithm{retry: time.Hour}, 10_000)
	ctx := context.Background()
	dc.Allow(ctx, "k")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if d, _ := dc.Allow(ctx, "k"); d.Allowed {
				b.Fatal("Allow() admitted a cached denial")
			}
		}
	})
}
