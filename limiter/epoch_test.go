package limiter

import (
	"context"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/algorithms"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// wrongScripter counts the script calls Redis answers "wrong window".
type wrongScripter struct {
	redis.Scripter
	wrong atomic.Int64
}

func (c *wrongScripter) count(cmd *redis.Cmd) *redis.Cmd {
	if _, ok := wrongWindow(cmd.Err()); ok {
		c.wrong.Add(1)
	}
	return cmd
}

func (c *wrongScripter) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return c.count(c.Scripter.EvalSha(ctx, sha, keys, args...))
}

func (c *wrongScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.count(c.Scripter.Eval(ctx, script, keys, args...))
}

// TestEpochWindowsOnRedisClock: fixed_window counts the window Redis's
// clock is in, at that window's key alone, whatever the instance's clock
// says; a call made for another window writes nothing and is asked again
// once with Redis's window, after which the engine's corrected clock gets
// it right the first time. Decide, Peek, Grant, Reset and Refund alike.
func TestEpochWindowsOnRedisClock(t *testing.T) {
	const limit = 4
	window := time.Minute
	// Redis is 300ms before a window's end.
	redisNow := time.Date(2030, 1, 1, 0, 1, 0, 0, time.UTC).Add(-300 * time.Millisecond)
	l := algorithms.Limit{Requests: limit, Window: window}
	tests := []struct {
		name  string
		skew  time.Duration // our clock less Redis's
		wrong int64         // calls answered "wrong window": the first at most
	}{
		{"same clock", 0, 0},
		{"a second ahead: the next window", time.Second, 1},
		{"a second behind: the same window", -time.Second, 0},
		{"two windows ahead", 2 * window, 1},
		{"a window and a second behind", -window - time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := miniredis.RunT(t)
			m.SetTime(redisNow)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			counted := &wrongScripter{Scripter: rdb}
			e := New(counted, Options{Clock: func() time.Time { return redisNow.Add(tt.skew) }})
			t.Cleanup(e.Close)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rules := []Rule{{Algorithm: algo("fixed_window"), Limit: l, Key: "{k}:fw"}}
			decide := func(what string, want bool, remaining int) Result {
				t.Helper()
				res, err := e.Decide(ctx, rules)
				if err != nil {
					t.Fatalf("%s: Decide() error = %v", what, err)
				}
				if d := res.Decisions[0]; d.Allowed != want || d.Remaining != remaining {
					t.Fatalf("%s: Decide() = allowed %v, remaining %d; want %v, %d", what, d.Allowed, d.Remaining, want, remaining)
				}
				return res
			}
			first := decide("request 1", true, limit-1)
			if d := first.Decisions[0]; d.ResetAfter != 300*time.Millisecond || d.Window != window {
				t.Errorf("request 1: ResetAfter %v, Window %v; want 300ms (Redis's window's end), %v", d.ResetAfter, d.Window, window)
			}
			if got := counted.wrong.Load(); got != tt.wrong {
				t.Errorf("request 1: %d calls answered wrong window, want %d", got, tt.wrong)
			}
			for i := 2; i <= limit; i++ {
				decide("request", true, limit-i)
			}
			decide("over the limit", false, 0)
			if _, err := e.Grant(ctx, rules, 2); err != nil {
				t.Fatalf("Grant() error = %v", err)
			}
			decide("granted 1", true, 1)
			res := decide("granted 2", true, 0)
			if _, err := e.Refund(ctx, res); err != nil {
				t.Fatalf("Refund() error = %v", err)
			}
			decide("refunded", true, 0)
			if _, err := e.Reset(ctx, rules); err != nil {
				t.Fatalf("Reset() error = %v", err)
			}
			peek, err := e.Peek(ctx, rules)
			if err != nil || peek.Decisions[0].Remaining != limit {
				t.Fatalf("after Reset: Peek() = %+v, %v; want %d remaining", peek, err, limit)
			}
			decide("after the reset", true, limit-1)
			// Every call after the first was made for Redis's window at once.
			if got := counted.wrong.Load(); got != tt.wrong {
				t.Errorf("%d calls answered wrong window in all, want %d (the first call's)", got, tt.wrong)
			}
			n := l.WindowAt(redisNow)
			if got, want := m.Keys(), []string{windowKey("{k}:fw", n)}; !slices.Equal(got, want) {
				t.Errorf("keys %v, want %v: Redis's window's alone", got, want)
			}
			if ttl := m.TTL(windowKey("{k}:fw", n)); ttl != 300*time.Millisecond {
				t.Errorf("TTL of the window's key = %v, want 300ms (the window's end)", ttl)
			}
		})
	}
}

