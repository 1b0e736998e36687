package algorithms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// harness is one Redis backend the conformance suite runs on.
type harness struct {
	rdb redis.UniversalClient
	// unit is the window length cases build on: long where time is steered,
	// short where the test has to sleep through it.
	unit time.Duration
	// advance moves the Redis clock forward by d.
	advance func(d time.Duration)
	// align moves the clock to just after a multiple of w, so a burst does not
	// straddle a fixed window's edge by accident.
	align func(w time.Duration)
}

func miniredisHarness(t *testing.T) harness {
	t.Helper()
	m := miniredis.RunT(t)
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
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return harness{
		rdb:     rdb,
		unit:    time.Minute,
		advance: func(d time.Duration) { set(now.Add(d)) },
		align:   func(w time.Duration) { set(now.Truncate(w).Add(w + time.Millisecond)) },
	}
}

func realRedisHarness(t *testing.T, url string) harness {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("TEST_REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("TEST_REDIS_URL=%s is set but Redis does not answer: %v", url, err)
	}
	return harness{
		rdb:     rdb,
		unit:    time.Second,
		advance: time.Sleep,
		align: func(w time.Duration) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			now, err := rdb.Time(ctx).Result()
			if err != nil {
				t.Fatalf("TIME: %v", err)
			}
			time.Sleep(now.Truncate(w).Add(w + 5*time.Millisecond).Sub(now))
		},
	}
}

// harnesses returns every backend available: the embedded one always, real
// Redis when TEST_REDIS_URL is set (and then it must answer).
func harnesses(t *testing.T) map[string]func(*testing.T) harness {
	t.Helper()
	hs := map[string]func(*testing.T) harness{"miniredis": miniredisHarness}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		hs["redis"] = func(t *testing.T) harness { return realRedisHarness(t, url) }
	}
	return hs
}

// uniquePrefix gives each test its own keys on a shared Redis.
func uniquePrefix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	return "test:conformance:" + hex.EncodeToString(b) + ":"
}

// conformanceCase is one property every algorithm must have.
type conformanceCase struct {
	name string
	run  func(t *testing.T, h harness, s subject)
}

// subject is the algorithm under test on one backend, with keys of its own.
type subject struct {
	h      harness
	name   string
	prefix string
}

func (s subject) new(t *testing.T, l Limit) Algorithm {
	t.Helper()
	a, err := New(s.name, s.h.rdb, s.prefix, l)
	if err != nil {
		t.Fatalf("New(%q): %v", s.name, err)
	}
	return a
}

func allow(t *testing.T, a Algorithm, key string) Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := a.Allow(ctx, key)
	if err != nil {
		t.Fatalf("Allow(%q): %v", key, err)
	}
	return d
}

