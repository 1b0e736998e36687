package limiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
	"tollgate/redistest"
)

// harness is one Redis backend the conformance suite runs on.
type harness struct {
	r   *redistest.Redis
	rdb redis.UniversalClient
	// steered is true where the test moves the clock (miniredis), false on
	// a real server, whose clock the test sleeps through.
	steered bool
	// unit is the window length cases build on: long where time is steered,
	// short where the test has to sleep through it.
	unit time.Duration
	// now reads the backend's clock (for a deny cache that must follow it).
	now func() time.Time
	// advance moves the Redis clock forward by d.
	advance func(d time.Duration)
	// align moves the clock to just after a multiple of w, so a burst does not
	// straddle a fixed window's edge by accident.
	align func(w time.Duration)
	// room makes sure at least need is left before the next multiple of w,
	// aligning only if not: cheaper than align for long windows on real Redis.
	room func(w, need time.Duration)
}

// wait skips t when advancing by d means sleeping for more than a few
// seconds (a calendar's day, on a real Redis): calendar_test.go places
// period ends around Redis's clock there instead.
func (h harness) wait(t *testing.T, d time.Duration) {
	t.Helper()
	if !h.steered && d > 5*time.Second {
		t.Skipf("waiting %v on a real Redis: too long to sleep; calendar_test.go checks period ends on real Redis", d)
	}
}

func miniredisHarness(t *testing.T) harness {
	t.Helper()
	r := redistest.Embedded(t)
	m := r.Mini
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m.SetTime(now)
	m.ClockTTL(true) // keys expire as the steered clock moves, like on a real Redis
	var mu sync.Mutex
	set := func(t time.Time) {
		mu.Lock()
		defer mu.Unlock()
		now = t
		m.SetTime(now)
	}
	align := func(w time.Duration) {
		mu.Lock()
		to := now.Truncate(w).Add(w + time.Millisecond)
		mu.Unlock()
		set(to)
	}
	return harness{
		r:       r,
		rdb:     r.Client,
		steered: true,
		unit:    time.Minute,
		// The steered time itself: what TIME would answer, without asking.
		now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		},
		advance: func(d time.Duration) {
			mu.Lock()
			to := now.Add(d)
			mu.Unlock()
			set(to)
		},
		align: align,
		room:  func(w, _ time.Duration) { align(w) },
	}
}

// sleepingHarness runs on a real Redis (or Cluster), whose clock the test
// cannot steer: it sleeps instead.
func sleepingHarness(t *testing.T, r *redistest.Redis) harness {
	t.Helper()
	rdb := r.Client
	// untilEdge is how long until just after the next multiple of w on Redis's clock.
	untilEdge := func(w time.Duration) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatalf("TIME: %v", err)
		}
		return now.Truncate(w).Add(w + 5*time.Millisecond).Sub(now)
	}
	return harness{
		r:       r,
		rdb:     rdb,
		unit:    time.Second,
		now:     redisClock(t, rdb),
		advance: time.Sleep,
		align:   func(w time.Duration) { time.Sleep(untilEdge(w)) },
		room: func(w, need time.Duration) {
			if d := untilEdge(w); d < need {
				time.Sleep(d)
			}
		},
	}
}

// harnesses returns every backend available: the embedded one always, real
// Redis when TEST_REDIS_URL is set and a Redis Cluster when
// TEST_REDIS_CLUSTER_ADDRS is (.ci/redis-cluster starts one); a backend that
// is set must answer.
func harnesses(t *testing.T) map[string]func(*testing.T) harness {
	t.Helper()
	hs := map[string]func(*testing.T) harness{}
	for name, newRedis := range redistest.Backends() {
		hs[name] = func(t *testing.T) harness { return sleepingHarness(t, newRedis(t)) }
	}
	hs["miniredis"] = miniredisHarness
	if redistest.ClusterAddrs() != "" {
		hs["cluster"] = func(t *testing.T) harness {
			r, _ := redistest.Cluster(t)
			return sleepingHarness(t, r)
		}
	}
	return hs
}

