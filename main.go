// Command tollgate serves continent data from a database behind a Redis rate
// limiter. See docs/configuration.md for its settings.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	_ "time/tzdata" // calendar quotas' time zones, in a container without a zone database too

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/joho/godotenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"tollgate/admin"
	"tollgate/auth"
	"tollgate/config"
	"tollgate/limiter"
	"tollgate/live"
	"tollgate/middleware"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/routes"
	"tollgate/username"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := godotenv.Load(); err != nil && !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintln(os.Stderr, "read .env:", err) // the process environment wins over .env
		os.Exit(2)
	}
	if len(os.Args) > 1 {
		// An admin command (package admin) instead of the server.
		if err := admin.Run(ctx, os.Args[1:], adminEnv(os.Getenv, os.Stdin, os.Stdout, os.Stderr)); err != nil {
			fmt.Fprintln(os.Stderr, "tollgate:", err)
			if errors.Is(err, admin.ErrUsage) {
				fmt.Fprint(os.Stderr, admin.Usage)
				os.Exit(2)
			}
			if errors.Is(err, config.ErrInvalid) {
				os.Exit(2)
			}
			os.Exit(1)
		}
		return
	}
	// SIGHUP reloads the policy files (live.Start).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := run(ctx, os.Getenv, os.Stdout, withReload(hup), withEnviron(os.Environ)); err != nil {
		fmt.Fprintln(os.Stderr, "server:", err)
		if errors.Is(err, config.ErrInvalid) { // every bad setting
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// configRules are the checks of settings whose rules live in other packages,
// handed to config.Load (which imports none of ours).
func configRules() config.Rules {
	return config.Rules{
		UserName:      username.Valid,
		UserNameRule:  username.Rule,
		Tier:          policy.ValidTier,
		CIDR:          policy.ParseCIDR,
		DefaultPolicy: policy.CheckDefault,
	}
}

// runOptions are what tests change in run; main leaves them at their defaults
// but for the reload signal.
type runOptions struct {
	reload     <-chan os.Signal // SIGHUP: read the policy files now
	policyPoll time.Duration    // how often the policy files are checked for changes
	// policySettle is how long a changed policy file must stay unchanged
	// before it is loaded (0: twice policyPoll).
	policySettle time.Duration
	now          func() time.Time // the clock overrides and remembered credentials expire by
	environ      func() []string  // the variables set, for the unknown-setting warnings; nil: none
	logFlush     time.Duration    // how often the log's batch is written (middleware.LogWriter)
	asideSlow    time.Duration    // middleware.RateLimitOptions.AsideSlow
}

// runOption changes one of run's options.
type runOption func(*runOptions)

// withReload makes each value on ch reload the policy files.
func withReload(ch <-chan os.Signal) runOption { return func(o *runOptions) { o.reload = ch } }

// withPolicyPoll checks the policy files every d.
func withPolicyPoll(d time.Duration) runOption { return func(o *runOptions) { o.policyPoll = d } }

// withPolicySettle loads a changed policy file once it stayed unchanged for d.
func withPolicySettle(d time.Duration) runOption { return func(o *runOptions) { o.policySettle = d } }

// withLogFlush writes the log's batch every d (and at the end of run).
func withLogFlush(d time.Duration) runOption { return func(o *runOptions) { o.logFlush = d } }

// withAsideSlow drops candidate and shadow decisions for a while only after
// one slower than d (middleware.RateLimitOptions.AsideSlow).
func withAsideSlow(d time.Duration) runOption { return func(o *runOptions) { o.asideSlow = d } }

// withClock makes now the clock overrides and remembered credentials expire by.
func withClock(now func() time.Time) runOption { return func(o *runOptions) { o.now = now } }

// adminEnv is what the admin commands get: the environment and streams,
// and the openers and settings of this binary.
func adminEnv(getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) admin.Env {
	return admin.Env{
		Getenv: getenv, Stdin: stdin, Stdout: stdout, Stderr: stderr,
		OpenRedis: func(ctx context.Context, log *slog.Logger, cfg config.Config, timeout time.Duration) (redis.UniversalClient, func(), error) {
			rdb, _, _, closeAll, err := openRedis(ctx, log, cfg.RedisURL, cfg.RedisCluster,
				sentinel{addrs: cfg.RedisSentinels, master: cfg.RedisSentinelMaster, password: cfg.RedisSentinelPassword}, timeout)
			return rdb, closeAll, err
		},
		NewLogger: newLogger,
		Routes:    routes.Limited(),
		HashCost:  passwordCost,
		Rules:     configRules(),
	}
}

// passwordCost is the bcrypt cost of the hashes run and the admin commands
// make: bcrypt.DefaultCost. Tests lower it (TestMain), as a hash at the
// default cost takes about a second under the race detector.
var passwordCost = bcrypt.DefaultCost

// withEnviron gives run the variables set (os.Environ), so that a variable
// named like a setting that is none is warned of at start-up.
func withEnviron(environ func() []string) runOption {
	return func(o *runOptions) { o.environ = environ }
}

// run starts the service with the settings getenv gives and serves until ctx
// is done, then shuts down gracefully.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer, options ...runOption) error {
	opts := runOptions{policyPoll: live.Poll, now: time.Now, logFlush: logFlush}
	for _, o := range options {
		o(&opts)
	}
	cfg, err := config.Load(getenv, configRules())
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// Lines are written in batches (a write per access line costs as much
	// as the line's formatting); deferred first, the last batch is written
	// after everything else run does, on every way out of it.
	out := middleware.NewLogWriter(stdout, opts.logFlush)
	defer out.Close()
	log := newLogger(out, cfg.LogFormat, cfg.LogLevel)
	if opts.environ != nil {
		for _, w := range config.Unknown(opts.environ()) {
			log.Warn(w) // a mistyped setting would otherwise be its default, silently
		}
	}
	// go-redis logs a few events of its own (a pool that cannot dial); they
	// go to this log too, not as plain lines on stderr. Its logger is one
	// per process, stored atomically: the latest run's log wins.
	redis.SetLogger(redisLog{middleware.NewThrottledLog(log, 10*time.Second)})
	warnProxiesEverything(log, cfg.TrustedProxies)
	// The policy file is a setting too: refused before any client is opened.
	var policies []policy.Policy
	var version string // the policy file's
	if cfg.Enabled {
		policies, version, err = admin.LoadPolicies(cfg, cfg.PolicyFile, routes.Limited())
		if err != nil {
			return err
		}
	}

	rdb, guardRdb, redisName, closeRedis, err := openRedis(ctx, log, cfg.RedisURL, cfg.RedisCluster,
		sentinel{addrs: cfg.RedisSentinels, master: cfg.RedisSentinelMaster, password: cfg.RedisSentinelPassword}, cfg.Timeout)
	if err != nil {
		return err
	}
	defer closeRedis()

	db, err := openDB(ctx, log, cfg.DBDriver, cfg.DBDSN, cfg.DBConnect)
	if err != nil {
		return err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("database handle: %w", err)
	}
	defer sqlDB.Close()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := models.Migrate(startCtx, db); err != nil {
		return err
	}
	store, err := admin.Seed(startCtx, db, cfg.SeedUsers, passwordCost)
	if err != nil {
		return err
	}
	var guard *auth.Guard
	if cfg.AuthFailLimit > 0 {
		guard, err = auth.NewGuard(guardRdb, auth.GuardOptions{Prefix: cfg.KeyPrefix, Failures: cfg.AuthFailLimit,
			Window: cfg.AuthFailWindow, TrustedTTL: cfg.AuthTrustedTTL, Timeout: checkTimeout, FailOpen: cfg.FailOpen})
		if err != nil {
			return err // config.Load checked the settings: a bug, not a setting
		}
	}
	// A check waits for a free slot at most a second: a caller turned away
	// then (503, Retry-After: 1) is told to come back, not counted as a guess.
	authn := auth.New(auth.BoundChecks(store, cfg.AuthMaxChecks, time.Second), auth.AuthenticatorOptions{
		Guard: guard, Warner: middleware.NewThrottledLog(log, 10*time.Second), Timeout: checkTimeout,
		PasswordTTL: 5 * time.Minute, KeyTTL: cfg.AuthKeyCacheTTL, Clock: opts.now})
	identify := middleware.Identify(log, authn, cfg.IPv6Prefix)
	var limiters []gin.HandlerFunc
	var limit *middleware.RateLimit
	var engine *limiter.Limiter
	var inForce *live.Policies // the policies in force (nil: rate limiting off)
	summary := routes.Summary{Enabled: cfg.Enabled, Algorithm: cfg.Algorithm, Limit: cfg.Limit, Burst: cfg.Burst, Window: cfg.Window}
	if cfg.Enabled {
		if cfg.PolicyFile != "" {
			for _, p := range policies {
				summary.Policies = append(summary.Policies, p.Name)
			}
			summary.Special = policy.Describe(policies)
		}
		localRdb, closeLocal, err := openLocal(cfg.OnRedisError, redisName)
		if err != nil {
			return err
		}
		defer closeLocal()
		var local redis.Scripter
		if localRdb != nil {
			local = localRdb
		}
		// The engine orders its stages itself (limiter.New).
		engine = limiter.New(rdb, limiter.Options{
			Timeout:        cfg.Timeout,
			PipelineBatch:  cfg.PipelineBatch,
			PipelineWindow: cfg.PipelineWindow,
			DenyCacheSize:  cfg.DenyCacheSize,
			Lease:          cfg.Lease,
			Log:            log,
			Local:          local,
			Instances:      cfg.Instances,
			InstancesKey:   cfg.KeyPrefix + "instances",
		})
		defer engine.Close()
		if cfg.DenyCacheSize > 0 {
			// Denials cached in memory must not outlive a grant or reset
			// made with "tollgate quota".
			stop, err := engine.Follow(startCtx, rdb, admin.QuotaChannel(cfg.KeyPrefix))
			if err != nil {
				return err
			}
			defer stop()
		}
		inForce = live.New(policies, version, cfg.KeyPrefix, engine) // no overrides yet
		limit = middleware.NewRateLimit(log, engine, inForce, cfg.FailOpen, cfg.IPv6Prefix, middleware.RateLimitOptions{Clock: opts.now,
			// At shutdown, requests waiting for their slot are refused at once.
			MaxWaiting: cfg.MaxWaiting, Drain: ctx.Done(), AsideSlow: opts.asideSlow})
		limiters = []gin.HandlerFunc{limit.Handler()}
	}
	svc, err := routes.NewService(startCtx, routes.ServiceDeps{
		Log:             log,
		Store:           store,
		SQL:             sqlDB,
		Driver:          cfg.DBDriver,
		PingRedis:       func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		Identify:        identify,
		Proxies:         cfg.TrustedProxies,
		SeparateMetrics: cfg.MetricsAddr != "",
		Summary:         summary,
		LivePolicy: func() func() (names []string, version string) {
			if inForce == nil || cfg.PolicyFile == "" {
				return nil
			}
			return func() ([]string, string) {
				version, _, names := inForce.Versions()
				return names, version
			}
		}(),
		Limiters:  limiters,
		RateLimit: limit,
	})
	if err != nil {
		return err
	}
	if engine != nil {
		svc.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_ratelimit_circuit_open",
			Help: "1 while the circuit breaker keeps limiter calls away from Redis.",
		}, func() float64 {
			if engine.CircuitOpen() {
				return 1
			}
			return 0
		}))
		svc.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_ratelimit_waiting",
			Help: "Requests held for their slot under a limit with a delay (at most RATE_LIMIT_MAX_WAITING).",
		}, func() float64 { return float64(limit.Waiting()) }))
		svc.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tollgate_ratelimit_local_mode",
			Help: "1 while decisions are made in this process at its share of every limit, Redis being unavailable (RATE_LIMIT_ON_REDIS_ERROR=local).",
		}, func() float64 {
			if engine.LocalMode() {
				return 1
			}
			return 0
		}))
		w := live.Watch{PolicyFile: cfg.PolicyFile, Version: version, CandidateFile: cfg.CandidateFile, Routes: routes.Limited(),
			Reload: opts.reload, Poll: opts.policyPoll, Settle: opts.policySettle,
			Overrides: store, Refresh: cfg.OverridesRefresh, Now: opts.now, Warn: middleware.NewThrottledLog(log, time.Minute)}
		if cfg.CandidateFile != "" {
			candidate, cversion, err := admin.LoadPolicies(cfg, cfg.CandidateFile, routes.Limited())
			if err != nil {
				return err
			}
			inForce.SetCandidate(candidate, cversion)
			w.CandidateVersion = cversion
		}
		stopLive, err := live.Start(ctx, log, svc.Registry, inForce, w)
		if err != nil {
			return err
		}
		defer stopLive()
	}

	attrs := []any{"rate_limit_enabled", cfg.Enabled}
	if cfg.PolicyFile != "" { // the RATE_LIMIT_* limit is not used
		attrs = append(attrs, "policy_file", cfg.PolicyFile, "policies", summary.Policies)
	} else {
		attrs = append(attrs, "algorithm", cfg.Algorithm, "limit", cfg.Limit, "window", cfg.Window.String())
	}
	attrs = append(attrs, "on_redis_error", cfg.OnRedisError, "redis", redisName, "database", cfg.DBDriver)
	return serve(ctx, log, cfg.Port, cfg.MetricsAddr, cfg.Shutdown, svc.Handler, svc.Metrics, attrs)
}

