// Package limiter is the engine: it decides sets of rules against Redis,
// atomically (a request denied by any rule is counted by none), with the
// algorithms of package algorithms. It owns everything between a set of rules
// and Redis: script assembly, cluster hash tags, pipelining, the deny cache,
// the circuit breaker and the timeout. It knows no HTTP, policies or users.
//
// Its constructor follows the module's one style: New(what it cannot work
// without, an options struct of its settings), Options here, each field
// saying what its zero value means.
package limiter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"tollgate/algorithms"

	"github.com/redis/go-redis/v9"
)

// Rule is one limit applied to one subject: what the engine decides.
type Rule struct {
	// Algorithm is the rule's algorithm, resolved once where the rule is
	// made (policy, at load): the request path never looks one up by name.
	Algorithm algorithms.Spec
	Limit     algorithms.Limit
	// Cost is how many units this request takes; 0 means 1. A cost above
	// the limit (the capacity for token_bucket and gcra) is always denied,
	// with RetryAfter the algorithm's full horizon.
	Cost int
	// Key is the full Redis key. Rules whose keys share a {hash tag} (or have
	// none) are decided in one script on a Redis Cluster too.
	Key string
	// NoLease keeps the rule sets this rule is in from being leased
	// (Options.Lease; a policy's "lease: off").
	NoLease bool
	// Delay > 0 (bucket algorithms only: algorithms.Spec.Bucket) admits a
	// request that this rule would admit within Delay now, for that moment:
	// it is counted at once and its Decision's Wait says how long the
	// caller must hold it (shaping). Rule sets with a delay are never
	// leased, and one with a held rule ignores it.
	Delay time.Duration

	lease *leaseTake // the commit takes a lease (lease.go)
}

// Decision is the outcome of one rule. Durations are relative to Now.
type Decision struct {
	Allowed    bool
	Limit      int           // requests per window; token bucket, gcra: capacity
	Window     time.Duration // the span Limit applies to
	Remaining  int           // left after this request, never negative
	ResetAfter time.Duration // until the quota is fully restored
	RetryAfter time.Duration // until a denied request could pass; 0 when Allowed
	// Wait is how long an admitted request must be held before it is
	// served: its slot is that far ahead (Rule.Delay); 0 without a delay.
	Wait time.Duration
	Now  time.Time // Redis's clock at the decision, so Reset does not wobble with ours
	// Local: decided in this process at its share of the limit (Limit is
	// the share), Redis being unavailable (Options.Local).
	Local bool

	held *held // what an admitted held rule (concurrency) took, for Release
	// failed is what a Redis call that failed may have taken (unsure) when
	// the decision was then made locally: Release gives both back.
	failed *held
	// taken is the rule as an admitted request took it (its per-request
	// cost), for Refund; nil for algorithms without a give-back.
	taken *rule
	// lease and leaseID: the lease the request was admitted from, for
	// Refund (refund.go).
	lease      *lease
	leaseID    string
	leaseReset int64 // ms since the epoch: the reset of the lease's commit
}

// held is what a held rule took in one call: Release gives it back.
type held struct {
	rule  rule
	nonce string
	mark  string // the call's release mark (markKey)
	// unsure: the call failed, its script may run yet; Release leaves the
	// mark, which keeps it from taking places then.
	unsure bool
}

// Result is the outcome of a set of rules: Allowed when every rule admits,
// and one Decision per rule, in the order of the rules.
type Result struct {
	Allowed   bool
	Decisions []Decision
}

// Holds reports whether the request holds places (a concurrency limit
// admitted it) that Release must give back when the request ends. Check it
// whatever Allowed says: on a cluster, a request denied by one hash tag's
// rules may hold places under another's.
func (r Result) Holds() bool {
	for _, d := range r.Decisions {
		if d.held != nil || d.failed != nil {
			return true
		}
	}
	return false
}

// Local reports whether r was decided in this process, at its share of the
// limits, because Redis could not decide it (Options.Local).
func (r Result) Local() bool {
	return len(r.Decisions) > 0 && r.Decisions[0].Local
}

// ErrInvalidRule is returned for rules the engine cannot decide: a negative
// cost or two rules on one key.
var ErrInvalidRule = errors.New("invalid rule")

