package routes

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"

	"tollgate/live"
	"tollgate/middleware"
	"tollgate/models"
)

// sevenContinents is the reference data, ids 1..7 in the tutorial's order.
var sevenContinents = []models.Continent{
	{ContinentID: 1, ContinentName: "ASIA"},
	{ContinentID: 2, ContinentName: "AFRICA"},
	{ContinentID: 3, ContinentName: "NORTH AMERICA"},
	{ContinentID: 4, ContinentName: "SOUTH AMERICA"},
	{ContinentID: 5, ContinentName: "ANTARCTICA"},
	{ContinentID: 6, ContinentName: "EUROPE"},
	{ContinentID: 7, ContinentName: "AUSTRALIA"},
}

func ok(context.Context) error     { return nil }
func broken(context.Context) error { return errors.New("connection refused") }

// newAPI builds routes.New with the seven continents, checks, no proxies and
// limiters.
func newAPI(t *testing.T, checks map[string]Check, limiters ...gin.HandlerFunc) http.Handler {
	t.Helper()
	h, err := New(Deps{
		Log:        slog.New(slog.DiscardHandler),
		Continents: sevenContinents,
		Ready:      checks,
		Limiters:   limiters,
	})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return h
}

func do(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// decode decodes the JSON body of w into a value of type T, checking the
// content type first.
func decode[T any](t *testing.T, w *httptest.ResponseRecorder) T {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type = %q, want application/json; charset=utf-8", ct)
	}
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode body %q: %v", w.Body.String(), err)
	}
	return v
}

func TestListContinents(t *testing.T) {
	h := newAPI(t, map[string]Check{"redis": ok})

	w := do(t, h, http.MethodGet, "/continents")

	if w.Code != http.StatusOK {
		t.Fatalf("GET /continents status = %d, want %d", w.Code, http.StatusOK)
	}
	// A map per item, so an extra or renamed field shows up in the diff.
	want := []map[string]any{
		{"continent_id": float64(1), "continent_name": "ASIA"},
		{"continent_id": float64(2), "continent_name": "AFRICA"},
		{"continent_id": float64(3), "continent_name": "NORTH AMERICA"},
		{"continent_id": float64(4), "continent_name": "SOUTH AMERICA"},
		{"continent_id": float64(5), "continent_name": "ANTARCTICA"},
		{"continent_id": float64(6), "continent_name": "EUROPE"},
		{"continent_id": float64(7), "continent_name": "AUSTRALIA"},
	}
	if diff := cmp.Diff(want, decode[[]map[string]any](t, w)); diff != "" {
		t.Errorf("GET /continents body mismatch (-want +got):\n%s", diff)
	}
}

