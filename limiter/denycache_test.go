package limiter

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/algorithms"

	"github.com/redis/go-redis/v9"
)

// redisClock reads the time from Redis, so a DenyCache in a test follows the
// harness's clock: steered on miniredis, real on Redis.
func redisClock(t *testing.T, rdb redis.UniversalClient) func() time.Time {
	t.Helper()
	return func() time.Time {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Errorf("TIME: %v", err)
			return time.Now()
		}
		return now
	}
}

// clocked sets the engine's clock of s to the harness's Redis clock:
// calendar periods are computed around it.
func clocked(s *scripts, h harness) *scripts {
	s.now = h.now
	return s
}

// cachedCalls is how many of n repeated denials of spec reach Redis through
// the deny cache: none, but for held limits (concurrency), whose places may
// be given back at any moment, so their denials are never cached.
func cachedCalls(spec algorithms.Spec, n int) int64 {
	if spec.Held {
		return int64(n)
	}
	return 0
}

// counting counts the decisions that reach the stage it wraps (Redis).
type counting struct {
	next  stage
	calls atomic.Int64
}

func (c *counting) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	c.calls.Add(1)
	return c.next.decide(ctx, rules, commit)
}

// one is a rule of algorithm name under l on key, decided through d: what
// the deny cache tests ask one at a time.
func one(t *testing.T, d stage, name string, l algorithms.Limit, key string) Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ds, _, err := d.decide(ctx, []Rule{{Algorithm: algo(name), Limit: l, Key: key}}, true)
	if err != nil {
		t.Fatalf("decide(%s, %q): %v", name, key, err)
	}
	return ds[0]
}

// TestDenyCacheExactUnderConcurrency: 500 concurrent callers through the
// pipeline and the cache admit exactly the limit, and once the denial is
// cached, a second flood costs Redis nothing.
func TestDenyCacheExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			subtests(t, algorithms.Names(), func(t *testing.T, i int) {
				spec := algorithms.Specs()[i]
				name := spec.Name
				const callers, limit = 500, 50
				h := newHarness(t)
				p := newPipeline(h.rdb, 16, 20*time.Microsecond, 4)
				t.Cleanup(p.stop)
				prefix := h.prefix()
				w := 1000 * h.unit // no refill while the callers run, however slowly
				rules := []Rule{{Algorithm: algo(name), Limit: limitOf(spec, algorithms.Limit{Requests: limit, Window: w}), Key: prefix + "k"}}
				counted := &counting{next: clocked(newScripts(p), h)}
				dc := newDenyCache(counted, 100)
				h.room(w, 5*h.unit)
				floodTwice(t, spec, callers, limit, counted, func(ctx context.Context) (bool, error) {
					ds, allowed, err := dc.decide(ctx, rules, true)
					if err == nil && !allowed && ds[0].RetryAfter <= 0 {
						t.Errorf("denied decide() retry after %v, want > 0", ds[0].RetryAfter)
					}
					return allowed, err
				})
			})
		})
	}
}

// floodTwice makes callers concurrent decisions with decide, twice: the
// first flood must admit exactly limit, the second none, and none of its
// decisions may reach counted (the denial is cached).
func floodTwice(t *testing.T, spec algorithms.Spec, callers int, limit int64, counted *counting, decide func(ctx context.Context) (bool, error)) {
	t.Helper()
	if admitted, denied := together(t, callers, decide); admitted != limit || denied != int64(callers)-limit {
		t.Errorf("first flood of %d: admitted %d, denied %d; want %d, %d", callers, admitted, denied, limit, int64(callers)-limit)
	}
	before := counted.calls.Load()
	if admitted, denied := together(t, callers, decide); admitted != 0 || denied != int64(callers) {
		t.Errorf("second flood of %d: admitted %d, denied %d; want 0, %d", callers, admitted, denied, callers)
	}
	// A held limit's denial may end at any moment: never cached.
	if n, want := counted.calls.Load()-before, cachedCalls(spec, callers); n != want {
		t.Errorf("second flood: %d decisions reached Redis, want %d", n, want)
	}
}

// TestDenyCacheMatchesUncached replays one random trace through each algorithm
// with and without the cache, on one steered clock: every decision must be
// the same, including right at and around each RetryAfter.
func TestDenyCacheMatchesUncached(t *testing.T) {
	t.Parallel()
	limits := []algorithms.Limit{
		{Requests: 3, Window: time.Minute},
		{Requests: 5, Window: time.Minute, Burst: 8},
		{Requests: 1, Window: time.Second},
	}
	for _, spec := range algorithms.Specs() {
		name := spec.Name
		for _, l := range limits {
			t.Run(name, func(t *testing.T) {
				t.Parallel() // a miniredis and a cache of its own
				h := miniredisHarness(t)
				l := limitOf(spec, l)
				plain := clocked(newScripts(h.rdb), h)
				dc := newDenyCache(clocked(newScripts(h.rdb), h), 10)
				dc.now = h.now
				rng := rand.New(rand.NewPCG(1, uint64(l.Requests)))
				hits := 0
				for step := range 200 {
					var d Decision
					for range 1 + rng.IntN(3) {
						d = one(t, plain, name, l, "plain:k")
						before := dc.len()
						got := one(t, dc, name, l, "cached:k")
						if got.Allowed != d.Allowed {
							t.Fatalf("step %d: cached decide() allowed = %v, uncached %v", step, got.Allowed, d.Allowed)
						}
						// Redis answers in whole ms; the cache ages by the exact elapsed time.
						if !got.Allowed && (got.RetryAfter <= 0 || got.RetryAfter > d.RetryAfter+time.Millisecond) {
							t.Errorf("step %d: cached decide() retry after %v, want in (0, %v]", step, got.RetryAfter, d.RetryAfter+time.Millisecond)
						}
						if before > 0 && dc.len() > 0 && !got.Allowed {
							hits++
						}
					}
					// Often land exactly on, just before or just after a RetryAfter.
					switch gap := l.Window / time.Duration(l.Requests); {
					case !d.Allowed && rng.IntN(2) == 0:
						h.advance(d.RetryAfter + time.Duration(rng.IntN(3)-1)*time.Millisecond)
					default:
						h.advance(time.Duration(rng.Int64N(int64(gap))))
					}
				}
				if cached := hits > 0; cached == spec.Held {
					t.Errorf("%d denials answered from the cache; want some (none for a held limit, whose places may be given back at any moment)", hits)
				}
			})
		}
	}
}

