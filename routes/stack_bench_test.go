package routes

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
	"tollgate/auth"
	"tollgate/limiter"
	"tollgate/live"
	"tollgate/middleware"
	"tollgate/models"
	"tollgate/policy"
)

// The service's own stack against bare gin, in process: the ratio of
// BenchmarkService to BenchmarkBareGin is what bench's "limiter off / bare
// gin" measures from outside with wrk. Compare with
//
//	go test -run '^$' -bench 'Service|BareGin' -benchmem -cpu 2 ./routes/
//
// Each has two rows: handler (ServeHTTP called directly: the stack's own
// work) and http (keep-alive connections to a real listener on loopback,
// the client's work included). allocs/op and B/op are exact on a busy
// machine; ns/op wants a quiet one. cpu-ns/op is the process's CPU time
// (user and system) per request: on a machine shared with others it moves
// much less than ns/op, as time other processes take is not counted.

// BenchmarkService is anonymous GET /continents through the handler
// routes.NewService builds, as run builds it with RATE_LIMIT_ENABLED=false:
// JSON access log at info on /dev/null (as bench's runs) as run writes it
// (benchLog), metrics, request id, identity (auth.Authenticator on SQLite),
// no limiter; the http row serves it with NewServer, as run does.
func BenchmarkService(b *testing.B) {
	log := benchLog(b)
	svc := limiterOff(b, log)
	b.Run("handler", func(b *testing.B) { serveParallel(b, svc.Handler, http.StatusOK) })
	b.Run("http", func(b *testing.B) { serveHTTP(b, NewServer(svc.Handler, log), http.StatusOK) })
}

// BenchmarkServiceDenied is BenchmarkService with the limiter on, as run
// builds it (fixed_window, deny cache, leases, the embedded Redis), every
// request over a limit of 1 an hour: each is answered 429 from the deny
// cache, without Redis. Its ratio to BenchmarkService is bench's "all
// denied / limiter off".
func BenchmarkServiceDenied(b *testing.B) {
	log := benchLog(b)
	svc := newService(b, log, benchLimit(b, log, 1))
	warm(b, svc.Handler, http.StatusTooManyRequests)
	b.Run("handler", func(b *testing.B) { serveParallel(b, svc.Handler, http.StatusTooManyRequests) })
	b.Run("http", func(b *testing.B) { serveHTTP(b, NewServer(svc.Handler, log), http.StatusTooManyRequests) })
}

// BenchmarkServiceLeased is BenchmarkService with the limiter on, as run
// builds it, every request admitted under a limit of 10^9 an hour from the
// lease its rule set holds: decided in memory, without Redis. Its ratio to
// BenchmarkService is bench's "all admitted, leases / limiter off".
func BenchmarkServiceLeased(b *testing.B) {
	log := benchLog(b)
	svc := newService(b, log, benchLimit(b, log, 1_000_000_000))
	warm(b, svc.Handler, http.StatusOK)
	b.Run("handler", func(b *testing.B) { serveParallel(b, svc.Handler, http.StatusOK) })
	b.Run("http", func(b *testing.B) { serveHTTP(b, NewServer(svc.Handler, log), http.StatusOK) })
}

