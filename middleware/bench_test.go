package middleware

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/limiter"
)

// fixedDecider answers every call with one decision, at no cost: what is
// left to measure is the middleware's own work.
type fixedDecider struct{ d limiter.Decision }

func (f fixedDecider) Peek(ctx context.Context, rules []limiter.Rule) (limiter.Result, error) {
	return f.Decide(ctx, rules)
}

// Release has nothing to give back: fixed decisions hold nothing.
func (f fixedDecider) Release(context.Context, limiter.Result) error { return nil }

func (f fixedDecider) Decide(_ context.Context, rules []limiter.Rule) (limiter.Result, error) {
	ds := make([]limiter.Decision, len(rules))
	for i := range ds {
		ds[i] = f.d
	}
	return limiter.Result{Allowed: f.d.Allowed, Decisions: ds}, nil
}

// discardWriter is an http.ResponseWriter that keeps nothing but its header
// map, cleared between requests, so the figures are the handler's own.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkLimiter is the rate-limit middleware alone (gin included, Redis
// not: the decider answers at once) on an admitted and on a denied request,
// with the default policy: what the middleware costs per request.
func BenchmarkLimiter(b *testing.B) {
	now := time.Now()
	for _, tt := range []struct {
		name string
		d    limiter.Decision
	}{
		{"admitted", limiter.Decision{Allowed: true, Limit: 5, Window: time.Minute, Remaining: 4, ResetAfter: time.Minute, Now: now}},
		{"denied", limiter.Decision{Allowed: false, Limit: 5, Window: time.Minute, ResetAfter: 42 * time.Second, RetryAfter: 42 * time.Second, Now: now}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			gin.SetMode(gin.ReleaseMode)
			r := gin.New()
			r.GET("/x", newLimiter(discard(), fixedDecider{tt.d}, defaultPolicy(b), "p:", true, 64).Handler(),
				func(c *gin.Context) { c.Status(http.StatusOK) })
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			req.RemoteAddr = "192.0.2.1:1234"
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				r.ServeHTTP(w, req)
			}
		})
	}
}
