// Package routes declares the HTTP API: every route and its handler.
package routes

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/middleware"
	"tollgate/models"
	"tollgate/policy"
)

// Deps is what the routes need.
type Deps struct {
	Log        *slog.Logger
	Continents []models.Continent // served from memory
	Ready      map[string]Check   // what /readyz checks
	Proxies    []netip.Prefix     // peers whose X-Forwarded-For is believed
	Metrics    *middleware.Metrics
	// MetricsHandler serves /metrics; nil when metrics are on an address of
	// their own (METRICS_ADDR).
	MetricsHandler http.Handler
	Summary        Summary // shown on the home page
	// LivePolicy, when set, gives the names and version of the policy
	// file in use, which a reload changes: the page shows them instead of
	// Summary's.
	LivePolicy func() (names []string, version string)
	// Identify names the caller; it runs before Limiters and /ratelimit
	// (nil: none).
	Identify gin.HandlerFunc
	// Limiters run, in order, before every API handler: the rate limit.
	Limiters []gin.HandlerFunc
	// RateLimit answers GET /ratelimit, the caller's rate-limit state (nil:
	// no route).
	RateLimit *middleware.RateLimit
}

// Summary describes the active rate limit, for people reading the home page.
type Summary struct {
	Enabled   bool
	Algorithm string
	Limit     int
	Burst     int
	Window    time.Duration
	// Policies names the policies of a policy file (RATE_LIMIT_POLICY_FILE);
	// when set, the page lists them instead of Algorithm, Limit, Burst and
	// Window, which do not apply.
	Policies []string
	// Special describes the file's limits that are not per window, for
	// people: "heavy: at most 4 requests at once", "heavy: 10000 per month
	// in Europe/Berlin".
	Special []string
	// SHA256 is the first 12 hex digits of the policy file's SHA-256.
	SHA256 string
}

// New returns the API's handler. Health and metrics routes answer before any
// limiter runs; every API route passes the limiters first.
func New(d Deps) (*gin.Engine, error) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// gin trusts every proxy unless told otherwise; nil trusts none.
	var trusted []string
	for _, p := range d.Proxies {
		trusted = append(trusted, p.String())
	}
	if err := r.SetTrustedProxies(trusted); err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	r.RemoteIPHeaders = []string{"X-Forwarded-For"}
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { middleware.Fail(c, nil, middleware.ErrNotFound) })
	r.NoMethod(func(c *gin.Context) { middleware.Fail(c, nil, middleware.ErrMethodNotAllowed) })
	r.Use(middleware.Recover(d.Log), middleware.RequestLog(d.Log, d.Metrics))

	// Every GET route answers HEAD too (RFC 9110 §9.1: health checks and
	// link checkers send it); net/http drops the body of a HEAD response.
	get := func(g gin.IRoutes, path string, h ...gin.HandlerFunc) {
		g.Match([]string{http.MethodGet, http.MethodHead}, path, h...)
	}
	get(r, "/healthz", healthz)
	get(r, "/readyz", readyz(d.Log, d.Ready))
	if d.MetricsHandler != nil {
		get(r, "/metrics", gin.WrapH(d.MetricsHandler))
	}
	if err := addPage(r, d.Summary, d.LivePolicy, d.MetricsHandler != nil); err != nil {
		return nil, err
	}

	var identify []gin.HandlerFunc
	if d.Identify != nil {
		identify = append(identify, d.Identify)
	}
	known := r.Group("/", identify...)
	if d.RateLimit != nil {
		get(known, "/ratelimit", showRateLimit(d.RateLimit))
	}
	api := known.Group("/", d.Limiters...)
	for _, rt := range limited(d.Continents) {
		get(api, rt.path, rt.handler)
	}
	return r, nil
}

// limitedRoute is one GET route behind the limiters.
type limitedRoute struct {
	path    string
	handler gin.HandlerFunc
}

// limited is the API behind the rate limiter: New serves it, and Limited
// derives the routes a policy may name from it.
func limited(cs []models.Continent) []limitedRoute {
	return []limitedRoute{
		{"/continents", listContinents(cs)},
		{"/continents/:id", getContinent(cs)},
	}
}

// Limited lists the routes behind the limiters (the rate limiter): the routes
// a policy's match may name. Each also answers HEAD.
func Limited() []policy.Route {
	var out []policy.Route
	for _, rt := range limited(nil) {
		out = append(out, policy.Route{Method: http.MethodGet, Path: rt.path})
	}
	return out
}

// NewServer returns an http.Server for h whose every phase has a deadline,
// so slow or hostile clients cannot hold connections open; headers are
// capped at 64 KiB (larger: 431).
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
