package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"tollgate/auth"
)

// guardRedis is a Redis for guard tests and the key prefix a test owns in it.
type guardRedis struct {
	rdb    *redis.Client
	prefix string
}

// guardBackends returns, per backend, a maker of a Redis: an embedded
// miniredis always, and the real Redis of TEST_REDIS_URL when set (keys under
// a prefix of the test's own, deleted afterwards).
func guardBackends(t *testing.T) map[string]func(t *testing.T) guardRedis {
	t.Helper()
	backends := map[string]func(t *testing.T) guardRedis{
		"miniredis": func(t *testing.T) guardRedis {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			return guardRedis{rdb: rdb, prefix: "test:"}
		},
	}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) guardRedis {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatalf("TEST_REDIS_URL: %v", err)
			}
			rdb := redis.NewClient(opt)
			b := make([]byte, 6)
			rand.Read(b)
			g := guardRedis{rdb: rdb, prefix: "test:guard:" + hex.EncodeToString(b) + ":"}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if keys, err := rdb.Keys(ctx, g.prefix+"*").Result(); err == nil && len(keys) > 0 {
					rdb.Del(ctx, keys...)
				}
				rdb.Close()
			})
			return g
		}
	}
	return backends
}

// keys lists the Redis keys under the test's prefix.
func (g guardRedis) keys(t *testing.T) []string {
	t.Helper()
	keys, err := g.rdb.Keys(t.Context(), g.prefix+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	return keys
}

// guardEngine serves GET /x behind Identify with a guard of limit failures
// per 15 minutes on rdb, like identifyEngine; passwords are not cached when
// passwordTTL is 0.
func guardEngine(t *testing.T, users auth.Users, rdb redis.Scripter, prefix string, limit int, failOpen bool, passwordTTL time.Duration) *gin.Engine {
	t.Helper()
	return guardEngineTimeout(t, users, rdb, prefix, limit, failOpen, passwordTTL, time.Second)
}

// guardEngineTimeout is guardEngine with Identify's timeout (the wait for a
// place, and each check) set to timeout.
func guardEngineTimeout(t *testing.T, users auth.Users, rdb redis.Scripter, prefix string, limit int, failOpen bool, passwordTTL, timeout time.Duration) *gin.Engine {
	t.Helper()
	guard, err := auth.NewGuard(rdb, prefix, limit, 15*time.Minute, 720*time.Hour, time.Second, failOpen)
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	r := gin.New()
	r.GET("/x", newIdentify(discard(), users, guard, timeout, passwordTTL, time.Minute, 64), func(c *gin.Context) {
		c.String(http.StatusOK, Identity(c).Subject())
	})
	return r
}

func TestGuardBlocksAfterFailures(t *testing.T) {
	for backend, newRedis := range guardBackends(t) {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &fakeUsers{name: "bob", password: "pw"}
			users.setKey("tg_good", false)
			r := guardEngine(t, users, g.rdb, g.prefix, 10, true, time.Minute)
			const attacker, other, fresh = "192.0.2.1:1234", "198.51.100.2:1234", "203.0.113.3:1234"
			wrong := map[string]string{"Authorization": basic("alice", "guess")}

			// bob logs in from the attacker's address first: his
			// credentials are remembered, known good.
			if w := serve(t, r, attacker, map[string]string{"Authorization": basic("bob", "pw")}); w.Code != http.StatusOK {
				t.Fatalf("bob before the attack: status %d, want 200", w.Code)
			}
			for i := range 10 {
				if w := serve(t, r, attacker, wrong); w.Code != http.StatusUnauthorized {
					t.Fatalf("failure %d: status %d, want 401", i+1, w.Code)
				}
			}
			calls := users.Calls()
			if calls != 11 {
				t.Fatalf("checker called %d times, want 11", calls)
			}

			steps := []struct {
				name       string
				remoteAddr string
				header     map[string]string
				wantStatus int
				wantCheck  bool // the checker runs
			}{
				{"11th attempt from the same IP", attacker, wrong, http.StatusTooManyRequests, false},
				{"the same IP, another name", attacker, map[string]string{"Authorization": basic("carol", "x")}, http.StatusTooManyRequests, false},
				{"the same IP, an API key", attacker, map[string]string{"X-API-Key": "tg_good"}, http.StatusTooManyRequests, false},
				{"another IP, the same name", other, wrong, http.StatusTooManyRequests, false},
				{"remembered credentials from the blocked IP", attacker, map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK, false},
				{"another user from a fresh IP", fresh, map[string]string{"Authorization": basic("bob", "pw2")}, http.StatusUnauthorized, true},
				{"the right password from a fresh IP", other, map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK, false},
				{"a key from a fresh IP", fresh, map[string]string{"X-API-Key": "tg_good"}, http.StatusOK, true},
			}
			for _, s := range steps {
				before := users.Calls()
				w := serve(t, r, s.remoteAddr, s.header)
				if w.Code != s.wantStatus {
					t.Errorf("%s: status %d, want %d", s.name, w.Code, s.wantStatus)
				}
				if checked := users.Calls() > before; checked != s.wantCheck {
					t.Errorf("%s: checker ran = %v, want %v", s.name, checked, s.wantCheck)
				}
				if w.Code != http.StatusTooManyRequests {
					continue
				}
				retry, err := strconv.Atoi(w.Header().Get("Retry-After"))
				if err != nil || retry < 1 || retry > 15*60 {
					t.Errorf("%s: Retry-After = %q, want 1 to 900 seconds", s.name, w.Header().Get("Retry-After"))
				}
				body := decodeJSON(t, w)
				if body["error"] != "too many failed authentication attempts" || body["retry_after"] != float64(retry) {
					t.Errorf("%s: body = %v, want the error and retry_after %d", s.name, body, retry)
				}
			}

			// Keys name the IP and a hash of the user name, never what was sent as one.
			for _, k := range g.keys(t) {
				rest, ok := strings.CutPrefix(k, g.prefix+"authfail:")
				if !ok || strings.Contains(k, "alice") || strings.Contains(k, "guess") {
					t.Errorf("Redis key %q, want %sauthfail:ip:ADDR or ...:user:HASH", k, g.prefix)
				}
				if h, ok := strings.CutPrefix(rest, "user:"); ok {
					if _, err := hex.DecodeString(h); err != nil || len(h) != 16 {
						t.Errorf("Redis key %q: want 16 hex digits after user:", k)
					}
				}
			}
		})
	}
}

