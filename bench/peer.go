package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	ulule "github.com/ulule/limiter/v3"
	mgin "github.com/ulule/limiter/v3/drivers/middleware/gin"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"tollgate/auth"
	"tollgate/middleware"
	"tollgate/models"
	"tollgate/routes"
)

// The peer servers bench starts as processes of its own (-serve-peer).
const (
	peerUlule      = "ulule"       // tiny gin server, ulule/limiter's gin middleware
	peerBare       = "bare"        // the same tiny gin server without a limiter
	peerUluleStack = "ulule-stack" // the service's own stack, ulule/limiter as its guard
)

// servePeer serves one peer server on addr until ctx is done.
func servePeer(ctx context.Context, addr, kind, redisURL, bodyPath, dsn string) error {
	var srv *http.Server
	var err error
	var closeAll func()
	switch kind {
	case peerUlule, peerBare:
		srv, closeAll, err = tinyPeer(kind, redisURL, bodyPath)
	case peerUluleStack:
		srv, closeAll, err = stackPeer(ctx, redisURL, dsn)
	default:
		return fmt.Errorf("unknown -peer-kind %q", kind)
	}
	if err != nil {
		return err
	}
	defer closeAll()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ululeMiddleware is ulule/limiter's gin middleware on the Redis at
// redisURL, with a limit (10⁹ an hour) that admits everything.
func ululeMiddleware(redisURL string) (gin.HandlerFunc, *redis.Client, error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, nil, err
	}
	rdb := redis.NewClient(opt)
	store, err := sredis.NewStoreWithOptions(rdb, ulule.StoreOptions{Prefix: "ulule", MaxRetry: 3})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return mgin.NewMiddleware(ulule.New(store, ulule.Rate{Period: time.Hour, Limit: 1_000_000_000})), rdb, nil
}

// tinyPeer serves GET /continents the way the service does (gin, c.JSON of
// the same records), behind ulule/limiter's gin middleware or none (bare),
// plus /healthz: no request log, metrics or identity middleware.
func tinyPeer(kind, redisURL, bodyPath string) (*http.Server, func(), error) {
	b, err := os.ReadFile(bodyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read body: %w", err)
	}
	var continents []struct {
		ContinentID   int64  `json:"continent_id"`
		ContinentName string `json:"continent_name"`
	}
	if err := json.Unmarshal(b, &continents); err != nil {
		return nil, nil, fmt.Errorf("parse body: %w", err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/healthz", func(c *gin.Context) { c.Status(http.StatusOK) })
	var guards []gin.HandlerFunc
	closeAll := func() {}
	if kind == peerUlule {
		mw, rdb, err := ululeMiddleware(redisURL)
		if err != nil {
			return nil, nil, err
		}
		guards = append(guards, mw)
		closeAll = func() { rdb.Close() }
	}
	r.GET("/continents", append(guards, func(c *gin.Context) { c.JSON(http.StatusOK, continents) })...)
	return &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}, closeAll, nil
}

// stackPeer is the service built by routes.NewService, as main.go's run builds it (JSON
// access log at info on stdout, metrics and /metrics with the Go collector,
// identity on the same database, the continents served from memory), with
// ulule/limiter's gin middleware as the only guard instead of Tollgate's
// limiter. Against "fixed_window, all admitted", the limiter middleware is
// the only difference.
func stackPeer(ctx context.Context, redisURL, dsn string) (*http.Server, func(), error) {
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	guard, rdb, err := ululeMiddleware(redisURL)
	if err != nil {
		return nil, nil, err
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := models.Open(startCtx, log, "mysql", dsn) // gorm + gorm.io/driver/mysql, the service's pool settings
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	closeAll := func() {
		sqlDB.Close()
		rdb.Close()
	}
	fail := func(err error) (*http.Server, func(), error) {
		closeAll()
		return nil, nil, err
	}
	// The service's runs have done both already; they are idempotent and cheap.
	if err := models.Migrate(startCtx, db); err != nil {
		return fail(err)
	}
	if err := models.Seed(startCtx, db, nil); err != nil {
		return fail(err)
	}
	store, err := models.NewStore(db, models.StoreOptions{})
	if err != nil {
		return fail(err)
	}
	// The service's own constructor, as run calls it; only the limiter differs.
	svc, err := routes.NewService(startCtx, routes.ServiceDeps{
		Log:       log,
		Store:     store,
		SQL:       sqlDB,
		Driver:    "mysql",
		PingRedis: func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Identify:  middleware.Identify(log, auth.New(store, auth.AuthenticatorOptions{Timeout: 2 * time.Second, PasswordTTL: 5 * time.Minute, KeyTTL: 10 * time.Second}), 64),
		Summary:   routes.Summary{Enabled: true, Algorithm: "fixed_window", Limit: 1_000_000_000, Window: time.Hour},
		Limiters:  []gin.HandlerFunc{guard},
	})
	if err != nil {
		return fail(err)
	}
	srv := routes.NewServer(svc.Handler, log)
	return srv, closeAll, nil
}