// benchLimit is the rate limit run builds with the default policy,
// fixed_window, limit an hour, the deny cache and leases on, on the
// embedded Redis.
func benchLimit(b *testing.B, log *slog.Logger, limit int) *middleware.RateLimit {
	b.Helper()
	m := miniredis.RunT(b)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	b.Cleanup(func() { rdb.Close() })
	engine := limiter.New(rdb, limiter.Options{Timeout: time.Second, DenyCacheSize: 10_000, Lease: true, Log: log})
	b.Cleanup(engine.Close)
	policies, err := policy.Default("fixed_window", algorithms.Limit{Requests: limit, Window: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	return middleware.NewRateLimit(log, engine, live.New(policies, "", "bench:", engine), true, 64, middleware.RateLimitOptions{})
}

// warm sends h requests until it answers want, then 1000 more: past the
// first decisions, into the deny cache or a lease. It does so for the
// handler rows' client and for the http rows' (loopback): each is a caller
// of its own.
func warm(b *testing.B, h http.Handler, want int) {
	b.Helper()
	for _, addr := range []string{"192.0.2.1:1234", "127.0.0.1:1234"} {
		warmFrom(b, h, want, addr)
	}
}

func warmFrom(b *testing.B, h http.Handler, want int, addr string) {
	b.Helper()
	req := httptest.NewRequest(http.MethodGet, "/continents", nil)
	req.RemoteAddr = addr
	w := &statusWriter{h: http.Header{}}
	for i := 0; i < 1000 || w.status != want; i++ {
		if i > 100_000 {
			b.Fatalf("GET /continents: status %d after 100,000 requests, want %d", w.status, want)
		}
		clear(w.h)
		w.status = 0
		h.ServeHTTP(w, req)
	}
}

// benchLog is run's log, JSON at info (LogHandler on a LogWriter), on
// /dev/null (as bench's runs).
func benchLog(b *testing.B) *slog.Logger {
	b.Helper()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	out := middleware.NewLogWriter(devNull, 100*time.Millisecond)
	b.Cleanup(func() {
		out.Close()
		devNull.Close()
	})
	return slog.New(middleware.NewLogHandler(out, slog.LevelInfo))
}

// limiterOff is the service as run builds it with RATE_LIMIT_ENABLED=false:
// routes.NewService on SQLite, with identity (auth.Authenticator) and no
// limiter, logging to log.
func limiterOff(tb testing.TB, log *slog.Logger) Service {
	tb.Helper()
	return newService(tb, log, nil)
}

// newService is the service as run builds it: routes.NewService on SQLite,
// with identity (auth.Authenticator) and limit (nil: the limiter off),
// logging to log.
func newService(tb testing.TB, log *slog.Logger, limit *middleware.RateLimit) Service {
	tb.Helper()
	ctx := context.Background()
	db, err := models.Open(ctx, slog.New(slog.DiscardHandler), "sqlite", filepath.Join(tb.TempDir(), "bench.db"))
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sqlDB.Close() })
	if err := models.Migrate(ctx, db); err != nil {
		tb.Fatal(err)
	}
	if err := models.Seed(ctx, db, nil); err != nil {
		tb.Fatal(err)
	}
	store, err := models.NewStore(db, models.StoreOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	authn := auth.New(store, auth.AuthenticatorOptions{Timeout: 2 * time.Second, PasswordTTL: 5 * time.Minute, KeyTTL: 10 * time.Second})
	deps := ServiceDeps{
		Log:       log,
		Store:     store,
		SQL:       sqlDB,
		Driver:    "sqlite",
		PingRedis: ok,
		Identify:  middleware.Identify(log, authn, 64),
		Summary:   Summary{Enabled: limit != nil},
	}
	if limit != nil {
		deps.Limiters, deps.RateLimit = []gin.HandlerFunc{limit.Handler()}, limit
	}
	svc, err := NewService(ctx, deps)
	if err != nil {
		tb.Fatal(err)
	}
	return svc
}

// TestLimiterOffAllocs: the service's own stack (request log, metrics,
// request id, identity, the handler) allocates at most 5 times for an
// anonymous GET /continents with the limiter off (it was 14; bare gin's is
// 3), JSON access log on. The race detector allocates for itself, and
// drops what sync.Pool is given at random: not counted under it.
func TestLimiterOffAllocs(t *testing.T) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				t.Skip("allocations are not counted under the race detector")
			}
		}
	}
	svc := limiterOff(t, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	req := httptest.NewRequest(http.MethodGet, "/continents", nil)
	req.RemoteAddr = "192.0.2.1:1234"
	w := &statusWriter{h: http.Header{}}
	allocs := testing.AllocsPerRun(1000, func() {
		clear(w.h)
		w.status = 0
		svc.Handler.ServeHTTP(w, req)
	})
	if w.status != http.StatusOK {
		t.Fatalf("GET /continents status = %d, want 200", w.status)
	}
	if allocs > 5 {
		t.Errorf("GET /continents, limiter off: %v allocations a request, want <= 5", allocs)
	}
}

// BenchmarkBareGin is bench's bare peer (bench/peer.go tinyPeer, kind
// "bare"): gin alone, c.JSON of the same seven records, no middleware, and
// the peer's http.Server.
func BenchmarkBareGin(b *testing.B) {
	body, err := json.Marshal(toContinents(sevenContinents))
	if err != nil {
		b.Fatal(err)
	}
	var continents []struct {
		ContinentID   int64  `json:"continent_id"`
		ContinentName string `json:"continent_name"`
	}
	if err := json.Unmarshal(body, &continents); err != nil {
		b.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.GET("/continents", func(c *gin.Context) { c.JSON(http.StatusOK, continents) })
	b.Run("handler", func(b *testing.B) { serveParallel(b, r, http.StatusOK) })
	b.Run("http", func(b *testing.B) {
		serveHTTP(b, &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}, http.StatusOK)
	})
}

// serveParallel sends anonymous GET /continents to h from every
// GOMAXPROCS goroutine, each with its own request and writer, and fails
// on any answer but want.
func serveParallel(b *testing.B, h http.Handler, want int) {
	b.Helper()
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/continents", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		w := &statusWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			w.status = 0
			h.ServeHTTP(w, req)
			if w.status != want {
				b.Errorf("GET /continents status = %d, want %d", w.status, want)
				return
			}
		}
	})
}

// serveHTTP serves srv on a loopback listener and sends it anonymous GET
// /continents over keep-alive connections, 4 per GOMAXPROCS, each written
// and read by hand (no http.Client: less of the client in the figures);
// it fails on any answer but want.
func serveHTTP(b *testing.B, srv *http.Server, want int) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }() // ErrServerClosed at Cleanup
	b.Cleanup(func() { srv.Close() })
	req := []byte("GET /continents HTTP/1.1\r\nHost: bench\r\n\r\n")
	b.SetParallelism(4)
	b.ReportAllocs()
	defer reportCPU(b)()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		for pb.Next() {
			if _, err := conn.Write(req); err != nil {
				b.Error(err)
				return
			}
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				b.Error(err)
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != want {
				b.Errorf("GET /continents: status %d, body read: %v; want %d", resp.StatusCode, err, want)
				return
			}
		}
	})
}

// reportCPU starts counting the process's CPU time; the function it
// returns reports it per operation as cpu-ns/op.
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
	}
}

// cpuTime is the CPU time the process used so far, in user and system mode.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// statusWriter keeps its header map, cleared between requests, and the
// status, nothing else: the figures are the handler's own.
type statusWriter struct {
	h      http.Header
	status int
}

func (w *statusWriter) Header() http.Header { return w.h }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}

func (w *statusWriter) WriteHeader(s int) { w.status = s }