func TestGuardCountsOnlyFailures(t *testing.T) {
	for backend, newRedis := range guardBackends(t) {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &fakeUsers{name: "bob", password: "pw"}
			users.setKey("tg_good", false)
			r := guardEngine(t, users, g.rdb, g.prefix, 3, true, 0) // every password is checked
			const ip = "192.0.2.1:1234"
			steps := []struct {
				header     map[string]string
				wantStatus int
			}{
				{map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK},
				{map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK},
				{map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK},
				{map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK},
				{map[string]string{"X-API-Key": "tg_bad"}, http.StatusUnauthorized},
				{map[string]string{"Authorization": basic("bob", "nope")}, http.StatusUnauthorized},
				{map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK},
				{map[string]string{"Authorization": basic("bob", "nope")}, http.StatusUnauthorized},
				{map[string]string{"Authorization": basic("bob", "pw")}, http.StatusTooManyRequests},
				{map[string]string{"X-API-Key": "tg_good"}, http.StatusTooManyRequests},
				{map[string]string{}, http.StatusOK}, // anonymous: nothing to check
				{map[string]string{"Authorization": "Basic !!!"}, http.StatusUnauthorized},
			}
			for i, s := range steps {
				if w := serve(t, r, ip, s.header); w.Code != s.wantStatus {
					t.Errorf("step %d %v: status %d, want %d", i, s.header, w.Code, s.wantStatus)
				}
			}
		})
	}
}

// TestGuardExactUnderConcurrency: an attacker who sends its guesses all at
// once gets no more 401s than one who sends them in turn, whether the
// guesses differ (each its own check) or are all the same (one check shared
// by the requests in flight). Checks are held until the guard has let
// through all it will, so every request reaches the guard while the first
// checks are still running.
func TestGuardExactUnderConcurrency(t *testing.T) {
	const limit, n = 10, 200
	tests := []struct {
		name       string
		password   func(i int) string
		heldChecks int // checks running while they are held
	}{
		{"distinct guesses", func(i int) string { return "guess" + strconv.Itoa(i) }, limit},
		{"one guess", func(int) string { return "guess" }, 1},
	}
	for backend, newRedis := range guardBackends(t) {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				g := newRedis(t)
				release := make(chan struct{})
				users := &fakeUsers{name: "bob", password: "pw", release: release}
				// Checks are held until the test has seen them all start,
				// which on a loaded machine can take longer than a second:
				// a timeout that cut them would answer 503, not the count.
				r := guardEngineTimeout(t, users, g.rdb, g.prefix, limit, false, 0, 10*time.Second)

				codes := make(chan int, n)
				for i := range n {
					go func() {
						codes <- serve(t, r, "192.0.2.1:1234", map[string]string{"Authorization": basic("bob", tt.password(i))}).Code
					}()
				}
				waitCalls(t, users, tt.heldChecks)
				close(release)
				got := map[int]int{}
				for range n {
					got[<-codes]++
				}
				if got[http.StatusUnauthorized] != limit || got[http.StatusTooManyRequests] != n-limit || users.Calls() > limit {
					t.Errorf("statuses %v, checker called %d times; want %d × 401, %d × 429 and at most %d checks",
						got, users.Calls(), limit, n-limit, limit)
				}
				// The failures stay counted: the next guess is refused.
				if w := serve(t, r, "192.0.2.1:1234", map[string]string{"Authorization": basic("bob", "again")}); w.Code != http.StatusTooManyRequests {
					t.Errorf("after the flood: status %d, want 429", w.Code)
				}
			})
		}
	}
}

