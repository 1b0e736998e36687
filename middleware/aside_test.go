package middleware

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
	"tollgate/auth"
	"tollgate/limiter"
	"tollgate/live"
	"tollgate/policy"
)

// gate is a decider that admits every rule with the rule's own limit, and
// calls hook (if set) first with the rules.
type gate struct {
	hook func(rules []limiter.Rule)
}

func (g gate) Decide(ctx context.Context, rules []limiter.Rule) (limiter.Result, error) {
	if g.hook != nil {
		g.hook(rules)
	}
	ds := make([]limiter.Decision, len(rules))
	for i, r := range rules {
		ds[i] = limiter.Decision{Allowed: r.Limit.Requests > 1, Limit: r.Limit.Requests, Window: r.Limit.Window, Remaining: r.Limit.Requests - 1}
	}
	allowed := true
	for _, d := range ds {
		allowed = allowed && d.Allowed
	}
	return limiter.Result{Allowed: allowed, Decisions: ds}, nil
}

// Release has nothing to give back: the gate's decisions hold nothing.
func (g gate) Release(context.Context, limiter.Result) error { return nil }

func (g gate) Peek(ctx context.Context, rules []limiter.Rule) (limiter.Result, error) {
	return g.Decide(ctx, rules)
}

func onePolicy(name string, limit int) []policy.Policy {
	return []policy.Policy{{Name: name, Key: "user_or_ip", Cost: 1,
		Limits: []policy.LimitSpec{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: limit, Window: time.Minute}}}}}
}

func serveLimited(l *RateLimit, outcome chan<- Outcome) *gin.Engine {
	r := gin.New()
	r.GET("/x",
		func(c *gin.Context) {
			c.Set(identityKey, auth.Identity{Kind: auth.User, Name: "alice"})
			c.Next()
			if o, ok := OutcomeOf(c); ok && outcome != nil {
				outcome <- o
			}
		},
		l.Handler(),
		func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	return r
}

// TestInFlightRequestKeepsItsSnapshot: policies replaced while a request is
// being decided do not reach it; the next request has them.
func TestInFlightRequestKeepsItsSnapshot(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	l := newLimiter(discard(), gate{hook: func([]limiter.Rule) {
		if first {
			first = false
			close(entered)
			<-release
		}
	}}, onePolicy("a", 5), "p:", false, 64)
	r := serveLimited(l, nil)
	got := make(chan string)
	go func() { got <- get(t, r, "/x", nil).Header().Get("RateLimit-Policy") }()
	<-entered
	if err := l.live.SetPolicies(onePolicy("b", 9), "v2"); err != nil {
		t.Fatalf("SetPolicies() = %v", err)
	}
	close(release)
	if p := <-got; p != `"a";q=5;w=60` {
		t.Errorf("in-flight request: RateLimit-Policy %q, want the old policy's", p)
	}
	if p := get(t, r, "/x", nil).Header().Get("RateLimit-Policy"); p != `"b";q=9;w=60` {
		t.Errorf("next request: RateLimit-Policy %q, want the new policy's", p)
	}
	if live, _, names := l.live.Versions(); live != "v2" || len(names) != 1 || names[0] != "b" {
		t.Errorf("Versions() = %q, %q; want v2, [b]", live, names)
	}
}

// TestCandidateDecidedBeside: the candidate's rules are decided while the
// enforced ones are (the enforced decision waits here until the candidate's
// has started: decided one after the other, it would time out), under keys
// of their own; its results reach the Outcome, and its limits no header.
func TestCandidateDecidedBeside(t *testing.T) {
	candidateStarted := make(chan struct{})
	l := newLimiter(discard(), gate{hook: func(rules []limiter.Rule) {
		if strings.HasPrefix(rules[0].Key, "p:candidate:") {
			close(candidateStarted)
			return
		}
		select {
		case <-candidateStarted:
		case <-time.After(10 * time.Second):
			t.Errorf("the enforced decision did not see the candidate's start")
		}
	}}, onePolicy("a", 5), "p:", false, 64)
	l.live.SetCandidate(append(onePolicy("c", 1), onePolicy("d", 3)...), "cv")
	outcome := make(chan Outcome, 1)
	r := serveLimited(l, outcome)
	w := get(t, r, "/x", nil)
	if w.Code != http.StatusOK || w.Header().Get("RateLimit-Policy") != `"a";q=5;w=60` {
		t.Errorf("GET /x = %d, RateLimit-Policy %q; want 200 and the live policy alone", w.Code, w.Header().Get("RateLimit-Policy"))
	}
	o := <-outcome
	// Each limit's own answer: c would deny, d would admit (the engine counts
	// neither, as c denies).
	want := []CandidateRef{{Policy: "c", Result: CandidateLimited}, {Policy: "d", Result: CandidateAllowed}}
	if len(o.Candidate) != 2 || o.Candidate[0] != want[0] || o.Candidate[1] != want[1] {
		t.Errorf("Outcome.Candidate = %v, want %v", o.Candidate, want)
	}
}

// stallCandidate is a redis.Scripter on which the candidate's calls (keys
// under live.CandidateKeys) wait out their deadline and fail, as on a Redis busy
// with an expensive candidate; other calls pass through. With block set,
// they wait for it to close instead, counted in waiting.
type stallCandidate struct {
	redis.Scripter
	block   chan struct{}
	waiting atomic.Int64
}

func (s *stallCandidate) stall(ctx context.Context, keys []string) *redis.Cmd {
	if len(keys) == 0 || !strings.Contains(keys[0], live.CandidateKeys) {
		return nil
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	if s.block != nil {
		<-s.block
	}
	<-ctx.Done()
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(ctx.Err())
	return cmd
}

func (s *stallCandidate) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if cmd := s.stall(ctx, keys); cmd != nil {
		return cmd
	}
	return s.Scripter.EvalSha(ctx, sha, keys, args...)
}

func (s *stallCandidate) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	if cmd := s.stall(ctx, keys); cmd != nil {
		return cmd
	}
	return s.Scripter.Eval(ctx, script, keys, args...)
}

