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
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
	"tollgate/middleware"
	"tollgate/models"
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
// machine; ns/op wants a quiet one.

// BenchmarkService is anonymous GET /continents through the handler
// routes.NewService builds, as run builds it with RATE_LIMIT_ENABLED=false:
// JSON access log at info on /dev/null (as bench's runs) through run's
// LogWriter, metrics, request id, identity (auth.Authenticator on SQLite),
// no limiter; the http row serves it with NewServer, as run does.
func BenchmarkService(b *testing.B) {
	log := benchLog(b)
	svc := limiterOff(b, log)
	b.Run("handler", func(b *testing.B) { serveParallel(b, svc.Handler) })
	b.Run("http", func(b *testing.B) { serveHTTP(b, NewServer(svc.Handler, log)) })
}

// benchLog is run's log, JSON at info, on /dev/null (as bench's runs).
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
	return slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// limiterOff is the service as run builds it with RATE_LIMIT_ENABLED=false:
// routes.NewService on SQLite, with identity (auth.Authenticator) and no
// limiter, logging to log.
func limiterOff(tb testing.TB, log *slog.Logger) Service {
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
	svc, err := NewService(ctx, ServiceDeps{
		Log:       log,
		Store:     store,
		SQL:       sqlDB,
		Driver:    "sqlite",
		PingRedis: ok,
		Identify:  middleware.Identify(log, authn, 64),
		Summary:   Summary{Enabled: false},
	})
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
	b.Run("handler", func(b *testing.B) { serveParallel(b, r) })
	b.Run("http", func(b *testing.B) { serveHTTP(b, &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}) })
}

// serveParallel sends anonymous GET /continents to h from every
// GOMAXPROCS goroutine, each with its own request and writer, and fails
// on any answer but 200.
func serveParallel(b *testing.B, h http.Handler) {
	b.Helper()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/continents", nil)
		req.RemoteAddr = "192.0.2.1:1234"
		w := &statusWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			w.status = 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK {
				b.Errorf("GET /continents status = %d, want 200", w.status)
				return
			}
		}
	})
}

// serveHTTP serves srv on a loopback listener and sends it anonymous GET
// /continents over keep-alive connections, 4 per GOMAXPROCS, each written
// and read by hand (no http.Client: less of the client in the figures);
// it fails on any answer but 200.
func serveHTTP(b *testing.B, srv *http.Server) {
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
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Errorf("GET /continents: status %d, body read: %v; want 200", resp.StatusCode, err)
				return
			}
		}
	})
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