// serve serves handler on port (and metricsHandler on metricsAddr, if set)
// until ctx is done, logging "serving" with attrs, then shuts down, giving
// requests in flight up to shutdown to finish.
func serve(ctx context.Context, log *slog.Logger, port int, metricsAddr string, shutdown time.Duration, handler, metricsHandler http.Handler, attrs []any) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// inflight counts requests inside the handler: at a shutdown that runs
	// out of time, they tell cut requests from connections that never sent
	// a whole request (a slow client still sending its header).
	var inflight atomic.Int64
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inflight.Add(1)
		defer inflight.Add(-1)
		handler.ServeHTTP(w, r)
	})
	servers := []*http.Server{routes.NewServer(counted, log)}
	listeners := []net.Listener{ln}
	if metricsAddr != "" {
		mln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on METRICS_ADDR: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metricsHandler)
		servers = append(servers, routes.NewServer(mux, log))
		listeners = append(listeners, mln)
	}
	// The addresses bound, not the ones asked for: with port 0 (tests) the
	// log line is how the caller learns where the service listens.
	addrs := []any{"addr", ln.Addr().String(), "metrics_addr", ""}
	if len(listeners) > 1 {
		addrs[3] = listeners[1].Addr().String()
	}
	log.Info("serving", append(addrs, attrs...)...)

	serveErr := make(chan error, len(servers))
	for i, srv := range servers {
		go func() { serveErr <- srv.Serve(listeners[i]) }()
	}
	select {
	case err := <-serveErr:
		for _, srv := range servers {
			srv.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// In-flight requests get up to SHUTDOWN_TIMEOUT to finish.
	shutCtx, cancelShut := context.WithTimeout(context.Background(), shutdown)
	defer cancelShut()
	var shutErr error
	for _, srv := range servers {
		if err := srv.Shutdown(shutCtx); err != nil {
			shutErr = errors.Join(shutErr, err)
		}
	}
	if shutErr != nil {
		for _, srv := range servers {
			srv.Close()
		}
		if n := inflight.Load(); n > 0 {
			return fmt.Errorf("shutdown: %d requests cut after SHUTDOWN_TIMEOUT (%v): %w", n, shutdown, shutErr)
		}
		log.Warn("shutdown: connections open after SHUTDOWN_TIMEOUT, none in a request (clients still sending one); closed them",
			"shutdown_timeout", shutdown.String())
	}
	log.Info("stopped")
	return nil
}

// redisLog is go-redis's logger: its messages become warnings of the
// service's log, throttled (a dead Redis makes one per failed dial).
type redisLog struct{ warn *middleware.ThrottledLog }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.warn.Warn("redis client", "detail", fmt.Sprintf(format, v...))
}

