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
	"regexp"
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
	"tollgate/live"
	"tollgate/middleware"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/redistest"
	"tollgate/routes"
)

// syncBuffer collects a service's log lines; run writes while the test reads.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // closed at the next write
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.written != nil {
		close(b.written)
		b.written = nil
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// next returns what is written so far and a channel closed at the next write.
func (b *syncBuffer) next() (string, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.written == nil {
		b.written = make(chan struct{})
	}
	return b.buf.String(), b.written
}

// listening is where a service listens, as its "serving" log line says.
type listening struct {
	base        string // http://127.0.0.1:PORT
	metricsAddr string // host:port of METRICS_ADDR's server; "" when none
}

// waitServing waits for the "serving" line a service started with PORT=0
// writes to logs (JSON or text) and returns the addresses it bound. It fails
// t when the service stops first (done says so) or after 60s.
func waitServing(t *testing.T, logs *syncBuffer, done chan error) listening {
	t.Helper()
	var l listening
	logs.waitFor(t, done, `"serving"`, func(text string) bool {
		for _, line := range strings.Split(text, "\n") {
			var ok bool
			if l, ok = servingLine(t, line); ok {
				return true
			}
		}
		return false
	})
	return l
}

// waitFor waits until found accepts what b holds, failing t when the
// service writing it stops first (done says so) or after 60s.
func (b *syncBuffer) waitFor(t *testing.T, done chan error, what string, found func(text string) bool) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		text, written := b.next()
		if found(text) {
			return
		}
		select {
		case <-written:
		case err := <-done:
			done <- err
			if text, _ = b.next(); found(text) {
				return
			}
			t.Fatalf("service stopped before logging %s: %v\n%s", what, err, text)
		case <-timeout:
			t.Fatalf("service did not log %s within 60s\n%s", what, text)
		}
	}
}

var textAttr = regexp.MustCompile(`(?:^| )(msg|addr|metrics_addr)=("[^"]*"|\S*)`)

// servingLine reads the addresses of a "serving" log line.
func servingLine(t *testing.T, line string) (listening, bool) {
	t.Helper()
	var j struct {
		Msg         string `json:"msg"`
		Addr        string `json:"addr"`
		MetricsAddr string `json:"metrics_addr"`
	}
	attrs := map[string]string{}
	if err := json.Unmarshal([]byte(line), &j); err == nil {
		attrs = map[string]string{"msg": j.Msg, "addr": j.Addr, "metrics_addr": j.MetricsAddr}
	} else {
		for _, m := range textAttr.FindAllStringSubmatch(line, -1) {
			attrs[m[1]] = strings.Trim(m[2], `"`)
		}
	}
	if attrs["msg"] != "serving" {
		return listening{}, false
	}
	local := func(addr string) string {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("serving on %q: %v", addr, err)
		}
		return "127.0.0.1:" + port
	}
	l := listening{base: "http://" + local(attrs["addr"])}
	if attrs["metrics_addr"] != "" {
		l.metricsAddr = local(attrs["metrics_addr"])
	}
	return l, true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// testRedis is the Redis a test's service uses, a client to look inside
// it, and the key prefix the service is to use (empty: one of its own).
type testRedis struct {
	url    string
	rdb    redis.UniversalClient
	prefix string
}

// sharedRedis is the real Redis of TEST_REDIS_URL when set (it must answer),
// else a miniredis of the test's own; keys under its prefix are deleted when
// the test ends.
func sharedRedis(t *testing.T) testRedis {
	t.Helper()
	r := redistest.New(t)
	if r.Mini != nil {
		r.Mini.ClockTTL(true) // keys expire as on a real Redis
	}
	return testRedis{url: r.URL, rdb: r.Client, prefix: r.Prefix}
}

// baseEnv points a service at the test's Redis and at this run's database
// on TEST_MYSQL_DSN's server when set (mysqlRunDSN), else at a SQLite file of its own; keys get a prefix
// of their own.
//
// fixed_window's windows are aligned to the epoch: a test that counts
// admissions under the default 1-minute window would see a second window's
// quota if a minute ended during it. baseEnv starts every such test clear of
// that edge (clearOfMinuteEdge).
func baseEnv(t *testing.T, r testRedis) map[string]string {
	t.Helper()
	clearOfMinuteEdge(t)
	env := map[string]string{
		"REDIS_URL":          r.url,
		"REDIS_KEY_PREFIX":   r.prefix,
		"RATE_LIMIT_TIMEOUT": "5s", // race-detector builds are slow; faults are tested on their own
		"SEED_USERS":         "john_doe:EXAMPLE_PASSWORD,jane:JANE_PASSWORD",
		"DB_DSN":             filepath.Join(t.TempDir(), "countries.db"),
	}
	if r.prefix == "" {
		env["REDIS_KEY_PREFIX"] = "test:" + randomHex(6) + ":"
	}
	if dsn := mysqlRunDSN(t); dsn != "" {
		env["DB_DRIVER"] = "mysql"
		env["DB_DSN"] = dsn
	}
	return env
}

