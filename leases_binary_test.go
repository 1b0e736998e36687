package main

import (
	"context"
	"fmt"
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

// hammer sends GET /continents as john_doe to bases, round robin, from
// conns goroutines until stop is closed, calling seen with each response's
// status and the time its request was sent.
func hammer(t *testing.T, bases []string, conns int, stop <-chan struct{}, seen func(sent time.Time, status int)) (wait func()) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns}, Timeout: 10 * time.Second}
	auth := basic("john_doe", "EXAMPLE_PASSWORD")
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(func() {
			for i := c; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, bases[i%len(bases)]+"/continents", nil)
				req.Header = auth
				sent := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("GET: %v", err)
					return
				}
				resp.Body.Close()
				seen(sent, resp.StatusCode)
			}
		})
	}
	return wg.Wait
}

// scriptCalls is how many scripts Redis at url has run (EVALSHA and EVAL,
// from INFO commandstats).
func scriptCalls(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	n := 0
	for _, line := range strings.Split(info, "\r\n") {
		for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
			if v, ok := strings.CutPrefix(line, cmd); ok {
				calls, _ := strconv.Atoi(v[:strings.IndexByte(v, ',')])
				n += calls
			}
		}
	}
	return n
}

// TestBinaryLeasesMeetResetAndReload (issue 19, H3 and M3, from outside):
// four instances of the built binary lease a limit of 5,000 an hour under
// load; `tollgate quota reset` during the load: the requests sent after it
// returned are admitted at most 5,000 times. Then one instance's policy is
// reloaded to `lease: off`: from then on every request is decided by a
// script call of its own (INFO commandstats of a redis-server of the test's).
func TestBinaryLeasesMeetResetAndReload(t *testing.T) {
	t.Parallel()
	if os.Getenv("TEST_REDIS_URL") == "" {
		t.Skip("TEST_REDIS_URL not set: needs a redis-server of its own (INFO commandstats)")
	}
	bin := buildBinary(t)
	own := startOwnRedis(t)
	opt, err := redis.ParseURL(own.url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	file := func(limit int, lease string) string {
		return fmt.Sprintf("policies:\n  - name: p\n    key: user_or_ip\n    limits: [{algorithm: fixed_window, limit: %d, window: 1h, lease: %s}]\n", limit, lease)
	}
	env := baseEnv(t, testRedis{url: own.url})
	env["RATE_LIMIT_TIMEOUT"] = "5s"

	t.Run("reset", func(t *testing.T) {
		const limit = 5_000
		path := filepath.Join(t.TempDir(), "policies.yaml")
		writeAtomically(t, path, file(limit, "auto"))
		env := withEnv(env, "RATE_LIMIT_POLICY_FILE", path)
		var instances [4]*process
		var wg sync.WaitGroup
		for i := range instances {
			wg.Go(func() { instances[i] = startBinary(t, bin, env) })
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		bases := make([]string, len(instances))
		for i, p := range instances {
			bases[i] = p.base
		}
		var done, sentAfter, admittedAfter atomic.Int64
		var resetAt atomic.Pointer[time.Time]
		stop := make(chan struct{})
		wait := hammer(t, bases, 32, stop, func(sent time.Time, status int) {
			done.Add(1)
			if at := resetAt.Load(); at != nil && !sent.Before(*at) {
				sentAfter.Add(1)
				if status == http.StatusOK {
					admittedAfter.Add(1)
				}
			}
		})
		waitFor(t, "2,500 requests before the reset", func() bool { return done.Load() >= limit/2 })
		// `tollgate quota reset john_doe`, run in the test's process: the
		// binary would spend ~100 ms starting, long enough for the leases
		// taken before the reset to be used up before the count begins.
		mustQuota(t, env, "reset", "john_doe")
		now := time.Now()
		resetAt.Store(&now)
		waitFor(t, "8,000 requests after the reset", func() bool { return sentAfter.Load() >= 8_000 })
		close(stop)
		wait()
		if got := admittedAfter.Load(); got > limit {
			t.Errorf("%d requests sent after `quota reset`, %d admitted; want at most the limit, %d", sentAfter.Load(), got, limit)
		} else {
			t.Logf("%d requests sent after `quota reset`, %d admitted (limit %d)", sentAfter.Load(), got, limit)
		}
	})

	t.Run("reload to lease off", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "policies.yaml")
		writeAtomically(t, path, file(1_000_000, "auto"))
		p := startBinary(t, bin, withEnv(env, "RATE_LIMIT_POLICY_FILE", path))
		// measure sends requests for a second and returns the script calls
		// per request admitted.
		measure := func() (calls, admitted int) {
			var ok atomic.Int64
			before := scriptCalls(t, rdb)
			stop := make(chan struct{})
			wait := hammer(t, []string{p.base}, 16, stop, func(_ time.Time, status int) {
				if status == http.StatusOK {
					ok.Add(1)
				}
			})
			time.Sleep(time.Second)
			close(stop)
			wait()
			return scriptCalls(t, rdb) - before, int(ok.Load())
		}
		calls, admitted := measure()
		t.Logf("lease: auto: %d script calls for %d admitted in 1s", calls, admitted)
		if calls*2 > admitted {
			t.Errorf("lease: auto under load: %d script calls for %d admitted, want leases (far fewer calls)", calls, admitted)
		}
		writeAtomically(t, path, file(1_000_000, "off"))
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatalf("SIGHUP: %v", err)
		}
		waitFor(t, "reload on SIGHUP", func() bool { return strings.Contains(p.logs.String(), `"trigger":"signal"`) })
		time.Sleep(500 * time.Millisecond) // old leases end and give back
		calls, admitted = measure()
		t.Logf("lease: off: %d script calls for %d admitted in 1s", calls, admitted)
		if calls < admitted {
			t.Errorf("after the reload to lease: off: %d script calls for %d admitted, want one call per request at least", calls, admitted)
		}
	})
}

// withEnv is env with k set to v, a copy.
func withEnv(env map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(env)+1)
	for key, val := range env {
		out[key] = val
	}
	out[k] = v
	return out
}
