package algorithms

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

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

// TestConformancePipelinedDenyCache runs the whole conformance suite, on every
// backend, with decisions pipelined and denials cached as the service wires
// them: neither may change what any algorithm decides.
func TestConformancePipelinedDenyCache(t *testing.T) {
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			for _, name := range Names() {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					h := newHarness(t)
					p := NewPipeline(h.rdb, 16, 0, 2)
					t.Cleanup(p.Close)
					clock := redisClock(t, h.rdb)
					wrap := func(a Algorithm) Algorithm {
						dc := NewDenyCache(a, 1000)
						dc.now = clock
						return dc
					}
					for _, tc := range append(conformanceCases, propertyCases[name]...) {
						t.Run(tc.name, func(t *testing.T) {
							prefix := uniquePrefix(t)
							t.Cleanup(func() { deleteKeys(t, h, prefix) })
							tc.run(t, h, subject{h: h, name: name, prefix: prefix, rdb: p, wrap: wrap})
						})
					}
				})
			}
		})
	}
}

// countingAlgorithm counts the calls that reach the algorithm (Redis).
type countingAlgorithm struct {
	next  Algorithm
	calls atomic.Int64
}

func (ca *countingAlgorithm) Allow(ctx context.Context, key string) (Decision, error) {
	ca.calls.Add(1)
	return ca.next.Allow(ctx, key)
}

// TestDenyCacheExactUnderConcurrency: 500 concurrent callers through the
// pipeline and the cache admit exactly the limit, and once the denial is
// cached, a second flood costs Redis nothing.
func TestDenyCacheExactUnderConcurrency(t *testing.T) {
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			for _, name := range Names() {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					const callers, limit = 500, 50
					h := newHarness(t)
					p := NewPipeline(h.rdb, 16, 20*time.Microsecond, 4)
					t.Cleanup(p.Close)
					prefix := uniquePrefix(t)
					t.Cleanup(func() { deleteKeys(t, h, prefix) })
					w := 100 * h.unit
					a, err := New(name, p, prefix, Limit{Requests: limit, Window: w})
					if err != nil {
						t.Fatalf("New(%q): %v", name, err)
					}
					counted := &countingAlgorithm{next: a}
					dc := NewDenyCache(counted, 100)
					h.room(w, 5*h.unit)
					flood := func() (admitted, denied int64) {
						return together(t, callers, func(ctx context.Context) (bool, error) {
							d, err := dc.Allow(ctx, "k")
							if err == nil && !d.Allowed && d.RetryAfter <= 0 {
								t.Errorf("denied Allow() retry after %v, want > 0", d.RetryAfter)
							}
							return d.Allowed, err
						})
					}
					if admitted, denied := flood(); admitted != limit || denied != callers-limit {
						t.Errorf("first flood of %d: admitted %d, denied %d; want %d, %d", callers, admitted, denied, limit, callers-limit)
					}
					before := counted.calls.Load()
					if admitted, denied := flood(); admitted != 0 || denied != callers {
						t.Errorf("second flood of %d: admitted %d, denied %d; want 0, %d", callers, admitted, denied, callers)
					}
					if n := counted.calls.Load() - before; n != 0 {
						t.Errorf("second flood: %d calls reached Redis, want 0 (denial cached)", n)
					}
				})
			}
		})
	}
}

