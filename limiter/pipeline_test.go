package limiter

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"tollgate/algorithms"

	"github.com/redis/go-redis/v9"
)

// pipelineSizes records the size of every pipeline a client sends.
type pipelineSizes struct {
	mu    sync.Mutex
	sizes []int
}

func (ps *pipelineSizes) DialHook(next redis.DialHook) redis.DialHook { return next }

func (ps *pipelineSizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (ps *pipelineSizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ps.mu.Lock()
		ps.sizes = append(ps.sizes, len(cmds))
		ps.mu.Unlock()
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*pipelineSizes)(nil)

// TestPipelineBatchesAndKeepsRepliesApart: concurrent calls share pipelines
// of at most the batch size, and each caller gets its own reply.
func TestPipelineBatchesAndKeepsRepliesApart(t *testing.T) {
	t.Parallel()
	h := miniredisHarness(t)
	ps := &pipelineSizes{}
	h.rdb.AddHook(ps)
	const batch, callers = 8, 300
	p := newPipeline(h.rdb, batch, 50*time.Microsecond, 2)
	t.Cleanup(p.stop)
	a := single{l: &Limiter{chain: newScripts(p)}, name: "fixed_window", prefix: h.prefix(), limit: algorithms.Limit{Requests: 1000, Window: time.Minute}}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range callers {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			key := "k" + strconv.Itoa(i%30) // 10 calls per key
			d, err := a.decide(ctx, key)
			if err != nil {
				t.Errorf("Decide(%q): %v", key, err)
				return
			}
			if !d.Allowed || d.Remaining < 1000-10 || d.Remaining > 999 {
				t.Errorf("Allow(%q) = %+v, want allowed with remaining in [990, 999]", key, d)
			}
		})
	}
	close(start)
	wg.Wait()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	most := 0
	for _, n := range ps.sizes {
		most = max(most, n)
	}
	if most > batch {
		t.Errorf("largest pipeline %d commands, want at most %d", most, batch)
	}
	if most < 2 {
		t.Errorf("largest pipeline %d commands: %d concurrent calls were never batched", most, callers)
	}
}

func TestPipelineContextDone(t *testing.T) {
	h := miniredisHarness(t)
	p := newPipeline(h.rdb, 8, 0, 1)
	t.Cleanup(p.stop)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.EvalSha(ctx, "0000", []string{"k"}).Err(); !errors.Is(err, context.Canceled) {
		t.Errorf("EvalSha() with a cancelled context: error %v, want context.Canceled", err)
	}
}

func TestPipelineClosed(t *testing.T) {
	h := miniredisHarness(t)
	p := newPipeline(h.rdb, 8, 0, 1)
	p.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.EvalSha(ctx, "0000", []string{"k"}).Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("EvalSha() after stop: error %v, want ErrClosed", err)
	}
}

// TestPipelineRedisDown: a dead Redis fails each call with an error, quickly.
func TestPipelineRedisDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	p := newPipeline(rdb, 8, 0, 1)
	t.Cleanup(p.stop)
	a := single{l: &Limiter{chain: newScripts(p)}, name: "gcra", prefix: "p:", limit: algorithms.Limit{Requests: 1, Window: time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if d, err := a.decide(ctx, "k"); err == nil {
		t.Errorf("Decide() with Redis down = %+v, nil; want an error", d)
	}
}
