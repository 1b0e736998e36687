package main

import (
	"context"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
)

func TestRedisSlow(t *testing.T) {
	t.Parallel()
	own := startOwnRedis(t)
	opt, _ := redis.ParseURL(own.url)
	p := startProxy(t, opt.Addr)
	env := baseEnv(t, testRedis{url: "redis://" + p.addr() + "/0"})
	env["RATE_LIMIT_TIMEOUT"] = "200ms"
	env["RATE_LIMIT_ON_REDIS_ERROR"] = "open"
	base := service(t, env)
	auth := basic("john_doe", "EXAMPLE_PASSWORD")
	if r := get(t, base+"/continents", auth); r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") == "" {
		t.Fatalf("before the slowdown: status %d, limit %q; want 200 and headers", r.status, r.header.Get("X-RateLimit-Limit"))
	}
	p.setDelay(5 * time.Second)
	// Every request is answered (fail-open) about RATE_LIMIT_TIMEOUT later,
	// never after Redis's 5s delay; once the breaker opens, at once.
	for i := range 8 {
		start := time.Now()
		r := get(t, base+"/continents", auth)
		took := time.Since(start)
		if r.status != http.StatusOK || r.header.Get("X-RateLimit-Checked") != "false" {
			t.Errorf("slow Redis, request %d: status %d, X-RateLimit-Checked %q; want 200, false", i+1, r.status, r.header.Get("X-RateLimit-Checked"))
		}
		if took > 2*time.Second {
			t.Errorf("slow Redis, request %d took %v; want about RATE_LIMIT_TIMEOUT (200ms), far below Redis's 5s", i+1, took)
		}
	}
	p.setDelay(0)
	p.setDown(true) // drop the connections still waiting on slow replies
	p.setDown(false)
	waitForLimiting(t, base, auth)
}

// TestGuardOutlastsLimiterTimeout: the brute-force guard's Redis calls are
// not cut at RATE_LIMIT_TIMEOUT. A Redis slower than that makes the limiter
// fail open, but guesses are still counted and refused.
func TestGuardOutlastsLimiterTimeout(t *testing.T) {
	t.Parallel()
	own := startOwnRedis(t)
	opt, _ := redis.ParseURL(own.url)
	p := startProxy(t, opt.Addr)
	env := baseEnv(t, testRedis{url: "redis://" + p.addr() + "/0"})
	env["RATE_LIMIT_TIMEOUT"] = "50ms"
	env["AUTH_FAIL_LIMIT"] = "3"
	base := service(t, env)
	p.setDelay(150 * time.Millisecond)
	var got []int
	for i := range 5 {
		got = append(got, get(t, base+"/continents", basic("john_doe", "guess"+strconv.Itoa(i))).status)
	}
	if want := []int{401, 401, 401, 429, 429}; !slices.Equal(got, want) {
		t.Errorf("five wrong passwords with Redis 150ms slow, limiter timeout 50ms: statuses %v, want %v", got, want)
	}
}

// load sends GET url with header from 16 workers until the stop it returns
// is called (stop waits for them), and passes each response, with the time
// its request was sent, to record, which runs on the workers.
func load(t *testing.T, client *http.Client, url string, header http.Header, record func(sent time.Time, resp *http.Response)) (stop func()) {
	t.Helper()
	var done atomic.Bool
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for !done.Load() {
				sent := time.Now()
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header = header
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("GET under load: %v", err)
					return
				}
				resp.Body.Close()
				record(sent, resp)
			}
		})
	}
	return func() {
		done.Store(true)
		wg.Wait()
	}
}

// waitForLimiting waits until responses carry rate-limit headers again.
func waitForLimiting(t *testing.T, base string, auth http.Header) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := get(t, base+"/continents", auth)
		if r.header.Get("X-RateLimit-Limit") != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis healthy for 10s: status %d and no rate-limit headers; want limiting to resume", r.status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Not parallel: it counts the process's goroutines.
