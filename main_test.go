package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"tollgate/algorithms"
	"tollgate/auth"
	"tollgate/config"
	"tollgate/limiter"
	"tollgate/middleware"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/routes"
)

// syncBuffer collects a service's log lines; run writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// testRedis is the Redis a test's service uses, and a client to look inside it.
type testRedis struct {
	url string
	rdb *redis.Client
}

// sharedRedis is the real Redis of TEST_REDIS_URL when set (it must answer),
// else a miniredis of the test's own.
func sharedRedis(t *testing.T) testRedis {
	t.Helper()
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		m := miniredis.RunT(t)
		m.ClockTTL(true)
		url = "redis://" + m.Addr() + "/0"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("redis url %q: %v", url, err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s does not answer: %v", url, err)
	}
	return testRedis{url: url, rdb: rdb}
}

// baseEnv points a service at the test's Redis and at this run's database
// on TEST_MYSQL_DSN's server when set (mysqlRunDSN), else at a SQLite file of its own; keys get a prefix
// of their own.
func baseEnv(t *testing.T, r testRedis) map[string]string {
	t.Helper()
	env := map[string]string{
		"REDIS_URL":          r.url,
		"REDIS_KEY_PREFIX":   "test:" + randomHex(6) + ":",
		"RATE_LIMIT_TIMEOUT": "5s", // race-detector builds are slow; faults are tested on their own
		"SEED_USERS":         "john_doe:EXAMPLE_PASSWORD,jane:JANE_PASSWORD",
		"DB_DSN":             filepath.Join(t.TempDir(), "countries.db"),
	}
	if dsn := mysqlRunDSN(t); dsn != "" {
		env["DB_DRIVER"] = "mysql"
		env["DB_DSN"] = dsn
	}
	return env
}

// service runs run() with env on a free port until the test ends, and
// returns its base URL once /healthz answers.
func service(t *testing.T, env map[string]string) string {
	t.Helper()
	base, _ := serviceWithLogs(t, env)
	return base
}

