package limiter

import (
	"context"
	"testing"
	"time"

	"tollgate/algorithms"
)

// TestDenyCacheRuleSetExact: as the service wires it (deny cache, scripts on a
// pipeline), 500 concurrent requests under two limits at once admit exactly
// the tighter one; a second flood costs Redis nothing; after RetryAfter the
// subject is admitted again.
func TestDenyCacheRuleSetExact(t *testing.T) {
	t.Parallel()
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			subtests(t, algorithms.Names(), func(t *testing.T, i int) {
				spec := algorithms.Specs()[i]
				name := spec.Name
				const callers, limit = 500, 50
				h := newHarness(t)
				p := newPipeline(h.rdb, 16, 0, 4)
				t.Cleanup(p.stop)
				prefix := h.prefix()
				counted := &counting{next: clocked(newScripts(p), h)}
				dd := newDenyCache(counted, 100)
				dd.now = h.now
				w := 1000 * h.unit // no refill while the callers run, however slowly
				// One hash tag: on a cluster both keys share a slot.
				rules := []Rule{
					{Algorithm: algo(name), Limit: limitOf(spec, algorithms.Limit{Requests: limit, Window: w}), Key: prefix + "{s}:a"},
					{Algorithm: algo(name), Limit: limitOf(spec, algorithms.Limit{Requests: 2 * limit, Window: w}), Key: prefix + "{s}:b"},
				}
				h.room(w, 5*h.unit)
				floodTwice(t, spec, callers, limit, counted, func(ctx context.Context) (bool, error) {
					_, allowed, err := dd.decide(ctx, rules, true)
					return allowed, err
				})
			})
		})
	}
}

// TestDenyCacheRuleSetAdmitsAfterRetryAfter: a denied subject is admitted again
// once the RetryAfter it was given has passed, on every backend.
func TestDenyCacheRuleSetAdmitsAfterRetryAfter(t *testing.T) {
	t.Parallel()
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			subtests(t, algorithms.Names(), func(t *testing.T, i int) {
				spec := algorithms.Specs()[i]
				name := spec.Name
				h := newHarness(t)
				prefix := h.prefix()
				p := newPipeline(h.rdb, 16, 0, 4)
				t.Cleanup(p.stop)
				counted := &counting{next: clocked(newScripts(p), h)}
				dd := newDenyCache(counted, 100)
				dd.now = h.now
				rules := []Rule{{Algorithm: algo(name), Limit: limitOf(spec, algorithms.Limit{Requests: 2, Window: h.unit}), Key: prefix + "k"}}
				decide := func() (Decision, bool) {
					t.Helper()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					ds, allowed, err := dd.decide(ctx, rules, true)
					if err != nil || len(ds) != 1 {
						t.Fatalf("Decide() = %v, %v, %v", ds, allowed, err)
					}
					return ds[0], allowed
				}
				h.align(h.unit)
				decide()
				decide()
				d, allowed := decide()
				if allowed {
					t.Fatalf("third request: Decide() = %+v, want denied", d)
				}
				calls := counted.calls.Load()
				if d2, allowed := decide(); allowed || counted.calls.Load()-calls != cachedCalls(spec, 1) || d2.RetryAfter <= 0 {
					t.Errorf("right after the denial: Decide() = %+v allowed %v, %d more calls to Redis; want denied, %d calls", d2, allowed, counted.calls.Load()-calls, cachedCalls(spec, 1))
				}
				if spec.Held {
					return // its places are held until given back: the conformance suite's held case
				}
				h.wait(t, d.RetryAfter)
				h.advance(d.RetryAfter + 10*time.Millisecond)
				if d3, allowed := decide(); !allowed {
					t.Errorf("after RetryAfter %v: Decide() = %+v, want allowed", d.RetryAfter, d3)
				}
			})
		})
	}
}
