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

	"github.com/redis/go-redis/v9"
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
				rule := Rule{Algorithm: spec, Limit: leaseLimit, Key: h.prefix() + "{k}:" + spec.Name}
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
				rules = append(rules, Rule{Algorithm: s, Limit: limitOf(s, small), Key: prefix + "{a}:small:" + s.Name})
				l := below
				if s.LeaseFor == nil {
					l = leaseLimit
				}
				rules = append(rules, Rule{Algorithm: s, Limit: limitOf(s, l), Key: prefix + "{a}:below:" + s.Name})
				rules = append(rules, Rule{Algorithm: s, Limit: limitOf(s, leaseLimit), Key: prefix + "{a}:off:" + s.Name, NoLease: true})
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
// X-RateLimit-Remaining is never negative, never more than the limit still
// admits, and falls by one per request admitted from a lease.
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
					{Algorithm: spec, Limit: leaseLimit, Key: prefix + "{k}:a:" + spec.Name},
					{Algorithm: spec, Limit: wide, Key: prefix + "{k}:b:" + spec.Name},
				}
				l := New(h.rdb, Options{Lease: true})
				admitted, last, fromLease := 0, leaseLimit.Requests, false
				for range leaseLimit.Requests + 50 {
					before := l.leases.taken.Load()
					res, err := l.Decide(context.Background(), rules)
					if err != nil {
						t.Fatalf("Decide() error = %v", err)
					}
					if !res.Allowed {
						continue
					}
					admitted++
					got := res.Decisions[0].Remaining
					if got < 0 || got > leaseLimit.Requests-admitted {
						t.Fatalf("request %d: remaining %d, want 0 to %d", admitted, got, leaseLimit.Requests-admitted)
					}
					// From a lease taken before this request: one less.
					leased := got < leaseLimit.Requests-admitted && l.leases.taken.Load() == before
					if leased && fromLease && got != last-1 {
						t.Fatalf("request %d from a lease: remaining %d, want %d", admitted, got, last-1)
					}
					last, fromLease = got, leased || l.leases.taken.Load() != before
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
				r := Rule{Algorithm: algo(algorithm), Limit: limit, Cost: 600, Key: h.prefix() + algorithm, lease: &leaseTake{id: "l1"}}
				ds, ok, err := s.decide(context.Background(), []Rule{r}, true)
				if err != nil || !ok {
					t.Fatalf("decide(cost 600) = %v, %v", ok, err)
				}
				h.advance(after)
				// A lease is out in Redis leaseTrust at most (lua/lease.lua):
				// this one, as if taken just now, to test the module's refund.
				member := "l1:600:" + strconv.FormatInt(ds[0].Now.Add(ds[0].ResetAfter).UnixMilli(), 10)
				if err := h.rdb.ZAdd(context.Background(), leaseSet(r.Key), redis.Z{Score: float64(h.now().Add(time.Minute).UnixMilli()), Member: member}).Err(); err != nil {
					t.Fatal(err)
				}
				one := Rule{Algorithm: algo(algorithm), Limit: limit, Key: r.Key}
				if _, ok, err := s.decide(context.Background(), []Rule{one}, true); err != nil || !ok {
					t.Fatalf("decide(cost 1) = %v, %v", ok, err)
				}
				rs, _ := resolve([]Rule{r})
				if _, err := s.refund(context.Background(), rs[0], "l1", 600, 600, ds[0].Now.Add(ds[0].ResetAfter)); err != nil {
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

// TestRefundKeepsAGrantBeyondALowerLimit (found by TestComposition, seeds 12
// and 13): a grant under a limit of 2000 leaves a count of -1900; a reload
// lowers the limit to 1200, a lease is taken and gives back its units. The
// give-back is exact: before, it stopped at minus the new limit, setting
// the count to -1200 and wiping 600 granted units.
func TestRefundKeepsAGrantBeyondALowerLimit(t *testing.T) {
	t.Parallel()
	before := algorithms.Limit{Requests: 2000, Window: time.Minute}
	after := algorithms.Limit{Requests: 1200, Window: time.Minute}
	for _, algorithm := range []string{"fixed_window", "sliding_window"} {
		t.Run(algorithm, func(t *testing.T) {
			t.Parallel()
			h := miniredisHarness(t)
			h.align(after.Window)
			ctx := context.Background()
			key := h.prefix() + algorithm
			if _, err := New(h.rdb, Options{Clock: h.now}).Grant(ctx, []Rule{{Algorithm: algo(algorithm), Limit: before, Key: key}}, 1900); err != nil {
				t.Fatalf("Grant(1900) = %v", err)
			}
			s := newScripts(h.rdb)
			r := Rule{Algorithm: algo(algorithm), Limit: after, Cost: 100, Key: key, lease: &leaseTake{id: "l1"}}
			ds, ok, err := s.decide(ctx, []Rule{r}, true)
			if err != nil || !ok {
				t.Fatalf("lease take (cost 100) = %v, %v", ok, err)
			}
			one := Rule{Algorithm: algo(algorithm), Limit: after, Key: key}
			leased := peekRemaining(t, h, one) // 1200 + 1900 - 100
			rs, _ := resolve([]Rule{r})
			if _, err := s.refund(ctx, rs[0], "l1", 100, 100, ds[0].Now.Add(ds[0].ResetAfter)); err != nil {
				t.Fatalf("refund() error = %v", err)
			}
			if got, want := peekRemaining(t, h, one), leased+100; got != want {
				t.Errorf("remaining after the give-back of 100 = %d, want %d: exact, a grant kept whole", got, want)
			}
		})
	}
}

// TestGrantCountsLeasesOut (found by TestComposition, seeds 28 and 38): a
// lease of 100 is out when two grants of a limit come (capped at one limit
// beyond); then 60 of its units are admitted and 40 given back. Before, the
// grant's cap took no account of the lease, the give-back stopped at the
// cap, and the 60 admitted after the grant were admitted beyond it: 2000
// left of a limit of 1000 after 60 admissions.
func TestGrantCountsLeasesOut(t *testing.T) {
	t.Parallel()
	limit := algorithms.Limit{Requests: 1000, Window: time.Minute}
	for _, algorithm := range []string{"fixed_window", "sliding_window"} {
		t.Run(algorithm, func(t *testing.T) {
			t.Parallel()
			h := miniredisHarness(t)
			h.align(limit.Window)
			ctx := context.Background()
			key := h.prefix() + algorithm
			s := newScripts(h.rdb)
			r := Rule{Algorithm: algo(algorithm), Limit: limit, Cost: 100, Key: key, lease: &leaseTake{id: "l1"}}
			ds, ok, err := s.decide(ctx, []Rule{r}, true)
			if err != nil || !ok {
				t.Fatalf("lease take (cost 100) = %v, %v", ok, err)
			}
			one := Rule{Algorithm: algo(algorithm), Limit: limit, Key: key}
			for range 2 {
				if _, err := New(h.rdb, Options{Clock: h.now}).Grant(ctx, []Rule{one}, 1000); err != nil {
					t.Fatalf("Grant(1000) = %v", err)
				}
			}
			rs, _ := resolve([]Rule{r})
			if _, err := s.refund(ctx, rs[0], "l1", 100, 40, ds[0].Now.Add(ds[0].ResetAfter)); err != nil {
				t.Fatalf("refund() error = %v", err)
			}
			if got, want := peekRemaining(t, h, one), 2*limit.Requests-60; got != want {
				t.Errorf("60 admitted from the lease after the grant, 40 given back: %d left, want %d (one limit beyond, less the 60)", got, want)
			}
		})
	}
}

// composeLimit is the limit of the tests where leases meet resets, grants
// and reloads: large enough for leases of a few thousand units, long enough
// that nothing refills or closes while a test runs.
var composeLimit = algorithms.Limit{Requests: 20_000, Window: 1000 * time.Hour}

// leasingEngines returns n engines with leases on one Redis, as n instances of
// the service, closed when the test ends.
func leasingEngines(t *testing.T, h harness, n int) []*Limiter {
	t.Helper()
	out := make([]*Limiter, n)
	for i := range out {
		out[i] = New(h.rdb, Options{Lease: true, DenyCacheSize: 10_000, Timeout: 10 * time.Second, Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
		t.Cleanup(out[i].Close)
	}
	return out
}

// load sends requests requests from callers goroutines spread over engines,
// each request's rules made by rules, and returns how many were admitted.
// check, if not nil, sees every answer with the number of requests admitted
// (by any engine) before its Decide began.
func load(t *testing.T, engines []*Limiter, callers, requests int, rules func() []Rule, check func(res Result, before int)) int {
	t.Helper()
	var next, admitted atomic.Int64
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			l := engines[c%len(engines)]
			for next.Add(1) <= int64(requests) {
				before := int(admitted.Load())
				res, err := l.Decide(context.Background(), rules())
				if err != nil {
					t.Errorf("Decide() error = %v", err)
					return
				}
				if res.Allowed {
					admitted.Add(1)
				}
				if check != nil {
					check(res, before)
				}
			}
		})
	}
	wg.Wait()
	return int(admitted.Load())
}

func taken(engines []*Limiter) int64 {
	var n int64
	for _, l := range engines {
		n += l.leases.taken.Load()
	}
	return n
}

// TestLeaseReset (issue 19, H3): a reset while instances hold leases
// reaches the leased units: from the reset on, all instances together admit
// at most the limit, and once they are closed Redis counts at least what
// they admitted since (the reset left counted the units leased out, which
// their give-backs return exactly).
func TestLeaseReset(t *testing.T) {
	// Not parallel: 64 callers on several engines are load enough.
	for name, mk := range harnesses(t) {
		for _, spec := range leasableSpecs() {
			t.Run(name+"/"+spec.Name, func(t *testing.T) {
				h := mk(t)
				rule := Rule{Algorithm: spec, Limit: composeLimit, Key: h.prefix() + "{k}:" + spec.Name}
				rules := func() []Rule { return []Rule{rule} }
				engines := leasingEngines(t, h, 4)
				limit := composeLimit.Requests
				load(t, engines, 64, limit/2, rules, nil)
				if taken(engines) == 0 {
					t.Fatal("no lease taken before the reset")
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := New(h.rdb, Options{}).Reset(ctx, []Rule{rule}); err != nil {
					t.Fatalf("Reset() error = %v", err)
				}
				after := load(t, engines, 64, 2*limit, rules, nil)
				for _, l := range engines {
					l.Close()
				}
				if after > limit {
					t.Fatalf("admitted %d after Reset, limit %d: over-admitted", after, limit)
				}
				left := peekRemaining(t, h, rule)
				if left > limit-after {
					t.Errorf("Redis has %d left after %d admitted since the reset, want at most %d", left, after, limit-after)
				}
				// Under-admitted: units of leases out at the reset used before it.
				if bound := leaseBound(limit, len(engines)); after+left < limit-bound {
					t.Errorf("admitted %d since the reset with %d left, want at least limit %d - bound %d", after, left, limit, bound)
				}
				t.Logf("admitted %d after the reset (limit %d), Redis has %d left", after, limit, left)
			})
		}
	}
}

// TestLeaseGrant (issue 19, H4 and L1): a grant made while instances hold
// leases is kept whole by their give-backs, and never beyond the grant cap
// (one quota beyond the limit): once every instance is closed, Redis has
// exactly min(limit - admitted + granted, 2 × limit) left; a window's grant
// the cap stopped, at most the leases out less (units of leases out used
// before it stay counted).
func TestLeaseGrant(t *testing.T) {
	// Not parallel: 64 callers on several engines are load enough.
	for name, mk := range harnesses(t) {
		for _, spec := range leasableSpecs() {
			for _, grants := range [][]int{{12_000}, {20_000, 20_000}} {
				t.Run(name+"/"+spec.Name+"/"+strconv.Itoa(len(grants)), func(t *testing.T) {
					h := mk(t)
					rule := Rule{Algorithm: spec, Limit: composeLimit, Key: h.prefix() + "{k}:" + spec.Name}
					engines := leasingEngines(t, h, 4)
					limit := composeLimit.Requests
					admitted := load(t, engines, 64, limit/2, func() []Rule { return []Rule{rule} }, nil)
					if taken(engines) == 0 {
						t.Fatal("no lease taken before the grants")
					}
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					admin, granted := New(h.rdb, Options{}), 0
					for _, n := range grants {
						if _, err := admin.Grant(ctx, []Rule{rule}, n); err != nil {
							t.Fatalf("Grant(%d) error = %v", n, err)
						}
						granted += n
					}
					for _, l := range engines {
						l.Close()
					}
					want := min(limit-admitted+granted, 2*limit)
					// A grant the cap stops leaves the units of the leases out
					// counted (so their give-backs never cross the cap): those
					// used before it stay counted, at most the leases out.
					low := want
					if limit-admitted+granted > 2*limit && !spec.Bucket {
						low = want - leaseBound(limit, len(engines))
					}
					if got := peekRemaining(t, h, rule); got > want || got < low {
						t.Errorf("after %d admitted, grants %v and every give-back: Redis has %d left, want %d (at least %d)", admitted, grants, got, want, low)
					}
				})
			}
		}
	}
}

// TestLeaseReload (issue 19, M2 and M3): a lease belongs to the rules that
// took it. Once the rules of a key change (a reload: a smaller limit, lease:
// off), no request is decided by an old lease, and rules that must not be
// leased are decided by Redis, request by request.
func TestLeaseReload(t *testing.T) {
	t.Parallel()
	big := algorithms.Limit{Requests: 100_000, Window: 1000 * time.Hour}
	small := algorithms.Limit{Requests: 2_000, Window: 1000 * time.Hour}
	tests := []struct {
		name   string
		to     func(r Rule) Rule
		admits bool // the new rules still admit (Redis has room under them)
	}{
		{"smaller limit", func(r Rule) Rule { r.Limit = small; return r }, false},
		{"lease off", func(r Rule) Rule { r.NoLease = true; return r }, true},
		{"below the lease minimum", func(r Rule) Rule {
			r.Limit = algorithms.Limit{Requests: minLeaseQuota - 1, Window: 1000 * time.Hour} // the same window: under fixed_window another one counts afresh
			return r
		}, false},
	}
	for name, mk := range harnesses(t) {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				h := mk(t)
				old := Rule{Algorithm: algo("fixed_window"), Limit: big, Key: h.prefix() + "{k}:fixed_window"}
				engines := leasingEngines(t, h, 1)
				l := engines[0]
				load(t, engines, 16, 5_000, func() []Rule { return []Rule{old} }, nil)
				if l.leases.taken.Load() == 0 {
					t.Fatal("no lease taken under the old rules")
				}
				rule := tt.to(old)
				if tt.admits {
					// The old lease ends at its sweep and gives back: not
					// while Redis is watched below.
					time.Sleep(2 * leaseMaxAge)
				}
				if !tt.admits {
					// Under the new limit, Redis's count is already over it.
					for range 100 {
						res, err := l.Decide(context.Background(), []Rule{rule})
						if err != nil {
							t.Fatalf("Decide() error = %v", err)
						}
						if res.Allowed || res.Decisions[0].Limit != rule.Limit.Requests {
							t.Fatalf("after the reload: Decide() = allowed %v, limit %d; want denied under limit %d", res.Allowed, res.Decisions[0].Limit, rule.Limit.Requests)
						}
					}
					return
				}
				before := l.leases.taken.Load()
				for i := range 100 {
					quota := peekRemaining(t, h, rule)
					res, err := l.Decide(context.Background(), []Rule{rule})
					if err != nil || !res.Allowed {
						t.Fatalf("Decide() = %v, %v", res.Allowed, err)
					}
					if got := peekRemaining(t, h, rule); got != quota-1 {
						t.Fatalf("request %d after the reload: Redis has %d left, want %d (decided by Redis, not a lease)", i+1, got, quota-1)
					}
				}
				if n := l.leases.taken.Load() - before; n != 0 {
					t.Errorf("%d leases taken after the reload, want 0", n)
				}
			})
		}
	}
}