// Options tune the engine; the zero value is a plain engine: every call one
// script, bounded only by the caller's context, with the default breaker.
type Options struct {
	// Timeout bounds every call that reaches Redis; 0: the caller's ctx only.
	Timeout time.Duration
	// PipelineBatch > 0 sends concurrent calls together, up to this many per
	// pipeline, PipelineConns (default 2) pipelines at once, each waiting up
	// to PipelineWindow to fill. Ignored on a *redis.ClusterClient.
	PipelineBatch  int
	PipelineWindow time.Duration
	PipelineConns  int
	// DenyCacheSize > 0 answers denials from memory until their RetryAfter,
	// remembering up to this many denied rule sets.
	DenyCacheSize int
	// BreakerFailures consecutive errors (default 5) open the circuit for
	// BreakerCooldown (default 1s).
	BreakerFailures int
	BreakerCooldown time.Duration
	// Clock is our clock, from which calendar periods' starts are computed
	// (Redis's clock then picks among them); nil: time.Now.
	Clock func() time.Time
	// Lease lets rule sets of large limits under heavy traffic take several
	// requests' worth of quota in one call and admit from memory (lease.go).
	Lease bool
	// Log receives warnings (a lease's give-back that failed); nil: none.
	Log *slog.Logger
	// Local, when set, decides what Redis cannot (an error, a timeout, an
	// open circuit) on this in-process Redis (an embedded miniredis) with
	// the same scripts, at this instance's share of every limit, and charges
	// it back when Redis answers again (local.go). nil: such calls fail.
	Local redis.Scripter
	// Instances fixes the number of instances sharing the Redis (local
	// shares, lease sizes); 0: counted under InstancesKey (instances.go),
	// or, without one, 4 assumed.
	Instances    int
	InstancesKey string
}

// stage is one stage of the engine: the scripts, or a stage wrapping another.
type stage interface {
	decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error)
}

// Limiter decides rules. It is safe for concurrent use.
type Limiter struct {
	chain    stage
	breaker  *breaker
	pipeline *pipeline // nil when not pipelining
	scripts  *scripts
	// releaseTimeout bounds Release, which must not end with the request's
	// context: Options.Timeout, or defaultReleaseTimeout.
	releaseTimeout time.Duration
	unreleased     *unreleased  // failed releases, retried
	leases         *leases      // nil when not leasing
	local          *local       // nil without Options.Local
	instances      *instances   // nil: 4 assumed
	denies         []*denyCache // the deny caches, for Forget
	timeout        time.Duration
}

// defaultReleaseTimeout bounds Release when Options.Timeout is 0.
const defaultReleaseTimeout = time.Second

// New returns an engine deciding on rdb (a *redis.Client, *redis.ClusterClient
// or anything that runs scripts).
//
// The stages, from the caller inwards, and why in this order:
//
//		leases -> deny cache -> timeout -> breaker -> scripts -> pipeline -> rdb
//
//	  - Leases are outermost: a request admitted from a lease needs nothing
//	    else; taking a lease is a decision like any other (of the rules with
//	    their costs times the lease's size), through every stage behind.
//	  - The deny cache is outermost: its answers from memory need no deadline
//	    (a timer costs per call) and must neither close an open circuit nor
//	    reset its count of failures.
//	  - The timeout wraps the breaker: every call that reaches the breaker ends
//	    within Timeout, so a slow Redis counts as failing.
//	  - The breaker wraps the scripts: while Redis is down, calls fail at once
//	    instead of each waiting out the timeout; it probes again after Cooldown.
//	  - The scripts split rules by hash tag only when they see a
//	    *redis.ClusterClient itself, so no pipeline goes in front of a cluster
//	    client (go-redis would split a pipeline by node, but not the rules).
func New(rdb redis.Scripter, o Options) *Limiter {
	l := &Limiter{}
	scripter := rdb
	if pc, ok := rdb.(pipelineClient); ok && o.PipelineBatch > 0 {
		if _, cluster := rdb.(*redis.ClusterClient); !cluster {
			conns := o.PipelineConns
			if conns <= 0 {
				conns = defaultPipelineConns
			}
			l.pipeline = newPipeline(pc, o.PipelineBatch, o.PipelineWindow, conns)
			scripter = l.pipeline
		}
	}
	failures, cooldown := o.BreakerFailures, o.BreakerCooldown
	if failures <= 0 {
		failures = 5
	}
	if cooldown <= 0 {
		cooldown = time.Second
	}
	s := newScripts(scripter)
	if o.Clock != nil {
		s.now = o.Clock
	}
	l.scripts = s
	l.releaseTimeout = o.Timeout
	if l.releaseTimeout <= 0 {
		l.releaseTimeout = defaultReleaseTimeout
	}
	l.unreleased = newUnreleased(s.release, l.releaseTimeout)
	l.breaker = newBreaker(s, failures, cooldown)
	l.chain = l.breaker
	l.timeout = o.Timeout
	if o.Timeout > 0 {
		l.chain = newTimeout(l.chain, o.Timeout)
	}
	if o.Instances > 0 || o.InstancesKey != "" {
		l.instances = newInstances(rdb, o.InstancesKey, o.Instances, o.Timeout)
	}
	if o.Local != nil {
		in := newScripts(o.Local)
		l.local = newLocal(l.chain, s, in, l.breaker, l.instances.count, o.Timeout, logOrDiscard(o.Log))
		if o.Clock != nil {
			// Calendar starts and the charges' windows by our clock, as
			// Redis's decisions.
			in.now, l.local.now = o.Clock, o.Clock
		}
		l.local.onEnd = func() { l.Forget("") } // "" is in every key: all
		l.chain = l.local
	}
	inner := l.chain
	if o.DenyCacheSize > 0 {
		dc := newDenyCache(inner, o.DenyCacheSize)
		l.denies = append(l.denies, dc)
		l.chain = dc
	}
	if o.Lease {
		log := o.Log
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		// Rule sets that may be leased keep denials no longer than a lease
		// lives: units another instance gives back can admit them sooner.
		leased := inner
		if o.DenyCacheSize > 0 {
			dc := newDenyCache(inner, o.DenyCacheSize)
			dc.hold = leaseMaxAge
			l.denies = append(l.denies, dc)
			leased = dc
		}
		l.leases = newLeases(l.chain, leased, l.scripts, o.Timeout, log)
		l.leases.instances = l.instances.count
		l.leases.localMode = l.LocalMode
		l.chain = l.leases
	}
	return l
}

