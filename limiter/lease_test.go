package limiter

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/algorithms"
)

// leaseLimit is large enough to be leased and long enough that nothing is
// refilled or forgotten while a test runs: what Redis counts is what the
// instances took.
var leaseLimit = algorithms.Limit{Requests: minLeaseQuota, Window: 1000 * time.Hour}

// leasableSpecs is every algorithm of the table that leases.
func leasableSpecs() []algorithms.Spec {
	var out []algorithms.Spec
	for _, s := range algorithms.Specs() {
		if s.LeaseFor != nil {
			out = append(out, s)
		}
	}
	return out
}

// peekRemaining is what Redis counts as left of rule, asked without leases.
func peekRemaining(t *testing.T, h harness, r Rule) int {
	t.Helper()
	res, err := New(h.rdb, Options{Clock: h.now}).Peek(context.Background(), []Rule{r})
	if err != nil {
		t.Fatalf("Peek() error = %v", err)
	}
	return res.Decisions[0].Remaining
}

// TestLeaseThreeInstances runs three engines with leases on one Redis, as
// three instances of the service, 300 callers sending the limit, then 1.5
// times the limit, between them: together they admit at most the limit, at
// least the limit minus the documented bound (leaseBound), and once every
// instance is closed Redis counts exactly what was admitted (the unused
// units were given back).
func TestLeaseThreeInstances(t *testing.T) {
	t.Parallel()
	for name, mk := range harnesses(t) {
		for _, tt := range leaseRuns() {
			spec, requests := tt.spec, tt.requests
			// One at a time: 300 callers are load enough.
			t.Run(name+"/"+spec.Name+"/"+strconv.Itoa(requests), func(t *testing.T) {
				h := mk(t)
				rule := Rule{Algorithm: spec.Name, Limit: leaseLimit, Key: h.prefix() + "{k}:" + spec.Name}
				const instances, callers = 3, 300
				var engines [instances]*Limiter
				for i := range engines {
					engines[i] = New(h.rdb, Options{Lease: true, DenyCacheSize: 10_000, Timeout: 10 * time.Second, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
				}
				var next, admitted, leased atomic.Int64
				var wg sync.WaitGroup
				for c := range callers {
					wg.Go(func() {
						l := engines[c%instances]
						for next.Add(1) <= int64(requests) {
							res, err := l.Decide(context.Background(), []Rule{rule})
							if err != nil {
								t.Errorf("Decide() error = %v", err)
								return
							}
							if res.Allowed {
								admitted.Add(1)
							}
						}
					})
				}
				wg.Wait()
				for _, l := range engines {
					leased.Add(l.leases.taken.Load())
					l.Close()
				}
				if leased.Load() == 0 {
					t.Errorf("no lease taken")
				}
				got, limit := int(admitted.Load()), leaseLimit.Requests
				if got > limit {
					t.Fatalf("admitted %d of %d requests, limit %d: over-admitted", got, requests, limit)
				}
				if bound := leaseBound(limit, instances); got < limit-bound {
					t.Errorf("admitted %d, want at least limit %d - bound %d", got, limit, bound)
				}
				t.Logf("admitted %d of limit %d (under by %d; bound %d), %d leases", got, limit, limit-got, leaseBound(limit, instances), leased.Load())
				if left := peekRemaining(t, h, rule); left != limit-got {
					t.Errorf("after Close of every instance Redis has %d left, want limit - admitted = %d", left, limit-got)
				}
			})
		}
	}
}

// leaseRuns is every leasable algorithm with the limit's worth of requests
// (the burst ends exactly at the limit: what leases hold unused shows), then
// half as many more.
func leaseRuns() []struct {
	spec     algorithms.Spec
	requests int
} {
	var out []struct {
		spec     algorithms.Spec
		requests int
	}
	for _, s := range leasableSpecs() {
		for _, n := range []int{leaseLimit.Requests, leaseLimit.Requests * 3 / 2} {
			out = append(out, struct {
				spec     algorithms.Spec
				requests int
			}{s, n})
		}
	}
	return out
}

// leaseBound is the under-admission the README documents for a burst that
// ends: each instance's last lease is at most remaining/(2*leaseInstances)
// of what remained when it was taken, at most the limit.
func leaseBound(limit, instances int) int {
	return instances * limit / (2 * leaseInstances)
}

// TestLeaseNotTaken: rule sets that must be decided call by call (a small
// limit, lease: off, an algorithm without LeaseFor) leave Redis counting
// every request exactly, after each one.
func TestLeaseNotTaken(t *testing.T) {
	t.Parallel()
	small := algorithms.Limit{Requests: 5, Window: time.Minute}
	below := algorithms.Limit{Requests: minLeaseQuota - 1, Window: 1000 * time.Hour}
	for name, mk := range harnesses(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := mk(t)
			prefix := h.prefix()
			var rules []Rule
			for _, s := range algorithms.Specs() {
				rules = append(rules, Rule{Algorithm: s.Name, Limit: limitOf(s, small), Key: prefix + "{a}:small:" + s.Name})
				l := below
				if s.LeaseFor == nil {
					l = leaseLimit
				}
				rules = append(rules, Rule{Algorithm: s.Name, Limit: limitOf(s, l), Key: prefix + "{a}:below:" + s.Name})
				rules = append(rules, Rule{Algorithm: s.Name, Limit: limitOf(s, leaseLimit), Key: prefix + "{a}:off:" + s.Name, NoLease: true})
			}
			l := New(h.rdb, Options{Lease: true, Clock: h.now})
			defer l.Close()
			for _, r := range rules {
				quota := peekRemaining(t, h, r)
				for i := 1; i <= 4; i++ {
					if _, err := l.Decide(context.Background(), []Rule{r}); err != nil {
						t.Fatalf("Decide(%s) error = %v", r.Key, err)
					}
					if got, want := peekRemaining(t, h, r), quota-i; got != want {
						t.Fatalf("%s after %d requests: Redis has %d left, want %d (no lease)", r.Key, i, got, want)
					}
				}
			}
			if n := l.leases.len(); n != 0 {
				t.Errorf("%d rule sets tracked for leases, want 0", n)
			}
		})
	}
}

