package limiter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"tollgate/algorithms"
)

// isBucket: the algorithms with future slots, which take a delay
// (Rule.Delay).
func isBucket(s algorithms.Spec) bool { return s.Bucket }

// delayRules is one rule of s's algorithm at 5 per unit, a burst of 1 and a
// delay of two and a half intervals, for identity.
func delayRules(t *testing.T, h harness, s subject, identity string) (*Limiter, []Rule, time.Duration) {
	t.Helper()
	a := s.new(t, algorithms.Limit{Requests: 5, Window: h.unit, Burst: 1})
	interval := h.unit / 5
	return a.l, []Rule{{Algorithm: algo(a.name), Limit: a.limit, Key: a.prefix + a.name + ":" + identity, Delay: 2*interval + interval/2}}, interval
}

// checkWait fails t unless d's Wait puts its slot at slot after first's
// decision, on Redis's clock (time passes between calls on a real Redis),
// within the rounding of both to whole ms.
func checkWait(t *testing.T, what string, first, d Decision, slot time.Duration) {
	t.Helper()
	want := slot - d.Now.Sub(first.Now)
	if got := d.Wait; got < want-2*time.Millisecond || got > want+2*time.Millisecond {
		t.Errorf("%s: Wait = %v, want %v (its slot %v after the first request's decision)", what, got, want, slot)
	}
}

// delayCase: at one moment, a bucket of 1 at 5 per unit with a delay of
// 2.5 intervals admits the first request now and the next two for one and
// two intervals later (Wait), and denies the fourth, whose slot is three
// intervals ahead: beyond the delay.
func delayCase(t *testing.T, h harness, s subject) {
	l, rules, interval := delayRules(t, h, s, "burst")
	ctx := context.Background()
	var first Decision
	for i := range 3 {
		res, err := l.Decide(ctx, rules)
		if err != nil || !res.Allowed {
			t.Fatalf("request %d: Decide() = %+v, %v; want admitted", i+1, res, err)
		}
		if i == 0 {
			first = res.Decisions[0]
			if first.Wait != 0 {
				t.Errorf("request 1: Wait = %v, want 0", first.Wait)
			}
		}
		checkWait(t, fmt.Sprintf("request %d", i+1), first, res.Decisions[0], time.Duration(i)*interval)
		if res.Decisions[0].RetryAfter != 0 || res.Decisions[0].Remaining != 0 {
			t.Errorf("request %d: RetryAfter = %v, Remaining = %d; want 0, 0", i+1, res.Decisions[0].RetryAfter, res.Decisions[0].Remaining)
		}
	}
	res, err := l.Decide(ctx, rules)
	if err != nil || res.Allowed {
		t.Fatalf("request 4: Decide() = %+v, %v; want denied (its slot is beyond the delay)", res, err)
	}
	if got, want := res.Decisions[0].RetryAfter, 3*interval-res.Decisions[0].Now.Sub(first.Now); got < want-2*time.Millisecond || got > want+2*time.Millisecond {
		t.Errorf("request 4: RetryAfter = %v, want %v", got, want)
	}
	// The waits pass: the next request's slot is the one after the last.
	h.advance(2 * interval)
	res, err = l.Decide(ctx, rules)
	if err != nil || !res.Allowed {
		t.Fatalf("request 5, two intervals later: Decide() = %+v, %v; want admitted", res, err)
	}
	checkWait(t, "request 5", first, res.Decisions[0], 3*interval)
}

// delayGiveBackCase: a request admitted for later whose caller went away
// gives its slot back (Refund): the next request takes it.
func delayGiveBackCase(t *testing.T, h harness, s subject) {
	l, rules, interval := delayRules(t, h, s, "gone")
	ctx := context.Background()
	var first, last Result
	for i := range 3 {
		res, err := l.Decide(ctx, rules)
		if err != nil || !res.Allowed {
			t.Fatalf("Decide() = %+v, %v; want admitted", res, err)
		}
		if i == 0 {
			first = res
		}
		last = res
	}
	if _, err := l.Refund(ctx, last); err != nil {
		t.Fatalf("Refund() error = %v", err)
	}
	res, err := l.Decide(ctx, rules)
	if err != nil || !res.Allowed {
		t.Fatalf("Decide() after the give-back = %+v, %v; want admitted for the slot given back", res, err)
	}
	checkWait(t, "after the give-back", first.Decisions[0], res.Decisions[0], 2*interval)
}