// TestDenyCacheMatchesUncached replays one random trace through each algorithm
// with and without the cache, on one steered clock: every decision must be
// the same, including right at and around each RetryAfter.
func TestDenyCacheMatchesUncached(t *testing.T) {
	limits := []Limit{
		{Requests: 3, Window: time.Minute},
		{Requests: 5, Window: time.Minute, Burst: 8},
		{Requests: 1, Window: time.Second},
	}
	for _, name := range Names() {
		for _, l := range limits {
			t.Run(name, func(t *testing.T) {
				h := miniredisHarness(t)
				plain, err := New(name, h.rdb, "plain:", l)
				if err != nil {
					t.Fatalf("New(%q): %v", name, err)
				}
				inner, err := New(name, h.rdb, "cached:", l)
				if err != nil {
					t.Fatalf("New(%q): %v", name, err)
				}
				dc := NewDenyCache(inner, 10)
				dc.now = redisClock(t, h.rdb)
				rng := rand.New(rand.NewPCG(1, uint64(l.Requests)))
				hits := 0
				for step := range 400 {
					var d Decision
					for range 1 + rng.IntN(3) {
						d = allow(t, plain, "k")
						before := len(dc.denied)
						got := allow(t, dc, "k")
						if got.Allowed != d.Allowed {
							t.Fatalf("step %d: cached Allow() allowed = %v, uncached %v", step, got.Allowed, d.Allowed)
						}
						// Redis answers in whole ms; the cache ages by the exact elapsed time.
						if !got.Allowed && (got.RetryAfter <= 0 || got.RetryAfter > d.RetryAfter+time.Millisecond) {
							t.Errorf("step %d: cached Allow() retry after %v, want in (0, %v]", step, got.RetryAfter, d.RetryAfter+time.Millisecond)
						}
						if before > 0 && len(dc.denied) > 0 && !got.Allowed {
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
				if hits == 0 {
					t.Errorf("no denial answered from the cache: the trace does not test it")
				}
			})
		}
	}
}

// fakeAlgorithm denies everything with a fixed RetryAfter, or admits.
type fakeAlgorithm struct {
	allowed bool
	retry   time.Duration
	calls   atomic.Int64
}

func (f *fakeAlgorithm) Allow(context.Context, string) (Decision, error) {
	f.calls.Add(1)
	if f.allowed {
		return Decision{Allowed: true, Limit: 1, Remaining: 0, ResetAfter: f.retry}, nil
	}
	return Decision{Limit: 1, ResetAfter: f.retry, RetryAfter: f.retry, Now: time.Unix(1000, 0)}, nil
}

func TestDenyCacheAgesAndExpires(t *testing.T) {
	f := &fakeAlgorithm{retry: 10 * time.Second}
	dc := NewDenyCache(f, 10)
	now := time.Unix(0, 0)
	dc.now = func() time.Time { return now }
	ctx := context.Background()
	first, _ := dc.Allow(ctx, "k")
	now = now.Add(4 * time.Second)
	d, _ := dc.Allow(ctx, "k")
	if f.calls.Load() != 1 {
		t.Fatalf("4s after a 10s denial: %d calls reached the algorithm, want 1", f.calls.Load())
	}
	want := Decision{Limit: 1, ResetAfter: 6 * time.Second, RetryAfter: 6 * time.Second, Now: first.Now.Add(4 * time.Second)}
	if d != want {
		t.Errorf("cached Allow() = %+v, want %+v", d, want)
	}
	now = now.Add(6*time.Second - time.Millisecond) // the margin: Redis is asked again
	if _, err := dc.Allow(ctx, "k"); err != nil || f.calls.Load() != 2 {
		t.Errorf("at RetryAfter: %d calls reached the algorithm (err %v), want 2", f.calls.Load(), err)
	}
	f.allowed = true
	now = now.Add(10 * time.Second)
	if d, _ := dc.Allow(ctx, "k"); !d.Allowed {
		t.Errorf("after RetryAfter: Allow() = %+v, want allowed", d)
	}
	if d, _ := dc.Allow(ctx, "k"); !d.Allowed || f.calls.Load() != 4 {
		t.Errorf("admissions are never cached: %d calls, want 4", f.calls.Load())
	}
}

func TestDenyCacheBounded(t *testing.T) {
	f := &fakeAlgorithm{retry: time.Minute}
	const size = 100
	dc := NewDenyCache(f, size)
	now := time.Unix(0, 0)
	dc.now = func() time.Time { return now }
	ctx := context.Background()
	for i := range 10 * size {
		dc.Allow(ctx, "k"+string(rune('a'+i%26))+time.Duration(i).String())
		if n := dc.Len(); n > size {
			t.Fatalf("after %d identities: %d cached, want at most %d", i+1, n, size)
		}
		now = now.Add(time.Millisecond)
	}
	// Once every denial has run out, a sweep empties the cache.
	now = now.Add(2 * time.Minute)
	dc.Allow(ctx, "another")
	if n := dc.Len(); n != 1 {
		t.Errorf("after every denial expired: %d cached, want 1", n)
	}
}