// TestLeaseLikePlain: one instance with leases admits exactly what the plain
// engine admits (the limit, of more requests), on two limits at once, and its
// X-RateLimit-Remaining falls by one per request and is never negative.
func TestLeaseLikePlain(t *testing.T) {
	t.Parallel()
	for name, mk := range harnesses(t) {
		for _, spec := range leasableSpecs() {
			t.Run(name+"/"+spec.Name, func(t *testing.T) {
				t.Parallel()
				h := mk(t)
				prefix := h.prefix()
				wide := algorithms.Limit{Requests: 5000, Window: 2000 * time.Hour}
				rules := []Rule{
					{Algorithm: spec.Name, Limit: leaseLimit, Key: prefix + "{k}:a:" + spec.Name},
					{Algorithm: spec.Name, Limit: wide, Key: prefix + "{k}:b:" + spec.Name},
				}
				l := New(h.rdb, Options{Lease: true})
				admitted, last := 0, leaseLimit.Requests
				for range leaseLimit.Requests + 50 {
					res, err := l.Decide(context.Background(), rules)
					if err != nil {
						t.Fatalf("Decide() error = %v", err)
					}
					if !res.Allowed {
						continue
					}
					admitted++
					got := res.Decisions[0].Remaining
					if got != last-1 || got < 0 {
						t.Fatalf("request %d: remaining %d, want %d", admitted, got, last-1)
					}
					last = got
				}
				if l.leases.taken.Load() == 0 {
					t.Errorf("no lease taken")
				}
				if admitted != leaseLimit.Requests {
					t.Errorf("admitted %d, want the limit %d", admitted, leaseLimit.Requests)
				}
				l.Close()
				if got, want := peekRemaining(t, h, rules[1]), wide.Requests-admitted; got != want {
					t.Errorf("second limit: Redis has %d left after Close, want %d", got, want)
				}
			})
		}
	}
}

// TestRefund: a give-back returns units to the window or bucket that took
// them and never more than had they not been taken: nothing to a window
// that closed, nothing a full bucket would have lost meanwhile. A lease of
// 600 from a fresh limit of 1000 a minute, a request of 1 after a while,
// then the give-back: Redis must have left what it would have without the
// lease (the buckets may keep one unit less: the give-back rounds down).
func TestRefund(t *testing.T) {
	t.Parallel()
	limit := algorithms.Limit{Requests: 1000, Window: time.Minute}
	for _, algorithm := range []string{"fixed_window", "sliding_window", "token_bucket", "gcra"} {
		for _, after := range []time.Duration{time.Second, time.Minute, 90 * time.Second} {
			t.Run(algorithm+"/"+after.String(), func(t *testing.T) {
				t.Parallel()
				h := miniredisHarness(t)
				h.align(limit.Window)
				s := newScripts(h.rdb)
				r := Rule{Algorithm: algorithm, Limit: limit, Cost: 600, Key: h.prefix() + algorithm}
				ds, ok, err := s.decide(context.Background(), []Rule{r}, true)
				if err != nil || !ok {
					t.Fatalf("decide(cost 600) = %v, %v", ok, err)
				}
				h.advance(after)
				one := Rule{Algorithm: algorithm, Limit: limit, Key: r.Key}
				if _, ok, err := s.decide(context.Background(), []Rule{one}, true); err != nil || !ok {
					t.Fatalf("decide(cost 1) = %v, %v", ok, err)
				}
				rs, _ := resolve([]Rule{r})
				if err := s.refund(context.Background(), rs[0], 600, ds[0].Now.Add(ds[0].ResetAfter)); err != nil {
					t.Fatalf("refund() error = %v", err)
				}
				got := peekRemaining(t, h, one)
				if want := limit.Requests - 1; got > want || got < want-1 {
					t.Errorf("remaining after give-back = %d, want %d (or one less)", got, want)
				}
			})
		}
	}
}
