package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"tollgate/limiter"
	"tollgate/policy"
)

// sharedRedis is one Redis (or Cluster) that several instances share: each
// gets a client of its own from connect.
type sharedRedis struct {
	connect func(t *testing.T) redis.UniversalClient
	prefix  string
}

// sharedBackends are the Redis backends instances can share: miniredis
// always, the real Redis of TEST_REDIS_URL and the Cluster of
// TEST_REDIS_CLUSTER_ADDRS when set (keys under a prefix of the test's own,
// deleted afterwards).
func sharedBackends(t *testing.T) map[string]func(t *testing.T) sharedRedis {
	t.Helper()
	prefix := func() string {
		b := make([]byte, 6)
		rand.Read(b)
		return "test:inflight:" + hex.EncodeToString(b) + ":"
	}
	// cleanup deletes the keys under p on every master of rdb.
	cleanup := func(t *testing.T, rdb redis.UniversalClient, p string) {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			del := func(ctx context.Context, c *redis.Client) error {
				keys, err := c.Keys(ctx, p+"*").Result()
				for _, k := range keys {
					c.Del(ctx, k)
				}
				return err
			}
			if cc, ok := rdb.(*redis.ClusterClient); ok {
				_ = cc.ForEachMaster(ctx, del)
			} else {
				_ = del(ctx, rdb.(*redis.Client))
			}
			rdb.Close()
		})
	}
	backends := map[string]func(t *testing.T) sharedRedis{
		"miniredis": func(t *testing.T) sharedRedis {
			m := miniredis.RunT(t)
			return sharedRedis{prefix: "test:", connect: func(t *testing.T) redis.UniversalClient {
				rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
				t.Cleanup(func() { rdb.Close() })
				return rdb
			}}
		},
	}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) sharedRedis {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatalf("TEST_REDIS_URL: %v", err)
			}
			s := sharedRedis{prefix: prefix()}
			cleanup(t, redis.NewClient(opt), s.prefix)
			s.connect = func(t *testing.T) redis.UniversalClient {
				rdb := redis.NewClient(opt)
				t.Cleanup(func() { rdb.Close() })
				return rdb
			}
			return s
		}
	}
	if addrs := os.Getenv("TEST_REDIS_CLUSTER_ADDRS"); addrs != "" {
		backends["cluster"] = func(t *testing.T) sharedRedis {
			opt := &redis.ClusterOptions{Addrs: strings.Split(addrs, ",")}
			s := sharedRedis{prefix: prefix()}
			cleanup(t, redis.NewClusterClient(opt), s.prefix)
			s.connect = func(t *testing.T) redis.UniversalClient {
				rdb := redis.NewClusterClient(opt)
				t.Cleanup(func() { rdb.Close() })
				return rdb
			}
			return s
		}
	}
	return backends
}

// heavy is the policy: at most 4 requests of one caller at once,
// and a token bucket beside it.
func heavy(t *testing.T) []policy.Policy {
	t.Helper()
	policies, err := policy.Parse(strings.NewReader(`
policies:
  - name: heavy
    match: ["GET /slow"]
    key: user_or_ip
    limits:
      - {algorithm: concurrency, limit: 4, timeout: 30s}
      - {algorithm: token_bucket, limit: 100000, window: 1m}`))
	if err != nil {
		t.Fatalf("Parse(): %v", err)
	}
	return policies
}

// instance is one service instance on s: its own client, engine (as the
// service wires it) and limiter, in front of handler at GET /slow.
func instance(t *testing.T, s sharedRedis, handler gin.HandlerFunc) http.Handler {
	t.Helper()
	engine := limiter.New(s.connect(t), limiter.Options{Timeout: 5 * time.Second, PipelineBatch: 16, DenyCacheSize: 1000})
	t.Cleanup(engine.Close)
	l := newLimiter(discard(), engine, heavy(t), s.prefix, false, 64)
	r := gin.New()
	r.Use(Recover(discard()))
	r.GET("/slow", l.Handler(), handler)
	return r
}