// subtests runs f(t, i) as the subtest names[i], for each i, in parallel:
// each makes a harness of its own, so nothing is shared. (Running the real
// servers' subtests all at once, past -parallel, was tried: their floods of
// concurrent callers then starve the timing cases on a 2-core machine.)
func subtests(t *testing.T, names []string, f func(t *testing.T, i int)) {
	t.Helper()
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f(t, i)
		})
	}
}

// prefix gives a test or case keys of its own under the harness's prefix,
// which the harness deletes when its test ends.
func (h harness) prefix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return h.r.Prefix + hex.EncodeToString(b) + ":"
}

// conformanceCase is one property every algorithm must have, or every
// algorithm of a kind (when).
type conformanceCase struct {
	name string
	run  func(t *testing.T, h harness, s subject)
	// when says which algorithms the case is for; nil: all of them.
	when func(algorithms.Spec) bool
}

// notHeld and isHeld sort cases by whether requests hold their units until
// they end (algorithms.Spec.Held): a denial by a held limit ends when a
// request under way does, so RetryAfter is a poll, not a promise.
func notHeld(s algorithms.Spec) bool { return !s.Held }
func isHeld(s algorithms.Spec) bool  { return s.Held }

// limitOf is l as algorithm spec takes it: a calendar limit keeps the
// requests and counts them per UTC day (its periods are calendar days,
// whatever the window); a held limit's timeout is at most a day.
func limitOf(spec algorithms.Spec, l algorithms.Limit) algorithms.Limit {
	if spec.Held {
		l.Window = min(l.Window, 24*time.Hour)
	}
	if !spec.Calendar {
		return l
	}
	cl, err := algorithms.CalendarLimit(l.Requests, algorithms.Day, time.UTC)
	if err != nil {
		panic(err)
	}
	return cl
}

// subject is the algorithm under test on one backend, with keys of its own,
// decided by the engine that newLimiter makes.
type subject struct {
	h      harness
	spec   algorithms.Spec
	prefix string
	// newLimiter makes the engine the cases decide with.
	newLimiter func(t *testing.T, h harness) *Limiter
}

// single is one rule of the algorithm under test, whose key is the
// subject's prefix, the algorithm and the identity: what the cases decide.
type single struct {
	l      *Limiter
	name   string
	prefix string
	limit  algorithms.Limit
}

// decide decides one request of identity under the rule.
func (a single) decide(ctx context.Context, identity string) (Decision, error) {
	res, err := a.result(ctx, identity)
	if err != nil {
		return Decision{}, err
	}
	return res.Decisions[0], nil
}

// result is decide's whole Result, for Release.
func (a single) result(ctx context.Context, identity string) (Result, error) {
	return a.l.Decide(ctx, []Rule{{Algorithm: algo(a.name), Limit: a.limit, Key: a.prefix + a.name + ":" + identity}})
}

func (s subject) new(t *testing.T, l algorithms.Limit) single {
	t.Helper()
	l = limitOf(s.spec, l)
	if err := s.spec.Validate(l); err != nil {
		t.Fatalf("%s: Validate(%+v): %v", s.spec.Name, l, err)
	}
	return single{l: s.newLimiter(t, s.h), name: s.spec.Name, prefix: s.prefix, limit: l}
}

// horizon is how long one admitted request weighs on the algorithm's
// decisions under l (algorithms.Spec.Horizon).
func (s subject) horizon(t *testing.T, l algorithms.Limit) time.Duration {
	t.Helper()
	return s.spec.Horizon(limitOf(s.spec, l))
}

func allow(t *testing.T, a single, key string) Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := a.decide(ctx, key)
	if err != nil {
		t.Fatalf("Decide(%q): %v", key, err)
	}
	return d
}

// keysUnder lists the keys under prefix, on every master of a cluster.
func keysUnder(t *testing.T, h harness, prefix string) []string {
	t.Helper()
	return (&redistest.Redis{Client: h.rdb, Prefix: prefix}).Keys(t)
}

