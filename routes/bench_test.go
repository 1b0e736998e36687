package routes

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
	"tollgate/limiter"
	"tollgate/live"
	"tollgate/middleware"
	"tollgate/policy"
)

// discardWriter keeps nothing but its header map, cleared between requests,
// so the figures are the service's own.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// BenchmarkRequest is one anonymous GET /continents through the whole
// handler (request log, metrics, the limiter when on), on the embedded Redis:
// with the limiter off, and admitted under a limit of 10^9 an hour with and
// without leases. The lease row is what an admitted request costs once its
// rule set is leased; allocs/op of the rows compare the two paths.
func BenchmarkRequest(b *testing.B) {
	for _, tt := range []struct {
		name    string
		limiter bool
		lease   bool
	}{
		{"limiter_off", false, false},
		{"admitted_lease", true, true},
		{"admitted_no_lease", true, false},
	} {
		b.Run(tt.name, func(b *testing.B) {
			log := slog.New(slog.DiscardHandler)
			metrics, err := middleware.NewMetrics(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			var limiters []gin.HandlerFunc
			if tt.limiter {
				m := miniredis.RunT(b)
				rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
				b.Cleanup(func() { rdb.Close() })
				engine := limiter.New(rdb, limiter.Options{Timeout: time.Second, DenyCacheSize: 10_000, Lease: tt.lease})
				b.Cleanup(engine.Close)
				policies, err := policy.Default("fixed_window", algorithms.Limit{Requests: 1_000_000_000, Window: time.Hour})
				if err != nil {
					b.Fatal(err)
				}
				limiters = []gin.HandlerFunc{middleware.NewRateLimit(log, engine, live.New(policies, "", "bench:", engine), true, 64, middleware.RateLimitOptions{}).Handler()}
			}
			h, err := New(Deps{Log: log, Continents: sevenContinents, Metrics: metrics, Limiters: limiters})
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "/continents", nil)
			req.RemoteAddr = "192.0.2.1:1234"
			w := &discardWriter{h: http.Header{}}
			for range 1000 { // past the first decisions, into a lease
				clear(w.h)
				h.ServeHTTP(w, req)
			}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, req)
			}
		})
	}
}
