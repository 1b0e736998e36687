package algorithms

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrPipelineClosed is returned for a script call made after Pipeline.Close.
var ErrPipelineClosed = errors.New("redis pipeline closed")

// pipelineClient is what a Pipeline needs of go-redis: *redis.Client and
// *redis.ClusterClient both are one.
type pipelineClient interface {
	redis.Scripter
	Pipeline() redis.Pipeliner
}

// Pipeline is a redis.Scripter that sends the EVALSHA calls of concurrent
// decisions to Redis together, one pipeline per batch, instead of one round
// trip each: Redis then reads and answers many scripts per system call, which
// is where its time goes at one script per round trip.
//
// A fixed number of senders (conns) take calls from one queue. A free sender
// sends at once whatever is queued, up to batch calls: a lone caller waits no
// longer than without the Pipeline (one hand-over between goroutines), and
// under load the calls that arrive during one round trip share the next. With
// window > 0 a sender that found fewer than batch calls also waits up to window
// for more (yielding the CPU meanwhile).
//
// Each call keeps its own reply and error, so NOSCRIPT reaches Script.Run for
// that call alone, which falls back to EVAL (sent directly). On a Redis
// Cluster the pipeline is split by node by go-redis; every script has one key,
// so each call goes to the master owning it. A call whose context is done
// before its batch leaves is not sent.
type Pipeline struct {
	rdb    pipelineClient
	batch  int
	window time.Duration
	calls  chan *call
	quit   chan struct{}
	wg     sync.WaitGroup
}

// call is one queued EVALSHA and the signal that its reply is in cmd.
type call struct {
	ctx  context.Context
	cmd  *redis.Cmd
	done chan struct{}
}

var _ redis.Scripter = (*Pipeline)(nil)

// NewPipeline starts conns senders that pipeline up to batch script calls
// at a time on rdb, each waiting up to window for a batch to fill. Close stops
// them.
func NewPipeline(rdb pipelineClient, batch int, window time.Duration, conns int) *Pipeline {
	p := &Pipeline{
		rdb:    rdb,
		batch:  max(batch, 1),
		window: window,
		calls:  make(chan *call, max(batch, 1)*max(conns, 1)*4),
		quit:   make(chan struct{}),
	}
	for range max(conns, 1) {
		p.wg.Go(p.send)
	}
	return p
}

// EvalSha queues the call for the next batch and waits for its reply, or for
// ctx to be done.
func (p *Pipeline) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
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
	c := &call{ctx: ctx, cmd: cmd, done: make(chan struct{})}
	select {
	case <-p.quit:
		return failedCmd(ctx, ErrPipelineClosed)
	default:
	}
	select {
	case p.calls <- c:
	case <-p.quit:
		return failedCmd(ctx, ErrPipelineClosed)
	case <-ctx.Done():
		return failedCmd(ctx, ctx.Err())
	}
	select {
	case <-c.done:
		return cmd
	case <-ctx.Done():
		// A sender may still fill cmd: hand back another one.
		return failedCmd(ctx, ctx.Err())
	}
}

// Eval is not batched: Script.Run only sends it after NOSCRIPT, which is rare.
func (p *Pipeline) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.rdb.Eval(ctx, script, keys, args...)
}

// EvalRO is not batched; the algorithms do not use it.
func (p *Pipeline) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.rdb.EvalRO(ctx, script, keys, args...)
}

// EvalShaRO is not batched; the algorithms do not use it.
func (p *Pipeline) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.rdb.EvalShaRO(ctx, sha1, keys, args...)
}

// ScriptExists is passed through.
func (p *Pipeline) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return p.rdb.ScriptExists(ctx, hashes...)
}

// ScriptLoad is passed through.
func (p *Pipeline) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return p.rdb.ScriptLoad(ctx, script)
}

// Close stops the senders once their batches are answered; calls still queued
// fail with ErrPipelineClosed. Call it after the last decision.
func (p *Pipeline) Close() {
	close(p.quit)
	p.wg.Wait()
	for {
		select {
		case c := <-p.calls:
			c.cmd.SetErr(ErrPipelineClosed)
			close(c.done)
		default:
			return
		}
	}
}

// send is one sender's loop: take a batch, send it, hand out the replies.
func (p *Pipeline) send() {
	batch := make([]*call, 0, p.batch)
	for {
		select {
		case c := <-p.calls:
			batch = append(batch[:0], c)
		case <-p.quit:
			return
		}
		batch = p.fill(batch)
		p.exec(batch)
	}
}

// fill adds calls already queued, then, with a window, waits for more.
func (p *Pipeline) fill(batch []*call) []*call {
	var deadline time.Time
	for len(batch) < p.batch {
		select {
		case c := <-p.calls:
			batch = append(batch, c)
			continue
		default:
		}
		if p.window <= 0 {
			return batch
		}
		// Timers below a millisecond are not precise: spin, yielding to the
		// goroutines that are about to call.
		now := time.Now()
		if deadline.IsZero() {
			deadline = now.Add(p.window)
		}
		if !now.Before(deadline) {
			return batch
		}
		runtime.Gosched()
	}
	return batch
}

// exec sends batch as one pipeline under the latest of its deadlines; every
// command gets its own reply or error.
func (p *Pipeline) exec(batch []*call) {
	var latest time.Time
	live := 0
	for _, c := range batch {
		if c.ctx.Err() != nil {
			continue // its caller has gone; do not spend Redis on it
		}
		batch[live] = c
		live++
		if dl, ok := c.ctx.Deadline(); ok && dl.After(latest) {
			latest = dl
		}
	}
	if live == 0 {
		return
	}
	ctx := context.Background()
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	pipe := p.rdb.Pipeline()
	for _, c := range batch[:live] {
		_ = pipe.Process(ctx, c.cmd) // only queues
	}
	// Errors are per command, on each cmd; Exec returns the first of them.
	_, _ = pipe.Exec(ctx)
	for _, c := range batch[:live] {
		close(c.done)
	}
}

// failedCmd is a reply carrying err.
func failedCmd(ctx context.Context, err error) *redis.Cmd {
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}