// defaultPipelineConns is how many pipelined batches may be under way at
// once: two, not four: on this project's 2-core machine, wrk -c64 on
// /continents, all admitted, 4 runs each: 27.1k vs 24.6k req/s (median),
// 39.5 vs 44.3 µs of service CPU per request (fuller batches, fewer system
// calls), and the same decisions/s from 64 goroutines.
const defaultPipelineConns = 2

// Decide checks every rule and, only if all admit, records the request in all
// of them, atomically, in one script per hash tag (one round trip). Remaining
// is what is left after this request (0 for a rule that denies; what is left
// now for a rule that admits a request another rule denied). No rules admit.
//
// On a *redis.ClusterClient, rules under different hash tags cannot share a
// script: Decide peeks at every group and, only if all admit, commits each
// group in turn, each re-checking and committing atomically. A group that has
// become full in between denies the request after the groups before it
// recorded it, so atomicity across hash tags is per group. Places those
// groups took are in the Result, denied or failed: check Result.Holds and
// Release it whatever Decide returned.
//
// A call of held rules that fails (a timeout, Redis gone) may have taken
// places all the same, or take them later: Redis may run a script its caller
// gave up on. Its Result holds them: Release gives them back, and keeps the
// script from taking any should it run after that.
func (l *Limiter) Decide(ctx context.Context, rules []Rule) (Result, error) {
	ds, allowed, err := l.chain.decide(ctx, rules, true)
	return Result{Allowed: allowed, Decisions: ds}, err
}

// Peek is Decide recording nothing (sliding_log still trims what left its
// window): Allowed says whether a request of this cost would be admitted now,
// Remaining is what is left now.
func (l *Limiter) Peek(ctx context.Context, rules []Rule) (Result, error) {
	ds, allowed, err := l.chain.decide(ctx, rules, false)
	return Result{Allowed: allowed, Decisions: ds}, err
}

// Release gives back the places res holds (Result.Holds), in one round trip
// per hash tag: call it once when the request ends, however it ends. It
// runs under its own deadline, not ctx's (the request's context is often
// done by then: a client that went away must not keep its places), and is
// not counted by the breaker; while the circuit is open it returns
// ErrCircuitOpen at once, unless res is of a Decide that failed: its script
// may run yet (Redis read it before it stalled), and only this release keeps
// that script from taking places then. Places not given back (an error, the
// circuit open) are given back in the background once Redis answers again,
// or expire after their timeout, whichever comes first.
func (l *Limiter) Release(ctx context.Context, res Result) error {
	var hs, local []*held
	unsure := false
	var failed []*held
	for _, d := range res.Decisions {
		if d.failed != nil {
			failed = append(failed, d.failed)
		}
		switch {
		case d.held == nil:
		case d.Local:
			local = append(local, d.held)
		default:
			hs = append(hs, d.held)
			unsure = unsure || d.held.unsure
		}
	}
	if len(failed) > 0 {
		// Decided locally: Redis is away. The failed call's places are
		// given back (and its script kept from taking any) in the
		// background once Redis answers, not at the cost of this request.
		l.unreleased.add(failed)
	}
	if len(local) > 0 {
		if err := l.local.release(ctx, local); err != nil || len(hs) == 0 {
			return err
		}
	}
	if len(hs) == 0 {
		return nil
	}
	if l.breaker.open() && !unsure {
		l.unreleased.add(hs)
		return ErrCircuitOpen
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.releaseTimeout)
	defer cancel()
	if err := l.scripts.release(ctx, hs); err != nil {
		l.unreleased.add(hs)
		return err
	}
	return nil
}

