package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"tollgate/middleware"
)

// metricValue reads one sample from a Prometheus text exposition; -1 when absent.
func metricValue(exposition, series string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

func TestMetricsMoveWithRequests(t *testing.T) {
	t.Parallel()
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_LIMIT"] = "2"
	base := service(t, env)
	scrape := func() string {
		t.Helper()
		r := get(t, base+"/metrics", nil)
		if r.status != http.StatusOK {
			t.Fatalf("/metrics status %d, want 200", r.status)
		}
		return string(r.body)
	}
	const (
		allowed = `tollgate_ratelimit_decisions_total{algorithm="fixed_window",policy="fixed_window",result="allowed"}`
		limited = `tollgate_ratelimit_decisions_total{algorithm="fixed_window",policy="fixed_window",result="limited"}`
		ok      = `tollgate_http_requests_total{method="GET",route="/continents",status="200"}`
		denied  = `tollgate_http_requests_total{method="GET",route="/continents",status="429"}`
	)
	value := func(exposition, series string) float64 {
		v := metricValue(exposition, series)
		return max(v, 0) // a series appears with its first sample
	}
	before := scrape()
	for range 3 {
		get(t, base+"/continents", basic("john_doe", "EXAMPLE_PASSWORD"))
	}
	after := scrape()
	for _, tt := range []struct {
		series string
		want   float64
	}{{allowed, 2}, {limited, 1}, {ok, 2}, {denied, 1}} {
		if got := value(after, tt.series) - value(before, tt.series); got != tt.want {
			t.Errorf("%s moved by %v, want %v", tt.series, got, tt.want)
		}
	}
	for _, family := range []string{
		"tollgate_ratelimit_call_duration_seconds_bucket", "tollgate_redis_errors_total",
		"tollgate_ratelimit_circuit_open", "tollgate_http_request_duration_seconds_bucket",
		"go_sql_open_connections", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !strings.Contains(after, "\n"+family) {
			t.Errorf("/metrics has no %s", family)
		}
	}
}

func TestMetricsOnTheirOwnAddress(t *testing.T) {
	t.Parallel()
	env := baseEnv(t, sharedRedis(t))
	env["METRICS_ADDR"] = "127.0.0.1:0"
	l, _ := startService(t, env)
	if r := get(t, l.base+"/metrics", nil); r.status != http.StatusNotFound {
		t.Errorf("METRICS_ADDR set: /metrics on the API port status %d, want 404", r.status)
	}
	if l.metricsAddr == "" {
		t.Fatal(`METRICS_ADDR set: the "serving" log line names no metrics_addr`)
	}
	r := get(t, "http://"+l.metricsAddr+"/metrics", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "go_goroutines") {
		t.Errorf("/metrics on METRICS_ADDR: status %d, want 200 with go_goroutines", r.status)
	}
}

func TestRequestLogs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format string
		want   []string // in the line of the request
	}{
		{"json", []string{`"msg":"request"`, `"method":"GET"`, `"route":"/continents"`, `"status":200`, `"request_id":"abc-123"`, `"identity":"user"`, `"decision":"allowed"`, `"remaining":4`}},
		{"text", []string{"msg=request", "method=GET", "route=/continents", "status=200", "request_id=abc-123", "identity=user", "decision=allowed", "remaining=4"}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			env := baseEnv(t, sharedRedis(t))
			env["LOG_FORMAT"] = tt.format
			base, logs := serviceWithLogs(t, env)
			h := basic("john_doe", "EXAMPLE_PASSWORD")
			h.Set("X-Request-ID", "abc-123")
			r := get(t, base+"/continents", h)
			if got := r.header.Get("X-Request-ID"); got != "abc-123" {
				t.Errorf("X-Request-ID echoed = %q, want abc-123", got)
			}
			bad := basic("john_doe", "WRONG_SECRET")
			bad.Set("X-Request-ID", "evil line=\"forged\"")
			r = get(t, base+"/continents", bad)
			if id := r.header.Get("X-Request-ID"); id == "" || strings.ContainsAny(id, " =\"") {
				t.Errorf("invalid X-Request-ID replaced by %q, want a fresh id", id)
			}

			// Lines reach the log in batches (LogWriter): the second
			// request's line, written after the first's, says both are in.
			fresh := r.header.Get("X-Request-ID")
			waitFor(t, "the second request's log line", func() bool { return fresh != "" && strings.Contains(logs.String(), fresh) })
			var line string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "abc-123") {
					line = l
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("request log line %q lacks %s", line, w)
				}
			}
			if tt.format == "json" {
				var v map[string]any
				if err := json.Unmarshal([]byte(line), &v); err != nil {
					t.Errorf("request log line is not JSON: %v", err)
				}
			}
			all := logs.String()
			for _, secret := range []string{"EXAMPLE_PASSWORD", "WRONG_SECRET", base64.StdEncoding.EncodeToString([]byte("john_doe:EXAMPLE_PASSWORD")), "Authorization", "Basic "} {
				if strings.Contains(all, secret) {
					t.Errorf("service log contains %q", secret)
				}
			}
		})
	}
}

// TestRedisClientLog: go-redis's own messages become warnings of the
// service's log, at most one per period, with the number left out.
func TestRedisClientLog(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	const period = 200 * time.Millisecond
	l := redisLog{middleware.NewThrottledLog(slog.New(slog.NewJSONHandler(&buf, nil)), period)}
	for i := range 3 {
		l.Printf(t.Context(), "redis: connection pool: failed to dial after %d attempts", i+5)
	}
	out := buf.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"msg":"redis client"`) ||
		!strings.Contains(out, `"detail":"redis: connection pool: failed to dial after 5 attempts"`) {
		t.Errorf("log %q, want one JSON warning with the first message", out)
	}
	time.Sleep(period) // the period passes
	buf.Reset()
	l.Printf(t.Context(), "again")
	if !strings.Contains(buf.String(), `"suppressed":2`) {
		t.Errorf("log %q, want the two messages left out counted", buf.String())
	}
}