func TestRedisKilledUnderLoad(t *testing.T) {
	tests := []struct {
		name     string
		failOpen string
		allowed  map[int]bool // statuses acceptable during the outage
	}{
		{"fail open", "true", map[int]bool{200: true, 429: true}},
		{"fail closed", "false", map[int]bool{200: true, 429: true, 503: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			own := startOwnRedis(t)
			env := baseEnv(t, testRedis{url: own.url})
			env["RATE_LIMIT_FAIL_OPEN"] = tt.failOpen
			env["RATE_LIMIT_TIMEOUT"] = "300ms"
			env["RATE_LIMIT_LIMIT"] = "1000000"
			base := service(t, env)
			auth := basic("john_doe", "EXAMPLE_PASSWORD")
			get(t, base+"/continents", auth) // warm the credential cache

			client := &http.Client{Timeout: 10 * time.Second}
			// hammer sends requests from 16 workers while during runs.
			hammer := func(during func()) map[int]int {
				var mu sync.Mutex
				counts := map[int]int{}
				stop := load(t, client, base+"/continents", auth, func(_ time.Time, resp *http.Response) {
					mu.Lock()
					counts[resp.StatusCode]++
					mu.Unlock()
				})
				during()
				stop()
				client.CloseIdleConnections()
				return counts
			}
			// The same load without a fault fills the pools: the baseline.
			hammer(func() { time.Sleep(time.Second) })
			time.Sleep(100 * time.Millisecond)
			runtime.GC()
			before := runtime.NumGoroutine()
			counts := hammer(func() {
				time.Sleep(time.Second)
				own.stop()
				time.Sleep(1500 * time.Millisecond)
				own.start()
				time.Sleep(time.Second)
			})

			for status, n := range counts {
				if !tt.allowed[status] {
					t.Errorf("during the outage: %d responses with status %d; want only %v", n, status, tt.allowed)
				}
			}
			if tt.failOpen == "false" && counts[503] == 0 {
				t.Errorf("fail closed: no 503 while Redis was down (statuses %v)", counts)
			}
			waitForLimiting(t, base, auth)

			// Nothing piles up: goroutines settle back, and the service holds
			// no more Redis connections than its pool.
			deadline := time.Now().Add(10 * time.Second)
			for {
				runtime.GC()
				after := runtime.NumGoroutine()
				if after <= before+5 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("goroutines: %d before the outage, %d after; want no growth", before, after)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if os.Getenv("TEST_REDIS_URL") != "" {
				rdb := redis.NewClient(mustParseURL(t, own.url))
				defer rdb.Close()
				info, err := rdb.Info(context.Background(), "clients").Result()
				if err != nil {
					t.Fatalf("INFO clients: %v", err)
				}
				if n := infoInt(info, "connected_clients"); n > 10*runtime.GOMAXPROCS(0)+2 {
					t.Errorf("Redis connected_clients = %d after the outage, want at most the pool size", n)
				}
			}
		})
	}
}

func mustParseURL(t *testing.T, url string) *redis.Options {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return opt
}

func infoInt(info, field string) int {
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}

// mysqlThroughProxy returns a DSN for this run's database (mysqlRunDSN) that passes
// through a fault proxy, and the proxy.
func mysqlThroughProxy(t *testing.T) (string, *faultProxy) {
	t.Helper()
	dsn := mysqlRunDSN(t)
	if dsn == "" {
		t.Skip("TEST_MYSQL_DSN not set: database faults need a MySQL server")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("TEST_MYSQL_DSN: %v", err)
	}
	p := startProxy(t, cfg.Addr)
	cfg.Addr = p.addr()
	return cfg.FormatDSN(), p
}

func TestDatabaseDownWhileServing(t *testing.T) {
	t.Parallel()
	dsn, p := mysqlThroughProxy(t)
	env := baseEnv(t, sharedRedis(t))
	env["DB_DSN"] = dsn
	env["RATE_LIMIT_LIMIT"] = "100"
	base := service(t, env)
	auth := basic("john_doe", "EXAMPLE_PASSWORD")
	get(t, base+"/continents", auth) // the credential check is cached from here on

	p.setDown(true)
	for _, h := range []http.Header{auth, nil} {
		if r := get(t, base+"/continents", h); r.status != http.StatusOK || !strings.Contains(string(r.body), "ANTARCTICA") {
			t.Errorf("database down: /continents status %d, body %.80s; want 200 with the continents", r.status, r.body)
		}
	}
	if r := get(t, base+"/readyz", nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("database down: /readyz status %d, want 503", r.status)
	}
	if r := get(t, base+"/continents", basic("jane", "JANE_PASSWORD")); r.status != http.StatusServiceUnavailable {
		t.Errorf("database down, uncached credentials: status %d, want 503", r.status)
	}

	p.setDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for get(t, base+"/readyz", nil).status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("database back for 10s: /readyz still not 200")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestDatabaseUnreachableAtStartup(t *testing.T) {
	t.Parallel()
	// A database that hangs up on every connection: a proxy that is down.
	db := startProxy(t, "127.0.0.1:1")
	db.setDown(true)
	env := map[string]string{
		"DB_DRIVER":          "mysql",
		"DB_DSN":             "root@tcp(" + db.addr() + ")/test",
		"DB_CONNECT_TIMEOUT": "2s",
		"PORT":               "0",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, func(k string) string { return env[k] }, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "DB_CONNECT_TIMEOUT") {
		t.Errorf("run() with no database = %v, want an error naming DB_CONNECT_TIMEOUT", err)
	}
}

func TestDatabaseLateAtStartup(t *testing.T) {
	t.Parallel()
	dsn, p := mysqlThroughProxy(t)
	p.setDown(true)
	time.AfterFunc(1500*time.Millisecond, func() { p.setDown(false) })
	env := baseEnv(t, sharedRedis(t))
	env["DB_DSN"] = dsn
	base := service(t, env) // fails the test if start-up gives up
	if r := get(t, base+"/continents", nil); r.status != http.StatusOK {
		t.Errorf("after a late database: status %d, want 200", r.status)
	}
}