// minuteEdgeMargin is how long a test may count under one 1-minute window:
// the longest of them (a 3-s load after the binary starts) with room to spare.
const minuteEdgeMargin = 8 * time.Second

// clearOfMinuteEdge waits, when a minute of the clock (Redis's and ours: one
// machine) ends within minuteEdgeMargin, until just after it: the test then
// runs inside one epoch-aligned minute.
func clearOfMinuteEdge(t *testing.T) {
	t.Helper()
	now := time.Now()
	if left := now.Truncate(time.Minute).Add(time.Minute).Sub(now); left < minuteEdgeMargin {
		time.Sleep(left + 50*time.Millisecond)
	}
}

// clusterEnv is baseEnv on the Redis Cluster of TEST_REDIS_CLUSTER_ADDRS; the
// test is skipped when it is not set.
func clusterEnv(t *testing.T) map[string]string {
	t.Helper()
	addrs := os.Getenv("TEST_REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		t.Skip("TEST_REDIS_CLUSTER_ADDRS not set (.ci/redis-cluster starts a cluster)")
	}
	env := baseEnv(t, testRedis{})
	env["REDIS_CLUSTER_ADDRS"] = addrs
	return env
}

// service runs run() with env on a port of its own until the test ends,
// and returns its base URL once it serves.
func service(t *testing.T, env map[string]string) string {
	t.Helper()
	base, _ := serviceWithLogs(t, env)
	return base
}

// serviceWithLogs is service, also returning what the service logs; opts
// go to run.
func serviceWithLogs(t *testing.T, env map[string]string, opts ...runOption) (string, *syncBuffer) {
	t.Helper()
	l, logs := startService(t, env, opts...)
	return l.base, logs
}

