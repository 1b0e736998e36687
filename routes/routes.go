// Package routes declares the HTTP API: every route and its handler.
package routes

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/gin-gonic/gin"

	"tollgate/middleware"
	"tollgate/models"
)

// New returns the API's handler. Health routes answer before any guard runs;
// every other route passes guards first, in order (identity, then rate limit).
// ready names the checks /readyz runs.
func New(log *slog.Logger, continents []models.Continent, ready map[string]Check, proxies []netip.Prefix, guards ...gin.HandlerFunc) (*gin.Engine, error) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	// gin trusts every proxy unless told otherwise; nil trusts none.
	var trusted []string
	for _, p := range proxies {
		trusted = append(trusted, p.String())
	}
	if err := r.SetTrustedProxies(trusted); err != nil {
		return nil, fmt.Errorf("trusted proxies: %w", err)
	}
	r.RemoteIPHeaders = []string{"X-Forwarded-For"}
	r.HandleMethodNotAllowed = true
	r.NoRoute(func(c *gin.Context) { middleware.Abort(c, 404, "not found", nil) })
	r.NoMethod(func(c *gin.Context) { middleware.Abort(c, 405, "method not allowed", nil) })
	r.Use(middleware.Recover(log), middleware.RequestLog(log))

	r.GET("/healthz", healthz)
	r.GET("/readyz", readyz(log, ready))

	api := r.Group("/", guards...)
	api.GET("/continents", listContinents(continents))
	api.GET("/continents/:id", getContinent(continents))
	return r, nil
}