// maxInSpan is the most of times (sorted) that fall within any span shorter
// than w. Decision.Now is Redis's clock truncated to ms, so two times less
// than w apart here are less than w apart on Redis too.
func maxInSpan(times []time.Time, w time.Duration) int {
	most, first := 0, 0
	for last := range times {
		for times[last].Sub(times[first]) >= w {
			first++
		}
		most = max(most, last-first+1)
	}
	return most
}

var conformanceCases = []conformanceCase{
	{"delay: a burst is admitted for slots at the rate, up to the delay", delayCase, isBucket},
	{"delay: a slot given back is the next request's", delayGiveBackCase, isBucket},
	{"scripts are reloaded after Redis forgets them", func(t *testing.T, h harness, s subject) {
		// As after a failover, a restart or SCRIPT FLUSH: EVALSHA answers
		// NOSCRIPT and the call falls back to EVAL, which loads the script.
		a := s.new(t, algorithms.Limit{Requests: 5, Window: h.unit})
		h.align(h.unit)
		allow(t, a, "k")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		flush := func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() }
		var err error
		if cc, ok := h.rdb.(*redis.ClusterClient); ok {
			err = cc.ForEachMaster(ctx, flush)
		} else {
			err = h.rdb.ScriptFlush(ctx).Err()
		}
		if err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		if d := allow(t, a, "k"); !d.Allowed || d.Remaining != 3 {
			t.Errorf("after SCRIPT FLUSH: Decide() = %+v, want allowed with remaining 3", d)
		}
	}, nil},
	{"first request is admitted with limit-1 remaining", func(t *testing.T, h harness, s subject) {
		l := algorithms.Limit{Requests: 5, Window: h.unit}
		a := s.new(t, l)
		h.align(h.unit)
		d := allow(t, a, "k")
		if !d.Allowed || d.Remaining != 4 || d.Limit != 5 || d.RetryAfter != 0 {
			t.Errorf("Decide() = %+v, want allowed with remaining 4, limit 5, no retry", d)
		}
		if hz := s.horizon(t, l); d.ResetAfter <= 0 || d.ResetAfter > hz {
			t.Errorf("Decide() reset after %v, want in (0, %v]", d.ResetAfter, hz)
		}
		if _, w := a.limit.Span(d.Now); d.Window != w {
			t.Errorf("Decide() window = %v, want %v", d.Window, w)
		}
	}, nil},
	{"a burst admits exactly the limit", func(t *testing.T, h harness, s subject) {
		l := algorithms.Limit{Requests: 5, Window: h.unit}
		a := s.new(t, l)
		h.align(h.unit)
		for i := range 5 {
			d := allow(t, a, "k")
			if !d.Allowed || d.Remaining != 4-i {
				t.Fatalf("request %d: Decide() = %+v, want allowed with remaining %d", i+1, d, 4-i)
			}
		}
		hz := s.horizon(t, l)
		for i := range 3 {
			d := allow(t, a, "k")
			if d.Allowed || d.Remaining != 0 {
				t.Errorf("request %d over the limit: Decide() = %+v, want denied with remaining 0", i+6, d)
			}
			if d.RetryAfter <= 0 || d.RetryAfter > hz {
				t.Errorf("denied Decide() retry after %v, want in (0, %v]", d.RetryAfter, hz)
			}
		}
	}, nil},
	{"quota returns in full after the horizon", func(t *testing.T, h harness, s subject) {
		l := algorithms.Limit{Requests: 3, Window: h.unit}
		a := s.new(t, l)
		h.align(h.unit)
		for range 4 {
			allow(t, a, "k")
		}
		h.wait(t, s.horizon(t, l))
		h.advance(s.horizon(t, l) + 10*time.Millisecond)
		if d := allow(t, a, "k"); !d.Allowed || d.Remaining != 2 {
			t.Errorf("after %v: Decide() = %+v, want allowed with remaining 2", s.horizon(t, l), d)
		}
	}, nil},
	{"a denied request retried at RetryAfter is admitted, and not clearly before", func(t *testing.T, h harness, s subject) {
		a := s.new(t, algorithms.Limit{Requests: 2, Window: h.unit})
		h.align(h.unit)
		allow(t, a, "k")
		allow(t, a, "k")
		d := allow(t, a, "k")
		if d.Allowed {
			t.Fatalf("third request: Decide() = %+v, want denied", d)
		}
		h.wait(t, d.RetryAfter)
		early := d.RetryAfter / 2
		h.advance(early)
		if d2 := allow(t, a, "k"); d2.Allowed {
			t.Errorf("retried after %v of %v: Decide() = %+v, want denied", early, d.RetryAfter, d2)
		}
		h.advance(d.RetryAfter - early + 10*time.Millisecond)
		if d3 := allow(t, a, "k"); !d3.Allowed {
			t.Errorf("retried at RetryAfter %v: Decide() = %+v, want allowed", d.RetryAfter, d3)
		}
	}, notHeld},
	{"a denied request is admitted once a place is given back, and polls within a second", func(t *testing.T, h harness, s subject) {
		a := s.new(t, algorithms.Limit{Requests: 2, Window: 100 * h.unit})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		first, err := a.result(ctx, "k")
		if err != nil || !first.Allowed || !first.Holds() {
			t.Fatalf("first request: Decide() = %+v, %v; want allowed, holding a place", first, err)
		}
		allow(t, a, "k")
		d := allow(t, a, "k")
		if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > time.Second {
			t.Fatalf("third request: Decide() = %+v, want denied with a retry in (0, 1s]", d)
		}
		h.advance(d.RetryAfter)
		if d := allow(t, a, "k"); d.Allowed {
			t.Errorf("after RetryAfter with every place held: Decide() = %+v, want denied", d)
		}
		if err := a.l.Release(ctx, first); err != nil {
			t.Fatalf("Release(): %v", err)
		}
		if d := allow(t, a, "k"); !d.Allowed || d.Remaining != 0 {
			t.Errorf("after a Release: Decide() = %+v, want allowed with remaining 0", d)
		}
		// A second Release of the same result gives back nothing more.
		if err := a.l.Release(ctx, first); err != nil {
			t.Fatalf("Release() again: %v", err)
		}
		if d := allow(t, a, "k"); d.Allowed {
			t.Errorf("after a second Release of one result: Decide() = %+v, want denied", d)
		}
	}, isHeld},
	{"keys are isolated", func(t *testing.T, h harness, s subject) {
		a := s.new(t, algorithms.Limit{Requests: 1, Window: h.unit})
		h.align(h.unit)
		allow(t, a, "alice")
		if d := allow(t, a, "alice"); d.Allowed {
			t.Errorf("alice again: Decide() = %+v, want denied", d)
		}
		if d := allow(t, a, "bob"); !d.Allowed {
			t.Errorf("bob after alice: Decide() = %+v, want allowed", d)
		}
	}, nil},
	{"500 concurrent callers admit exactly the limit", func(t *testing.T, h harness, s subject) {
		const callers, limit = 500, 50
		// A long window: on real Redis the callers take tens of ms, and the
		// refilling algorithms must not earn a token meanwhile (one per 20 units
		// here: callers slowed by a busy machine have taken over 2 s).
		w := 1000 * h.unit
		a := s.new(t, algorithms.Limit{Requests: limit, Window: w})
		h.room(w, 5*h.unit)
		admitted, denied := together(t, callers, func(ctx context.Context) (bool, error) {
			d, err := a.decide(ctx, "k")
			return d.Allowed, err
		})
		if admitted != limit || denied != callers-limit {
			t.Errorf("%d concurrent callers: admitted %d, denied %d; want %d, %d",
				callers, admitted, denied, limit, callers-limit)
		}
	}, nil},
	{"every key has a TTL no longer than needed", func(t *testing.T, h harness, s subject) {
		l := algorithms.Limit{Requests: 2, Window: h.unit}
		a := s.new(t, l)
		for range 3 {
			allow(t, a, "k")
		}
		keys := keysUnder(t, h, s.prefix)
		if len(keys) == 0 {
			t.Fatalf("no keys under %q after three requests", s.prefix)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hz := s.horizon(t, l)
		for _, k := range keys {
			ttl, err := h.rdb.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatalf("PTTL %s: %v", k, err)
			}
			if ttl <= 0 || ttl > hz {
				t.Errorf("PTTL %s = %v, want in (0, %v]", k, ttl, hz)
			}
		}
	}, nil},
	{"memory stays bounded under sustained over-limit traffic", func(t *testing.T, h harness, s subject) {
		const limit = 3
		a := s.new(t, algorithms.Limit{Requests: limit, Window: h.unit})
		h.align(h.unit)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Three windows at twice the limit.
		for step := range 30 {
			allow(t, a, "k")
			last := allow(t, a, "k")
			keys := keysUnder(t, h, s.prefix)
			if len(keys) == 0 && !h.steered && !h.now().Truncate(h.unit).Equal(last.Now.Truncate(h.unit)) {
				// On a real server a fixed window can end between the request and
				// KEYS: its key expires with it. Only then may it be missing.
				h.advance(h.unit / 10)
				continue
			}
			if len(keys) != 1 {
				t.Fatalf("step %d: %d keys under %q (%v), want 1", step, len(keys), s.prefix, keys)
			}
			typ, err := h.rdb.Type(ctx, keys[0]).Result()
			if err != nil {
				t.Fatalf("TYPE %s: %v", keys[0], err)
			}
			// The sliding log is the only algorithm whose key grows with traffic.
			if typ == "zset" {
				if n, err := h.rdb.ZCard(ctx, keys[0]).Result(); err != nil || n > limit {
					t.Fatalf("step %d: ZCARD %s = %d (%v), want <= %d", step, keys[0], n, err, limit)
				}
			}
			h.advance(h.unit / 10)
		}
	}, nil},
}