// serviceWithLogs is service, also returning what the service logs; opts
// go to run.
func serviceWithLogs(t *testing.T, env map[string]string, opts ...runOption) (string, *syncBuffer) {
	t.Helper()
	port := freePort(t)
	env["PORT"] = strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, logs, opts...) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run() = %v, want nil after shutdown", err)
		}
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("run() stopped before serving: %v\n%s", err, logs.String())
		default:
		}
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, logs
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("service did not answer /healthz within 60s\n%s", logs.String())
	return "", nil
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func get(t *testing.T, url string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return response{}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("read %s: %v", url, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

func basic(user, password string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
	return h
}

func TestTutorialScenario(t *testing.T) {
	tests := []struct {
		name string
		env  func(t *testing.T) map[string]string
	}{
		{"embedded defaults", func(t *testing.T) map[string]string {
			return map[string]string{"DB_DSN": filepath.Join(t.TempDir(), "countries.db")}
		}},
		{"configured backends", func(t *testing.T) map[string]string { return baseEnv(t, sharedRedis(t)) }},
		{"redis cluster", func(t *testing.T) map[string]string {
			addrs := os.Getenv("TEST_REDIS_CLUSTER_ADDRS")
			if addrs == "" {
				t.Skip("TEST_REDIS_CLUSTER_ADDRS not set (.ci/redis-cluster starts a cluster)")
			}
			env := baseEnv(t, testRedis{})
			env["REDIS_CLUSTER_ADDRS"] = addrs
			return env
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := service(t, tt.env(t))
			auth := basic("john_doe", "EXAMPLE_PASSWORD")
			for i := range 5 {
				r := get(t, base+"/continents", auth)
				if r.status != http.StatusOK {
					t.Fatalf("request %d: status %d, want 200; body %s", i+1, r.status, r.body)
				}
				if got, want := r.header.Get("X-RateLimit-Remaining"), strconv.Itoa(4-i); got != want {
					t.Errorf("request %d: X-RateLimit-Remaining = %q, want %q", i+1, got, want)
				}
				if got := r.header.Get("X-RateLimit-Limit"); got != "5" {
					t.Errorf("request %d: X-RateLimit-Limit = %q, want 5", i+1, got)
				}
				var continents []map[string]any
				if err := json.Unmarshal(r.body, &continents); err != nil || len(continents) != 7 {
					t.Errorf("request %d: body %s, want the seven continents (%v)", i+1, r.body, err)
				} else if continents[0]["continent_id"] != 1.0 || continents[0]["continent_name"] != "ASIA" {
					t.Errorf("request %d: first continent %v, want continent_id 1, continent_name ASIA", i+1, continents[0])
				}
			}
			for i := 5; i < 10; i++ {
				r := get(t, base+"/continents", auth)
				if r.status != http.StatusTooManyRequests {
					t.Fatalf("request %d: status %d, want 429", i+1, r.status)
				}
				retry, err := strconv.Atoi(r.header.Get("Retry-After"))
				if err != nil || retry < 1 || retry > 60 {
					t.Errorf("request %d: Retry-After = %q, want 1..60", i+1, r.header.Get("Retry-After"))
				}
				var body struct {
					Error      string `json:"error"`
					RetryAfter int    `json:"retry_after"`
					Message    string `json:"message"`
				}
				if err := json.Unmarshal(r.body, &body); err != nil || body.Error != "rate limit exceeded" || body.RetryAfter != retry || body.Message == "" {
					t.Errorf("request %d: body %s, want error, retry_after %d and message", i+1, r.body, retry)
				}
				if got := r.header.Get("X-RateLimit-Remaining"); got != "0" {
					t.Errorf("request %d: X-RateLimit-Remaining = %q, want 0", i+1, got)
				}
				if got, want := r.header.Get("Content-Length"), strconv.Itoa(len(r.body)); got != want || r.header.Get("Content-Type") != "application/json; charset=utf-8" {
					t.Errorf("request %d: Content-Length %q, Content-Type %q; want %s and application/json; charset=utf-8", i+1, got, r.header.Get("Content-Type"), want)
				}
			}
			// Health routes are never limited.
			if r := get(t, base+"/healthz", auth); r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != "" {
				t.Errorf("/healthz after the limit: status %d, X-RateLimit-Limit %q; want 200 and none", r.status, r.header.Get("X-RateLimit-Limit"))
			}
			if r := get(t, base+"/readyz", nil); r.status != http.StatusOK {
				t.Errorf("/readyz: status %d, want 200; body %s", r.status, r.body)
			}
		})
	}
}

// statuses sends n concurrent requests with header and counts the statuses.
func statuses(t *testing.T, url string, n int, header http.Header) map[int]int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}, Timeout: 60 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header = header
			<-start
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("GET %s: %v", url, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			mu.Lock()
			counts[resp.StatusCode]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	return counts
}

func TestConcurrentRequestsAdmitExactlyTheLimit(t *testing.T) {
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_LIMIT"] = "50"
	env["RATE_LIMIT_FAIL_OPEN"] = "false" // an unchecked request would be a miscount
	env["SEED_USERS"] = "round1:pw1,round2:pw2,round3:pw3"
	base := service(t, env)
	// Each round is a fresh quota: a user of its own.
	for round := 1; round <= 3; round++ {
		auth := basic(fmt.Sprintf("round%d", round), fmt.Sprintf("pw%d", round))
		got := statuses(t, base+"/continents", 200, auth)
		if got[http.StatusOK] != 50 || got[http.StatusTooManyRequests] != 150 {
			t.Errorf("round %d: 200 concurrent requests with limit 50 gave %v, want 50 × 200 and 150 × 429", round, got)
		}
	}
}

func TestIdentitiesHaveSeparateQuotas(t *testing.T) {
	r := sharedRedis(t)
	env := baseEnv(t, r)
	env["RATE_LIMIT_LIMIT"] = "2"
	env["TRUSTED_PROXIES"] = "127.0.0.1/32"
	base := service(t, env)
	from := func(ip string) http.Header {
		h := http.Header{}
		h.Set("X-Forwarded-For", ip)
		return h
	}
	tests := []struct {
		name   string
		header http.Header
	}{
		{"user john_doe", basic("john_doe", "EXAMPLE_PASSWORD")},
		{"user jane", basic("jane", "JANE_PASSWORD")},
		{"client 203.0.113.7", from("203.0.113.7")},
		{"client 2001:db8::1", from("2001:db8::1")},
	}
	// Each identity gets its own two requests, whatever the others used.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := []int{200, 200, 429}
			for i, w := range want {
				if got := get(t, base+"/continents", tt.header).status; got != w {
					t.Errorf("request %d: status %d, want %d", i+1, got, w)
				}
			}
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	keys, err := r.rdb.Keys(ctx, env["REDIS_KEY_PREFIX"]+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	// Besides: the addresses trusted for each user (the brute-force guard).
	quotas := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return strings.Contains(k, ":authfail:trusted:") })
	if len(quotas) != len(tests) {
		t.Errorf("keys under the prefix = %q, want one per identity (%d)", keys, len(tests))
	}
	secrets := []string{"EXAMPLE_PASSWORD", "JANE_PASSWORD", "Basic ", base64.StdEncoding.EncodeToString([]byte("john_doe:EXAMPLE_PASSWORD"))}
	for _, k := range keys {
		for _, s := range secrets {
			if strings.Contains(k, s) {
				t.Errorf("key %q holds a credential", k)
			}
		}
		if ttl, err := r.rdb.PTTL(ctx, k).Result(); err != nil || ttl <= 0 {
			t.Errorf("PTTL %s = %v, %v; want a positive TTL", k, ttl, err)
		}
	}
}

