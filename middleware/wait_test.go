package middleware

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/limiter"
	"tollgate/live"
	"tollgate/policy"
	"tollgate/redistest"
)

// shapedPolicy: 5 a second (10 per 2s: a delay is at most the window),
// one at once, and a request that would be admitted within 1.9s waits for
// its slot: ten at once take 0, 0.2, ... 1.8s; an eleventh would take 2s,
// beyond the delay.
const shapedPolicy = `
policies:
  - name: shaped
    key: ip
    limits: [{algorithm: gcra, limit: 10, window: 2s, burst: 1, delay: 1900ms}]
`

// burstPolicy: shapedPolicy at half the rate, 10 per 4s, with a delay of
// 3.7s: ten at once take 0, 0.4, ... 3.6s; an eleventh, decided less than
// 300ms after the first, would take more than 3.7s. (At 5 a second that
// margin is 100ms, which a loaded machine's scheduling can spend.)
const burstPolicy = `
policies:
  - name: shaped
    key: ip
    limits: [{algorithm: gcra, limit: 10, window: 4s, burst: 1, delay: 3700ms}]
`

// waitInstance is one instance: its own engine and middleware on g deciding
// the policy file text, at most
// most requests waiting, refusing them when drain closes.
func waitInstance(t *testing.T, g *redistest.Redis, text string, most int, drain <-chan struct{}) (*RateLimit, http.Handler) {
	t.Helper()
	policies, err := policy.Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	engine := limiter.New(g.Client, limiter.Options{Timeout: 2 * time.Second, DenyCacheSize: 100})
	t.Cleanup(engine.Close)
	lim := NewRateLimit(discard(), engine, live.New(policies, "", g.Prefix, nil), false, 64, RateLimitOptions{MaxWaiting: most, Drain: drain})
	r := gin.New()
	r.GET("/x", lim.Handler(), func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	return lim, r
}

func waitBackends() map[string]func(*testing.T) *redistest.Redis {
	backends := map[string]func(*testing.T) *redistest.Redis{"miniredis": redistest.Embedded}
	for name, mk := range redistest.Backends() {
		backends[name] = mk
	}
	return backends
}

func shapedGet(ctx context.Context, h http.Handler) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/x", nil).WithContext(ctx)
	req.RemoteAddr = "192.0.2.9:1234"
	h.ServeHTTP(w, req)
	return w
}

// until polls cond for up to 5s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestDelayBurst: ten requests at once on two instances sharing a Redis,
// under gcra 2.5/s with a delay (burstPolicy): all are served, spread at the
// rate (any five in a row span two seconds, at most one burst aside), nine say how long
// they waited; an eleventh, whose slot is beyond the delay, gets 429 at once.
func TestDelayBurst(t *testing.T) {
	for name, mk := range waitBackends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := mk(t)
			a, ha := waitInstance(t, g, burstPolicy, 100, nil)
			b, hb := waitInstance(t, g, burstPolicy, 100, nil)
			start := time.Now()
			var mu sync.Mutex
			var done []time.Duration
			var delayed int
			var wg sync.WaitGroup
			for i := range 10 {
				wg.Go(func() {
					w := shapedGet(context.Background(), []http.Handler{ha, hb}[i%2])
					mu.Lock()
					defer mu.Unlock()
					done = append(done, time.Since(start))
					if w.Code != http.StatusOK {
						t.Errorf("request %d: status %d, want 200 (body %s)", i, w.Code, w.Body)
					}
					if w.Header().Get("X-RateLimit-Delayed") != "" {
						delayed++
					}
				})
			}
			until(t, "nine requests waiting", func() bool { return a.Waiting()+b.Waiting() == 9 })
			eleventh := time.Now()
			if w := shapedGet(context.Background(), ha); w.Code != http.StatusTooManyRequests {
				t.Errorf("11th request: status %d, want 429 (slot beyond the delay)", w.Code)
			}
			if took := time.Since(eleventh); took > 500*time.Millisecond {
				t.Errorf("11th request took %v to be refused, want it at once", took)
			}
			wg.Wait()
			slices.Sort(done)
			const slack = 60 * time.Millisecond
			for i := 0; i+5 < len(done); i++ {
				if span := done[i+5] - done[i]; span < 2*time.Second-slack {
					t.Errorf("requests %d..%d completed within %v: more than 5 in 2s (completions %v)", i, i+5, span, done)
				}
			}
			if span := done[9] - done[0]; span < 3600*time.Millisecond-slack || span > 3700*time.Millisecond+4*slack {
				t.Errorf("the burst completed over %v, want 3.6s (completions %v)", span, done)
			}
			if delayed != 9 {
				t.Errorf("%d answers with X-RateLimit-Delayed, want 9", delayed)
			}
			if a.Waiting()+b.Waiting() != 0 {
				t.Errorf("Waiting() = %d + %d after the burst, want 0", a.Waiting(), b.Waiting())
			}
		})
	}
}

// TestDelayClientGone: a client that goes away while its request waits
// gives its slot back: the next request takes it.
func TestDelayClientGone(t *testing.T) {
	for name, mk := range waitBackends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := mk(t)
			lim, h := waitInstance(t, g, shapedPolicy, 100, nil)
			if w := shapedGet(context.Background(), h); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Delayed") != "" {
				t.Fatalf("first request: %d, delayed %q; want 200 at once", w.Code, w.Header().Get("X-RateLimit-Delayed"))
			}
			ctx, cancel := context.WithCancel(context.Background())
			gone := make(chan struct{})
			go func() {
				defer close(gone)
				shapedGet(ctx, h)
			}()
			until(t, "the second request waiting", func() bool { return lim.Waiting() == 1 })
			cancel()
			<-gone
			w := shapedGet(context.Background(), h)
			ms, _ := strconv.Atoi(w.Header().Get("X-RateLimit-Delayed"))
			if w.Code != http.StatusOK || ms > 200 {
				t.Errorf("request after the client went away: %d, delayed %dms; want 200 within 200ms (the slot given back; 400ms without)", w.Code, ms)
			}
		})
	}
}

// TestDelayMaxWaiting: beyond RATE_LIMIT_MAX_WAITING requests waiting on
// the instance, a request that would wait gets 429; when the service shuts
// down, those waiting get 503 at once and their slots back.
func TestDelayMaxWaiting(t *testing.T) {
	g := redistest.Embedded(t)
	drain := make(chan struct{})
	lim, h := waitInstance(t, g, shapedPolicy, 2, drain)
	if w := shapedGet(context.Background(), h); w.Code != http.StatusOK {
		t.Fatalf("first request: %d, want 200", w.Code)
	}
	codes := make(chan int, 2)
	for range 2 {
		go func() { codes <- shapedGet(context.Background(), h).Code }()
	}
	until(t, "two requests waiting", func() bool { return lim.Waiting() == 2 })
	if w := shapedGet(context.Background(), h); w.Code != http.StatusTooManyRequests {
		t.Errorf("third request waiting at most 2: status %d, want 429", w.Code)
	}
	close(drain)
	for range 2 {
		if code := <-codes; code != http.StatusServiceUnavailable {
			t.Errorf("request waiting at shutdown: status %d, want 503", code)
		}
	}
	if w := shapedGet(context.Background(), h); w.Code != http.StatusServiceUnavailable && w.Code != http.StatusOK {
		t.Errorf("after shutdown began: status %d", w.Code)
	}
}
