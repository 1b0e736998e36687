package limiter

import (
	"context"
	_ "embed"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/algorithms"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/chargeback.lua
var chargeBackLua string

// The local mode: a decision that cannot reach Redis (an error, a timeout, an
// open circuit; not an invalid rule) is decided in this process by the same
// scripts on an in-process Redis (Options.Local, the embedded miniredis),
// each limit cut to this instance's share, ceil(limit/N) (instances.go),
// with the same costs. In-flight places taken locally are given back
// locally. Once a decision fails, the next ones go local at once, without
// waiting for Redis; every probeEvery a probe in the background asks Redis
// answers again. When it does, what was admitted locally is charged back
// (chargeback.lua: the modules' commit, beyond the limit if need be) before
// any decision goes to Redis again, so a client who used its share during
// the outage gets only what remains of its limit afterwards.
//
// The bound, in one window of a limit L: the admissions before the outage,
// plus at most N × ceil(L/N) local ones (L, rounded up per instance), and
// after it only what remains of L. Not charged back: a decision whose Redis
// call timed out (Redis may have received and counted it: a frozen Redis
// runs it when it wakes; charging it would count it twice), units of a
// window that ended before Redis returned, and in-flight places (given back
// locally, never counted in Redis). A charge is retried until Redis takes
// it, marked so that a retry of one Redis ran (its reply lost) counts once.

// probeEvery is how often local mode asks Redis whether it answers again.
const probeEvery = 500 * time.Millisecond

// local is the stage that decides locally when the stage it wraps (timeout,
// breaker, scripts: Redis) cannot.
type local struct {
	next    stage
	remote  *scripts // Redis's: the charge-back
	scripts *scripts // the in-process Redis's
	breaker *breaker // closed when Redis answers again
	count   func() int
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
	ping    *redis.Script
	charges sync.Map // algorithm name -> *redis.Script of chargeback.lua

	// gate: local decisions hold it shared, the end of local mode
	// exclusively, so that no local admission is left uncharged.
	gate   sync.RWMutex
	active atomic.Bool
	// recovering: one recover at a time, so that none ends local mode
	// while another's charge-back is under way.
	recovering sync.Mutex
	// onEnd runs as local mode ends: the deny caches forget every denial,
	// local ones (of this instance's share) among them.
	onEnd func()
	// ctx ends at close: a probe or charge-back under way then must not
	// hold up a shutdown (Redis may hang).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending map[string]*charge // admitted, not yet tried: by key
	retry   []*charge          // tried and failed: each again as it was (its id)
	since   time.Time          // local mode's start
	decided int                // local decisions since
	failed  error              // what started it
}

// charge is what to record in Redis of one rule: units admitted locally,
// worth charging until until (the local decision's reset: after it, the
// window that would have counted them is over).
type charge struct {
	r     rule // full limit
	units int
	until time.Time
	// id, given at the first try, marks the charge in Redis: a retry of a
	// charge whose reply was lost (but which Redis ran) is not counted twice.
	id string
}

func newLocal(next stage, remote, in *scripts, b *breaker, count func() int, timeout time.Duration, log *slog.Logger) *local {
	// Local calls are never cut at the Redis deadline: the in-process
	// Redis is as fast as this process, and a slow moment must not fail them.
	timeout = max(timeout, time.Second)
	lc := &local{next: next, remote: remote, scripts: in, breaker: b, count: count, timeout: timeout, log: log,
		now: time.Now, ping: redis.NewScript("return 1"), pending: map[string]*charge{}, onEnd: func() {}}
	lc.ctx, lc.cancel = context.WithCancel(context.Background())
	return lc
}

var _ stage = (*local)(nil)

func (lc *local) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	if lc.active.Load() {
		return lc.decideLocal(ctx, rules, commit, true)
	}
	ds, allowed, err := lc.next.decide(ctx, rules, commit)
	if err == nil || ctx.Err() != nil {
		return ds, allowed, err
	}
	if _, rerr := resolve(rules); rerr != nil {
		return ds, allowed, err // invalid rules: no Redis would decide them
	}
	for _, d := range ds {
		if d.held != nil && !d.held.unsure {
			// On a cluster, groups committed before the failure hold places
			// this Result must carry for Release: not decided again here.
			return ds, allowed, err
		}
	}
	lc.begin(err)
	if len(rules) > 0 && rules[0].lease != nil {
		// A lease take: no lease is taken locally (its units would all be
		// charged back, used or not); the lease layer decides the request
		// alone, now locally.
		return ds, allowed, err
	}
	out, allowed, lerr := lc.decideLocal(ctx, rules, commit, !maybeCounted(err))
	// The failed call's script may run yet and take places (Redis read it
	// before it stalled): the Result carries them, so Release gives them
	// back in Redis as well as the local places.
	for i := range ds {
		if i < len(out) && ds[i].held != nil {
			out[i].failed = ds[i].held
		}
	}
	return out, allowed, lerr
}

