package limiter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
)

// localEngine is an engine on a Redis the test can stop (remote), deciding
// locally on another miniredis when it cannot reach it, with instances
// fixed at n.
func localEngine(t *testing.T, n int) (*Limiter, *miniredis.Miniredis) {
	t.Helper()
	remote := miniredis.RunT(t)
	in := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: remote.Addr(), MaxRetries: -1})
	lrdb := redis.NewClient(&redis.Options{Addr: in.Addr()})
	t.Cleanup(func() { rdb.Close(); lrdb.Close() })
	// The deny cache as configured by default: local denials must not
	// outlive local mode.
	// A long timeout: a stopped Redis refuses (charged back) long before it.
	l := New(rdb, Options{Timeout: 5 * time.Second, Local: lrdb, Instances: n, DenyCacheSize: 100})
	t.Cleanup(l.Close)
	return l, remote
}

// countAdmitted decides n requests of rules and counts the admitted ones,
// failing on an error or when the decisions' Local is not local.
func countAdmitted(t *testing.T, l *Limiter, rules []Rule, n int, local bool) int {
	t.Helper()
	admitted := 0
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := l.Decide(ctx, rules)
		cancel()
		if err != nil {
			t.Fatalf("Decide %d: %v", i+1, err)
		}
		if res.Local() != local {
			t.Fatalf("Decide %d: Local() = %v, want %v", i+1, res.Local(), local)
		}
		if res.Allowed {
			admitted++
		}
	}
	return admitted
}

// waitRemote peeks until local mode has ended (Redis answers again and the
// charge-back is done), failing after 5s.
func waitRemote(t *testing.T, l *Limiter, rules []Rule) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.LocalMode() {
		if time.Now().After(deadline) {
			t.Fatal("Redis back for 5s, local mode still on")
		}
		_, _ = l.Peek(context.Background(), rules) // local peeks start the probes
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLocalModeShareAndChargeBack(t *testing.T) {
	t.Parallel()
	window := time.Hour
	month, err := algorithms.CalendarLimit(10, algorithms.Month, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		limit algorithms.Limit
	}{
		{"fixed_window", algorithms.Limit{Requests: 10, Window: window}},
		{"sliding_window", algorithms.Limit{Requests: 10, Window: window}},
		{"sliding_log", algorithms.Limit{Requests: 10, Window: window}},
		{"token_bucket", algorithms.Limit{Requests: 10, Window: window}},
		{"gcra", algorithms.Limit{Requests: 10, Window: window}},
		{"calendar", month},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, remote := localEngine(t, 3)
			rules := []Rule{{Algorithm: algo(tt.name), Limit: tt.limit, Key: "t:{c}:" + tt.name}}
			if got := countAdmitted(t, l, rules, 2, false); got != 2 {
				t.Fatalf("before the outage: %d admitted, want 2", got)
			}
			remote.Close()
			// ceil(10/3) = 4 locally, whatever was used before.
			if got := countAdmitted(t, l, rules, 6, true); got != 4 {
				t.Errorf("Redis down, 3 instances, limit 10: %d admitted locally, want 4", got)
			}
			if !l.LocalMode() {
				t.Error("LocalMode() = false while Redis is down")
			}
			res, _ := l.Peek(context.Background(), rules)
			if d := res.Decisions[0]; d.Limit != 4 || !d.Local {
				t.Errorf("local peek: Limit %d, Local %v; want the share, 4, and true", d.Limit, d.Local)
			}
			if err := remote.Restart(); err != nil {
				t.Fatal(err)
			}
			waitRemote(t, l, rules)
			// 2 before, 4 local ones charged back (the first's call was
			// refused, not timed out: it was not counted): 4 remain of 10.
			if got := countAdmitted(t, l, rules, 8, false); got != 4 {
				t.Errorf("after the outage: %d admitted, want 4 (10 - 2 before - 4 local charged back)", got)
			}
		})
	}
}

func TestLocalModeRedisDataGone(t *testing.T) {
	t.Parallel()
	l, remote := localEngine(t, 2)
	rules := []Rule{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 10, Window: time.Hour}, Key: "t:{c}:fw"}}
	countAdmitted(t, l, rules, 3, false)
	remote.Close()
	if got := countAdmitted(t, l, rules, 8, true); got != 5 {
		t.Errorf("Redis down, 2 instances, limit 10: %d admitted locally, want 5", got)
	}
	remote.FlushAll() // a Redis restarted without its data
	if err := remote.Restart(); err != nil {
		t.Fatal(err)
	}
	waitRemote(t, l, rules)
	if got := countAdmitted(t, l, rules, 8, false); got != 5 {
		t.Errorf("after a restart that lost the counts: %d admitted, want 5 (10 - 5 charged back)", got)
	}
}

func TestLocalModeInvalidRuleIsNoOutage(t *testing.T) {
	t.Parallel()
	l, remote := localEngine(t, 2)
	remote.Close()
	rules := []Rule{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 10, Window: time.Hour}, Key: "k", Cost: -1}}
	if _, err := l.Decide(context.Background(), rules); !errors.Is(err, ErrInvalidRule) {
		t.Errorf("Decide(cost -1) with Redis down = %v, want ErrInvalidRule", err)
	}
	if l.LocalMode() {
		t.Error("an invalid rule turned local mode on")
	}
}