// fakeDecider denies every rule with a fixed RetryAfter, or admits.
type fakeDecider struct {
	allowed bool
	retry   time.Duration
	calls   atomic.Int64
}

func (f *fakeDecider) decide(_ context.Context, rules []Rule, _ bool) ([]Decision, bool, error) {
	f.calls.Add(1)
	ds := make([]Decision, len(rules))
	for i := range ds {
		if f.allowed {
			ds[i] = Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: f.retry}
		} else {
			ds[i] = Decision{Limit: 1, ResetAfter: f.retry, RetryAfter: f.retry, Now: time.Unix(1000, 0)}
		}
	}
	return ds, f.allowed, nil
}

// ask decides the one rule of key through d.
func ask(d stage, key string) (Decision, error) {
	ds, _, err := d.decide(context.Background(), []Rule{{Key: key}}, true)
	if err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}

func TestDenyCacheAgesAndExpires(t *testing.T) {
	f := &fakeDecider{retry: 10 * time.Second}
	dc := newDenyCache(f, 10)
	now := time.Unix(0, 0)
	dc.now = func() time.Time { return now }
	first, _ := ask(dc, "k")
	now = now.Add(4 * time.Second)
	d, _ := ask(dc, "k")
	if f.calls.Load() != 1 {
		t.Fatalf("4s after a 10s denial: %d calls reached the algorithm, want 1", f.calls.Load())
	}
	want := Decision{Limit: 1, ResetAfter: 6 * time.Second, RetryAfter: 6 * time.Second, Now: first.Now.Add(4 * time.Second)}
	if d != want {
		t.Errorf("cached decide() = %+v, want %+v", d, want)
	}
	now = now.Add(6*time.Second - time.Millisecond) // the margin: Redis is asked again
	if _, err := ask(dc, "k"); err != nil || f.calls.Load() != 2 {
		t.Errorf("at RetryAfter: %d calls reached the algorithm (err %v), want 2", f.calls.Load(), err)
	}
	f.allowed = true
	now = now.Add(10 * time.Second)
	if d, _ := ask(dc, "k"); !d.Allowed {
		t.Errorf("after RetryAfter: decide() = %+v, want allowed", d)
	}
	if d, _ := ask(dc, "k"); !d.Allowed || f.calls.Load() != 4 {
		t.Errorf("admissions are never cached: %d calls, want 4", f.calls.Load())
	}
}

func TestDenyCacheBounded(t *testing.T) {
	f := &fakeDecider{retry: time.Minute}
	const size = 100
	dc := newDenyCache(f, size)
	now := time.Unix(0, 0)
	dc.now = func() time.Time { return now }
	for i := range 10 * size {
		ask(dc, "k"+string(rune('a'+i%26))+time.Duration(i).String())
		if n := dc.len(); n > size {
			t.Fatalf("after %d identities: %d cached, want at most %d", i+1, n, size)
		}
		now = now.Add(time.Millisecond)
	}
	// Once every denial has run out, a sweep empties the cache.
	now = now.Add(2 * time.Minute)
	ask(dc, "another")
	if n := dc.len(); n != 1 {
		t.Errorf("after every denial expired: %d cached, want 1", n)
	}
}

// TestDenyCacheSeesAChangedLimit: a rule on a denied key with another limit
// (a reloaded policy file, an override) is not answered from the cache: it
// goes to Redis, which admits it under the higher limit.
func TestDenyCacheSeesAChangedLimit(t *testing.T) {
	t.Parallel()
	h := miniredisHarness(t)
	prefix := h.prefix()
	counted := &counting{next: newScripts(h.rdb)}
	dc := newDenyCache(counted, 100)
	dc.now = h.now
	h.room(100*h.unit, 5*h.unit)
	low := algorithms.Limit{Requests: 1, Window: 100 * h.unit}
	one(t, dc, "fixed_window", low, prefix+"k")
	if d := one(t, dc, "fixed_window", low, prefix+"k"); d.Allowed {
		t.Fatalf("second decide() under limit 1 allowed, want denied")
	}
	before := counted.calls.Load()
	if d := one(t, dc, "fixed_window", low, prefix+"k"); d.Allowed || counted.calls.Load() != before {
		t.Fatalf("third decide() under limit 1: allowed %v, %d Redis calls, want denied from the cache", d.Allowed, counted.calls.Load()-before)
	}
	high := algorithms.Limit{Requests: 5, Window: 100 * h.unit}
	d := one(t, dc, "fixed_window", high, prefix+"k")
	if !d.Allowed || d.Limit != 5 {
		t.Errorf("decide() under limit 5 on the denied key = allowed %v, limit %d; want allowed, 5", d.Allowed, d.Limit)
	}
}