// logFlush is how long a log line may wait in the batch: short enough for
// someone watching the log, long enough for a batch to hold many lines
// under load.
const logFlush = 100 * time.Millisecond

// newLogger writes format ("json" or "text") lines at level and above to
// w, which must be safe for concurrent writes (LogWriter is).
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(middleware.NewLogHandler(w, level)) // slog's JSON; access lines written by hand
}

// openDB connects to the database, retrying with backoff for up to within:
// at start-up the database may still be coming up.
func openDB(ctx context.Context, log *slog.Logger, driver, dsn string, within time.Duration) (*gorm.DB, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	wait := 250 * time.Millisecond
	for {
		attemptCtx, cancelAttempt := context.WithTimeout(ctx, 5*time.Second)
		db, err := models.Open(attemptCtx, log, driver, dsn)
		cancelAttempt()
		if err == nil {
			return db, nil
		}
		if errors.Is(err, models.ErrNoDatabase) {
			return nil, err // an operator must create it: waiting will not
		}
		log.Warn("database unavailable, retrying", "err", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("database not reachable within %v (DB_CONNECT_TIMEOUT): %w", within, err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// checkTimeout bounds a credential check (bcrypt or a key lookup), and each
// of the brute-force guard's Redis calls around it. They are off the hot path:
// a guard cut at RATE_LIMIT_TIMEOUT would fail open under load, exactly when
// guesses pour in.
const checkTimeout = 2 * time.Second

// sentinel is where Redis Sentinel says the master is: the Sentinels' addrs
// (empty: no Sentinel), the master's name and the Sentinels' password.
type sentinel struct {
	addrs            []string
	master, password string
}

// openRedis connects to the Redis Cluster of the seed nodes in cluster, or to
// the master the Sentinels of s name, or to the Redis at url, or starts an
// in-process one when all are empty. It returns two clients of that Redis:
// rdb for the limiter, whose timeouts match the limiter's deadline, so a dead
// Redis costs a request at most that long, and guardRdb for the brute-force
// guard, with checkTimeout and a small pool of its own, so that load on the
// limiter can neither starve nor cut short the guard's calls.
func openRedis(ctx context.Context, log *slog.Logger, url string, cluster []string, s sentinel, timeout time.Duration) (rdb, guardRdb redis.UniversalClient, name string, closeAll func(), err error) {
	opt := &redis.UniversalOptions{}
	closeServer := func() {}
	switch {
	case len(cluster) > 0:
		opt.Addrs = cluster
		opt.IsClusterMode = true
		name = "cluster " + strings.Join(cluster, ",")
	case len(s.addrs) > 0:
		// With MasterName, NewUniversalClient makes a failover client
		// (redis.NewFailoverClient): each new connection asks a Sentinel
		// where the master is, and a +switch-master closes the connections
		// to the old one, so decisions move to a promoted replica by
		// themselves. A *redis.Client still: the limiter pipelines on it.
		opt.Addrs = s.addrs
		opt.MasterName = s.master
		opt.SentinelPassword = s.password
		name = "sentinel " + s.master + " via " + strings.Join(s.addrs, ",")
	case url != "":
		one, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, "", nil, fmt.Errorf("config: %w: REDIS_URL: %w", config.ErrInvalid, err)
		}
		opt.Addrs = []string{one.Addr}
		opt.DB = one.DB
		opt.Username, opt.Password = one.Username, one.Password
		opt.TLSConfig = one.TLSConfig
		name = one.Addr
	default:
		addr, stop, err := startEmbedded()
		if err != nil {
			return nil, nil, "", nil, err
		}
		closeServer = stop
		log.Warn("using embedded in-process redis: for development only; set REDIS_URL for production")
		opt.Addrs = []string{addr}
		name = "embedded"
	}
	opt.ContextTimeoutEnabled = true
	opt.MaxRetries = 1
	client := func(timeout time.Duration, poolSize int) redis.UniversalClient {
		o := *opt
		o.DialTimeout = max(timeout, time.Second)
		o.ReadTimeout = timeout
		o.WriteTimeout = timeout
		o.PoolTimeout = timeout
		o.PoolSize = poolSize // 0: go-redis's default, 10 per CPU
		return redis.NewUniversalClient(&o)
	}
	rdb = client(timeout, 0)
	guardRdb = client(checkTimeout, 8)
	closeAll = func() {
		rdb.Close()
		guardRdb.Close()
		closeServer()
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pingCtx).Err(); err != nil {
		closeAll()
		return nil, nil, "", nil, fmt.Errorf("ping redis at %s: %w", name, err)
	}
	return rdb, guardRdb, name, closeAll, nil
}

// startEmbedded starts an in-process Redis (miniredis) on a loopback port:
// the zero-setup run's Redis, and the one local decisions run the limiter's
// scripts on (RATE_LIMIT_ON_REDIS_ERROR=local).
func startEmbedded() (addr string, stop func(), err error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return "", nil, fmt.Errorf("start embedded redis: %w", err)
	}
	m.ClockTTL(true) // keys expire as the wall clock moves, as on a real Redis
	return m.Addr(), m.Close, nil
}

// openLocal starts the in-process Redis local decisions are made on, and a
// client of it; nil when there is none to make: another mode, or Redis is
// the embedded one already (it cannot fail on its own).
func openLocal(mode, redisName string) (rdb *redis.Client, closeAll func(), err error) {
	if mode != config.OnErrorLocal || redisName == "embedded" {
		return nil, func() {}, nil
	}
	addr, stop, err := startEmbedded()
	if err != nil {
		return nil, nil, err
	}
	rdb = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	return rdb, func() { rdb.Close(); stop() }, nil
}

// warnProxiesEverything warns when TRUSTED_PROXIES trusts every address:
// then any client can name any address in X-Forwarded-For, and the brute-
// force guard's per-address counters and trusted addresses mean nothing.
func warnProxiesEverything(log *slog.Logger, proxies []netip.Prefix) {
	for _, p := range proxies {
		if p.Bits() == 0 {
			log.Warn("TRUSTED_PROXIES trusts every address: any client can choose its address with X-Forwarded-For",
				"trusted_proxies", p.String())
		}
	}
}
