package limiter

import (
	"context"
	"errors"
	"testing"
	"time"

	"tollgate/algorithms"
)

// grantCase is one property of Grant and Reset every algorithm with a grant
// must have, on every backend.
type grantCase struct {
	name string
	// waits: the case lets the horizon pass, so its window is one unit;
	// the others' is 30 units, so that nothing refills while they run on
	// a slow machine.
	waits bool
	run   func(t *testing.T, h harness, a single)
}

// grant grants n units to identity under a's rule and returns the decision
// a peek then answers.
func grant(t *testing.T, a single, identity string, n int) Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := a.l.Grant(ctx, []Rule{a.rule(identity)}, n)
	if err != nil {
		t.Fatalf("Grant(%q, %d): %v", identity, n, err)
	}
	return res.Decisions[0]
}

// rule is a's rule for identity, as decide makes it.
func (a single) rule(identity string) Rule {
	return Rule{Algorithm: algo(a.name), Limit: a.limit, Key: a.prefix + a.name + ":" + identity}
}

// admits decides n requests of identity and reports how many were admitted
// before the first denial, failing if any is admitted after one.
func admits(t *testing.T, a single, identity string, n int) int {
	t.Helper()
	admitted, denied := 0, false
	for i := range n {
		d := allow(t, a, identity)
		switch {
		case d.Allowed && denied:
			t.Fatalf("request %d admitted after a denial: %+v", i+1, d)
		case d.Allowed:
			admitted++
		default:
			denied = true
		}
	}
	return admitted
}

var grantCases = []grantCase{
	{"a grant of one after exhaustion admits exactly one more", false, func(t *testing.T, h harness, a single) {
		if got := admits(t, a, "k", 4); got != 3 {
			t.Fatalf("before the grant: %d of 4 admitted, want 3", got)
		}
		if d := grant(t, a, "k", 1); !d.Allowed || d.Remaining != 1 {
			t.Errorf("Grant(1) after exhaustion = %+v, want allowed with remaining 1", d)
		}
		if got := admits(t, a, "k", 3); got != 1 {
			t.Errorf("after the grant: %d of 3 admitted, want 1", got)
		}
	}},
	{"a grant on a full quota goes beyond the limit", false, func(t *testing.T, h harness, a single) {
		if d := grant(t, a, "k", 2); !d.Allowed || d.Remaining != 5 {
			t.Errorf("Grant(2) on a full quota of 3 = %+v, want allowed with remaining 5", d)
		}
		if got := admits(t, a, "k", 7); got != 5 {
			t.Errorf("after the grant: %d of 7 admitted, want 5", got)
		}
	}},
	{"grants hold at most one quota beyond the limit", false, func(t *testing.T, h harness, a single) {
		grant(t, a, "k", 3)
		if d := grant(t, a, "k", 3); d.Remaining != 6 {
			t.Errorf("two grants of 3 on a quota of 3: remaining %d, want 6", d.Remaining)
		}
		if got := admits(t, a, "k", 8); got != 6 {
			t.Errorf("after the grants: %d of 8 admitted, want 6", got)
		}
	}},
	{"a grant lapses after the horizon", true, func(t *testing.T, h harness, a single) {
		h.wait(t, algorithmsHorizon(t, a)) // a calendar's day: miniredis only
		grant(t, a, "k", 2)
		h.advance(algorithmsHorizon(t, a) + 10*time.Millisecond)
		h.align(a.limit.Window)
		if got := admits(t, a, "k", 5); got != 3 {
			t.Errorf("a horizon after the grant: %d of 5 admitted, want the limit, 3", got)
		}
	}},
	{"a grant touches no other identity", false, func(t *testing.T, h harness, a single) {
		admits(t, a, "k", 3)
		grant(t, a, "other", 1)
		if d := allow(t, a, "k"); d.Allowed {
			t.Errorf("after a grant to another identity: Decide() = %+v, want denied", d)
		}
	}},
	{"reset gives the full quota back", false, func(t *testing.T, h harness, a single) {
		admits(t, a, "k", 4)
		grant(t, a, "k", 3) // credits go too
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := a.l.Reset(ctx, []Rule{a.rule("k")})
		if err != nil {
			t.Fatalf("Reset: %v", err)
		}
		if d := res.Decisions[0]; !d.Allowed || d.Remaining != 3 || d.ResetAfter != 0 {
			t.Errorf("Reset() = %+v, want allowed with remaining 3, reset after 0", d)
		}
		if got := admits(t, a, "k", 4); got != 3 {
			t.Errorf("after Reset: %d of 4 admitted, want 3", got)
		}
	}},
}

