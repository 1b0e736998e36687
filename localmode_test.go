package main

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// outageFigures is what three instances answered around a Redis fault.
type outageFigures struct {
	before    int         // admitted by Redis before the fault
	statuses  map[int]int // during the fault
	admitted  int         // during the fault, 200s
	local     int         // during the fault, admitted locally (X-RateLimit-Checked: local)
	unchecked int         // during the fault, served unchecked (X-RateLimit-Checked: false)
	errors    int         // during the fault, requests without an answer within the client's timeout
	slowest   time.Duration
	after     int // admitted by Redis after it, of the limit + 6 requests
	startLogs int // "deciding locally" log lines of the instances under load
	endLogs   int // "local mode ended" log lines of the instances under load
	metrics   string
}

// faultLimit is TestRedisFaultsThreeInstances's limit per client.
const faultLimit = 30

// TestRedisFaultsThreeInstances: three instances share a Redis and a limit
// of 30 per client; two of them serve one client while Redis is frozen
// (SIGSTOP) or killed for 3s. In local mode nothing goes unchecked, no
// request fails or waits, the client gets at most its limit during the
// outage and, after it, exactly what remains. The open rows measure the
// old default for comparison: they only log.
func TestRedisFaultsThreeInstances(t *testing.T) {
	if os.Getenv("TEST_REDIS_URL") == "" {
		t.Skip("TEST_REDIS_URL not set: freezing and killing Redis needs redis-server")
	}
	freeze := func(r ownRedis) func() { r.signal(syscall.SIGSTOP); return func() { r.signal(syscall.SIGCONT) } }
	kill := func(r ownRedis) func() { r.stop(); return r.start }
	checkLocal := func(t *testing.T, f outageFigures) {
		for status, n := range f.statuses {
			if status >= 500 {
				t.Errorf("%d responses with status %d during the outage; want none", n, status)
			}
		}
		if f.errors > 0 || f.slowest > time.Second {
			t.Errorf("%d requests unanswered, slowest %v; want all answered within 1s (RATE_LIMIT_TIMEOUT 300ms)", f.errors, f.slowest)
		}
		if f.unchecked > 0 {
			t.Errorf("%d requests served unchecked, want 0", f.unchecked)
		}
		if f.admitted < 1 || f.admitted > faultLimit || f.local != f.admitted {
			t.Errorf("during the outage: %d admitted, %d of them locally; want 1 to %d, all local", f.admitted, f.local, faultLimit)
		}
		if f.startLogs != 2 || f.endLogs != 2 {
			t.Errorf("logs: %d 'deciding locally', %d 'local mode ended' lines of the 2 instances under load; want one each", f.startLogs, f.endLogs)
		}
		if !strings.Contains(f.metrics, `result="local_allowed"`) {
			t.Error(`metrics: no tollgate_ratelimit_decisions_total{result="local_allowed"}`)
		}
	}
	tests := []struct {
		name, mode string
		fault      func(ownRedis) (heal func())
		check      func(t *testing.T, f outageFigures)
	}{
		{"freeze open", "open", freeze, func(*testing.T, outageFigures) {}},
		{"kill open", "open", kill, func(*testing.T, outageFigures) {}},
		{"freeze local", "local", freeze, func(t *testing.T, f outageFigures) {
			checkLocal(t, f)
			// Redis kept its counts and runs, when it wakes, the calls that
			// timed out (those were not charged back): exactly what remains.
			if want := max(0, faultLimit-f.before-f.local); f.after != want {
				t.Errorf("after the freeze: %d admitted, want %d (limit %d - %d before - %d local)", f.after, want, faultLimit, f.before, f.local)
			}
		}},
		{"kill local", "local", kill, func(t *testing.T, f outageFigures) {
			checkLocal(t, f)
			// The counts before are gone with Redis; the local admissions are
			// charged back to the new one, but for each instance's first,
			// whose call may have timed out (then maybe counted: not charged).
			if lo := max(0, faultLimit-f.local); f.after < lo || f.after > lo+2 {
				t.Errorf("after the restart: %d admitted, want %d to %d (limit %d - %d local, charged back)", f.after, lo, lo+2, faultLimit, f.local)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			own := startOwnRedis(t)
			prefix := "test:" + randomHex(6) + ":"
			var bases []string
			var logs []*syncBuffer
			for range 3 {
				env := baseEnv(t, testRedis{url: own.url, prefix: prefix})
				env["RATE_LIMIT_ON_REDIS_ERROR"] = tt.mode
				env["RATE_LIMIT_TIMEOUT"] = "300ms"
				env["RATE_LIMIT_LIMIT"] = strconv.Itoa(faultLimit)
				env["RATE_LIMIT_WINDOW"] = "1h"
				base, l := serviceWithLogs(t, env)
				bases, logs = append(bases, base), append(logs, l)
			}
			f := outage(t, own, prefix, bases, logs, tt.fault)
			t.Logf("RATE_LIMIT_ON_REDIS_ERROR=%s, %s: limit %d; before %d; during: %d admitted (%d local, %d unchecked), %d unanswered, slowest %v, statuses %v; after: %d admitted",
				tt.mode, tt.name, faultLimit, f.before, f.admitted, f.local, f.unchecked, f.errors, f.slowest.Round(time.Millisecond), f.statuses, f.after)
			tt.check(t, f)
		})
	}
}

// outage runs the scenario of TestRedisFaultsThreeInstances on the
// instances at bases and reports its figures.
func outage(t *testing.T, own ownRedis, prefix string, bases []string, logs []*syncBuffer, fault func(ownRedis) func()) outageFigures {
	t.Helper()
	auth := basic("john_doe", "EXAMPLE_PASSWORD")
	rdb := redis.NewClient(mustParseURL(t, own.url))
	defer rdb.Close()
	// Every instance counted the three: each announces every 2s.
	waitFor(t, "three instances announced", func() bool {
		n, err := rdb.ZCard(context.Background(), prefix+"instances").Result()
		return err == nil && n == 3
	})
	time.Sleep(2500 * time.Millisecond)

	var f outageFigures
	for _, base := range bases {
		for range 2 {
			if r := get(t, base+"/continents", auth); r.status == http.StatusOK && r.header.Get("X-RateLimit-Checked") == "" {
				f.before++
			}
		}
	}
	heal := fault(own)
	f.statuses = map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	stopAt := time.Now().Add(3 * time.Second)
	for _, base := range bases[:2] {
		wg.Go(func() {
			for time.Now().Before(stopAt) {
				req, _ := http.NewRequest(http.MethodGet, base+"/continents", nil)
				req.Header = auth
				start := time.Now()
				resp, err := client.Do(req)
				took := time.Since(start)
				mu.Lock()
				f.slowest = max(f.slowest, took)
				if err != nil {
					f.errors++
					mu.Unlock()
					continue
				}
				resp.Body.Close()
				f.statuses[resp.StatusCode]++
				checked := resp.Header.Get("X-RateLimit-Checked")
				if resp.StatusCode == http.StatusOK {
					f.admitted++
					if checked == "local" {
						f.local++
					}
				}
				if checked == "false" {
					f.unchecked++
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	heal()
	for _, base := range bases {
		waitFor(t, "local mode to end at "+base, func() bool {
			return metricValue(string(get(t, base+"/metrics", nil).body), "tollgate_ratelimit_local_mode") == 0
		})
	}
	time.Sleep(1500 * time.Millisecond) // past the breaker's cooldown (open mode)
	for i := range faultLimit + 6 {
		r := get(t, bases[i%3]+"/continents", auth)
		if r.header.Get("X-RateLimit-Checked") != "" {
			t.Errorf("after the outage, request %d: X-RateLimit-Checked %q, want Redis to decide", i+1, r.header.Get("X-RateLimit-Checked"))
		}
		if r.status == http.StatusOK {
			f.after++
		}
	}
	for _, l := range logs[:2] {
		f.startLogs += strings.Count(l.String(), "deciding locally")
		f.endLogs += strings.Count(l.String(), "local mode ended")
	}
	f.metrics = string(get(t, bases[0]+"/metrics", nil).body)
	return f
}