// TestFixedWindowUpgrade: during a rolling upgrade, instances of key
// layout 1 (testdata/fixed_window_v1.lua: a hash at the rule's key, the
// window opening with its first request) and of layout 2 (<key>:<n>,
// epoch-aligned) decide one rule side by side. Each layout counts apart,
// each at most the limit in its own windows: an epoch-aligned window holds
// at most 3 × the limit (its own limit, and those of the two layout-1
// windows that can overlap it); once the old instances stop, the next
// window is exact.
func TestFixedWindowUpgrade(t *testing.T) {
	t.Parallel()
	const limit = 10
	window := time.Minute
	l := algorithms.Limit{Requests: limit, Window: window}
	oldLua, err := os.ReadFile("testdata/fixed_window_v1.lua")
	if err != nil {
		t.Fatal(err)
	}
	old := composeWith([]algorithms.Spec{{Name: "fixed_window", Lua: string(oldLua)}}, singleLua)

	m := miniredis.RunT(t)
	var now atomic.Int64 // Redis's clock and ours, ms
	set := func(t time.Time) { now.Store(t.UnixMilli()); m.SetTime(t) }
	clock := func() time.Time { return time.UnixMilli(now.Load()) }
	// 20s into an epoch-aligned window: layout 1's first window opens there
	// and crosses the next edge.
	start := time.Date(2030, 1, 1, 0, 0, 20, 0, time.UTC)
	set(start)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	e := New(rdb, Options{Clock: clock})
	t.Cleanup(e.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const key = "{k}:p:0:fixed_window"
	rules := []Rule{{Algorithm: algo("fixed_window"), Limit: l, Key: key}}
	decideNew := func() bool {
		res, err := e.Decide(ctx, rules)
		if err != nil {
			t.Fatalf("Decide() error = %v", err)
		}
		return res.Allowed
	}
	decideOld := func() bool {
		// single.lua: mode, nonce, limit, window ms, cost.
		v, err := old.Run(ctx, rdb, []string{key}, "1", "", limit, window.Milliseconds(), 1).Int64Slice()
		if err != nil {
			t.Fatalf("layout 1 script: %v", err)
		}
		return v[0] == 1
	}

	// Both layouts, every 5s for three windows, requests until both deny.
	byWindow := map[int64][2]int{} // epoch window -> admitted by {layout 1, layout 2}
	var oldTimes []time.Time
	for at := start; at.Before(start.Add(3 * window)); at = at.Add(5 * time.Second) {
		set(at)
		n := l.WindowAt(at)
		for {
			o, w := decideOld(), decideNew()
			c := byWindow[n]
			if o {
				c[0]++
				oldTimes = append(oldTimes, at)
			}
			if w {
				c[1]++
			}
			byWindow[n] = c
			if !o && !w {
				break
			}
		}
	}
	mixed := false
	for n, c := range byWindow {
		if c[1] > limit {
			t.Errorf("epoch window %d: layout 2 admitted %d, want at most %d", n, c[1], limit)
		}
		if c[0]+c[1] > 3*limit {
			t.Errorf("epoch window %d: %d + %d admitted, want at most 3 × %d", n, c[0], c[1], limit)
		}
		mixed = mixed || c[0]+c[1] > limit
	}
	if !mixed {
		t.Errorf("admitted by window %v: want the layouts counting apart (more than %d in a window)", byWindow, limit)
	}
	// Layout 1 keeps its own bound: twice the limit in any window-long span.
	if n := maxInSpan(oldTimes, window); n > 2*limit {
		t.Errorf("layout 1 admitted %d in a window-long span, want at most %d", n, 2*limit)
	}

	// The old instances stop: from the next window on, exactly the limit.
	next := time.UnixMilli((l.WindowAt(clock()) + 1) * window.Milliseconds()).UTC()
	for _, at := range []time.Time{next, next.Add(window / 2), next.Add(window - time.Millisecond)} {
		set(at)
		admitted := 0
		for decideNew() {
			admitted++
		}
		if want := map[bool]int{true: limit, false: 0}[at.Equal(next)]; admitted != want {
			t.Errorf("at %v, layout 2 alone: admitted %d, want %d", at, admitted, want)
		}
	}
	set(next.Add(window))
	admitted := 0
	for decideNew() {
		admitted++
	}
	if admitted != limit {
		t.Errorf("the window after: admitted %d, want %d", admitted, limit)
	}
}