// startService runs run() with env and opts on PORT=0 until the test ends,
// and returns where it listens (its "serving" log line) and its logs once
// /healthz answers there.
func startService(t *testing.T, env map[string]string, opts ...runOption) (listening, *syncBuffer) {
	t.Helper()
	env["PORT"] = "0"
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
	l := waitServing(t, logs, done)
	if r := get(t, l.base+"/healthz", nil); r.status != http.StatusOK {
		t.Fatalf("GET /healthz once serving: status %d, want 200\n%s", r.status, logs.String())
	}
	return l, logs
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
	t.Parallel()
	tests := []struct {
		name string
		env  func(t *testing.T) map[string]string
	}{
		{"embedded defaults", func(t *testing.T) map[string]string {
			return map[string]string{"DB_DSN": filepath.Join(t.TempDir(), "countries.db")}
		}},
		{"configured backends", func(t *testing.T) map[string]string { return baseEnv(t, sharedRedis(t)) }},
		{"redis cluster", clusterEnv},
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
			_, _ = io.Copy(io.Discard, resp.Body) // drained for reuse; the status is what counts
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

// Not parallel: 600 requests to a service that fails closed; alone, a busy
// machine's delays do not turn them into 503s.
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
	t.Parallel()
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
	// Besides: the addresses trusted for each user (the brute-force guard)
	// and the instances announcing themselves (local mode's N).
	quotas := slices.DeleteFunc(slices.Clone(keys), func(k string) bool {
		return strings.Contains(k, ":authfail:trusted:") || k == env["REDIS_KEY_PREFIX"]+"instances"
	})
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
	t.Parallel()
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
	t.Parallel()
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
	// signal sends sig to the redis-server (SIGSTOP freezes it, SIGCONT
	// thaws it); nil on miniredis.
	signal func(sig os.Signal)
}

// childPort is a port for a child process that cannot listen on port 0 and
// report the port (redis-server, redis-sentinel): one the kernel just handed
// out and released. Another process may take it before the child does: the
// caller must see the child fail with "Address already in use" and retry, or
// check that what answers there is its child (startOwnRedis does both). The
// service itself never needs this: it listens on PORT=0 and logs its address.
func childPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a port: %v", err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
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
	// redis-server cannot listen on port 0 and report the port, and a
	// restart must come back on the same one: so the port is one the kernel
	// just handed out and released. Another process may take it meanwhile:
	// then redis-server exits with "Address already in use" and the first
	// start tries another port (a restart fails the test). The process
	// answering is checked to be ours by its process id.
	var port string
	var stop func()
	var proc atomic.Pointer[os.Process]
	// launch starts redis-server on port and waits until it answers;
	// false when the port is taken.
	launch := func() bool {
		out := &syncBuffer{}
		cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		proc.Store(cmd.Process)
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait() // killed: an error by design
			close(exited)
		}()
		stop = func() {
			_ = cmd.Process.Kill() // it may have exited already
			<-exited
		}
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port, MaxRetries: -1})
		defer rdb.Close()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				if strings.Contains(out.String(), "Address already in use") {
					return false
				}
				t.Fatalf("redis-server on port %s exited:\n%s", port, out)
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			info, err := rdb.Info(ctx, "server").Result()
			cancel()
			if err == nil && infoInt(info, "process_id") == cmd.Process.Pid {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		stop()
		t.Fatalf("redis-server on port %s did not answer within 10s:\n%s", port, out)
		return false
	}
	for attempt := 0; ; attempt++ {
		port = childPort(t)
		if launch() {
			break
		}
		if attempt == 4 {
			t.Fatalf("redis-server: 5 ports in use by the time it started")
		}
	}
	t.Cleanup(func() { stop() })
	return ownRedis{
		url:  "redis://127.0.0.1:" + port + "/0",
		stop: func() { stop() },
		start: func() {
			if !launch() {
				t.Fatalf("restart redis-server: port %s was taken while it was down", port)
			}
		},
		signal: func(sig os.Signal) {
			if err := proc.Load().Signal(sig); err != nil {
				t.Fatalf("signal redis-server: %v", err)
			}
		},
	}
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
	t.Parallel()
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
			tt.env["PORT"] = "0"
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
	t.Parallel()
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := models.Open(ctx, log, "sqlite", filepath.Join(t.TempDir(), "countries.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := models.Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := models.SeedAtCost(ctx, db, []models.Account{{Name: "john_doe", Password: "EXAMPLE_PASSWORD"}}, passwordCost); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	var queries atomic.Int64
	if err := db.Callback().Query().Before("gorm:query").Register("test:count", func(*gorm.DB) { queries.Add(1) }); err != nil {
		t.Fatalf("register callback: %v", err)
	}
	store, err := models.NewStore(db, models.StoreOptions{HashCost: passwordCost})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
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
	limit := middleware.NewRateLimit(log, limiter.New(rdb, limiter.Options{Timeout: time.Second}), live.New(policies, "", "test:", nil), false, 64, middleware.RateLimitOptions{})
	h, err := routes.New(routes.Deps{
		Log:        log,
		Continents: continents,
		Identify:   middleware.Identify(log, auth.New(store, auth.AuthenticatorOptions{PasswordTTL: time.Minute, KeyTTL: time.Minute}), 64),
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

// TestUnknownSettingWarned: a variable named like a setting that is none is
// warned of at start-up, naming the nearest setting, and the service starts.
func TestUnknownSettingWarned(t *testing.T) {
	t.Parallel()
	env := baseEnv(t, sharedRedis(t))
	environ := []string{"RATE_LIMIT_ALGORITM=gcra", "PATH=/bin", "RATE_LIMIT_LIMIT=5"}
	_, logs := startService(t, env, withEnviron(func() []string { return environ }))
	text := logs.String()
	want := "RATE_LIMIT_ALGORITM: unknown setting; did you mean RATE_LIMIT_ALGORITHM?"
	if !strings.Contains(text, want) {
		t.Errorf("log has no %q:\n%s", want, text)
	}
	if strings.Contains(text, "RATE_LIMIT_LIMIT: unknown") || strings.Contains(text, "PATH: unknown") {
		t.Errorf("log warns of a real setting or another variable:\n%s", text)
	}
}

// TestLogWrittenAtShutdown: run writes every line it logged before it
// returns, however long the log's batches wait (an hour here): "serving",
// the access line of a request, "stopped". The service cannot say where it
// listens (that is a log line), so it gets a port found free just before.
func TestLogWrittenAtShutdown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	env := baseEnv(t, sharedRedis(t))
	env["PORT"] = strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) string { return env[k] }, &logs, withLogFlush(time.Hour)) }()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run() = %v before serving %s", err, url)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within 60s", url)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run() = %v, want nil after shutdown", err)
	}
	text := logs.String()
	for _, want := range []string{`"msg":"serving"`, `"msg":"request","method":"GET","route":"/healthz","status":200`, `"msg":"stopped"`} {
		if !strings.Contains(text, want) {
			t.Errorf("log written by the time run returns has no %s:\n%s", want, text)
		}
	}
}
