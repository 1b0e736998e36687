package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
	mgin "github.com/ulule/limiter/v3/drivers/middleware/gin"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"
)

// servePeer serves GET /continents the way the service does (gin, c.JSON of
// the same records), behind ulule/limiter's gin middleware or none (bare),
// plus /healthz.
func servePeer(ctx context.Context, addr, kind, redisURL, bodyPath string) error {
	b, err := os.ReadFile(bodyPath)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	var continents []struct {
		ContinentID   int64  `json:"continent_id"`
		ContinentName string `json:"continent_name"`
	}
	if err := json.Unmarshal(b, &continents); err != nil {
		return fmt.Errorf("parse body: %w", err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/healthz", func(c *gin.Context) { c.Status(http.StatusOK) })
	var guards []gin.HandlerFunc
	if kind == "ulule" {
		opt, err := redis.ParseURL(redisURL)
		if err != nil {
			return err
		}
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		store, err := sredis.NewStoreWithOptions(rdb, limiter.StoreOptions{Prefix: "ulule", MaxRetry: 3})
		if err != nil {
			return err
		}
		guards = append(guards, mgin.NewMiddleware(limiter.New(store, limiter.Rate{Period: time.Hour, Limit: 1_000_000_000})))
	}
	r.GET("/continents", append(guards, func(c *gin.Context) { c.JSON(http.StatusOK, continents) })...)
	srv := &http.Server{Addr: addr, Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