func TestForwardedForIgnoredFromUntrustedPeers(t *testing.T) {
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_LIMIT"] = "1"
	base := service(t, env)
	for i, ip := range []string{"203.0.113.1", "203.0.113.2"} {
		h := http.Header{}
		h.Set("X-Forwarded-For", ip)
		want := []int{200, 429}[i]
		if got := get(t, base+"/continents", h).status; got != want {
			t.Errorf("request %d claiming to be %s: status %d, want %d (spoofed X-Forwarded-For must not give a fresh quota)", i+1, ip, got, want)
		}
	}
}

func TestBadCredentials(t *testing.T) {
	base := service(t, baseEnv(t, sharedRedis(t)))
	junk := http.Header{}
	junk.Set("Authorization", "Basic "+strings.Repeat("!", 8<<10))
	tests := []struct {
		name   string
		header http.Header
	}{
		{"wrong password", basic("john_doe", "nope")},
		{"unknown user", basic("nobody", "EXAMPLE_PASSWORD")},
		// Names match byte for byte (MySQL's default collation took these for john_doe).
		{"name in capitals", basic("JOHN_DOE", "EXAMPLE_PASSWORD")},
		{"name in title case", basic("John_Doe", "EXAMPLE_PASSWORD")},
		{"name with a trailing space", basic("john_doe ", "EXAMPLE_PASSWORD")},
		{"name with an accent", basic("jöhn_doe", "EXAMPLE_PASSWORD")},
		{"name with a tab", basic("john\tdoe", "EXAMPLE_PASSWORD")},
		{"8 KB of junk", junk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, base+"/continents", tt.header)
			if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("status %d, WWW-Authenticate %q; want 401 and Basic", r.status, r.header.Get("WWW-Authenticate"))
			}
		})
	}
}

// ownRedis is a Redis the test may stop and start: a redis-server on a spare
// port when real servers are under test, else a miniredis.
type ownRedis struct {
	url         string
	stop, start func()
}

func startOwnRedis(t *testing.T) ownRedis {
	t.Helper()
	if os.Getenv("TEST_REDIS_URL") == "" {
		m := miniredis.RunT(t)
		m.ClockTTL(true)
		return ownRedis{
			url:  "redis://" + m.Addr() + "/0",
			stop: m.Close,
			start: func() {
				if err := m.Restart(); err != nil {
					t.Fatalf("restart miniredis: %v", err)
				}
			},
		}
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("TEST_REDIS_URL is set but redis-server is not installed: %v", err)
	}
	port := strconv.Itoa(freePort(t))
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port})
		defer rdb.Close()
		for range 100 {
			if rdb.Ping(context.Background()).Err() == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("redis-server on port %s did not answer", port)
	}
	stop := func() {
		if cmd != nil && cmd.Process != nil {
			cmd.Process.Kill()
			cmd.Wait()
			cmd = nil
		}
	}
	start()
	t.Cleanup(stop)
	return ownRedis{url: "redis://127.0.0.1:" + port + "/0", stop: stop, start: start}
}

func TestRedisOutage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		failOpen   string
		wantStatus int
	}{
		{"fail open", "true", http.StatusOK},
		{"fail closed", "false", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			own := startOwnRedis(t)
			env := baseEnv(t, testRedis{url: own.url})
			env["RATE_LIMIT_FAIL_OPEN"] = tt.failOpen
			env["RATE_LIMIT_TIMEOUT"] = "300ms"
			env["RATE_LIMIT_LIMIT"] = "3"
			base := service(t, env)
			auth := basic("john_doe", "EXAMPLE_PASSWORD")
			if r := get(t, base+"/continents", auth); r.status != http.StatusOK || r.header.Get("X-RateLimit-Remaining") != "2" {
				t.Fatalf("before the outage: status %d, remaining %q; want 200, 2", r.status, r.header.Get("X-RateLimit-Remaining"))
			}

			own.stop()
			for i := range 3 {
				start := time.Now()
				r := get(t, base+"/continents", auth)
				if r.status != tt.wantStatus {
					t.Errorf("Redis down, request %d: status %d, want %d; body %s", i+1, r.status, tt.wantStatus, r.body)
				}
				if tt.wantStatus == http.StatusOK && r.header.Get("X-RateLimit-Checked") != "false" {
					t.Errorf("Redis down, request %d: X-RateLimit-Checked = %q, want false", i+1, r.header.Get("X-RateLimit-Checked"))
				}
				if tt.wantStatus == http.StatusServiceUnavailable && r.header.Get("Retry-After") == "" {
					t.Errorf("Redis down, request %d: no Retry-After on 503", i+1)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("Redis down, request %d took %v, want about RATE_LIMIT_TIMEOUT", i+1, d)
				}
			}
			if r := get(t, base+"/readyz", nil); r.status != http.StatusServiceUnavailable {
				t.Errorf("/readyz with Redis down: status %d, want 503", r.status)
			}

			own.start()
			// Limiting resumes without a restart of the service.
			deadline := time.Now().Add(10 * time.Second)
			for {
				r := get(t, base+"/continents", auth)
				if r.header.Get("X-RateLimit-Limit") == "3" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("Redis back for 10s: status %d, no rate-limit headers; want limiting to resume", r.status)
				}
				time.Sleep(100 * time.Millisecond)
			}
			for range 5 {
				get(t, base+"/continents", auth)
			}
			if r := get(t, base+"/continents", auth); r.status != http.StatusTooManyRequests {
				t.Errorf("after Redis returned and the quota was used: status %d, want 429", r.status)
			}
		})
	}
}

