package limiter

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
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

// BenchmarkLeasedHotKey is one identity under heavy traffic with leases on
// (64 callers at once, a limit that admits all): what a leased request costs
// and, as calls/op, how many Redis calls each makes (the target is
// at most 0.01).
func BenchmarkLeasedHotKey(b *testing.B) {
	rdb := benchRedis(b)
	var calls atomic.Int64
	rdb.AddHook(countCalls{&calls})
	l := New(rdb, Options{Lease: true})
	b.Cleanup(l.Close)
	prefix := "bench:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	b.Cleanup(func() { deleteBenchKeys(b, rdb, prefix) })
	rules := []Rule{{Key: prefix + "{hot}", Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 1_000_000_000, Window: time.Hour}}}
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if r, err := l.Decide(ctx, rules); err != nil || !r.Allowed {
				b.Errorf("Decide: %v, allowed %v", err, r.Allowed)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(calls.Load())/float64(b.N), "calls/op")
}

// countCalls counts the commands a client sends, pipelined ones included.
type countCalls struct{ n *atomic.Int64 }

func (h countCalls) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countCalls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h countCalls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}