// TestEndLeases: EndLeases gives back every lease's unused units before it
// returns, and leasing goes on afterwards.
func TestEndLeases(t *testing.T) {
	t.Parallel()
	for name, mk := range harnesses(t) {
		t.Run(name, func(t *testing.T) {
			h := mk(t)
			rule := Rule{Algorithm: algo("fixed_window"), Limit: composeLimit, Key: h.prefix() + "{k}:fixed_window"}
			engines := leasingEngines(t, h, 1)
			l := engines[0]
			admitted := load(t, engines, 16, 5_000, func() []Rule { return []Rule{rule} }, nil)
			l.EndLeases()
			if got, want := peekRemaining(t, h, rule), composeLimit.Requests-admitted; got != want {
				t.Errorf("after EndLeases Redis has %d left, want limit - admitted = %d", got, want)
			}
			if n := l.leases.len(); n != 0 {
				t.Errorf("%d rule sets tracked after EndLeases, want 0", n)
			}
			before := l.leases.taken.Load()
			load(t, engines, 16, 5_000, func() []Rule { return []Rule{rule} }, nil)
			if l.leases.taken.Load() == before {
				t.Error("no lease taken after EndLeases")
			}
		})
	}
}

// TestLeaseRemaining (issue 19, M4): under leases on several instances,
// every answer's Remaining is at most what the limit still admits: the
// limit less what all instances had admitted before the request began.
func TestLeaseRemaining(t *testing.T) {
	// Not parallel: 64 callers on several engines are load enough.
	for name, mk := range harnesses(t) {
		for _, spec := range leasableSpecs() {
			t.Run(name+"/"+spec.Name, func(t *testing.T) {
				h := mk(t)
				limit := 10_000
				l := algorithms.Limit{Requests: limit, Window: 1000 * time.Hour}
				rule := Rule{Algorithm: spec, Limit: l, Key: h.prefix() + "{k}:" + spec.Name}
				engines := leasingEngines(t, h, 8)
				var answers, over, most atomic.Int64
				load(t, engines, 64, limit, func() []Rule { return []Rule{rule} }, func(res Result, before int) {
					if !res.Allowed {
						return
					}
					answers.Add(1)
					if by := res.Decisions[0].Remaining - (limit - before - 1); by > 0 {
						over.Add(1)
						for m := most.Load(); int64(by) > m && !most.CompareAndSwap(m, int64(by)); m = most.Load() {
						}
					}
				})
				if taken(engines) == 0 {
					t.Fatal("no lease taken")
				}
				if over.Load() > 0 {
					t.Errorf("%d of %d answers claimed more remaining than the limit still admits (by up to %d)", over.Load(), answers.Load(), most.Load())
				}
			})
		}
	}
}