func TestLocalModeHeldPlaces(t *testing.T) {
	t.Parallel()
	l, remote := localEngine(t, 2)
	rules := []Rule{{Algorithm: algo("concurrency"), Limit: algorithms.Limit{Requests: 4, Window: time.Minute}, Key: "t:{c}:conc"}}
	remote.Close()
	ctx := context.Background()
	var held []Result
	for i := range 3 {
		res, err := l.Decide(ctx, rules)
		if err != nil {
			t.Fatalf("Decide %d: %v", i+1, err)
		}
		if want := i < 2; res.Allowed != want || !res.Local() {
			t.Fatalf("Decide %d: Allowed %v, Local %v; want %v (2 of 4 places locally), true", i+1, res.Allowed, res.Local(), want)
		}
		if res.Allowed {
			held = append(held, res)
		}
	}
	if err := l.Release(ctx, held[0]); err != nil {
		t.Fatalf("Release of a local place: %v", err)
	}
	if res, err := l.Decide(ctx, rules); err != nil || !res.Allowed {
		t.Errorf("after one local place was given back: Allowed %v, %v; want admitted", res.Allowed, err)
	}
}

func TestInstancesCounted(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	var engines []*Limiter
	for range 3 {
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { rdb.Close() })
		l := New(rdb, Options{InstancesKey: "t:instances"})
		engines = append(engines, l)
	}
	// Each counted those before it and itself at start.
	for i, l := range engines {
		if got := l.Instances(); got != i+1 {
			t.Errorf("engine %d: Instances() = %d, want %d", i+1, got, i+1)
		}
	}
	engines[2].Close()
	if err := engines[0].instances.announce(context.Background(), instanceTTL); err != nil {
		t.Fatal(err)
	}
	if got := engines[0].Instances(); got != 2 {
		t.Errorf("after one of 3 closed: Instances() = %d, want 2", got)
	}
	m.FastForward(instanceTTL + time.Second) // engine 2 stops refreshing: lapses
	m.SetTime(time.Now().Add(instanceTTL + time.Second))
	engines[1].instances.close()
	if err := engines[0].instances.announce(context.Background(), instanceTTL); err != nil {
		t.Fatal(err)
	}
	if got := engines[0].Instances(); got != 1 {
		t.Errorf("alone: Instances() = %d, want 1", got)
	}
	m.Close() // Redis gone: the last count holds
	_ = engines[0].instances.announce(context.Background(), instanceTTL)
	if got := engines[0].Instances(); got != 1 {
		t.Errorf("Redis down: Instances() = %d, want the last count, 1", got)
	}
	engines[0].Close()
}

func TestChargeBackCountsOnce(t *testing.T) {
	t.Parallel()
	l, _ := localEngine(t, 2)
	rules := []Rule{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 10, Window: time.Hour}, Key: "t:{c}:once"}}
	rs, err := resolve(rules)
	if err != nil {
		t.Fatal(err)
	}
	c := &charge{r: rs[0], units: 3, until: time.Now().Add(time.Hour), id: "retried"}
	// The same charge twice: a retry after a reply that was lost.
	for range 2 {
		if err := l.local.chargeOne(context.Background(), c, time.Hour); err != nil {
			t.Fatalf("chargeOne: %v", err)
		}
	}
	res, err := l.Peek(context.Background(), rules)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Decisions[0].Remaining; got != 7 {
		t.Errorf("after one charge of 3 tried twice: Remaining = %d, want 7", got)
	}
}

// TestChargeBackAcrossAReload (found by TestComposition, seeds 2 and 4 with
// reloads during outages): what was admitted locally under a limit is
// charged back after a reload changed it during the outage, with what was
// admitted under the new one. Before, the new limit's charge replaced the
// old one's units.
func TestChargeBackAcrossAReload(t *testing.T) {
	t.Parallel()
	l, remote := localEngine(t, 1)
	rules := func(limit int) []Rule {
		return []Rule{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: limit, Window: time.Hour}, Key: "t:{c}:reload"}}
	}
	remote.Close()
	if got := countAdmitted(t, l, rules(10), 3, true); got != 3 {
		t.Fatalf("Redis down, limit 10: %d admitted locally, want 3", got)
	}
	if got := countAdmitted(t, l, rules(12), 2, true); got != 2 {
		t.Fatalf("Redis down, reloaded to 12: %d admitted locally, want 2", got)
	}
	if err := remote.Restart(); err != nil {
		t.Fatal(err)
	}
	waitRemote(t, l, rules(12))
	res, err := l.Peek(context.Background(), rules(12))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Decisions[0].Remaining; got != 7 {
		t.Errorf("after 3 local admissions under limit 10 and 2 under 12: Redis has %d left of 12, want 7", got)
	}
}

// TestLocalModeDelayBeyondShare: a delayed bucket rule whose cost is more
// than this instance's share can hold is denied locally, not refused as an
// invalid rule (the composition test found it: cost 8 of a burst of 8, two
// instances).
func TestLocalModeDelayBeyondShare(t *testing.T) {
	t.Parallel()
	l, remote := localEngine(t, 2)
	rules := []Rule{{Algorithm: algo("gcra"), Limit: algorithms.Limit{Requests: 20, Window: 10 * time.Second, Burst: 8},
		Key: "t:{d}:gcra", Cost: 8, Delay: 2 * time.Second}}
	remote.Close()
	res, err := l.Decide(context.Background(), rules)
	if err != nil {
		t.Fatalf("Decide() of cost 8 on a local share of 4: %v, want a local denial", err)
	}
	if res.Allowed || !res.Local() {
		t.Errorf("Decide(): Allowed %v, Local %v; want denied locally", res.Allowed, res.Local())
	}
}