func TestBadConfigStopsStartup(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want error
	}{
		{"bad window", map[string]string{"RATE_LIMIT_WINDOW": "1 minute"}, config.ErrInvalid},
		{"unknown algorithm", map[string]string{"RATE_LIMIT_ALGORITHM": "leaky"}, algorithms.ErrUnknown},
		{"bad REDIS_URL database", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/abc"}, config.ErrInvalid},
		{"unknown REDIS_URL option", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0?foo=bar"}, config.ErrInvalid},
		{"IPv6 prefix out of range", map[string]string{"RATE_LIMIT_IPV6_PREFIX": "0"}, config.ErrInvalid},
		{"sliding_log over a million", map[string]string{"RATE_LIMIT_ALGORITHM": "sliding_log", "RATE_LIMIT_LIMIT": "1000001"}, algorithms.ErrInvalidLimit},
		{"concurrency needs a policy file", map[string]string{"RATE_LIMIT_ALGORITHM": "concurrency"}, algorithms.ErrInvalidLimit},
		{"calendar needs a policy file", map[string]string{"RATE_LIMIT_ALGORITHM": "calendar"}, algorithms.ErrInvalidLimit},
		{"mysql DSN that does not parse", map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "api_user:pw@127.0.0.1:3306/countries"}, config.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env["DB_DSN"] == "" {
				tt.env["DB_DSN"] = filepath.Join(t.TempDir(), "countries.db")
			}
			tt.env["PORT"] = strconv.Itoa(freePort(t))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := run(ctx, func(k string) string { return tt.env[k] }, io.Discard)
			if !errors.Is(err, tt.want) {
				t.Errorf("run() = %v, want an error wrapping %v", err, tt.want)
			}
		})
	}
}

func TestDeniedRequestsSkipDatabase(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := models.Open(ctx, log, "sqlite", filepath.Join(t.TempDir(), "countries.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := models.Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := models.SeedAtCost(ctx, db, []models.Credential{{Name: "john_doe", Password: "EXAMPLE_PASSWORD"}}, passwordCost); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	var queries atomic.Int64
	if err := db.Callback().Query().Before("gorm:query").Register("test:count", func(*gorm.DB) { queries.Add(1) }); err != nil {
		t.Fatalf("register callback: %v", err)
	}
	store, err := models.NewStore(db).WithHashCost(passwordCost)
	if err != nil {
		t.Fatalf("WithHashCost: %v", err)
	}
	continents, err := store.Continents(ctx)
	if err != nil {
		t.Fatalf("Continents: %v", err)
	}
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	policies, err := policy.Default("fixed_window", algorithms.Limit{Requests: 1, Window: time.Minute})
	if err != nil {
		t.Fatalf("policy.Default: %v", err)
	}
	limit := middleware.NewLimiter(log, limiter.New(rdb, limiter.Options{Timeout: time.Second}), policies, "test:", false, 64)
	h, err := routes.New(routes.Deps{
		Log:        log,
		Continents: continents,
		Identify:   middleware.Identify(log, auth.New(store, nil, auth.WithPasswordTTL(time.Minute), auth.WithKeyTTL(time.Minute)), 64),
		Limiters:   []gin.HandlerFunc{limit.Handler()},
	})
	if err != nil {
		t.Fatalf("routes.New: %v", err)
	}
	serve := func() int {
		req := httptest.NewRequest(http.MethodGet, "/continents", nil)
		req.SetBasicAuth("john_doe", "EXAMPLE_PASSWORD")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	if got := serve(); got != http.StatusOK {
		t.Fatalf("first request: status %d, want 200", got)
	}
	before := queries.Load()
	for i := range 5 {
		if got := serve(); got != http.StatusTooManyRequests {
			t.Errorf("request %d: status %d, want 429", i+2, got)
		}
	}
	if n := queries.Load() - before; n != 0 {
		t.Errorf("5 denied requests made %d database queries, want 0", n)
	}
}