// propertyCases are what one algorithm promises beyond the conformance cases,
// as documented in docs/algorithms.md.
var propertyCases = map[string][]conformanceCase{
	"fixed_window": {
		{"admits up to twice the limit across a window edge", func(t *testing.T, h harness, s subject) {
			const limit = 5
			a := s.new(t, algorithms.Limit{Requests: limit, Window: h.unit})
			// Windows align to the epoch: the first request just after an
			// edge, the rest of its window's quota spent just before the
			// next edge, and the next window's just after it.
			h.align(h.unit)
			allow(t, a, "k")
			h.advance(h.unit - 100*time.Millisecond)
			var times []time.Time
			for i := range 2*limit - 1 {
				d := allow(t, a, "k")
				if !d.Allowed {
					t.Fatalf("request %d of the edge burst: Decide() = %+v, want allowed", i+1, d)
				}
				times = append(times, d.Now)
				if i == limit-2 {
					h.advance(150 * time.Millisecond) // past the edge
				}
			}
			// Within half a window: far less than the window that should hold
			// at most limit, and slack enough for a loaded machine's slow calls
			// around the 150ms step on a real Redis's clock.
			if n := maxInSpan(times, h.unit/2); n != 2*limit-1 {
				t.Errorf("admitted %d within %v across the edge, want %d (2×limit-1, as documented)", n, h.unit/2, 2*limit-1)
			}
			if d := allow(t, a, "k"); d.Allowed {
				t.Errorf("request after the edge burst: Decide() = %+v, want denied", d)
			}
		}, nil},
	},
	"sliding_log": {
		{"never admits more than the limit in any window-long span", func(t *testing.T, h harness, s subject) {
			const limit = 5
			a := s.new(t, algorithms.Limit{Requests: limit, Window: h.unit})
			h.align(h.unit)
			// Bursts of 3 every 1/8 window for three windows: far over the limit,
			// bunched at window edges too.
			var admitted []time.Time
			for range 24 {
				for range 3 {
					if d := allow(t, a, "k"); d.Allowed {
						admitted = append(admitted, d.Now)
					}
				}
				h.advance(h.unit / 8)
			}
			if n := maxInSpan(admitted, h.unit); n != limit {
				t.Errorf("admitted %d within one window-long span, want %d", n, limit)
			}
			if len(admitted) < 3*limit-limit {
				t.Errorf("admitted %d over three windows, want at least %d", len(admitted), 2*limit)
			}
		}, nil},
	},
	"sliding_window": {
		{"stays within its error bound when traffic bunches at window ends", func(t *testing.T, h harness, s subject) {
			const limit = 5
			a := s.new(t, algorithms.Limit{Requests: limit, Window: h.unit})
			h.align(h.unit)
			h.advance(h.unit - 100*time.Millisecond)
			var admitted []time.Time
			onTime := true // each burst stayed inside the window it was aimed at
			// A full burst at the end of one window, then one at the end of the
			// next, less than a window later: the first weighs only ~15% there.
			for range 2 {
				var first, last time.Time
				for i := range 2 * limit {
					d := allow(t, a, "k")
					if i == 0 {
						first = d.Now
					}
					last = d.Now
					if d.Allowed {
						admitted = append(admitted, d.Now)
					}
				}
				onTime = onTime && first.Truncate(h.unit).Equal(last.Truncate(h.unit))
				h.advance(h.unit - 50*time.Millisecond)
			}
			n := maxInSpan(admitted, h.unit)
			if n > 2*limit-1 {
				t.Errorf("admitted %d within one window-long span, want at most %d (2×limit-1)", n, 2*limit-1)
			}
			// The bound is reached here (estimate 5×0.15 = 0.75 lets 4 through):
			// the documented worst case is real. On a real Redis a machine
			// under load can run a burst past its window's end (100 ms); the
			// trace is then another one, and only the bound above holds.
			if !onTime {
				t.Logf("a burst crossed a window edge on Redis's clock; the exact count applies only to the planned trace")
			} else if n != 2*limit-1 {
				t.Errorf("admitted %d within one window-long span, want exactly %d for this trace", n, 2*limit-1)
			}
		}, nil},
		{"never admits more than the limit in an aligned window", func(t *testing.T, h harness, s subject) {
			const limit = 5
			a := s.new(t, algorithms.Limit{Requests: limit, Window: h.unit})
			h.align(h.unit)
			perWindow := map[time.Time]int{}
			var admitted []time.Time
			for range 24 {
				for range 3 {
					if d := allow(t, a, "k"); d.Allowed {
						perWindow[d.Now.Truncate(h.unit)]++
						admitted = append(admitted, d.Now)
					}
				}
				h.advance(h.unit / 8)
			}
			for start, n := range perWindow {
				if n > limit {
					t.Errorf("window at %v admitted %d, want at most %d", start, n, limit)
				}
			}
			if n := maxInSpan(admitted, h.unit); n > 2*limit-1 {
				t.Errorf("admitted %d within one window-long span, want at most %d (2×limit-1)", n, 2*limit-1)
			}
		}, nil},
	},
	"token_bucket": refillCases,
	"gcra":         refillCases,
}

