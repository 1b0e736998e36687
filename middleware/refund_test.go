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
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"tollgate/limiter"
	"tollgate/policy"
	"tollgate/redistest"
)

// refundPolicies: api refunds 404 and every 5xx in two limits, once404
// only 404 in a gcra, plain nothing.
const refundPolicies = `
policies:
  - name: api
    key: ip
    refund_on: [404, 5xx]
    limits:
      - {algorithm: fixed_window, limit: 10, window: 1h}
      - {algorithm: sliding_window, limit: 20, window: 1h}
  - name: once404
    key: ip
    refund_on: [404]
    limits: [{algorithm: gcra, limit: 5, window: 1h}]
  - name: plain
    key: ip
    limits: [{algorithm: token_bucket, limit: 100, window: 1h}]
`

// refundInstance is one instance of the service: its own engine and
// middleware on the shared Redis, with routes answering 200, 404 (with a
// body, and with none) and 500, recording which policies each request's
// units went back to.
func refundInstance(t *testing.T, g *redistest.Redis, policies []policy.Policy, refunded func([]string)) http.Handler {
	t.Helper()
	engine := limiter.New(g.Client, limiter.Options{Timeout: 2 * time.Second})
	t.Cleanup(engine.Close)
	lim := newLimiter(discard(), engine, policies, g.Prefix, false, 64)
	r := gin.New()
	record := func(c *gin.Context) {
		c.Next()
		o, _ := OutcomeOf(c)
		refunded(o.Refunded)
	}
	api := r.Group("/", record, lim.Handler())
	api.GET("/ok", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"ok": true}) })
	api.GET("/missing", func(c *gin.Context) { c.JSON(http.StatusNotFound, gin.H{"error": "not found"}) })
	api.GET("/empty", func(c *gin.Context) { c.Status(http.StatusNotFound) }) // gin writes the headers after the chain
	api.GET("/boom", func(c *gin.Context) { c.String(http.StatusInternalServerError, "boom") })
	return r
}

// TestRefundOnStatus: two instances on one Redis, one client, three
// policies: a 404 gives its units back in the two policies that refund
// it, a 500 in the one that refunds 5xx, a 200 in none, and every answer's
// X-RateLimit-Remaining is what is left after its refund (the gcra limit,
// the closest to exhaustion: 4 after the first 200, back to 4 after a 404).
func TestRefundOnStatus(t *testing.T) {
	backends := map[string]func(*testing.T) *redistest.Redis{"miniredis": redistest.Embedded}
	for name, mk := range redistest.Backends() {
		backends[name] = mk
	}
	for name, mk := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			g := mk(t)
			policies, err := policy.Parse(strings.NewReader(refundPolicies))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			count := map[string]int{}
			refunded := func(ps []string) {
				mu.Lock()
				defer mu.Unlock()
				for _, p := range ps {
					count[p]++
				}
			}
			instances := []http.Handler{refundInstance(t, g, policies, refunded), refundInstance(t, g, policies, refunded)}
			steps := []struct {
				path          string
				status        int
				wantRemaining int // X-RateLimit-Remaining: the gcra's, the closest
			}{
				{"/ok", 200, 4},
				{"/missing", 404, 4},
				{"/boom", 500, 3}, // refunded in api, not in once404
				{"/empty", 404, 3},
				{"/missing", 404, 3},
				{"/ok", 200, 2},
			}
			for i, st := range steps {
				w := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodGet, st.path, nil)
				req.RemoteAddr = "192.0.2.7:1234"
				instances[i%2].ServeHTTP(w, req)
				if w.Code != st.status {
					t.Fatalf("step %d GET %s on instance %d: status %d, want %d", i, st.path, i%2, w.Code, st.status)
				}
				if got := w.Header().Get("X-RateLimit-Remaining"); got != strconv.Itoa(st.wantRemaining) {
					t.Errorf("step %d GET %s on instance %d: X-RateLimit-Remaining = %s, want %d (RateLimit: %s)",
						i, st.path, i%2, got, st.wantRemaining, w.Header().Get("RateLimit"))
				}
				if got := w.Header().Get("RateLimit"); !strings.Contains(got, ";r="+strconv.Itoa(st.wantRemaining)+";") {
					t.Errorf("step %d GET %s: RateLimit = %q, want r=%d", i, st.path, got, st.wantRemaining)
				}
			}
			// What Redis counts: 2 requests in api's limits, 2 (and the 500)
			// in once404's, all 6 in plain's.
			set := policy.NewSet(policies, g.Prefix)
			applied, _ := set.Rules(http.MethodGet, "/ok", policy.Caller{IP: "192.0.2.7"}, nil)
			rules := make([]limiter.Rule, len(applied))
			for i, a := range applied {
				rules[i] = a.Rule
			}
			peek, err := limiter.New(g.Client, limiter.Options{}).Peek(context.Background(), rules)
			if err != nil {
				t.Fatal(err)
			}
			var left []int
			for _, d := range peek.Decisions {
				left = append(left, d.Remaining)
			}
			if want := []int{8, 18, 2, 94}; !slices.Equal(left, want) {
				t.Errorf("remaining in Redis (api fixed, api sliding, once404, plain) = %v, want %v", left, want)
			}
			if diff := cmp.Diff(map[string]int{"api": 4, "once404": 3}, count); diff != "" {
				t.Errorf("refunds by policy (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRefundMetric: tollgate_ratelimit_refunds_total counts, by policy,
// the requests whose units went back.
func TestRefundMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	o := Outcome{Policy: "api", Algorithm: "fixed_window", Result: ResultAllowed, Refunded: []string{"api", "once404"}}
	m.observe(http.MethodGet, "/x", http.StatusNotFound, 0.01, o, true)
	m.observe(http.MethodGet, "/x", http.StatusNotFound, 0.01, Outcome{Policy: "api", Refunded: []string{"api"}}, true)
	for p, want := range map[string]float64{"api": 2, "once404": 1} {
		var pb dto.Metric
		if err := m.refunds.WithLabelValues(p).Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetCounter().GetValue(); got != want {
			t.Errorf("tollgate_ratelimit_refunds_total{policy=%q} = %v, want %v", p, got, want)
		}
	}
}
