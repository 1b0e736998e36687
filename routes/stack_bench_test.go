package routes

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
	"tollgate/middleware"
	"tollgate/models"
)

// The service's own stack against bare gin, in process: the ratio of
// BenchmarkService to BenchmarkBareGin is what bench's "limiter off / bare
// gin" measures from outside, without the network and wrk. Compare with
//
//	go test -run '^$' -bench 'Service|BareGin' -benchmem -cpu 2 ./routes/
//
// allocs/op and B/op are exact on a busy machine; ns/op wants a quiet one.

// BenchmarkService is anonymous GET /continents through the handler
// routes.NewService builds, as run builds it with RATE_LIMIT_ENABLED=false:
// JSON access log at info (to io.Discard: its encoding is measured, its
// write is not), metrics, request id, identity (auth.Authenticator on
// SQLite), no limiter.
func BenchmarkService(b *testing.B) {
	ctx := context.Background()
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	db, err := models.Open(ctx, slog.New(slog.DiscardHandler), "sqlite", filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sqlDB.Close() })
	if err := models.Migrate(ctx, db); err != nil {
		b.Fatal(err)
	}
	if err := models.Seed(ctx, db, nil); err != nil {
		b.Fatal(err)
	}
	store := models.NewStore(db)
	authn := auth.New(store, nil, auth.WithTimeout(2*time.Second), auth.WithPasswordTTL(5*time.Minute), auth.WithKeyTTL(10*time.Second))
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
		b.Fatal(err)
	}
	serveParallel(b, svc.Handler)
}

// BenchmarkBareGin is bench's bare peer (bench/peer.go tinyPeer, kind
// "bare"): gin alone, c.JSON of the same seven records, no middleware.
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
	serveParallel(b, r)
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