// refillCases hold for both token_bucket and gcra.
var refillCases = []conformanceCase{
	{"after the burst admits one request per window/limit", func(t *testing.T, h harness, s subject) {
		const limit = 5
		interval := h.unit / limit
		a := s.new(t, algorithms.Limit{Requests: limit, Window: h.unit})
		for range limit {
			allow(t, a, "k")
		}
		for i := range limit {
			d := allow(t, a, "k")
			if d.Allowed {
				t.Fatalf("round %d, right after an admission: Decide() = %+v, want denied", i, d)
			}
			if d.RetryAfter <= 0 || d.RetryAfter > interval {
				t.Errorf("round %d: Decide() retry after %v, want in (0, %v]", i, d.RetryAfter, interval)
			}
			h.advance(interval)
			if d := allow(t, a, "k"); !d.Allowed || d.Remaining != 0 {
				t.Errorf("round %d, %v later: Decide() = %+v, want allowed with remaining 0", i, interval, d)
			}
		}
	}, nil},
	{"burst sets the capacity", func(t *testing.T, h harness, s subject) {
		l := algorithms.Limit{Requests: 2, Window: h.unit, Burst: 4}
		a := s.new(t, l)
		for i := range 4 {
			d := allow(t, a, "k")
			if !d.Allowed || d.Remaining != 3-i || d.Limit != 4 {
				t.Fatalf("request %d: Decide() = %+v, want allowed with remaining %d, limit 4", i+1, d, 3-i)
			}
		}
		d := allow(t, a, "k")
		if d.Allowed {
			t.Fatalf("request 5: Decide() = %+v, want denied", d)
		}
		if hz := s.horizon(t, l); d.ResetAfter <= h.unit || d.ResetAfter > hz {
			t.Errorf("Decide() reset after %v, want in (%v, %v]", d.ResetAfter, h.unit, hz)
		}
		if d.RetryAfter > h.unit/2 {
			t.Errorf("Decide() retry after %v, want at most %v", d.RetryAfter, h.unit/2)
		}
	}, nil},
}