func TestGetContinent(t *testing.T) {
	tests := []struct {
		path       string
		wantStatus int
		wantBody   map[string]any
	}{
		{"/continents/1", http.StatusOK, map[string]any{"continent_id": float64(1), "continent_name": "ASIA"}},
		{"/continents/3", http.StatusOK, map[string]any{"continent_id": float64(3), "continent_name": "NORTH AMERICA"}},
		{"/continents/7", http.StatusOK, map[string]any{"continent_id": float64(7), "continent_name": "AUSTRALIA"}},
		{"/continents/99", http.StatusNotFound, map[string]any{"error": "continent not found"}},
		{"/continents/0", http.StatusNotFound, map[string]any{"error": "continent not found"}},
		{"/continents/-1", http.StatusNotFound, map[string]any{"error": "continent not found"}},
		{"/continents/abc", http.StatusBadRequest, map[string]any{"error": "continent id must be an integer"}},
		{"/continents/1.5", http.StatusBadRequest, map[string]any{"error": "continent id must be an integer"}},
		{"/continents/99999999999999999999", http.StatusNotFound, map[string]any{"error": "continent not found"}}, // numeric, beyond int64
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			h := newAPI(t, nil)

			w := do(t, h, http.MethodGet, tt.path)

			if w.Code != tt.wantStatus {
				t.Errorf("GET %s status = %d, want %d", tt.path, w.Code, tt.wantStatus)
			}
			if diff := cmp.Diff(tt.wantBody, decode[map[string]any](t, w)); diff != "" {
				t.Errorf("GET %s body mismatch (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		checks     map[string]Check
		wantStatus int
		wantBody   map[string]any
	}{
		{"healthz", "/healthz", map[string]Check{"redis": broken}, http.StatusOK, map[string]any{"status": "ok"}},
		{"readyz all pass", "/readyz", map[string]Check{"redis": ok, "database": ok}, http.StatusOK,
			map[string]any{"redis": "ok", "database": "ok"}},
		{"readyz one fails", "/readyz", map[string]Check{"redis": ok, "database": broken}, http.StatusServiceUnavailable,
			map[string]any{"redis": "ok", "database": "unavailable"}},
		{"readyz all fail", "/readyz", map[string]Check{"redis": broken, "database": broken}, http.StatusServiceUnavailable,
			map[string]any{"redis": "unavailable", "database": "unavailable"}},
		{"readyz no checks", "/readyz", nil, http.StatusOK, map[string]any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newAPI(t, tt.checks)

			w := do(t, h, http.MethodGet, tt.path)

			if w.Code != tt.wantStatus {
				t.Errorf("GET %s status = %d, want %d", tt.path, w.Code, tt.wantStatus)
			}
			if diff := cmp.Diff(tt.wantBody, decode[map[string]any](t, w)); diff != "" {
				t.Errorf("GET %s body mismatch (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func TestReadyzChecksHaveADeadline(t *testing.T) {
	var hadDeadline atomic.Bool
	h := newAPI(t, map[string]Check{"redis": func(ctx context.Context) error {
		_, ok := ctx.Deadline()
		hadDeadline.Store(ok)
		return nil
	}})

	do(t, h, http.MethodGet, "/readyz")

	if !hadDeadline.Load() {
		t.Errorf("readyz check ctx has no deadline, want one")
	}
}

func TestLimiters(t *testing.T) {
	tests := []struct {
		path         string
		wantStatus   int
		wantLimiters int32
	}{
		{"/healthz", http.StatusOK, 0},
		{"/readyz", http.StatusOK, 0},
		{"/continents", http.StatusTeapot, 1},
		{"/continents/3", http.StatusTeapot, 1},
	}
	// HEAD is answered wherever GET is, and limited alike.
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, tt := range tests {
			t.Run(method+" "+tt.path, func(t *testing.T) {
				var limited atomic.Int32
				deny := func(c *gin.Context) {
					limited.Add(1)
					c.AbortWithStatusJSON(http.StatusTeapot, gin.H{"error": "limited"})
				}
				h := newAPI(t, map[string]Check{"redis": ok}, deny)

				w := do(t, h, method, tt.path)

				if w.Code != tt.wantStatus {
					t.Errorf("%s %s status = %d, want %d", method, tt.path, w.Code, tt.wantStatus)
				}
				if got := limited.Load(); got != tt.wantLimiters {
					t.Errorf("%s %s ran the limiter %d times, want %d", method, tt.path, got, tt.wantLimiters)
				}
			})
		}
	}
}

func TestLimitersRunInOrder(t *testing.T) {
	var order []string
	limiter := func(name string) gin.HandlerFunc {
		return func(c *gin.Context) { order = append(order, name) }
	}
	h := newAPI(t, nil, limiter("first"), limiter("second"))

	w := do(t, h, http.MethodGet, "/continents/1")

	if w.Code != http.StatusOK {
		t.Errorf("GET /continents/1 status = %d, want %d", w.Code, http.StatusOK)
	}
	if diff := cmp.Diff([]string{"first", "second"}, order); diff != "" {
		t.Errorf("limiters order mismatch (-want +got):\n%s", diff)
	}
}

func TestUnmatched(t *testing.T) {
	tests := []struct {
		method     string
		path       string
		wantStatus int
		wantError  string
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, "not found"},
		{http.MethodGet, "/continents/1/countries", http.StatusNotFound, "not found"},
		{http.MethodPost, "/continents", http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodDelete, "/continents/1", http.StatusMethodNotAllowed, "method not allowed"},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, "method not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			var limited atomic.Int32
			h := newAPI(t, nil, func(c *gin.Context) { limited.Add(1) })

			w := do(t, h, tt.method, tt.path)

			if w.Code != tt.wantStatus {
				t.Errorf("%s %s status = %d, want %d", tt.method, tt.path, w.Code, tt.wantStatus)
			}
			if diff := cmp.Diff(map[string]any{"error": tt.wantError}, decode[map[string]any](t, w)); diff != "" {
				t.Errorf("%s %s body mismatch (-want +got):\n%s", tt.method, tt.path, diff)
			}
			if got := limited.Load(); got != 0 {
				t.Errorf("%s %s ran the limiter %d times, want 0", tt.method, tt.path, got)
			}
		})
	}
}

func TestPanicIsInternalError(t *testing.T) {
	h := newAPI(t, nil, func(c *gin.Context) { panic("limiter bug") })

	w := do(t, h, http.MethodGet, "/continents")

	if w.Code != http.StatusInternalServerError {
		t.Errorf("GET /continents status = %d, want %d", w.Code, http.StatusInternalServerError)
	}
	if diff := cmp.Diff(map[string]any{"error": "internal error"}, decode[map[string]any](t, w)); diff != "" {
		t.Errorf("GET /continents body mismatch (-want +got):\n%s", diff)
	}
	if strings.Contains(w.Body.String(), "limiter bug") {
		t.Errorf("body %q leaks the panic value", w.Body.String())
	}
}

func TestClientIP(t *testing.T) {
	tests := []struct {
		name    string
		proxies []netip.Prefix
		header  string // X-Forwarded-For
		realIP  string // X-Real-IP
		want    string
	}{
		{"no proxies: forwarded for ignored", nil, "203.0.113.9", "", "192.0.2.1"},
		{"untrusted peer: forwarded for ignored", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, "203.0.113.9", "", "192.0.2.1"},
		{"trusted peer: forwarded for honoured", []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}, "203.0.113.9", "", "203.0.113.9"},
		{"trusted peer: x-real-ip ignored", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, "", "203.0.113.9", "192.0.2.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(Deps{
				Log:      slog.New(slog.DiscardHandler),
				Proxies:  tt.proxies,
				Limiters: []gin.HandlerFunc{func(c *gin.Context) { c.AbortWithStatusJSON(http.StatusOK, gin.H{"ip": c.ClientIP()}) }},
			})
			if err != nil {
				t.Fatalf("New() error = %v", err)
			}
			req := httptest.NewRequest(http.MethodGet, "/continents", nil)
			req.RemoteAddr = "192.0.2.1:1234"
			req.Header.Set("X-Forwarded-For", tt.header)
			req.Header.Set("X-Real-IP", tt.realIP)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)

			if diff := cmp.Diff(map[string]any{"ip": tt.want}, decode[map[string]any](t, w)); diff != "" {
				t.Errorf("ClientIP() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLimitedRoutes: Limited lists exactly the routes whose requests pass
// the limiters, so that policy files are checked against the real routes.
func TestLimitedRoutes(t *testing.T) {
	var limited atomic.Int32
	e, err := New(Deps{
		Log:            slog.New(slog.DiscardHandler),
		Continents:     sevenContinents,
		Ready:          map[string]Check{"redis": ok},
		MetricsHandler: http.NotFoundHandler(),
		RateLimit:      middleware.NewRateLimit(slog.New(slog.DiscardHandler), nil, live.New(nil, "", "p:", nil), true, 64, middleware.RateLimitOptions{}),
		Limiters:       []gin.HandlerFunc{func(c *gin.Context) { limited.Add(1) }},
	})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	var got []string
	for _, r := range e.Routes() {
		if r.Method != http.MethodGet {
			continue
		}
		before := limited.Load()
		path := strings.ReplaceAll(strings.ReplaceAll(r.Path, ":id", "1"), ":name", "style.css")
		do(t, e, http.MethodGet, path)
		if limited.Load() > before {
			got = append(got, r.Method+" "+r.Path)
		}
	}
	var want []string
	for _, r := range Limited() {
		want = append(want, r.Method+" "+r.Path)
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Limited() against the limited routes (-Limited +limited):\n%s", diff)
	}
}

// TestListContinentsAsData: the list answers what c.Data answers for its
// body, headers and all, to GET and HEAD.
func TestListContinentsAsData(t *testing.T) {
	body, err := json.Marshal(toContinents(sevenContinents))
	if err != nil {
		t.Fatal(err)
	}
	gin.SetMode(gin.ReleaseMode)
	ref := gin.New()
	ref.Match([]string{http.MethodGet, http.MethodHead}, "/continents", func(c *gin.Context) {
		c.Data(http.StatusOK, "application/json; charset=utf-8", body)
	})
	api := gin.New()
	api.Match([]string{http.MethodGet, http.MethodHead}, "/continents", listContinents(sevenContinents))
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		got, want := do(t, api, method, "/continents"), do(t, ref, method, "/continents")
		if got.Code != want.Code || !cmp.Equal(got.Header(), want.Header()) || got.Body.String() != want.Body.String() {
			t.Errorf("%s /continents = %d %v %s, want (c.Data) %d %v %s", method,
				got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
		}
	}
}