var conformanceCases = []conformanceCase{
	{"first request is admitted with limit-1 remaining", func(t *testing.T, h harness, s subject) {
		a := s.new(t, Limit{Requests: 5, Window: h.unit})
		h.align(h.unit)
		d := allow(t, a, "k")
		if !d.Allowed || d.Remaining != 4 || d.Limit != 5 || d.RetryAfter != 0 {
			t.Errorf("Allow() = %+v, want allowed with remaining 4, limit 5, no retry", d)
		}
		if d.ResetAfter <= 0 || d.ResetAfter > h.unit {
			t.Errorf("Allow() reset after %v, want in (0, %v]", d.ResetAfter, h.unit)
		}
	}},
	{"a burst admits exactly the limit", func(t *testing.T, h harness, s subject) {
		a := s.new(t, Limit{Requests: 5, Window: h.unit})
		h.align(h.unit)
		for i := range 5 {
			d := allow(t, a, "k")
			if !d.Allowed || d.Remaining != 4-i {
				t.Fatalf("request %d: Allow() = %+v, want allowed with remaining %d", i+1, d, 4-i)
			}
		}
		for i := range 3 {
			d := allow(t, a, "k")
			if d.Allowed || d.Remaining != 0 {
				t.Errorf("request %d over the limit: Allow() = %+v, want denied with remaining 0", i+6, d)
			}
			if d.RetryAfter <= 0 || d.RetryAfter > h.unit {
				t.Errorf("denied Allow() retry after %v, want in (0, %v]", d.RetryAfter, h.unit)
			}
		}
	}},
	{"quota returns after the window", func(t *testing.T, h harness, s subject) {
		a := s.new(t, Limit{Requests: 3, Window: h.unit})
		h.align(h.unit)
		for range 4 {
			allow(t, a, "k")
		}
		h.advance(h.unit + 10*time.Millisecond)
		if d := allow(t, a, "k"); !d.Allowed || d.Remaining != 2 {
			t.Errorf("after the window: Allow() = %+v, want allowed with remaining 2", d)
		}
	}},
	{"a denied request retried at RetryAfter is admitted, and not clearly before", func(t *testing.T, h harness, s subject) {
		a := s.new(t, Limit{Requests: 2, Window: h.unit})
		h.align(h.unit)
		allow(t, a, "k")
		allow(t, a, "k")
		d := allow(t, a, "k")
		if d.Allowed {
			t.Fatalf("third request: Allow() = %+v, want denied", d)
		}
		early := d.RetryAfter / 2
		h.advance(early)
		if d2 := allow(t, a, "k"); d2.Allowed {
			t.Errorf("retried after %v of %v: Allow() = %+v, want denied", early, d.RetryAfter, d2)
		}
		h.advance(d.RetryAfter - early + 10*time.Millisecond)
		if d3 := allow(t, a, "k"); !d3.Allowed {
			t.Errorf("retried at RetryAfter %v: Allow() = %+v, want allowed", d.RetryAfter, d3)
		}
	}},
	{"keys are isolated", func(t *testing.T, h harness, s subject) {
		a := s.new(t, Limit{Requests: 1, Window: h.unit})
		h.align(h.unit)
		allow(t, a, "alice")
		if d := allow(t, a, "alice"); d.Allowed {
			t.Errorf("alice again: Allow() = %+v, want denied", d)
		}
		if d := allow(t, a, "bob"); !d.Allowed {
			t.Errorf("bob after alice: Allow() = %+v, want allowed", d)
		}
	}},
	{"500 concurrent callers admit exactly the limit", func(t *testing.T, h harness, s subject) {
		const callers, limit = 500, 50
		a := s.new(t, Limit{Requests: limit, Window: 5 * h.unit})
		h.align(5 * h.unit)
		var admitted, denied atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range callers {
			wg.Go(func() {
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				d, err := a.Allow(ctx, "k")
				switch {
				case err != nil:
					t.Errorf("Allow(): %v", err)
				case d.Allowed:
					admitted.Add(1)
				default:
					denied.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if admitted.Load() != limit || denied.Load() != callers-limit {
			t.Errorf("%d concurrent callers: admitted %d, denied %d; want %d, %d",
				callers, admitted.Load(), denied.Load(), limit, callers-limit)
		}
	}},
	{"every key has a TTL no longer than needed", func(t *testing.T, h harness, s subject) {
		a := s.new(t, Limit{Requests: 2, Window: h.unit})
		for range 3 {
			allow(t, a, "k")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		keys, err := h.rdb.Keys(ctx, s.prefix+"*").Result()
		if err != nil {
			t.Fatalf("KEYS: %v", err)
		}
		if len(keys) == 0 {
			t.Fatalf("no keys under %q after three requests", s.prefix)
		}
		for _, k := range keys {
			ttl, err := h.rdb.PTTL(ctx, k).Result()
			if err != nil {
				t.Fatalf("PTTL %s: %v", k, err)
			}
			if ttl <= 0 || ttl > h.unit {
				t.Errorf("PTTL %s = %v, want in (0, %v]", k, ttl, h.unit)
			}
		}
	}},
}

func TestConformance(t *testing.T) {
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			h := newHarness(t)
			for _, name := range Names() {
				t.Run(name, func(t *testing.T) {
					for _, tc := range conformanceCases {
						t.Run(tc.name, func(t *testing.T) {
							tc.run(t, h, subject{h: h, name: name, prefix: uniquePrefix(t)})
						})
					}
				})
			}
		})
	}
}

func TestNewUnknown(t *testing.T) {
	_, err := New("leaky", redis.NewClient(&redis.Options{}), "p:", Limit{Requests: 1, Window: time.Second})
	if !errors.Is(err, ErrUnknown) {
		t.Errorf("New(leaky) error = %v, want ErrUnknown", err)
	}
}

func TestAllowRedisDown(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			a, err := New(name, rdb, "p:", Limit{Requests: 1, Window: time.Second})
			if err != nil {
				t.Fatalf("New(%q): %v", name, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if d, err := a.Allow(ctx, "k"); err == nil {
				t.Errorf("Allow() with Redis down = %+v, nil; want an error", d)
			}
		})
	}
}