// algorithmsHorizon is how long a request (and a grant) weighs under a's limit.
func algorithmsHorizon(t *testing.T, a single) time.Duration {
	t.Helper()
	s, err := algorithms.Lookup(a.name)
	if err != nil {
		t.Fatal(err)
	}
	return s.Horizon(a.limit)
}

// TestGrant runs the grant cases for every algorithm that grants, on every
// backend, with a limit of 3 per window (burst 3 for the buckets).
func TestGrant(t *testing.T) {
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			for _, spec := range algorithms.Specs() {
				if !spec.Grants {
					continue
				}
				t.Run(spec.Name, func(t *testing.T) {
					t.Parallel()
					h := newHarness(t)
					for _, tc := range grantCases {
						t.Run(tc.name, func(t *testing.T) {
							s := subject{h: h, spec: spec, prefix: h.prefix(), newLimiter: engines["plain"]}
							window := 30 * h.unit
							if tc.waits {
								window = h.unit
							}
							a := s.new(t, algorithms.Limit{Requests: 3, Window: window})
							h.room(window, 5*time.Second) // one aligned window for the whole case
							tc.run(t, h, a)
						})
					}
				})
			}
		})
	}
}

func TestGrantChecks(t *testing.T) {
	l := New(nil, Options{})
	ctx := context.Background()
	rule := Rule{Algorithm: algo("gcra"), Limit: algorithms.Limit{Requests: 3, Window: time.Second}, Key: "k"}
	for _, n := range []int{0, -1, 4} {
		if _, err := l.Grant(ctx, []Rule{rule}, n); !errors.Is(err, algorithms.ErrInvalidLimit) {
			t.Errorf("Grant(%d) under a quota of 3 = %v, want ErrInvalidLimit", n, err)
		}
	}
	rule.Algorithm = algo("leaky")
	if _, err := l.Grant(ctx, []Rule{rule}, 1); !errors.Is(err, algorithms.ErrUnknown) {
		t.Errorf("Grant under an unknown algorithm = %v, want ErrUnknown", err)
	}
}

// TestFollowForgetsAnnouncedDenials: an instance whose deny cache holds a
// denial admits the request once another process grants and announces it,
// and only if it follows the announcements.
func TestFollowForgetsAnnouncedDenials(t *testing.T) {
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			prefix := h.prefix()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			channel := prefix + "changes"
			following := New(h.rdb, Options{DenyCacheSize: 100})
			stop, err := following.Follow(ctx, h.rdb, channel)
			if err != nil {
				t.Fatalf("Follow: %v", err)
			}
			defer stop()
			deaf := New(h.rdb, Options{DenyCacheSize: 100})
			rules := []Rule{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 2, Window: time.Minute}, Key: prefix + "{user:amy}:p:0:fixed_window"}}
			decide := func(l *Limiter) bool {
				t.Helper()
				res, err := l.Decide(ctx, rules)
				if err != nil {
					t.Fatalf("Decide: %v", err)
				}
				return res.Allowed
			}
			decide(following)
			decide(following)
			if decide(following) || decide(deaf) {
				t.Fatal("third request admitted, want denied (and cached)")
			}
			admin := New(h.rdb, Options{})
			if _, err := admin.Grant(ctx, rules, 2); err != nil {
				t.Fatalf("Grant: %v", err)
			}
			if err := Announce(ctx, h.rdb, channel, rules); err != nil {
				t.Fatalf("Announce: %v", err)
			}
			for following.denies[0].forgets.Load() == 0 { // delivered asynchronously
				if ctx.Err() != nil {
					t.Fatal("announcement not received within 10s")
				}
				time.Sleep(time.Millisecond)
			}
			if !decide(following) {
				t.Error("after the grant, the following instance denied: its deny cache kept the stale denial")
			}
			if decide(deaf) == true {
				t.Error("after the grant, the deaf instance admitted: want its cached (stale) denial, or this test proves nothing")
			}
		})
	}
}

// TestDenyCacheKeepsNoDenialDecidedBeforeAForget: a denial decided before a
// grant was announced, and stored after, would be stale: it is not stored.
func TestDenyCacheKeepsNoDenialDecidedBeforeAForget(t *testing.T) {
	var dc *denyCache
	next := deciderFunc(func(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
		dc.forget("{user:amy}") // the announcement arrives while Redis answers
		return []Decision{{RetryAfter: time.Minute}}, false, nil
	})
	dc = newDenyCache(next, 10)
	rules := []Rule{{Algorithm: algo("fixed_window"), Key: "p{user:amy}:x"}}
	if _, allowed, _ := dc.decide(context.Background(), rules, true); allowed {
		t.Fatal("decide() admitted, want the stub's denial")
	}
	if n := dc.len(); n != 0 {
		t.Errorf("deny cache holds %d entries after a denial decided across a forget, want 0", n)
	}
}