// TestInFlightAcrossInstances: three instances on one Redis, 300 concurrent
// slow requests of one caller: never more than 4 run at once (counted
// inside the handler), the 429s say so, and every place is given back.
func TestInFlightAcrossInstances(t *testing.T) {
	for backend, newShared := range sharedBackends(t) {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			s := newShared(t)
			var running, most atomic.Int64
			// The first requests in wait for each other until 4 run at once
			// (a loaded machine may otherwise never overlap four): a fifth
			// admitted meanwhile would show in most.
			full := make(chan struct{})
			var fullOnce sync.Once
			slow := func(c *gin.Context) {
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				if n >= 4 {
					fullOnce.Do(func() { close(full) })
				}
				select {
				case <-full:
				case <-time.After(5 * time.Second):
				}
				time.Sleep(20 * time.Millisecond) // the slow work, not a synchronisation
				running.Add(-1)
				c.String(http.StatusOK, "done")
			}
			instances := []http.Handler{instance(t, s, slow), instance(t, s, slow), instance(t, s, slow)}
			const requests = 300
			var ok, denied atomic.Int64
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range requests {
				wg.Go(func() {
					<-start
					w := httptest.NewRecorder()
					req := httptest.NewRequest(http.MethodGet, "/slow", nil)
					req.RemoteAddr = "192.0.2.7:4000"
					instances[i%3].ServeHTTP(w, req)
					switch w.Code {
					case http.StatusOK:
						ok.Add(1)
					case http.StatusTooManyRequests:
						denied.Add(1)
						h := w.Header()
						if h.Get("Retry-After") != "1" ||
							h.Get("RateLimit-Policy") != `"heavy-1";q=4;qu="concurrent-requests", "heavy-2";q=100000;w=60` ||
							!strings.HasPrefix(h.Get("RateLimit"), `"heavy-1";r=0;t=1`) {
							t.Errorf("429 headers: Retry-After %q, RateLimit-Policy %q, RateLimit %q", h.Get("Retry-After"), h.Get("RateLimit-Policy"), h.Get("RateLimit"))
						}
					default:
						t.Errorf("status %d: %s", w.Code, w.Body)
					}
				})
			}
			close(start)
			wg.Wait()
			if m := most.Load(); m != 4 {
				t.Errorf("at most %d requests ran at once, want exactly 4 (the limit, reached)", m)
			}
			if ok.Load()+denied.Load() != requests || ok.Load() < 4 {
				t.Errorf("%d served, %d denied of %d; want every request answered, at least 4 served", ok.Load(), denied.Load(), requests)
			}
			t.Logf("%d served, %d denied; at most %d at once", ok.Load(), denied.Load(), most.Load())
			// Every place was given back: a fresh burst gets all 4.
			assertFree(t, s)
		})
	}
}

// assertFree checks that the caller's 4 places are all free: one more
// instance sees remaining 3 after a request.
func assertFree(t *testing.T, s sharedRedis) {
	t.Helper()
	probe := instance(t, s, func(c *gin.Context) { c.Status(http.StatusNoContent) })
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/slow", nil)
	req.RemoteAddr = "192.0.2.7:4000"
	probe.ServeHTTP(w, req)
	if w.Code != http.StatusNoContent || !strings.HasPrefix(w.Header().Get("RateLimit"), `"heavy-1";r=3;`) {
		t.Errorf("after every request ended: status %d, RateLimit %q; want 204 with r=3 (every place given back)", w.Code, w.Header().Get("RateLimit"))
	}
}

// goneKey holds, in a request's context, the function that makes its client go away.
type goneKey struct{}

// TestInFlightReleasedHoweverTheRequestEnds: a place goes back after
// success, an error, a panic and a client that went away.
func TestInFlightReleasedHoweverTheRequestEnds(t *testing.T) {
	tests := []struct {
		name    string
		handler gin.HandlerFunc
	}{
		{"success", func(c *gin.Context) { c.Status(http.StatusOK) }},
		{"error", func(c *gin.Context) { Abort(c, http.StatusInternalServerError, "internal error", nil) }},
		{"panic", func(c *gin.Context) { panic("boom") }},
		{"client gone", func(c *gin.Context) {
			// The client goes away while the handler runs.
			c.Request.Context().Value(goneKey{}).(context.CancelFunc)()
			<-c.Request.Context().Done()
		}},
	}
	for backend, newShared := range sharedBackends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					s := newShared(t)
					s.prefix += strings.ReplaceAll(tt.name, " ", "_") + ":"
					h := instance(t, s, tt.handler)
					for range 6 { // more than the 4 places: each must have come back
						ctx, cancel := context.WithCancel(context.Background())
						ctx = context.WithValue(ctx, goneKey{}, cancel)
						req := httptest.NewRequest(http.MethodGet, "/slow", nil).WithContext(ctx)
						req.RemoteAddr = "192.0.2.8:4000"
						w := httptest.NewRecorder()
						h.ServeHTTP(w, req)
						cancel()
						if w.Code == http.StatusTooManyRequests || w.Code == http.StatusServiceUnavailable {
							t.Fatalf("status %d: a place was not given back after a request ended by %s", w.Code, tt.name)
						}
					}
					assertFree(t, s)
				})
			}
		})
	}
}

