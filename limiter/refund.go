package limiter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"
)

//go:embed lua/refund.lua
var refundLua string

// Refund gives back the units an admitted request took in the rules of
// res (a Result of Decide, or some of its Decisions), atomically, in one
// script per hash tag, through each algorithm's give-back (the module's
// m.refund, as for a lease's unused units): never more than had the
// request not been counted, nothing to a window that has closed since, and
// for gcra and token_bucket less what the bucket has refilled since (a
// request refunded from a full bucket gives back what the bucket has not
// regained by itself). It returns the rules' state after the refund, as a
// Peek answers it (Allowed as in res), for the response's headers.
//
// A request admitted from a lease (Options.Lease) gives its units back to
// the lease, in memory, with no Redis call, while the lease is out and res
// holds all of its rule set's decisions; otherwise to Redis. Decisions of
// algorithms without a give-back (sliding_log, calendar, concurrency: its
// place is Released anyway), made locally (Options.Local) or denied are
// left as they are. Like Release, it runs under its own deadline, not
// ctx's, and fails at once while the circuit is open: a refund not made is
// under-admission, never over-admission. A request admitted before a Reset
// and refunded after it gives its units back once more.
func (l *Limiter) Refund(ctx context.Context, res Result) (Result, error) {
	out := Result{Allowed: res.Allowed, Decisions: append([]Decision(nil), res.Decisions...)}
	if !res.Allowed || len(res.Decisions) == 0 {
		return out, nil
	}
	if l.leases != nil {
		if ds, ok := l.leases.refund(res.Decisions); ok {
			out.Decisions = ds
			return out, nil
		}
	}
	var rs []rule
	var resets []int64
	var at []int
	for i, d := range res.Decisions {
		if d.taken == nil || d.Local || !d.Allowed {
			continue
		}
		rs = append(rs, *d.taken)
		reset := d.Now.Add(d.ResetAfter).UnixMilli()
		if d.lease != nil {
			reset = d.leaseReset // the lease's commit's, not clamped by time
		}
		resets = append(resets, reset)
		at = append(at, i)
	}
	if len(rs) == 0 {
		return out, nil
	}
	if l.breaker.open() {
		return out, ErrCircuitOpen
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.releaseTimeout)
	defer cancel()
	ds, err := l.scripts.refundRules(ctx, rs, resets)
	if err != nil {
		return out, err
	}
	for j, i := range at {
		ds[j].Allowed, ds[j].RetryAfter = true, 0
		out.Decisions[i] = ds[j]
	}
	return out, nil
}

// refundRules runs the refund script for rules (per request costs) whose commits
// returned resets, in one script per hash tag.
func (s *scripts) refundRules(ctx context.Context, rs []rule, resets []int64) ([]Decision, error) {
	groups := s.scriptGroups(rs)
	out := make([]Decision, len(rs))
	var errs []error
	for _, g := range groups {
		sub := make([]rule, len(g))
		for j, i := range g {
			sub[j] = rs[i]
		}
		reply, err := s.call(ctx, s.rdb, s.scriptWith(sub, refundLua), true, func(at time.Time) ([]string, []any) {
			keys := make([]string, len(g))
			args := make([]any, 0, 6*len(g))
			for j, i := range g {
				args, keys[j] = perCall(append(args, s.argsOf(rs[i])...), rs[i], at)
				args = append(args, rs[i].cost, resets[i])
			}
			return keys, args
		}).Int64Slice()
		if err == nil && len(reply) != 4*len(g)+1 {
			err = fmt.Errorf("got %d values, want %d", len(reply), 4*len(g)+1)
		}
		if err != nil {
			names := make([]string, len(g))
			for j := range sub {
				names[j] = sub[j].key
			}
			errs = append(errs, fmt.Errorf("refund %s: %w", strings.Join(names, ", "), err))
			continue
		}
		now := time.UnixMilli(reply[len(reply)-1])
		for j, i := range g {
			v := reply[4*j : 4*j+4]
			_, window := rs[i].limit.Span(now)
			out[i] = Decision{
				Allowed:    v[0] == 1,
				Limit:      rs[i].spec.Quota(rs[i].limit),
				Window:     window,
				Remaining:  int(max(v[1], 0)),
				ResetAfter: time.Duration(v[2]) * time.Millisecond,
				RetryAfter: time.Duration(v[3]) * time.Millisecond,
				Now:        now,
			}
		}
	}
	return out, errors.Join(errs...)
}

// refund gives a request's units back to the lease it was admitted from,
// in memory: ds must be every decision of that lease's rule set, the lease
// still out. It returns what the lease then answers, and false when the
// units must go back to Redis instead.
func (l *leases) refund(ds []Decision) ([]Decision, bool) {
	e, id := ds[0].lease, ds[0].leaseID
	if e == nil || len(ds) != len(e.rules) {
		return nil, false
	}
	for _, d := range ds {
		if d.lease != e || d.leaseID != id {
			return nil, false
		}
	}
	now := l.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.open || e.id != id || !now.Before(e.until) || e.left >= e.n {
		return nil, false
	}
	e.left++
	return e.answer(now), true
}
