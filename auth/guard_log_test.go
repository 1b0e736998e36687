package auth

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"tollgate/redistest"
)

// TestGuardLongLog: a log far longer than the limit (the limit was lowered
// after 200,000 failures were stored) still answers exactly: refused while
// it holds limit failures or more, with the Retry-After of the failure that
// must leave, and a place once the limit is above what it holds. Each take
// is a count and an index in Redis, not a read of the whole log; the time
// of one take is logged (go test -v) for docs, not asserted.
func TestGuardLongLog(t *testing.T) {
	const n, step = 200_000, 4 * time.Millisecond // failures, spread over 800 s
	const window = 15 * time.Minute
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			if backend == "miniredis" {
				t.Skip("miniredis' sorted sets take seconds per call at 200,000 entries; this is about Redis's")
			}
			g := newRedis(t)
			ctx := t.Context()
			probe, err := NewGuard(g.Client, GuardOptions{Prefix: g.Prefix, Failures: 1, Window: window, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatalf("NewGuard: %v", err)
			}
			key := probe.keys("192.0.2.1", "bob")[1]
			now, err := g.Client.Time(ctx).Result()
			if err != nil {
				t.Fatalf("TIME: %v", err)
			}
			since := time.Now()
			// Failure i is i steps old; the newest is i = 0.
			for from := 0; from < n; from += 10_000 {
				members := make([]redis.Z, 0, 10_000)
				for i := from; i < from+10_000; i++ {
					members = append(members, redis.Z{Score: float64(now.Add(-time.Duration(i) * step).UnixMicro()), Member: "f:" + strconv.Itoa(i)})
				}
				if err := g.Client.ZAdd(ctx, key, members...).Err(); err != nil {
					t.Fatalf("ZADD: %v", err)
				}
			}
			g.Client.Expire(ctx, key, time.Hour)

			tests := []struct {
				limit       int
				wantAllowed bool
				wantRetry   time.Duration // about: when the failure that must leave is window old
			}{
				// 10: the 10 newest may stay, failure 10 (40 ms old) must leave.
				{10, false, window - 10*step},
				// 150,000: failures 0..149,999 may stay, failure 150,000 must leave.
				{150_000, false, window - 150_000*step},
				{n, false, window - n*step + step},
				{n + 1, true, 0},
			}
			for _, tt := range tests {
				guard, err := NewGuard(g.Client, GuardOptions{Prefix: g.Prefix, Failures: tt.limit, Window: window, Timeout: 5 * time.Second})
				if err != nil {
					t.Fatalf("NewGuard: %v", err)
				}
				start := time.Now()
				places, allowed, retryAfter, err := guard.Take(ctx, "192.0.2.1", "bob")
				took := time.Since(start)
				if err != nil {
					t.Fatalf("limit %d: Take: %v", tt.limit, err)
				}
				t.Logf("limit %d: one take on a log of %d took %v", tt.limit, n, took)
				// Retry-After is measured from the failure's stored time,
				// and the test's own work since TIME takes a while.
				if allowed != tt.wantAllowed || retryAfter > tt.wantRetry+time.Second || retryAfter < tt.wantRetry-time.Since(since)-time.Second {
					t.Errorf("limit %d: Take = allowed %v, retry after %v; want allowed %v, retry after about %v",
						tt.limit, allowed, retryAfter, tt.wantAllowed, tt.wantRetry)
				}
				if allowed {
					if err := guard.Give(ctx, places); err != nil {
						t.Fatalf("Give: %v", err)
					}
				}
			}
			if got, err := g.Client.ZCard(ctx, key).Result(); err != nil || got != n {
				t.Errorf("log holds %d entries (err %v), want the %d failures", got, err, n)
			}
		})
	}
}

// TestGuardPlacesLeaveAfterWindow: failures, and places of checks whose
// process died, leave the log after the window (on Redis's clock), and
// nothing else does.
func TestGuardPlacesLeaveAfterWindow(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	guard, err := NewGuard(rdb, GuardOptions{Prefix: "test:", Failures: 2, Window: time.Minute, Timeout: time.Second})
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	ctx := t.Context()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.SetTime(start)
	failed, _, _, err := guard.Take(ctx, "192.0.2.1", "")
	if err != nil {
		t.Fatalf("Take: %v", err)
	}
	if err := guard.Fail(ctx, failed); err != nil {
		t.Fatalf("Fail: %v", err)
	}
	m.SetTime(start.Add(10 * time.Second))
	if _, allowed, _, err := guard.Take(ctx, "192.0.2.1", ""); err != nil || !allowed { // its process dies: never ended
		t.Fatalf("second Take = allowed %v, err %v; want a place", allowed, err)
	}
	steps := []struct {
		at          time.Duration
		wantAllowed bool
	}{
		{30 * time.Second, false},               // busy: the dead check holds a place; the wait runs out
		{time.Minute - time.Millisecond, false}, // still
		{time.Minute, true},                     // the failure left
		{time.Minute + 10*time.Second, true},    // the dead check's place left too
	}
	for _, s := range steps {
		m.SetTime(start.Add(s.at))
		wait, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		_, allowed, _, err := guard.Take(wait, "192.0.2.1", "")
		cancel()
		if err != nil || allowed != s.wantAllowed {
			t.Errorf("at %v: Take = allowed %v, err %v; want allowed %v", s.at, allowed, err, s.wantAllowed)
		}
	}
}
