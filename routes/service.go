package routes

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tollgate/middleware"
	"tollgate/models"
)

// ServiceDeps is what the service is made of once its clients are open: the
// database behind Store, a way to reach Redis, the authenticator and the
// rate limit. run builds the service from it, and so does bench for the
// peer that swaps the rate limit for another library's, so the two differ
// in the limiter and nothing else.
type ServiceDeps struct {
	Log   *slog.Logger
	Store *models.Store // continents (loaded once), readiness
	// SQL and Driver label the connection-pool metrics.
	SQL    *sql.DB
	Driver string
	// PingRedis is /readyz's Redis check.
	PingRedis Check
	// Identify names the caller (middleware.Identify).
	Identify gin.HandlerFunc
	Proxies  []netip.Prefix
	// SeparateMetrics: /metrics is served on an address of its own
	// (METRICS_ADDR), not by the API's handler.
	SeparateMetrics bool
	Summary         Summary
	// LivePolicy gives the policy file's names and version, which a reload
	// changes (nil: none; see Deps).
	LivePolicy func() (names []string, version string)
	Limiters   []gin.HandlerFunc
	RateLimit  *middleware.RateLimit // GET /ratelimit (nil: none)
}

// Service is the built service: its API handler, and the Prometheus
// registry behind /metrics, for collectors added after it is built.
type Service struct {
	Handler  http.Handler
	Metrics  http.Handler // /metrics, wherever it is served
	Registry *prometheus.Registry
}

// NewService loads the continents, makes the metrics registry (the
// service's own metrics, Go, process and connection-pool collectors) and
// returns the API's handler from New.
func NewService(ctx context.Context, d ServiceDeps) (Service, error) {
	continents, err := d.Store.Continents(ctx)
	if err != nil {
		return Service{}, err
	}
	reg := prometheus.NewRegistry()
	metrics, err := middleware.NewMetrics(reg)
	if err != nil {
		return Service{}, fmt.Errorf("metrics: %w", err)
	}
	reg.MustRegister(
		collectors.NewGoCollector(), // go_memstats_mallocs_total: bench's allocs/request
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewDBStatsCollector(d.SQL, d.Driver),
	)
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	deps := Deps{
		Log:        d.Log,
		Continents: continents,
		Ready:      map[string]Check{"redis": d.PingRedis, "database": d.Store.Ping},
		Proxies:    d.Proxies,
		Metrics:    metrics,
		Summary:    d.Summary,
		LivePolicy: d.LivePolicy,
		Identify:   d.Identify,
		Limiters:   d.Limiters,
		RateLimit:  d.RateLimit,
	}
	if !d.SeparateMetrics {
		deps.MetricsHandler = metricsHandler
	}
	h, err := New(deps)
	if err != nil {
		return Service{}, err
	}
	return Service{Handler: h, Metrics: metricsHandler, Registry: reg}, nil
}