// CircuitOpen reports whether the breaker keeps calls away from Redis.
func (l *Limiter) CircuitOpen() bool { return l.breaker.open() }

// LocalMode reports whether decisions are made in this process, Redis being
// unavailable (Options.Local).
func (l *Limiter) LocalMode() bool { return l.local != nil && l.local.active.Load() }

// Instances is the number of instances believed to share the Redis.
func (l *Limiter) Instances() int { return l.instances.count() }

// logOrDiscard is log, or a logger that discards when log is nil.
func logOrDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// Close gives back the unused units of every lease, then makes later calls
// through the pipeline fail; calls under way finish; failed releases are no
// longer retried. It does not close rdb.
func (l *Limiter) Close() {
	l.unreleased.close()
	if l.leases != nil {
		l.leases.close()
	}
	if l.local != nil {
		l.local.close()
	}
	l.instances.close()
	if l.pipeline != nil {
		l.pipeline.stop()
	}
}

// Grant gives every rule n more units now, atomically in one script per hash
// tag (every rule of one subject shares one), with its algorithm's own grant
// (algorithms.Spec.CheckGrant says which n it takes): a window's count goes
// down, a bucket gains tokens. A grant may go beyond the limit, for the
// current window (buckets: as long as an empty bucket takes to fill). It
// returns what a Peek then answers. Admin calls pass neither the deny cache
// nor the breaker; Timeout bounds them. Other instances' deny caches learn
// of the change from Announce.
func (l *Limiter) Grant(ctx context.Context, rules []Rule, n int) (Result, error) {
	for i, r := range rules {
		err := checkSpec(r.Algorithm)
		if err == nil {
			err = r.Algorithm.CheckGrant(r.Limit, n)
		}
		if err != nil {
			return Result{}, fmt.Errorf("rule %d: %w", i, err)
		}
	}
	return l.admin(ctx, rules, "g"+strconv.Itoa(n))
}

// Reset deletes the keys of rules, atomically per hash tag: their quotas are
// full again. It returns what a Peek then answers; see Grant.
func (l *Limiter) Reset(ctx context.Context, rules []Rule) (Result, error) {
	return l.admin(ctx, rules, modeReset)
}

func (l *Limiter) admin(ctx context.Context, rules []Rule, mode string) (Result, error) {
	if l.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.timeout)
		defer cancel()
	}
	ds, err := l.scripts.admin(ctx, rules, mode)
	if err != nil {
		return Result{}, err
	}
	for _, r := range rules {
		l.Forget(hashTag(r.Key))
	}
	allowed := true
	for _, d := range ds {
		allowed = allowed && d.Allowed
	}
	return Result{Allowed: allowed, Decisions: ds}, nil
}

// Forget drops the denials the deny cache remembers of rule sets with a key
// under hash tag tag: their state changed outside this engine (a grant or a
// reset by another process). Forgetting is always safe.
func (l *Limiter) Forget(tag string) {
	for _, dc := range l.denies {
		dc.forget(tag)
	}
}

// Announce tells every engine that Follows channel that the keys of rules
// have changed outside it (Grant, Reset), so that their deny caches forget
// the denials of those keys' hash tags.
func Announce(ctx context.Context, rdb redis.UniversalClient, channel string, rules []Rule) error {
	var done []string
	for _, r := range rules {
		tag := hashTag(r.Key)
		if slices.Contains(done, tag) {
			continue
		}
		done = append(done, tag)
		if err := rdb.Publish(ctx, channel, tag).Err(); err != nil {
			return fmt.Errorf("announce on %s: %w", channel, err)
		}
	}
	return nil
}

// Follow subscribes to channel, where Announce names hash tags whose keys
// changed outside this engine, and Forgets each until stop is called; ctx
// bounds the subscribing. It returns once the subscription stands, so a
// change announced after it returns is seen. Announcements made while the
// subscription is down (go-redis reconnects it) are missed: those denials
// are forgotten at their expiry, at most their RetryAfter, as without Follow.
func (l *Limiter) Follow(ctx context.Context, rdb redis.UniversalClient, channel string) (stop func(), err error) {
	sub := rdb.Subscribe(ctx, channel)
	if _, err := sub.Receive(ctx); err != nil {
		sub.Close()
		return nil, fmt.Errorf("subscribe to %s: %w", channel, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for msg := range sub.Channel() {
			l.Forget(msg.Payload)
		}
	}()
	return func() {
		sub.Close()
		<-done
	}, nil
}