// TestSlowCandidateNeverChangesLiveAnswer: every candidate decision times
// out; the live limit still decides every request (none is answered
// unchecked), exactly as without a candidate, and its breaker stays closed.
func TestSlowCandidateNeverChangesLiveAnswer(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	engine := limiter.New(&stallCandidate{Scripter: rdb}, limiter.Options{Timeout: 20 * time.Millisecond, BreakerFailures: 2})
	l := newLimiter(discard(), engine, onePolicy("live", 5), "test:", true, 64)
	l.live.SetCandidate([]policy.Policy{{Name: "expensive", Key: "user_or_ip", Cost: 1,
		Limits: []policy.LimitSpec{{Algorithm: algo("sliding_log"), Limit: algorithms.Limit{Requests: 1000, Window: time.Minute}}}}}, "cv")
	outcome := make(chan Outcome, 12)
	r := serveLimited(l, outcome)
	// In rounds of 4 at once: the candidate's timeouts come after the live
	// decisions' successes, one after the other.
	codes := map[int]int{}
	for range 3 {
		var wg sync.WaitGroup
		ws := make([]*httptest.ResponseRecorder, 4)
		for i := range ws {
			wg.Go(func() { ws[i] = get(t, r, "/x", nil) })
		}
		wg.Wait()
		for _, w := range ws {
			codes[w.Code]++
			if c := w.Header().Get("X-RateLimit-Checked"); c != "" {
				t.Errorf("X-RateLimit-Checked %q (status %d), want every request decided by the live limit", c, w.Code)
			}
			o := <-outcome
			if len(o.Candidate) != 1 || o.Candidate[0].Result != CandidateFailed && o.Candidate[0].Result != CandidateDropped {
				t.Errorf("Outcome.Candidate = %v; want the candidate failed or dropped", o.Candidate)
			}
		}
	}
	if codes[http.StatusOK] != 5 || codes[http.StatusTooManyRequests] != 7 {
		t.Errorf("statuses %v, want 5 × 200 and 7 × 429 (live 5/min)", codes)
	}
	if engine.CircuitOpen() {
		t.Error("after the candidate's timeouts: CircuitOpen() = true, want false")
	}
}

// TestCandidateBudget: while asideInFlight candidate decisions are under
// way, the candidate decisions of further requests are dropped and counted,
// and those requests are answered without waiting for them.
func TestCandidateBudget(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	stall := &stallCandidate{Scripter: rdb, block: make(chan struct{})}
	// A timeout no live decision reaches on a loaded machine (each request
	// is checked decided); the stalled candidate decisions fail at it.
	engine := limiter.New(stall, limiter.Options{Timeout: time.Second})
	l := newLimiter(discard(), engine, onePolicy("live", 100), "test:", true, 64)
	l.live.SetCandidate(onePolicy("cand", 100), "cv")
	const n = asideInFlight + 12
	outcome := make(chan Outcome, n)
	r := serveLimited(l, outcome)
	codes := make(chan *httptest.ResponseRecorder, n)
	for range n {
		go func() { codes <- get(t, r, "/x", nil) }()
	}
	for i := range n - asideInFlight { // the dropped ones are answered at once
		select {
		case w := <-codes:
			if w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Checked") != "" {
				t.Errorf("status %d, X-RateLimit-Checked %q; want 200 decided by the live limit", w.Code, w.Header().Get("X-RateLimit-Checked"))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d requests answered while %d candidate decisions wait: want those beyond them answered at once", i, n, stall.waiting.Load())
		}
	}
	if w := stall.waiting.Load(); w != asideInFlight {
		t.Errorf("candidate decisions under way: %d, want %d", w, asideInFlight)
	}
	close(stall.block)
	for range asideInFlight {
		<-codes
	}
	results := map[string]int{}
	dropped := 0
	for range n {
		o := <-outcome
		dropped += o.AsideDropped
		for _, c := range o.Candidate {
			results[c.Result]++
		}
	}
	if dropped != n-asideInFlight || results[CandidateDropped] != n-asideInFlight || results[CandidateFailed] != asideInFlight {
		t.Errorf("AsideDropped %d, candidate results %v; want %d dropped, %d failed", dropped, results, n-asideInFlight, asideInFlight)
	}
}
