package middleware

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/limiter"
	"tollgate/policy"
)

// Results of a candidate policy's decision. Dropped: not decided, as too
// many candidate and shadow decisions were under way (asideBudget).
const (
	CandidateAllowed = "allowed"
	CandidateLimited = "limited"
	CandidateFailed  = "failed"
	CandidateDropped = "dropped"
)

// The candidate and shadow decisions' budget: at most asideInFlight under
// way per instance (each set of rules decided together one); and after one
// that took longer than asideSlow (a quarter of the default
// RATE_LIMIT_TIMEOUT), none for asidePause times as long. An expensive
// candidate (sliding_log with a cost of 10,000, say: 50-270ms of Redis's one
// thread per call on a loaded 2-core machine) then takes a small share of
// Redis's time, between the live calls, instead of queueing its scripts
// ahead of them until they time out and the live breaker opens
// (TestExpensiveCandidateKeepsLiveLimiting in package main: 64 connections,
// live 5/min; 7,907 of 8,524 answers unchecked before; 0 to 207 of about
// 10,000 with this budget). Beyond the budget they are dropped and counted.
const (
	asideInFlight = 2
	asideSlow     = 25 * time.Millisecond
	asidePause    = 20
)

// asideBudget is the shared budget of a RateLimit's candidate and shadow
// decisions.
type asideBudget struct {
	slots  chan struct{}
	slow   time.Duration // a decision slower than this pauses the others
	paused atomic.Int64  // unix ns: no decision starts before
}

// newAsideBudget returns a budget pausing after decisions slower than slow
// (0: asideSlow).
func newAsideBudget(slow time.Duration) *asideBudget {
	if slow <= 0 {
		slow = asideSlow
	}
	return &asideBudget{slots: make(chan struct{}, asideInFlight), slow: slow}
}

// take takes a slot if one is free and no pause is on.
func (b *asideBudget) take() bool {
	if time.Now().UnixNano() < b.paused.Load() {
		return false
	}
	select {
	case b.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

// give gives a slot back after a decision that took took, pausing the
// others if it was slow.
func (b *asideBudget) give(took time.Duration) {
	if took > b.slow {
		until := time.Now().Add(asidePause * took).UnixNano()
		for p := b.paused.Load(); p < until && !b.paused.CompareAndSwap(p, until); p = b.paused.Load() {
		}
	}
	<-b.slots
}

// CandidateRef is one candidate limit's decision for a request, for metrics.
type CandidateRef struct {
	Policy string // the limit's name, as RateLimit-Policy would show it
	Result string // one of the Candidate constants
}

// aside decides, each in a goroutine of its own, the sets of rules that
// never decide the request: the live shadow policies and the candidate's
// enforced and shadow ones. They run while the enforced limits are decided,
// so they add no round trip to the request's wait. They are decided by an
// engine apart from the live one (limiter.Limiter.Apart: a breaker and
// deadline of their own), within a budget (asideBudget), so that however
// slow or failing they are, they never change a live answer.
type aside struct {
	d      decider
	budget *asideBudget
	wg     sync.WaitGroup
	mu     sync.Mutex
	// dropped counts the sets of rules not decided: beyond the budget.
	dropped int
	// held are the results that hold in-flight places, given back when
	// the request ends (RateLimit.release).
	held []limiter.Result
	// shadowLimited are the live shadow limits that would have denied.
	shadowLimited []PolicyRef
	candidate     [2][]CandidateRef
	shadowErr     error
}

// start decides shadow (live shadow limits) and candidate, apart from each
// other and from the enforced limits.
func (a *aside) start(ctx context.Context, shadow, candidate []policy.Applied) {
	if len(shadow) > 0 && a.take() {
		a.wg.Go(func() {
			res, err := a.decide(ctx, rulesOf(shadow))
			a.hold(res)
			a.shadowErr = err
			if err != nil {
				return
			}
			for i, dec := range res.Decisions {
				if !dec.Allowed {
					a.shadowLimited = append(a.shadowLimited, PolicyRef{Policy: shadow[i].Limit.Name, Algorithm: shadow[i].Limit.Algorithm.Name})
				}
			}
		})
	}
	if len(candidate) == 0 {
		return
	}
	// The candidate's enforced limits are decided together, as they would
	// be live, and its shadow ones apart.
	enforced, shadowed := splitShadow(candidate, true)
	for k, group := range [][]policy.Applied{enforced, shadowed} {
		if len(group) == 0 {
			continue
		}
		if !a.take() {
			refs := make([]CandidateRef, len(group))
			for i, ap := range group {
				refs[i] = CandidateRef{Policy: ap.Limit.Name, Result: CandidateDropped}
			}
			a.candidate[k] = refs
			continue
		}
		a.wg.Go(func() {
			res, err := a.decide(ctx, rulesOf(group))
			a.hold(res)
			refs := make([]CandidateRef, len(group))
			for i, ap := range group {
				refs[i] = CandidateRef{Policy: ap.Limit.Name, Result: CandidateFailed}
				if err == nil {
					refs[i].Result = CandidateLimited
					if res.Decisions[i].Allowed {
						refs[i].Result = CandidateAllowed
					}
				}
			}
			a.candidate[k] = refs
		})
	}
}

// take takes the budget of a decision, if there is one; else it counts the
// decision dropped.
func (a *aside) take() bool {
	if a.budget.take() {
		return true
	}
	a.dropped++
	return false
}

// decide decides rules within the budget taken.
func (a *aside) decide(ctx context.Context, rules []limiter.Rule) (limiter.Result, error) {
	start := time.Now()
	defer func() { a.budget.give(time.Since(start)) }()
	return a.d.Decide(ctx, rules)
}

// hold keeps res for release when it holds places.
func (a *aside) hold(res limiter.Result) {
	if !res.Holds() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.held = append(a.held, res)
}

// splitShadow returns the enforced and the shadow limits of all, in their
// order. With anyShadow false, all is enforced.
func splitShadow(all []policy.Applied, anyShadow bool) (enforced, shadow []policy.Applied) {
	if !anyShadow {
		return all, nil
	}
	for _, a := range all {
		if a.Policy.Shadow {
			shadow = append(shadow, a)
		} else {
			enforced = append(enforced, a)
		}
	}
	return enforced, shadow
}