// maybeCounted reports whether a call that failed with err may have been
// counted by Redis all the same: it timed out, not refused.
func maybeCounted(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// begin turns local mode on, logging once.
func (lc *local) begin(err error) {
	if !lc.active.CompareAndSwap(false, true) {
		return
	}
	lc.mu.Lock()
	lc.since, lc.decided, lc.failed = lc.now(), 0, err
	lc.mu.Unlock()
	lc.log.Warn("redis unavailable: deciding locally at this instance's share of every limit",
		"err", err, "instances", lc.count())
	lc.wg.Go(lc.watch)
}

// watch probes Redis every probeEvery until local mode ends (or close).
func (lc *local) watch() {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-lc.ctx.Done():
			return
		case <-t.C:
			if lc.recover() {
				return
			}
		}
	}
}

// close stops probing; local mode, if on, stays on.
func (lc *local) close() {
	lc.cancel()
	lc.wg.Wait()
}

// decideLocal decides rules at this instance's share on the in-process
// Redis, and records admissions to charge back when charge is true.
func (lc *local) decideLocal(ctx context.Context, rules []Rule, commit, chargeIt bool) ([]Decision, bool, error) {
	lc.gate.RLock()
	if !lc.active.Load() { // local mode ended meanwhile: Redis decides
		lc.gate.RUnlock()
		return lc.decide(ctx, rules, commit)
	}
	defer lc.gate.RUnlock()
	n := lc.count()
	cut := make([]Rule, len(rules))
	for i, r := range rules {
		cut[i] = r
		cut[i].Limit = share(r.Limit, n)
		if r.Delay > 0 && max(r.Cost, 1) > cut[i].Limit.Capacity() {
			// More than the share can ever hold: no slot to wait for
			// here; decided (denied) as a rule without a delay is.
			cut[i].Delay = 0
		}
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lc.timeout)
	defer cancel()
	ds, allowed, err := lc.scripts.decide(lctx, cut, commit)
	for i := range ds {
		ds[i].Local = true
	}
	if err != nil || !commit {
		return ds, allowed, err
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.decided++
	if !allowed || !chargeIt {
		return ds, allowed, nil
	}
	rs, _ := resolve(rules) // valid: decided above
	for i, r := range rs {
		if r.spec.Held {
			continue // given back locally, never counted in Redis
		}
		until := ds[i].Now.Add(ds[i].ResetAfter)
		c := lc.pending[r.key]
		switch {
		case c == nil || c.r.spec.Name != r.spec.Name:
			c = &charge{r: r}
			lc.pending[r.key] = c
		case c.r.limit != r.limit:
			// The same key under another limit (a reload): its units so
			// far count on the key too, charged with the latest limit's.
			c.r = r
		}
		c.units += r.cost
		if until.After(c.until) {
			c.until = until
		}
	}
	return ds, allowed, nil
}

// share is this instance's share of l among n instances: every count
// ceil(count/n), so that n instances together admit at most about l.
func share(l algorithms.Limit, n int) algorithms.Limit {
	if n <= 1 {
		return l
	}
	l.Requests = (l.Requests + n - 1) / n
	if l.Burst > 0 {
		l.Burst = (l.Burst + n - 1) / n
	}
	return l
}

// recover asks Redis whether it answers; if it does, charges back what was
// admitted locally and ends local mode, reporting true.
func (lc *local) recover() bool {
	lc.recovering.Lock()
	defer lc.recovering.Unlock()
	if !lc.active.Load() {
		return true // another recover ended it
	}
	ctx, cancel := context.WithTimeout(lc.ctx, lc.timeout)
	err := lc.ping.Run(ctx, lc.remote.rdb, nil).Err()
	cancel()
	if err != nil {
		return false
	}
	charged := 0
	for {
		lc.mu.Lock()
		batch := lc.retry
		for _, c := range lc.pending {
			c.id = newNonce()
			batch = append(batch, c)
		}
		lc.pending, lc.retry = map[string]*charge{}, nil
		lc.mu.Unlock()
		n, err := lc.chargeBack(batch)
		charged += n
		if err != nil {
			return false // the rest is in retry: the next probe
		}
		lc.gate.Lock()
		lc.mu.Lock()
		if len(lc.pending) > 0 || len(lc.retry) > 0 { // admitted during the charge-back
			lc.mu.Unlock()
			lc.gate.Unlock()
			continue
		}
		lc.active.Store(false)
		since, decided, failed := lc.since, lc.decided, lc.failed
		lc.mu.Unlock()
		lc.gate.Unlock()
		lc.breaker.record(false, nil, lc.breaker.now()) // Redis answers: no failures, circuit closed
		lc.onEnd()
		lc.log.Warn("redis answers again: local mode ended", "err", failed, "local_decisions", decided,
			"units_charged_back", charged, "took", lc.now().Sub(since).Round(time.Millisecond).String())
		return true
	}
}

// chargeBack records batch's charges in Redis, each rule in a script of its
// own (each alone is a correct charge). It returns the units charged; on an
// error, the charges not known to be made go to retry.
func (lc *local) chargeBack(batch []*charge) (int, error) {
	now := lc.now()
	charged := 0
	for i, c := range batch {
		if !now.Before(c.until) {
			continue // its window is over: nothing left to count against
		}
		ctx, cancel := context.WithTimeout(lc.ctx, lc.timeout)
		err := lc.chargeOne(ctx, c, c.until.Sub(now))
		cancel()
		if err != nil {
			lc.mu.Lock()
			lc.retry = append(lc.retry, batch[i:]...)
			lc.mu.Unlock()
			return charged, err
		}
		charged += c.units
	}
	return charged, nil
}

// chargeOne runs chargeback.lua for c on Redis; its mark lives for ttl.
func (lc *local) chargeOne(ctx context.Context, c *charge, ttl time.Duration) error {
	sc, ok := lc.charges.Load(c.r.spec.Name)
	if !ok {
		sc, _ = lc.charges.LoadOrStore(c.r.spec.Name, composeWith([]algorithms.Spec{c.r.spec}, chargeBackLua))
	}
	nonce := newNonce()
	return lc.remote.call(ctx, lc.remote.rdb, sc.(*redis.Script), false, func(at time.Time) ([]string, []any) {
		args, key := perCall(append([]any{nonce, max(ttl.Milliseconds(), 1)}, lc.remote.argsOf(c.r)...), c.r, at)
		// The mark shares the rule key's hash tag: one slot on a cluster.
		return []string{key, c.r.key + ":charged:" + c.id}, append(args, c.units)
	}).Err()
}

// release gives back in-flight places taken locally.
func (lc *local) release(ctx context.Context, hs []*held) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lc.timeout)
	defer cancel()
	return lc.scripts.release(ctx, hs)
}