// engines are the ways the service builds the engine; the conformance
// suite runs on each: the plain path, and decisions pipelined with denials
// cached as the service wires them (neither may change any decision).
var engines = map[string]func(t *testing.T, h harness) *Limiter{
	"plain": func(t *testing.T, h harness) *Limiter {
		return New(h.rdb, Options{Clock: h.now})
	},
	"pipelined, deny cache": func(t *testing.T, h harness) *Limiter {
		l := New(h.rdb, Options{PipelineBatch: 16, PipelineConns: 2, DenyCacheSize: 1000, Clock: h.now})
		t.Cleanup(l.Close)
		if dc, ok := l.chain.(*denyCache); ok {
			dc.now = h.now
		} else {
			t.Fatalf("engine with DenyCacheSize: outermost stage %T, want the deny cache", l.chain)
		}
		return l
	},
}

// TestConformance runs every case on every algorithm of the table, every
// backend and every way the engine is built: a new table entry is tested
// with no new test code.
func TestConformance(t *testing.T) {
	t.Parallel()
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			for engine, newLimiter := range engines {
				t.Run(engine, func(t *testing.T) {
					// Each algorithm gets its own backend clock; its cases share it
					// and run in order.
					specs := algorithms.Specs()
					subtests(t, algorithms.Names(), func(t *testing.T, i int) {
						spec, h := specs[i], newHarness(t)
						for _, tc := range append(conformanceCases, propertyCases[spec.Name]...) {
							if tc.when != nil && !tc.when(spec) {
								continue // the case's when says why
							}
							t.Run(tc.name, func(t *testing.T) {
								tc.run(t, h, subject{h: h, spec: spec, prefix: h.prefix(), newLimiter: newLimiter})
							})
						}
					})
				})
			}
		})
	}
}

func TestDecideRedisDown(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	l := New(rdb, Options{Timeout: time.Second})
	for _, name := range algorithms.Names() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			rules := []Rule{{Algorithm: algo(name), Limit: limitFor(name, algorithms.Limit{Requests: 1, Window: time.Second}), Key: "k"}}
			if res, err := l.Decide(ctx, rules); err == nil || errors.Is(err, algorithms.ErrInvalidLimit) {
				t.Errorf("Decide() with Redis down = %+v, %v; want Redis's error", res, err)
			}
		})
	}
}

// together makes n calls at once (released together, each with a 10s
// deadline) and counts those that call admits and denies; an error fails t.
func together(t *testing.T, n int, call func(ctx context.Context) (allowed bool, err error)) (admitted, denied int64) {
	t.Helper()
	var ok, no atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			allowed, err := call(ctx)
			switch {
			case err != nil:
				t.Errorf("call: %v", err)
			case allowed:
				ok.Add(1)
			default:
				no.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	return ok.Load(), no.Load()
}
