package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"

	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
	"tollgate/auth"
	"tollgate/limiter"
	"tollgate/live"
	"tollgate/policy"
)

func init() { gin.SetMode(gin.TestMode) }

// discard is a logger for tests that do not look at logs.
func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// algo is the spec of the algorithm called name, as the policy package
// resolves it; the zero Spec for no algorithm.
func algo(name string) algorithms.Spec {
	s, _ := algorithms.Lookup(name)
	return s
}

func TestSetHeaders(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name   string
		policy string
		d      limiter.Decision
		now    time.Time
		want   map[string]string // "" means absent
	}{
		{
			name:   "allowed, 3 used, 42s left",
			policy: "fixed_window",
			d:      limiter.Decision{Allowed: true, Limit: 5, Window: time.Minute, Remaining: 2, ResetAfter: 42 * time.Second},
			now:    now,
			want: map[string]string{
				"X-RateLimit-Limit":     "5",
				"X-RateLimit-Remaining": "2",
				"X-RateLimit-Reset":     "1700000042",
				"RateLimit-Policy":      `"fixed_window";q=5;w=60`,
				"RateLimit":             `"fixed_window";r=2;t=42`,
				"Retry-After":           "",
			},
		},
		{
			name:   "denied, retry rounds up",
			policy: "fixed_window",
			d:      limiter.Decision{Limit: 5, Window: time.Minute, ResetAfter: 41500 * time.Millisecond, RetryAfter: 41500 * time.Millisecond},
			now:    now,
			want: map[string]string{
				"X-RateLimit-Limit":     "5",
				"X-RateLimit-Remaining": "0",
				"X-RateLimit-Reset":     "1700000042",
				"RateLimit-Policy":      `"fixed_window";q=5;w=60`,
				"RateLimit":             `"fixed_window";r=0;t=42`,
				"Retry-After":           "42",
			},
		},
		{
			name:   "denied, retry under a second is 1",
			policy: "token_bucket",
			d:      limiter.Decision{Limit: 10, Window: time.Second, ResetAfter: 900 * time.Millisecond, RetryAfter: 100 * time.Millisecond},
			now:    now,
			want: map[string]string{
				"X-RateLimit-Limit":     "10",
				"X-RateLimit-Remaining": "0",
				"X-RateLimit-Reset":     "1700000001",
				"RateLimit-Policy":      `"token_bucket";q=10;w=1`,
				"RateLimit":             `"token_bucket";r=0;t=1`,
				"Retry-After":           "1",
			},
		},
		{
			name:   "denied, zero retry is still 1",
			policy: "fixed_window",
			d:      limiter.Decision{Limit: 5, Window: time.Minute},
			now:    now,
			want: map[string]string{
				"X-RateLimit-Reset": "1700000000",
				"RateLimit":         `"fixed_window";r=0;t=1`,
				"Retry-After":       "1",
			},
		},
		{
			name:   "denied by a bucket: t is the next token, as Retry-After, not the full reset",
			policy: "token_bucket",
			d:      limiter.Decision{Limit: 6, Window: time.Minute, ResetAfter: 20 * time.Second, RetryAfter: 10 * time.Second},
			now:    now,
			want: map[string]string{
				"X-RateLimit-Reset": "1700000020",
				"RateLimit":         `"token_bucket";r=0;t=10`,
				"Retry-After":       "10",
			},
		},
		{
			name:   "negative remaining shows 0",
			policy: "fixed_window",
			d:      limiter.Decision{Limit: 5, Window: time.Minute, Remaining: -3, ResetAfter: 10 * time.Second, RetryAfter: 10 * time.Second},
			now:    now,
			want: map[string]string{
				"X-RateLimit-Remaining": "0",
				"RateLimit":             `"fixed_window";r=0;t=10`,
				"Retry-After":           "10",
			},
		},
		{
			name:   "reset is the ceiling of now plus reset after",
			policy: "fixed_window",
			d:      limiter.Decision{Allowed: true, Limit: 5, Window: time.Minute, Remaining: 4, ResetAfter: 59*time.Second + 700*time.Millisecond},
			now:    now.Add(200 * time.Millisecond),
			want: map[string]string{
				"X-RateLimit-Reset": "1700000060",
				"RateLimit":         `"fixed_window";r=4;t=60`,
				"Retry-After":       "",
			},
		},
		{
			name:   "reset on a whole second is not rounded up",
			policy: "fixed_window",
			d:      limiter.Decision{Allowed: true, Limit: 5, Window: time.Minute, Remaining: 4, ResetAfter: 59*time.Second + 500*time.Millisecond},
			now:    now.Add(500 * time.Millisecond),
			want: map[string]string{
				"X-RateLimit-Reset": "1700000060",
				"RateLimit":         `"fixed_window";r=4;t=60`,
			},
		},
		{
			name:   "sub-second window is w=1",
			policy: "gcra",
			d:      limiter.Decision{Allowed: true, Limit: 3, Window: 500 * time.Millisecond, Remaining: 1, ResetAfter: 300 * time.Millisecond},
			now:    now,
			want: map[string]string{
				"RateLimit-Policy": `"gcra";q=3;w=1`,
				"RateLimit":        `"gcra";r=1;t=1`,
			},
		},
		{
			name:   "policy name is a quoted structured-field string",
			policy: `a"b\c`,
			d:      limiter.Decision{Allowed: true, Limit: 1, Window: time.Hour, Remaining: 0, ResetAfter: time.Hour},
			now:    now,
			want: map[string]string{
				"RateLimit-Policy": `"a\"b\\c";q=1;w=3600`,
				"RateLimit":        `"a\"b\\c";r=0;t=3600`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			d := tt.d
			d.Now = tt.now
			setHeaders(h, []headerItem{{lt: named(tt.policy), d: d}}, 0)
			for name, want := range tt.want {
				if got := h.Get(name); got != want {
					t.Errorf("setHeaders() %s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// fakeAlg is a decider that returns a fixed decision or error. It records
// what it was asked.
type fakeAlg struct {
	d   limiter.Decision
	err error

	mu    sync.Mutex
	calls int
	keys  []string
}

var _ decider = (*fakeAlg)(nil)

func (f *fakeAlg) Decide(ctx context.Context, rules []limiter.Rule) (limiter.Result, error) {
	f.mu.Lock()
	f.calls++
	for _, r := range rules {
		f.keys = append(f.keys, r.Key)
	}
	f.mu.Unlock()
	if f.err != nil {
		return limiter.Result{}, f.err
	}
	ds := make([]limiter.Decision, len(rules))
	for i := range ds {
		ds[i] = f.d
	}
	return limiter.Result{Allowed: f.d.Allowed, Decisions: ds}, nil
}

func (f *fakeAlg) Peek(ctx context.Context, rules []limiter.Rule) (limiter.Result, error) {
	return f.Decide(ctx, rules)
}

// Release has nothing to give back: fake decisions hold nothing.
func (f *fakeAlg) Release(context.Context, limiter.Result) error { return nil }

func (f *fakeAlg) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// limitedEngine serves GET /x behind a fixed identity and the default policy decided by alg,
// counting how often the handler runs.
func limitedEngine(t *testing.T, alg decider, failOpen bool) (*gin.Engine, *int) {
	t.Helper()
	ran := new(int)
	r := gin.New()
	r.GET("/x",
		func(c *gin.Context) { c.Set(identityKey, auth.Identity{Kind: auth.User, Name: "alice"}) },
		limitHandler(t, alg, failOpen),
		func(c *gin.Context) { *ran++; c.String(http.StatusOK, "ok") },
	)
	return r, ran
}

func get(t *testing.T, h http.Handler, path string, header http.Header) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// decodeJSON decodes a response body into a map.
func decodeJSON(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q, want application/json; charset=utf-8", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("decode body %q: %v", w.Body.String(), err)
	}
	return body
}

func TestRateLimitAllowed(t *testing.T) {
	alg := &fakeAlg{d: limiter.Decision{
		Allowed: true, Limit: 5, Window: time.Minute, Remaining: 4, ResetAfter: 60 * time.Second, Now: time.Unix(1_700_000_000, 0),
	}}
	r, ran := limitedEngine(t, alg, true)

	w := get(t, r, "/x", nil)

	if w.Code != http.StatusOK {
		t.Errorf("status = %d, want %d", w.Code, http.StatusOK)
	}
	if *ran != 1 {
		t.Errorf("handler ran %d times, want 1", *ran)
	}
	if diff := cmp.Diff([]string{"p:{user:alice}:fixed_window:0:fixed_window"}, alg.keys); diff != "" {
		t.Errorf("Decide() keys mismatch (-want +got):\n%s", diff)
	}
	want := map[string]string{
		"X-RateLimit-Limit":     "5",
		"X-RateLimit-Remaining": "4",
		"X-RateLimit-Reset":     "1700000060",
		"RateLimit-Policy":      `"fixed_window";q=5;w=60`,
		"RateLimit":             `"fixed_window";r=4;t=60`,
		"Retry-After":           "",
		"X-RateLimit-Checked":   "",
	}
	for name, v := range want {
		if got := w.Header().Get(name); got != v {
			t.Errorf("header %s = %q, want %q", name, got, v)
		}
	}
}

func TestRateLimitDenied(t *testing.T) {
	tests := []struct {
		name        string
		retryAfter  time.Duration
		window      time.Duration
		wantRetry   int
		wantMessage string
	}{
		{"whole seconds", 42 * time.Second, time.Minute, 42, "Too many requests: 5 per 60s allowed. Try again in 42 seconds."},
		{"rounded up", 1500 * time.Millisecond, time.Minute, 2, "Too many requests: 5 per 60s allowed. Try again in 2 seconds."},
		{"at least one", 0, 10 * time.Second, 1, "Too many requests: 5 per 10s allowed. Try again in 1 seconds."},
		{"sub-second window", 200 * time.Millisecond, 500 * time.Millisecond, 1, "Too many requests: 5 per 0.5s allowed. Try again in 1 seconds."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alg := &fakeAlg{d: limiter.Decision{
				Limit: 5, Window: tt.window, ResetAfter: tt.retryAfter, RetryAfter: tt.retryAfter, Now: time.Unix(1_700_000_000, 0),
			}}
			r, ran := limitedEngine(t, alg, true)

			w := get(t, r, "/x", nil)

			if w.Code != http.StatusTooManyRequests {
				t.Errorf("status = %d, want %d", w.Code, http.StatusTooManyRequests)
			}
			if *ran != 0 {
				t.Errorf("handler ran %d times, want 0", *ran)
			}
			if got := w.Header().Get("Retry-After"); got != strconv.Itoa(tt.wantRetry) {
				t.Errorf("Retry-After = %q, want %d", got, tt.wantRetry)
			}
			if got := w.Header().Get("X-RateLimit-Remaining"); got != "0" {
				t.Errorf("X-RateLimit-Remaining = %q, want 0", got)
			}
			if got := w.Header().Get("Content-Type"); got != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q, want application/json; charset=utf-8", got)
			}
			want := map[string]any{
				"error":       "rate limit exceeded",
				"retry_after": float64(tt.wantRetry),
				"message":     tt.wantMessage,
			}
			if diff := cmp.Diff(want, decodeJSON(t, w)); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
			// retry_after must be a JSON integer, not 42.0 or "42".
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
				t.Fatalf("decode body: %v", err)
			}
			if got := string(raw["retry_after"]); got != strconv.Itoa(tt.wantRetry) {
				t.Errorf("retry_after = %s, want the integer %d", got, tt.wantRetry)
			}
		})
	}
}

func TestRateLimitLimiterError(t *testing.T) {
	tests := []struct {
		name         string
		failOpen     bool
		wantStatus   int
		wantRan      int
		wantChecked  string
		wantRetry    string
		wantResult   string
		wantRedisErr bool
		wantBody     string
	}{
		{
			name: "fail open serves unchecked", failOpen: true,
			wantStatus: http.StatusOK, wantRan: 1, wantChecked: "false", wantResult: ResultFailedOpen, wantRedisErr: true,
			wantBody: "ok",
		},
		{
			name: "fail closed answers 503", failOpen: false,
			wantStatus: http.StatusServiceUnavailable, wantRan: 0, wantRetry: "1", wantResult: ResultFailedClosed, wantRedisErr: true,
			wantBody: `{"error":"rate limiter unavailable"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alg := &fakeAlg{err: errors.New("dial tcp 127.0.0.1:6379: connection refused")}
			var o Outcome
			ran := 0
			r := gin.New()
			r.GET("/x",
				func(c *gin.Context) { c.Next(); o, _ = OutcomeOf(c) },
				limitHandler(t, alg, tt.failOpen),
				func(c *gin.Context) { ran++; c.String(http.StatusOK, "ok") },
			)

			w := get(t, r, "/x", nil)

			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			if ran != tt.wantRan {
				t.Errorf("handler ran %d times, want %d", ran, tt.wantRan)
			}
			if got := w.Header().Get("X-RateLimit-Checked"); got != tt.wantChecked {
				t.Errorf("X-RateLimit-Checked = %q, want %q", got, tt.wantChecked)
			}
			if got := w.Header().Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetry)
			}
			if got := w.Header().Get("X-RateLimit-Limit"); got != "" {
				t.Errorf("X-RateLimit-Limit = %q, want none without a decision", got)
			}
			if got := w.Body.String(); got != tt.wantBody {
				t.Errorf("body = %s, want %s", got, tt.wantBody)
			}
			if o.Result != tt.wantResult || o.RedisError != tt.wantRedisErr {
				t.Errorf("Outcome = %+v, want Result %q RedisError %v", o, tt.wantResult, tt.wantRedisErr)
			}
		})
	}
}

func TestRateLimitCircuitOpenIsNotARedisError(t *testing.T) {
	var o Outcome
	r := gin.New()
	r.GET("/x",
		func(c *gin.Context) { c.Next(); o, _ = OutcomeOf(c) },
		limitHandler(t, &fakeAlg{err: limiter.ErrCircuitOpen}, true),
		func(c *gin.Context) { c.Status(http.StatusNoContent) },
	)

	w := get(t, r, "/x", nil)

	if w.Code != http.StatusNoContent {
		t.Errorf("status = %d, want %d", w.Code, http.StatusNoContent)
	}
	if o.RedisError {
		t.Errorf("Outcome RedisError = true for an open circuit, want false")
	}
}

// TestRateLimitTimeout: the engine as the service builds it, on a Redis that
// accepts connections and never answers, gives up within its timeout and
// the request is served unchecked or refused.
func TestRateLimitTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, ContextTimeoutEnabled: true, DisableIdentity: true})
	t.Cleanup(func() { rdb.Close() })
	tests := []struct {
		name       string
		failOpen   bool
		wantStatus int
	}{
		{"fail open", true, http.StatusOK},
		{"fail closed", false, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := limitedEngine(t, limiter.New(rdb, limiter.Options{Timeout: timeout}), tt.failOpen)

			start := time.Now()
			w := get(t, r, "/x", nil)
			took := time.Since(start)

			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			if took > 20*timeout {
				t.Errorf("answered after %v, want about the %v timeout", took, timeout)
			}
		})
	}
}

func TestRecover(t *testing.T) {
	tests := []struct {
		name    string
		handler gin.HandlerFunc
	}{
		{"panic with a string", func(c *gin.Context) { panic("boom") }},
		{"panic with an error", func(c *gin.Context) { panic(errors.New("boom")) }},
		{"nil map write", func(c *gin.Context) {
			var m map[string]int
			m["x"] = 1 //nolint:staticcheck // the panic is the point
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := gin.New()
			r.Use(Recover(discard()))
			r.GET("/x", tt.handler)

			w := get(t, r, "/x", nil)

			if w.Code != http.StatusInternalServerError {
				t.Errorf("status = %d, want %d", w.Code, http.StatusInternalServerError)
			}
			if diff := cmp.Diff(map[string]any{"error": "internal error"}, decodeJSON(t, w)); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRecoverPassesThrough(t *testing.T) {
	r := gin.New()
	r.Use(Recover(discard()))
	r.GET("/x", func(c *gin.Context) { c.String(http.StatusOK, "fine") })

	w := get(t, r, "/x", nil)

	if w.Code != http.StatusOK || w.Body.String() != "fine" {
		t.Errorf("GET /x = %d %q, want 200 %q", w.Code, w.Body.String(), "fine")
	}
}

// defaultPolicy is the default policy of fixed_window, 5 per minute.
func defaultPolicy(tb testing.TB) []policy.Policy {
	tb.Helper()
	policies, err := policy.Default("fixed_window", algorithms.Limit{Requests: 5, Window: time.Minute})
	if err != nil {
		tb.Fatalf("policy.Default: %v", err)
	}
	return policies
}

// newLimiter is NewRateLimit on policies in force from the start (no file
// version, no leases to end), their keys under prefix.
func newLimiter(log *slog.Logger, d decider, policies []policy.Policy, prefix string, failOpen bool, ipv6Prefix int) *RateLimit {
	return NewRateLimit(log, d, live.New(policies, "", prefix, nil), failOpen, ipv6Prefix, RateLimitOptions{})
}

// limitHandler is the default fixed_window policy (5 per minute) decided by d.
func limitHandler(t *testing.T, d decider, failOpen bool) gin.HandlerFunc {
	return newLimiter(discard(), d, defaultPolicy(t), "p:", failOpen, 64).Handler()
}

// named is the header data of a limit named name, as NewRateLimit makes it.
func named(name string) *limitText {
	return &newLimiter(discard(), nil, []policy.Policy{{Name: name, Limits: []policy.LimitSpec{{}}}}, "p:", true, 64).current().texts[0]
}

func TestSetHeadersFollowsTheDecisionsLimit(t *testing.T) {
	lt := named("p")
	for _, d := range []limiter.Decision{
		{Allowed: true, Limit: 5, Window: time.Minute, Remaining: 4},
		{Allowed: true, Limit: 7, Window: time.Hour, Remaining: 6},
		{Allowed: true, Limit: 5, Window: time.Minute, Remaining: 3},
	} {
		h := http.Header{}
		setHeaders(h, []headerItem{{lt: lt, d: d}}, 0)
		wantPolicy := fmt.Sprintf(`"p";q=%d;w=%d`, d.Limit, int(d.Window.Seconds()))
		if got, want := h.Get("X-RateLimit-Limit"), strconv.Itoa(d.Limit); got != want {
			t.Errorf("limit %d: X-RateLimit-Limit = %q, want %q", d.Limit, got, want)
		}
		if got := h.Get("RateLimit-Policy"); got != wantPolicy {
			t.Errorf("limit %d: RateLimit-Policy = %q, want %q", d.Limit, got, wantPolicy)
		}
	}
}

// TestUnlistedTierWarns: a user whose tier a policy without default limits
// does not list is not limited by it, and the service says so in its log
// (once a minute), since that is most likely a typo.
func TestUnlistedTierWarns(t *testing.T) {
	policies, err := policy.Parse(strings.NewReader(`
policies:
  - name: tier
    key: user
    tiers:
      pro: [{algorithm: fixed_window, limit: 1, window: 1h}]
`))
	if err != nil {
		t.Fatalf("policy.Parse: %v", err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	denied := fixedDecider{limiter.Decision{Allowed: false, Limit: 1, RetryAfter: time.Minute}}
	r := gin.New()
	r.GET("/x",
		func(c *gin.Context) {
			c.Set(identityKey, auth.Identity{Kind: auth.User, Name: c.Query("u"), Tier: c.Query("tier")})
		},
		newLimiter(log, denied, policies, "p:", true, 64).Handler(),
		func(c *gin.Context) { c.String(http.StatusOK, "ok") },
	)
	if w := get(t, r, "/x?u=amy&tier=pro", nil); w.Code != http.StatusTooManyRequests {
		t.Errorf("listed tier: status %d, want 429 from the policy", w.Code)
	}
	if strings.Contains(logs.String(), "tier") {
		t.Errorf("listed tier: log %q, want no warning", logs.String())
	}
	for range 3 {
		if w := get(t, r, "/x?u=gina&tier=gold", nil); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Limit") != "" {
			t.Errorf("unlisted tier: status %d, X-RateLimit-Limit %q; want 200, not limited", w.Code, w.Header().Get("X-RateLimit-Limit"))
		}
	}
	if n := strings.Count(logs.String(), `"tier":"gold"`); n != 1 || !strings.Contains(logs.String(), `"policy":"tier"`) {
		t.Errorf("unlisted tier: log %q, want one warning naming the policy and the tier", logs.String())
	}
}

// TestCaller: the adapter tells the policies who calls from the identity
// Identify left, reading the client's address only where a policy needs it.
func TestCaller(t *testing.T) {
	byUser := []policy.Policy{{Name: "u", Key: "user_or_ip", Cost: 1, Limits: []policy.LimitSpec{{}}}}
	byIP := []policy.Policy{{Name: "i", Key: "ip", Cost: 1, Limits: []policy.LimitSpec{{}}}}
	exempting := []policy.Policy{{Name: "e", Key: "user_or_ip", Cost: 1, Limits: []policy.LimitSpec{{}},
		ExemptCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	header := http.Header{"X-Tenant": {"acme"}}
	amy := auth.Identity{Kind: auth.User, Name: "amy", Addr: "2001:db8::/64", Tier: "pro"}
	addr := auth.Identity{Kind: auth.IP, Addr: "2001:db8::/64", Tier: policy.AnonymousTier}
	tests := []struct {
		name     string
		policies []policy.Policy
		identity auth.Identity
		want     policy.Caller
	}{
		{"a user", byUser, amy, policy.Caller{User: "amy", Tier: "pro", Header: header}},
		{"an address", byUser, addr, policy.Caller{Tier: policy.AnonymousTier, IP: "2001:db8::/64", Header: header}},
		{"no Identify in front: the client's address", byUser, auth.Identity{}, policy.Caller{Tier: policy.AnonymousTier, IP: "2001:db8::/64", Header: header}},
		{"a user counted by address", byIP, amy, policy.Caller{User: "amy", Tier: "pro", IP: "2001:db8::/64", Header: header}},
		{"exemptions by CIDR see the address itself", exempting, addr, policy.Caller{Tier: policy.AnonymousTier, IP: "2001:db8::/64", Addr: netip.MustParseAddr("2001:db8::5"), Header: header}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLimiter(discard(), nil, tt.policies, "p:", true, 64)
			c, _ := gin.CreateTestContext(httptest.NewRecorder())
			c.Request = httptest.NewRequest(http.MethodGet, "/x", nil)
			c.Request.RemoteAddr = "[2001:db8::5]:1234"
			c.Request.Header = header
			if tt.identity.Kind != "" {
				c.Set(identityKey, tt.identity)
			}
			got := l.caller(c, l.live.Snapshot())
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("caller() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRateLimitLocalDecision: a decision made locally (Redis unavailable,
// RATE_LIMIT_ON_REDIS_ERROR=local) says so in X-RateLimit-Checked, shows the
// share as the limit and is counted as local_allowed or local_limited.
func TestRateLimitLocalDecision(t *testing.T) {
	tests := []struct {
		name       string
		d          limiter.Decision
		wantStatus int
		wantResult string
	}{
		{"admitted", limiter.Decision{Allowed: true, Limit: 2, Window: time.Minute, Remaining: 1, Local: true}, http.StatusOK, ResultLocalAllowed},
		{"denied", limiter.Decision{Limit: 2, Window: time.Minute, RetryAfter: time.Second, Local: true}, http.StatusTooManyRequests, ResultLocalLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o Outcome
			r := gin.New()
			r.GET("/x",
				func(c *gin.Context) { c.Next(); o, _ = OutcomeOf(c) },
				limitHandler(t, &fakeAlg{d: tt.d}, true),
				func(c *gin.Context) { c.String(http.StatusOK, "ok") },
			)
			w := get(t, r, "/x", nil)
			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			if got := w.Header().Get("X-RateLimit-Checked"); got != "local" {
				t.Errorf("X-RateLimit-Checked = %q, want local", got)
			}
			if got := w.Header().Get("X-RateLimit-Limit"); got != "2" {
				t.Errorf("X-RateLimit-Limit = %q, want the share, 2", got)
			}
			if o.Result != tt.wantResult || o.RedisError {
				t.Errorf("Outcome = %+v, want Result %q and no Redis error", o, tt.wantResult)
			}
		})
	}
}

// lateScript is a redis.Scripter whose next late calls return their
// caller's deadline error and run on Redis only once after is closed, as
// after a stall with the script already read; ran counts them run.
type lateScript struct {
	redis.Scripter
	late  atomic.Int32
	after chan struct{}
	ran   sync.WaitGroup
}

func (s *lateScript) delay(ctx context.Context, run func(context.Context) *redis.Cmd) *redis.Cmd {
	if s.late.Add(-1) < 0 {
		s.late.Add(1)
		return run(ctx)
	}
	<-ctx.Done()
	s.ran.Go(func() {
		<-s.after
		run(context.Background())
	})
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(ctx.Err())
	return cmd
}

func (s *lateScript) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return s.delay(ctx, func(ctx context.Context) *redis.Cmd { return s.Scripter.EvalSha(ctx, sha, keys, args...) })
}

func (s *lateScript) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return s.delay(ctx, func(ctx context.Context) *redis.Cmd { return s.Scripter.Eval(ctx, script, keys, args...) })
}

// TestInFlightReleasedAfterTimeout: requests whose in-flight decision timed
// out (answered unchecked, or 503) hold no place once their scripts ran,
// after the requests ended: the next requests get every place.
func TestInFlightReleasedAfterTimeout(t *testing.T) {
	tests := []struct {
		name     string
		failOpen bool
		want     int
	}{
		{name: "fail open", failOpen: true, want: http.StatusOK},
		{name: "fail closed", want: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			late := &lateScript{Scripter: rdb, after: make(chan struct{})}
			// The late decisions time out; the others must not, on a loaded
			// machine under -race too (20ms did: 503 for the first request).
			engine := limiter.New(late, limiter.Options{Timeout: 200 * time.Millisecond})
			policies, err := policy.Parse(strings.NewReader(`
policies:
  - {name: heavy, key: ip, limits: [{algorithm: concurrency, limit: 2, timeout: 10m}]}`))
			if err != nil {
				t.Fatal(err)
			}
			l := newLimiter(discard(), engine, policies, "test:", tt.failOpen, 64)
			r := gin.New()
			r.GET("/x", l.Handler(), func(c *gin.Context) { c.Status(http.StatusOK) })
			if w := get(t, r, "/x", nil); w.Code != http.StatusOK { // loads the scripts
				t.Fatalf("first request: %d, want 200", w.Code)
			}
			for i := range 3 {
				late.late.Store(1) // the decision, not the release
				if w := get(t, r, "/x", nil); w.Code != tt.want {
					t.Errorf("request %d, its decision timed out: %d, want %d", i+1, w.Code, tt.want)
				}
			}
			close(late.after)
			late.ran.Wait()
			keys := m.Keys()
			for _, k := range keys {
				if m.Exists(k) && strings.Contains(k, "heavy") {
					if n, _ := rdb.ZCard(t.Context(), k).Result(); n != 0 {
						t.Errorf("after the timed-out requests ended and their scripts ran: %s holds %d places, want 0", k, n)
					}
				}
			}
			for i := range 2 {
				if w := get(t, r, "/x", nil); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Checked") != "" {
					t.Errorf("request %d after: %d, X-RateLimit-Checked %q; want 200, checked", i+1, w.Code, w.Header().Get("X-RateLimit-Checked"))
				}
			}
		})
	}
}