// TestCalendarHeaders: a monthly quota in Berlin, an hour before the
// month (of 31 days and the hour the clocks go back) ends: w is the
// month's length, the reset and Retry-After its real end.
func TestCalendarHeaders(t *testing.T) {
	m := miniredis.RunT(t)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 11, 1, 0, 0, 0, 0, berlin)
	now := end.Add(-time.Hour)
	m.SetTime(now) // Redis's clock
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	engine := limiter.New(rdb, limiter.Options{Timeout: 5 * time.Second, Clock: func() time.Time { return now }})
	policies, err := policy.Parse(strings.NewReader(`
policies:
  - {name: monthly, key: ip, limits: [{algorithm: calendar, limit: 1, period: month, timezone: Europe/Berlin}]}`))
	if err != nil {
		t.Fatal(err)
	}
	l := newLimiter(discard(), engine, policies, "test:", false, 64)
	r := gin.New()
	r.GET("/x", l.Handler(), func(c *gin.Context) { c.Status(http.StatusOK) })

	first := get(t, r, "/x", nil)
	reset := strconv.FormatInt(end.Unix(), 10)
	if h := first.Header(); first.Code != http.StatusOK || h.Get("RateLimit-Policy") != `"monthly";q=1;w=2682000` ||
		h.Get("X-RateLimit-Reset") != reset || h.Get("RateLimit") != `"monthly";r=0;t=3600` {
		t.Errorf("first: %d, RateLimit-Policy %q, X-RateLimit-Reset %q, RateLimit %q; want 200, w=2682000 (31 days and an hour), %s, t=3600",
			first.Code, h.Get("RateLimit-Policy"), h.Get("X-RateLimit-Reset"), h.Get("RateLimit"), reset)
	}
	second := get(t, r, "/x", nil)
	if second.Code != http.StatusTooManyRequests || second.Header().Get("Retry-After") != "3600" || second.Header().Get("X-RateLimit-Reset") != reset {
		t.Errorf("second: %d, Retry-After %q, X-RateLimit-Reset %q; want 429, 3600, %s", second.Code, second.Header().Get("Retry-After"), second.Header().Get("X-RateLimit-Reset"), reset)
	}
	if want := "Too many requests: 1 per month in Europe/Berlin allowed. Try again in 3600 seconds."; !strings.Contains(second.Body.String(), want) {
		t.Errorf("second: body %s, want the message %q", second.Body, want)
	}
	m.SetTime(end) // November: 30 days
	if third := get(t, r, "/x", nil); third.Code != http.StatusOK || third.Header().Get("RateLimit-Policy") != `"monthly";q=1;w=2592000` {
		t.Errorf("in November: %d, RateLimit-Policy %q; want 200, w=2592000", third.Code, third.Header().Get("RateLimit-Policy"))
	}
}

// TestInFlightShadowReleased: a shadow policy's in-flight places, decided
// beside the enforced limits, are given back when the request ends too.
func TestInFlightShadowReleased(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	engine := limiter.New(rdb, limiter.Options{Timeout: 5 * time.Second})
	policies, err := policy.Parse(strings.NewReader(`
policies:
  - {name: watch, key: ip, shadow: true, limits: [{algorithm: concurrency, limit: 1, timeout: 1h}]}
  - {name: rate, key: ip, limits: [{algorithm: fixed_window, limit: 100, window: 1h}]}`))
	if err != nil {
		t.Fatal(err)
	}
	l := newLimiter(discard(), engine, policies, "test:", false, 64)
	r := gin.New()
	r.GET("/x", l.Handler(), func(c *gin.Context) { c.Status(http.StatusOK) })
	for i := range 3 {
		w := get(t, r, "/x", nil)
		if w.Code != http.StatusOK {
			t.Fatalf("request %d: status %d, want 200", i+1, w.Code)
		}
	}
	keys, err := rdb.Keys(t.Context(), "test:*:watch:*").Result()
	if err != nil || len(keys) != 0 {
		t.Errorf("shadow in-flight keys after every request ended: %v (%v), want none (every place given back)", keys, err)
	}
}
