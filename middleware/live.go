package middleware

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/limiter"
	"tollgate/policy"
)

// snapshot is everything per policy that a request uses: the live set (with
// the overrides), its header texts, the candidate set. It is never changed
// once stored: a reload stores a new one, so a request decided under one
// snapshot finishes under it, and none sees half of two.
type snapshot struct {
	live      decided
	candidate *policy.Set // nil: no candidate file
	// candidateVersion is the candidate file's SHA-256 prefix.
	candidateVersion string
	// What the snapshot was made of, to make the next one when one of
	// them changes.
	policies, candidatePolicies []policy.Policy
	overrides                   []policy.Override
	// keysByIP, exemptsCIDRs and hasOverrides are the union of the live
	// and candidate sets' needs (policy.Caller).
	keysByIP, exemptsCIDRs, hasOverrides bool
}

// decided is a set of policies with the header texts of its limits.
type decided struct {
	set *policy.Set
	// texts holds each named limit's header data (by policy.NamedLimit.ID),
	// made once per snapshot rather than on every request.
	texts   []limitText
	version string // the policy file's SHA-256 prefix; "" without a file
}

// candidateKeys is what a candidate file's keys start with after the
// prefix: a live key has "{" there, so the two never meet.
const candidateKeys = "candidate:"

// store builds the snapshot of policies, candidate and overrides, and makes
// it the one requests use. It returns why overrides were left out. Callers
// hold l.mu.
func (l *RateLimit) store(policies []policy.Policy, version string, candidate []policy.Policy, candidateVersion string, overrides []policy.Override) error {
	s := &snapshot{policies: policies, candidatePolicies: candidate, candidateVersion: candidateVersion, overrides: overrides}
	set, err := policy.NewSet(policies, l.prefix).WithOverrides(overrides)
	s.live = decided{set: set, version: version, texts: make([]limitText, len(set.Limits()))}
	for _, nl := range set.Limits() {
		lt := &s.live.texts[nl.ID]
		lt.name, lt.algorithm, lt.sfName, lt.unit = nl.Name, nl.Algorithm.Name, sfString(nl.Name), nl.Algorithm.Unit
		if p := nl.Limit.Period; p != "" {
			lt.per = "per " + string(p) + " in " + nl.Limit.Location.String()
		}
	}
	s.keysByIP, s.exemptsCIDRs, s.hasOverrides = set.KeysByIP(), set.ExemptsCIDRs(), set.HasOverrides()
	if candidate != nil {
		// Overrides apply to the candidate too: it shows what the live
		// service would do with that file. Those naming a policy only the
		// live file has are not its errors.
		s.candidate, _ = policy.NewSet(candidate, l.prefix+candidateKeys).WithOverrides(overrides)
		s.keysByIP = s.keysByIP || s.candidate.KeysByIP()
		s.exemptsCIDRs = s.exemptsCIDRs || s.candidate.ExemptsCIDRs()
		s.hasOverrides = s.hasOverrides || s.candidate.HasOverrides()
	}
	l.snap.Store(s)
	return err
}

// SetPolicies makes policies the live ones, version naming them (the
// policy file's SHA-256 prefix), from the next request on; requests under
// way finish under the policies they started with. A limit that keeps its
// policy's name, its position and its algorithm keeps its Redis key, so its
// count. The error says which overrides no longer apply (they name a policy
// gone, or a limit the policy cannot use); the policies are set either way.
func (l *RateLimit) SetPolicies(policies []policy.Policy, version string) error {
	l.mu.Lock()
	s := l.snap.Load()
	err := l.store(policies, version, s.candidatePolicies, s.candidateVersion, s.overrides)
	l.mu.Unlock()
	l.endLeases()
	return err
}

// endLeases ends the engine's leases (limiter.Limiter.EndLeases) once a new
// snapshot is in force: leases belong to the rules that took them, so none
// would admit under the new ones anyway; ended now, their unused units are
// back in Redis at once rather than at the next sweep.
func (l *RateLimit) endLeases() {
	if e, ok := l.decider.(interface{ EndLeases() }); ok {
		e.EndLeases()
	}
}

// SetCandidate makes policies the candidate ones (nil: none), decided in
// shadow beside the live ones under keys of their own: counted, never
// rejecting, no headers; their decisions are in Outcome.Candidate.
func (l *RateLimit) SetCandidate(policies []policy.Policy, version string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.snap.Load()
	_ = l.store(s.policies, s.live.version, policies, version, s.overrides) // the live set's overrides are unchanged
}

// SetOverrides replaces the overrides, from the next request on. The error
// says which were left out (see policy.Set.WithOverrides); the others apply.
func (l *RateLimit) SetOverrides(overrides []policy.Override) error {
	l.mu.Lock()
	s := l.snap.Load()
	err := l.store(s.policies, s.live.version, s.candidatePolicies, s.candidateVersion, overrides)
	l.mu.Unlock()
	l.endLeases()
	return err
}

// Versions returns the SHA-256 prefixes of the live and candidate policy
// files in use ("" for none) and the live policies' names.
func (l *RateLimit) Versions() (live, candidate string, names []string) {
	s := l.snap.Load()
	for _, p := range s.policies {
		names = append(names, p.Name)
	}
	return s.live.version, s.candidateVersion, names
}

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
	paused atomic.Int64 // unix ns: no decision starts before
}

func newAsideBudget() *asideBudget {
	return &asideBudget{slots: make(chan struct{}, asideInFlight)}
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
	if took > asideSlow {
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
