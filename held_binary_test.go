package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestInFlightPlacesSurviveRedisStalls: three instances share a concurrency
// limit of 4 (timeout 10m) under load while their Redis stalls (SIGSTOP)
// for 300ms three times: decisions time out while Redis still has their
// scripts to run. Afterwards no place is held and requests are admitted
// again, checked, at once (not after the 10 minutes a lost place lasts).
func TestInFlightPlacesSurviveRedisStalls(t *testing.T) {
	if os.Getenv("TEST_REDIS_URL") == "" {
		t.Skip("TEST_REDIS_URL not set: stalls a redis-server of its own")
	}
	t.Parallel()
	bin := buildBinary(t)
	own := startOwnRedis(t)
	rdb := redis.NewClient(mustParseURL(t, own.url))
	t.Cleanup(func() { rdb.Close() })
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatalf("INFO server: %v", err)
	}
	pid := infoInt(info, "process_id")
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) // before startOwnRedis's stop

	policies := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(policies, []byte(`policies:
  - name: heavy
    key: user_or_ip
    limits:
      - {algorithm: concurrency, limit: 4, timeout: 10m}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseEnv(t, testRedis{url: own.url})
	env["RATE_LIMIT_POLICY_FILE"] = policies
	env["RATE_LIMIT_TIMEOUT"] = "100ms"
	env["RATE_LIMIT_FAIL_OPEN"] = "true"
	var instances [3]*process
	var wg sync.WaitGroup
	for i := range instances {
		wg.Go(func() { instances[i] = startBinary(t, bin, env) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	auth := basic("john_doe", "EXAMPLE_PASSWORD")
	client := &http.Client{Timeout: 10 * time.Second}
	var statuses sync.Map // status -> *atomic.Int64
	var done atomic.Bool
	for i := range 12 {
		wg.Go(func() {
			for !done.Load() {
				req, _ := http.NewRequest(http.MethodGet, instances[i%3].base+"/continents", nil)
				req.Header = auth
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("GET under load: %v", err)
					return
				}
				resp.Body.Close()
				n, _ := statuses.LoadOrStore(resp.StatusCode, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	for range 3 {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP redis: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatalf("SIGCONT redis: %v", err)
		}
		time.Sleep(700 * time.Millisecond)
	}
	done.Store(true)
	wg.Wait()
	counts := map[any]int64{}
	statuses.Range(func(k, v any) bool { counts[k] = v.(*atomic.Int64).Load(); return true })
	t.Logf("statuses under load: %v", counts)

	// The releases of requests that ended are under way for at most their
	// deadline (100ms); the scripts Redis read before a stall ran at SIGCONT.
	time.Sleep(time.Second)
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, env["REDIS_KEY_PREFIX"]+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	for _, k := range keys {
		if !strings.HasSuffix(k, ":concurrency") {
			continue
		}
		if members, err := rdb.ZRange(ctx, k, 0, -1).Result(); err != nil || len(members) != 0 {
			t.Errorf("after the load and the stalls: %s holds %d places %v (%v), want 0", k, len(members), members, err)
		}
	}
	for i, p := range instances {
		r := get(t, p.base+"/continents", auth)
		if r.status != http.StatusOK || r.header.Get("X-RateLimit-Checked") != "" || !strings.Contains(r.header.Get("RateLimit"), "r=3") {
			t.Errorf("instance %d after the stalls: status %d, X-RateLimit-Checked %q, RateLimit %q; want 200, checked, r=3 (every place free)",
				i+1, r.status, r.header.Get("X-RateLimit-Checked"), r.header.Get("RateLimit"))
		}
	}
}

// TestExpensiveCandidateKeepsLiveLimiting: a candidate file whose every
// decision is expensive (sliding_log, cost 10,000) under 64 connections
// does not turn live limiting off: the candidate's decisions beyond its
// budget are dropped and counted, and the live limit (5 a minute) checks
// the answers.
func TestExpensiveCandidateKeepsLiveLimiting(t *testing.T) {
	if os.Getenv("TEST_REDIS_URL") == "" {
		t.Skip("TEST_REDIS_URL not set: loads a redis-server of its own")
	}
	t.Parallel()
	bin := buildBinary(t)
	own := startOwnRedis(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	env := baseEnv(t, testRedis{url: own.url})
	env["RATE_LIMIT_POLICY_FILE"] = write("live.yaml", `policies:
  - {name: live, key: user_or_ip, limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}
`)
	env["RATE_LIMIT_CANDIDATE_FILE"] = write("candidate.yaml", `policies:
  - {name: expensive, key: user_or_ip, cost: 10000, limits: [{algorithm: sliding_log, limit: 1000000, window: 1s}]}
`)
	env["RATE_LIMIT_TIMEOUT"] = "100ms"
	env["RATE_LIMIT_FAIL_OPEN"] = "true"
	p := startBinary(t, bin, env)
	auth := basic("john_doe", "EXAMPLE_PASSWORD")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	counts := map[string]int{}
	var done atomic.Bool
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for !done.Load() {
				req, _ := http.NewRequest(http.MethodGet, p.base+"/continents", nil)
				req.Header = auth
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("GET under load: %v", err)
					return
				}
				resp.Body.Close()
				k := strconv.Itoa(resp.StatusCode)
				if resp.Header.Get("X-RateLimit-Checked") == "false" {
					k += " unchecked"
				}
				mu.Lock()
				counts[k]++
				mu.Unlock()
			}
		})
	}
	time.Sleep(3 * time.Second)
	done.Store(true)
	wg.Wait()
	metrics := get(t, p.base+"/metrics", nil)
	var figures string
	for line := range strings.Lines(string(metrics.body)) {
		if strings.HasPrefix(line, "tollgate_ratelimit_candidate_dropped_total ") || strings.HasPrefix(line, "tollgate_redis_errors_total ") || strings.Contains(line, "failed_open") {
			figures += strings.TrimSpace(line) + "; "
		}
	}
	t.Logf("statuses: %v; %s", counts, figures)
	total := 0
	for _, n := range counts {
		total += n
	}
	// A candidate script can outlast the live timeout on its own (up to
	// 270ms seen on a loaded 2-core machine): the live calls Redis runs
	// after it then time out. The budget makes that rare (0 to 207 answers
	// unchecked of about 10,000 in 7 runs), and the breaker counts one slow
	// moment once; before them, 7,907 of 8,524 were unchecked.
	if counts["200"] > 5 || 10*counts["200 unchecked"] > total {
		t.Errorf("live 5/min with an expensive candidate, 64 connections for 3s: %v; want at most 5 checked 200s and at most a tenth unchecked", counts)
	}
}
