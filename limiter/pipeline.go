package limiter

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrClosed is returned for a decision made through the pipeline after
// Limiter.Close.
var ErrClosed = errors.New("rate limiter closed")

// pipelineClient is what a pipeline needs of go-redis: *redis.Client and
// *redis.ClusterClient both are one.
type pipelineClient interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
	Process(ctx context.Context, cmd redis.Cmder) error
}

// pipeline is a redis.Scripter that sends the EVALSHA calls of concurrent
// decisions to Redis together, one pipeline per batch, instead of one round
// trip each: Redis then reads and answers many scripts per system call, which
// is where its time goes at one script per round trip.
//
// It starts no goroutines: callers take turns sending. A call that finds
// fewer than conns batches under way sends at once, with whatever is queued,
// up to batch calls: a lone caller pays no wait and no hand-over between
// goroutines, and a batch of one goes out as a plain command. Calls that arrive while conns batches are under way queue;
// whoever finishes a batch hands the turn to the first of them, which sends
// itself and the queue behind it as the next batch. With window > 0 a sender that finds
// fewer than batch calls waits up to window for more (yielding the CPU).
//
// Each call keeps its own reply and error, so NOSCRIPT reaches Script.Run for
// that call alone, which falls back to EVAL (sent directly). A call whose
// context is done before its batch leaves is not sent. On a Redis Cluster,
// go-redis splits the pipeline by node; but the scripts recognise a
// *redis.ClusterClient to split rules by hash tag, which they cannot through
// a pipeline: New puts none in front of a cluster client.
type pipeline struct {
	rdb    pipelineClient
	batch  int
	window time.Duration
	conns  int

	mu      sync.Mutex
	queue   []*call
	senders int // batches under way, at most conns
	closed  bool
}

// call is one EVALSHA. wake says true when it is the call's turn to send a
// batch (itself and what is queued behind it), then false when its reply is
// in cmd.
type call struct {
	ctx     context.Context
	cmd     *redis.Cmd
	wake    chan bool
	sending bool // handed the turn; guarded by pipeline.mu
}

var _ redis.Scripter = (*pipeline)(nil)

// newPipeline returns a pipeline on rdb sending up to conns batches of up to
// batch script calls at once, each waiting up to window for its batch to fill.
func newPipeline(rdb pipelineClient, batch int, window time.Duration, conns int) *pipeline {
	return &pipeline{rdb: rdb, batch: max(batch, 1), window: window, conns: max(conns, 1)}
}

// EvalSha queues the call and waits for its reply (sending a batch itself when
// it is its turn), or for ctx to be done.
func (p *pipeline) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, "evalsha", sha1, len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	cmdArgs = append(cmdArgs, args...)
	cmd := redis.NewCmd(ctx, cmdArgs...)
	if len(keys) > 0 {
		cmd.SetFirstKeyPos(3) // a cluster pipeline routes by it
	}
	if err := ctx.Err(); err != nil {
		return failedCmd(ctx, err)
	}
	// Room for a turn and a reply: a sender never blocks on it.
	c := &call{ctx: ctx, cmd: cmd, wake: make(chan bool, 2)}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return failedCmd(ctx, ErrClosed)
	}
	send := p.senders < p.conns
	if send {
		p.senders++
	} else {
		p.queue = append(p.queue, c)
	}
	p.mu.Unlock()
	if send {
		p.send(c)
	}
	done := ctx.Done()
	for {
		select {
		case turn := <-c.wake:
			if !turn {
				return cmd
			}
			p.send(c)
		case <-done:
			if p.abandon(c) {
				return failedCmd(ctx, ctx.Err())
			}
			// In a batch under way, or handed the turn: its signal comes soon.
			done = nil
		}
	}
}

// abandon takes c off the queue, unless it was taken into a batch or handed
// the turn to send one.
func (p *pipeline) abandon(c *call) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.sending {
		return false
	}
	for i, q := range p.queue {
		if q == c {
			p.queue = append(p.queue[:i], p.queue[i+1:]...)
			return true
		}
	}
	return false
}

// send sends own and the calls at the front of the queue as one batch, then
// hands the turn to the first queued call (taking it off the queue, so it
// sends itself) or, with nothing queued, ends the turn.
func (p *pipeline) send(own *call) {
	if p.window > 0 {
		p.await()
	}
	p.mu.Lock()
	n := min(len(p.queue), p.batch-1)
	batch := make([]*call, 0, n+1)
	batch = append(batch, own)
	batch = append(batch, p.queue[:n]...)
	p.queue = append(p.queue[:0], p.queue[n:]...)
	p.mu.Unlock()
	p.exec(batch)
	p.mu.Lock()
	if len(p.queue) == 0 {
		p.senders--
		p.mu.Unlock()
		return
	}
	next := p.queue[0]
	p.queue = append(p.queue[:0], p.queue[1:]...)
	next.sending = true
	p.mu.Unlock()
	next.wake <- true
}

// await waits up to window for the queue to hold a full batch. Timers below a
// millisecond are not precise: it spins, yielding to the goroutines that are
// about to call.
func (p *pipeline) await() {
	deadline := time.Now().Add(p.window)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		full := len(p.queue) >= p.batch-1
		p.mu.Unlock()
		if full {
			return
		}
		runtime.Gosched()
	}
}

// Eval is not batched: Script.Run only sends it after NOSCRIPT, which is rare.
func (p *pipeline) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.rdb.Eval(ctx, script, keys, args...)
}

// EvalRO is not batched; the algorithms do not use it.
func (p *pipeline) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.rdb.EvalRO(ctx, script, keys, args...)
}

// EvalShaRO is not batched; the algorithms do not use it.
func (p *pipeline) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.rdb.EvalShaRO(ctx, sha1, keys, args...)
}

// ScriptExists is passed through.
func (p *pipeline) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return p.rdb.ScriptExists(ctx, hashes...)
}

// ScriptLoad is passed through.
func (p *pipeline) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return p.rdb.ScriptLoad(ctx, script)
}

// stop makes later calls fail with ErrClosed; calls under way finish.
func (p *pipeline) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
}

// exec sends batch as one pipeline under the latest of its deadlines; every
// command gets its own reply or error, and every caller its signal.
func (p *pipeline) exec(batch []*call) {
	var live []redis.Cmder
	var latest time.Time
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.cmd.SetErr(err) // its caller has gone; do not spend Redis on it
			continue
		}
		live = append(live, c.cmd)
		if dl, ok := c.ctx.Deadline(); ok && dl.After(latest) {
			latest = dl
		}
	}
	if len(live) > 0 {
		ctx := context.Background()
		if !latest.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, latest)
			defer cancel()
		}
		if len(live) == 1 {
			// Nothing to share the trip with: the plain path, as without a pipeline.
			_ = p.rdb.Process(ctx, live[0]) // the error is on the cmd
		} else {
			pipe := p.rdb.Pipeline()
			for _, cmd := range live {
				_ = pipe.Process(ctx, cmd) // only queues
			}
			// Errors are per command, on each cmd; Exec returns the first of them.
			_, _ = pipe.Exec(ctx)
		}
	}
	for _, c := range batch {
		c.wake <- false
	}
}

// failedCmd is a reply carrying err.
func failedCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}
