package limiter

import (
	"context"
	"testing"
	"time"

	"tollgate/algorithms"
)

// refundable is every algorithm with a give-back (m.refund): those Refund
// gives units back to.
func refundable() []algorithms.Spec { return leasableSpecs() }

// TestRefundRequest: a request admitted by two rules and refunded leaves
// both where they were before it, atomically, and the Result of Refund says
// so; a Peek agrees. The buckets are not full when the request comes (two
// requests before it), so nothing refills meanwhile that the give-back
// would have to keep.
func TestRefundRequest(t *testing.T) {
	t.Parallel()
	for name, mk := range harnesses(t) {
		for _, spec := range refundable() {
			t.Run(name+"/"+spec.Name, func(t *testing.T) {
				t.Parallel()
				h := mk(t)
				l := New(h.rdb, Options{Clock: h.now})
				t.Cleanup(l.Close)
				limit := algorithms.Limit{Requests: 5, Window: 10 * h.unit}
				h.room(limit.Window, time.Second)
				p := h.prefix() + "{k}:"
				rules := []Rule{
					{Algorithm: spec, Limit: limit, Key: p + spec.Name},
					{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 50, Window: 10 * h.unit}, Key: p + "fw", Cost: 2},
				}
				ctx := context.Background()
				for range 2 {
					if res, err := l.Decide(ctx, rules); err != nil || !res.Allowed {
						t.Fatalf("Decide() = %+v, %v; want admitted", res, err)
					}
				}
				before, err := l.Peek(ctx, rules)
				if err != nil {
					t.Fatal(err)
				}
				res, err := l.Decide(ctx, rules)
				if err != nil || !res.Allowed {
					t.Fatalf("Decide() = %+v, %v; want admitted", res, err)
				}
				out, err := l.Refund(ctx, res)
				if err != nil {
					t.Fatalf("Refund() error = %v", err)
				}
				after, err := l.Peek(ctx, rules)
				if err != nil {
					t.Fatal(err)
				}
				for i := range rules {
					was, got, peek := before.Decisions[i].Remaining, out.Decisions[i].Remaining, after.Decisions[i].Remaining
					if got != was || peek != was {
						t.Errorf("rule %d: Refund() remaining = %d, Peek after = %d; want %d as before the request (after it: %d)",
							i, got, peek, was, res.Decisions[i].Remaining)
					}
					if !out.Decisions[i].Allowed {
						t.Errorf("rule %d: Refund() Allowed = false, want true (the request was admitted)", i)
					}
				}
				// Refunding again gives nothing more back than the limit.
				if _, err := l.Refund(ctx, res); err != nil {
					t.Fatal(err)
				}
				again, _ := l.Peek(ctx, rules)
				if got := again.Decisions[0].Remaining; got > limit.Requests {
					t.Errorf("remaining after a second refund = %d, above the limit %d", got, limit.Requests)
				}
			})
		}
	}
}

// TestRefundClosedWindow: a refund that comes after the window that counted
// the request closed (a bucket that refilled) gives the new window nothing.
func TestRefundClosedWindow(t *testing.T) {
	t.Parallel()
	for name, mk := range harnesses(t) {
		for _, spec := range refundable() {
			t.Run(name+"/"+spec.Name, func(t *testing.T) {
				t.Parallel()
				h := mk(t)
				l := New(h.rdb, Options{Clock: h.now})
				t.Cleanup(l.Close)
				limit := algorithms.Limit{Requests: 5, Window: h.unit}
				rules := []Rule{{Algorithm: spec, Limit: limit, Key: h.prefix() + "{k}:" + spec.Name}}
				ctx := context.Background()
				h.align(limit.Window)
				old, err := l.Decide(ctx, rules)
				if err != nil || !old.Allowed {
					t.Fatalf("Decide() = %+v, %v", old, err)
				}
				h.advance(spec.Horizon(limit) + limit.Window)
				for range 2 {
					if _, err := l.Decide(ctx, rules); err != nil {
						t.Fatal(err)
					}
				}
				want, _ := l.Peek(ctx, rules)
				out, err := l.Refund(ctx, old)
				if err != nil {
					t.Fatalf("Refund() error = %v", err)
				}
				if got := out.Decisions[0].Remaining; got > want.Decisions[0].Remaining {
					t.Errorf("Refund() of a request of a closed window: remaining = %d, want %d (nothing given)", got, want.Decisions[0].Remaining)
				}
			})
		}
	}
}

// TestRefundLeased: a request admitted from a lease gives its units back to
// the lease, in memory (Redis's count does not move), and they are given
// back to Redis with the lease's unused units; a request of a lease that
// has ended gives them back to Redis. Once the engine is closed, Redis
// counts exactly the requests admitted less the two refunded.
func TestRefundLeased(t *testing.T) {
	t.Parallel()
	for name, mk := range harnesses(t) {
		for _, spec := range refundable() {
			t.Run(name+"/"+spec.Name, func(t *testing.T) {
				t.Parallel()
				h := mk(t)
				l := New(h.rdb, Options{Lease: true, Timeout: 10 * time.Second})
				rule := Rule{Algorithm: spec, Limit: leaseLimit, Key: h.prefix() + "{k}:" + spec.Name}
				ctx := context.Background()
				var leased []Result
				admitted := 0
				start := time.Now()
				for i := 0; i < 500 && len(leased) < 2; i++ {
					res, err := l.Decide(ctx, []Rule{rule})
					if err != nil || !res.Allowed {
						t.Fatalf("Decide() = %+v, %v", res, err)
					}
					admitted++
					if res.Decisions[0].lease != nil {
						leased = append(leased, res)
					}
				}
				if len(leased) < 2 {
					t.Fatalf("no lease taken in %d requests", admitted)
				}
				inRedis := peekRemaining(t, h, rule)
				out, err := l.Refund(ctx, leased[1])
				if err != nil {
					t.Fatalf("Refund() error = %v", err)
				}
				now := peekRemaining(t, h, rule)
				// The lease lives leaseMaxAge: on a machine too slow to see
				// it out, the sweep may have given it back in between.
				if time.Since(start) < leaseMaxAge/2 {
					if now != inRedis {
						t.Errorf("Redis's remaining after a refund to the lease = %d, want %d (no Redis call)", now, inRedis)
					}
					if got, was := out.Decisions[0].Remaining, leased[1].Decisions[0].Remaining; got <= was {
						t.Errorf("Refund() remaining = %d, want more than %d (the lease's unused units)", got, was)
					}
				}
				l.EndLeases()
				if _, err := l.Refund(ctx, leased[0]); err != nil {
					t.Fatalf("Refund() after the lease ended: %v", err)
				}
				l.Close()
				if got, want := peekRemaining(t, h, rule), leaseLimit.Requests-(admitted-2); got != want {
					t.Errorf("Redis's remaining after Close = %d, want %d (%d admitted, 2 refunded)", got, want, admitted)
				}
			})
		}
	}
}
