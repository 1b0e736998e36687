package middleware

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/algorithms"
	"tollgate/auth"
	"tollgate/limiter"
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
		Limits: []policy.Limit{{Algorithm: "fixed_window", Limit: algorithms.Limit{Requests: limit, Window: time.Minute}}}}}
}

func serveLimited(l *Limiter, outcome chan<- Outcome) *gin.Engine {
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
	l := NewLimiter(discard(), gate{hook: func([]limiter.Rule) {
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
	if err := l.SetPolicies(onePolicy("b", 9), "v2"); err != nil {
		t.Fatalf("SetPolicies() = %v", err)
	}
	close(release)
	if p := <-got; p != `"a";q=5;w=60` {
		t.Errorf("in-flight request: RateLimit-Policy %q, want the old policy's", p)
	}
	if p := get(t, r, "/x", nil).Header().Get("RateLimit-Policy"); p != `"b";q=9;w=60` {
		t.Errorf("next request: RateLimit-Policy %q, want the new policy's", p)
	}
	if live, _, names := l.Versions(); live != "v2" || len(names) != 1 || names[0] != "b" {
		t.Errorf("Versions() = %q, %q; want v2, [b]", live, names)
	}
}

// TestCandidateDecidedBeside: the candidate's rules are decided while the
// enforced ones are (the enforced decision waits here until the candidate's
// has started: decided one after the other, it would time out), under keys
// of their own; its results reach the Outcome, and its limits no header.
func TestCandidateDecidedBeside(t *testing.T) {
	candidateStarted := make(chan struct{})
	l := NewLimiter(discard(), gate{hook: func(rules []limiter.Rule) {
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
	l.SetCandidate(append(onePolicy("c", 1), onePolicy("d", 3)...), "cv")
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
