package algorithms

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPipelined is BenchmarkAllow with the script calls pipelined and
// denials cached, as the service runs them.
func BenchmarkPipelined(b *testing.B) {
	rdb := benchRedis(b)
	for _, name := range Names() {
		b.Run(name, func(b *testing.B) {
			prefix := "bench:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
			p := NewPipeline(rdb, 16, 0, 4)
			b.Cleanup(p.Close)
			a, err := New(name, p, prefix, Limit{Requests: 100, Window: time.Minute})
			if err != nil {
				b.Fatalf("New(%q): %v", name, err)
			}
			dc := NewDenyCache(a, 10_000)
			b.Cleanup(func() { deleteBenchKeys(b, rdb, prefix) })
			var n atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					key := "user-" + strconv.FormatInt(n.Add(1)%1000, 10)
					if _, err := dc.Allow(ctx, key); err != nil {
						b.Errorf("Allow(%q): %v", key, err)
						return
					}
				}
			})
		})
	}
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