// TestGuardRightCredentialsWait: checks in flight hold places, but a right
// credential behind them waits for them instead of being refused, and its
// place is given back.
func TestGuardRightCredentialsWait(t *testing.T) {
	for backend, newRedis := range guardBackends(t) {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			release := make(chan struct{})
			users := &fakeUsers{name: "bob", password: "pw", release: release}
			const limit, n = 2, 5
			for i := range n {
				users.setKey("tg_good"+strconv.Itoa(i), false)
			}
			r := guardEngine(t, users, g.rdb, g.prefix, limit, false, 0)

			codes := make(chan int, n)
			for i := range n {
				go func() {
					codes <- serve(t, r, "192.0.2.1:1234", map[string]string{"X-API-Key": "tg_good" + strconv.Itoa(i)}).Code
				}()
			}
			waitCalls(t, users, limit)
			close(release)
			for range n {
				if code := <-codes; code != http.StatusOK {
					t.Errorf("status %d, want 200", code)
				}
			}
			if users.Calls() != n {
				t.Errorf("checker called %d times, want %d", users.Calls(), n)
			}
			if keys := g.keys(t); len(keys) != 0 {
				n, _ := g.rdb.ZCard(t.Context(), keys[0]).Result()
				if n != 0 {
					t.Errorf("%d places still taken after right credentials, want 0", n)
				}
			}
		})
	}
}

// waitCalls waits until the checker has been called want times, then a
// little longer, so that calls beyond want would show up too.
func waitCalls(t *testing.T, users *fakeUsers, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for users.Calls() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if got := users.Calls(); got != want {
		t.Errorf("checker called %d times while checks were held, want %d", got, want)
	}
}

// TestGuardUncheckedKeepsNoPlace: a check that could not run (the user store
// is down) gives its place back; it is not a failed guess.
func TestGuardUncheckedKeepsNoPlace(t *testing.T) {
	for backend, newRedis := range guardBackends(t) {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &fakeUsers{name: "bob", password: "pw", err: errors.New("store down")}
			r := guardEngine(t, users, g.rdb, g.prefix, 2, false, 0)
			wrong := map[string]string{"Authorization": basic("bob", "guess")}
			for i := range 5 {
				if w := serve(t, r, "192.0.2.1:1234", wrong); w.Code != http.StatusServiceUnavailable {
					t.Fatalf("store down, attempt %d: status %d, want 503", i+1, w.Code)
				}
			}
			users.err = nil
			for i, want := range []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusTooManyRequests} {
				if w := serve(t, r, "192.0.2.1:1234", wrong); w.Code != want {
					t.Errorf("store back, attempt %d: status %d, want %d", i+1, w.Code, want)
				}
			}
		})
	}
}

func TestGuardRedisDown(t *testing.T) {
	tests := []struct {
		name       string
		failOpen   bool
		header     map[string]string
		wantStatus int
		wantCalls  int
	}{
		{"open: right password", true, map[string]string{"Authorization": basic("bob", "pw")}, http.StatusOK, 1},
		{"open: wrong password", true, map[string]string{"Authorization": basic("bob", "nope")}, http.StatusUnauthorized, 1},
		{"open: key", true, map[string]string{"X-API-Key": "tg_good"}, http.StatusOK, 1},
		{"closed: right password", false, map[string]string{"Authorization": basic("bob", "pw")}, http.StatusServiceUnavailable, 0},
		{"closed: key", false, map[string]string{"X-API-Key": "tg_good"}, http.StatusServiceUnavailable, 0},
		{"closed: anonymous", false, map[string]string{}, http.StatusOK, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
			t.Cleanup(func() { rdb.Close() })
			m.Close()
			users := &fakeUsers{name: "bob", password: "pw"}
			users.setKey("tg_good", false)
			r := guardEngine(t, users, rdb, "test:", 10, tt.failOpen, time.Minute)

			w := serve(t, r, "192.0.2.1:1234", tt.header)

			if w.Code != tt.wantStatus {
				t.Errorf("status %d, want %d", w.Code, tt.wantStatus)
			}
			if got := users.Calls(); got != tt.wantCalls {
				t.Errorf("checker called %d times, want %d", got, tt.wantCalls)
			}
			if tt.wantStatus == http.StatusServiceUnavailable && w.Header().Get("Retry-After") != "1" {
				t.Errorf("Retry-After = %q, want 1", w.Header().Get("Retry-After"))
			}
		})
	}
}
