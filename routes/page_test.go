package routes

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/middleware"
)

// pageHandler is the API with policy p behind a limiter that denies every
// request with 429 and counts how often it ran; it serves /metrics.
func pageHandler(t *testing.T, p Summary) (http.Handler, *int) {
	t.Helper()
	return pageHandlerMetrics(t, p, http.NotFoundHandler())
}

// pageHandlerMetrics is pageHandler with metrics as the /metrics handler
// (nil: metrics are on METRICS_ADDR).
func pageHandlerMetrics(t *testing.T, p Summary, metrics http.Handler) (http.Handler, *int) {
	t.Helper()
	var limited int
	h, err := New(Deps{
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Summary:        p,
		MetricsHandler: metrics,
		Limiters: []gin.HandlerFunc{func(c *gin.Context) {
			limited++
			middleware.Abort(c, http.StatusTooManyRequests, "rate limit exceeded", nil)
		}},
	})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return h, &limited
}

func serve(h http.Handler, method, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

func TestPageHome(t *testing.T) {
	tests := []struct {
		name   string
		policy Summary
		want   []string
		absent []string
	}{
		{
			name:   "fixed window",
			policy: Summary{Enabled: true, Algorithm: "fixed_window", Limit: 5, Burst: 5, Window: time.Minute},
			want:   []string{"<code>fixed_window</code>", "5 requests per 60 seconds"},
		},
		{
			name:   "token bucket shows burst",
			policy: Summary{Enabled: true, Algorithm: "token_bucket", Limit: 10, Burst: 20, Window: time.Second},
			want:   []string{"<code>token_bucket</code>", "10 requests per second", "up to 20 at once"},
		},
		{
			name:   "policy file lists its policies, not the RATE_LIMIT_* ones",
			policy: Summary{Enabled: true, Algorithm: "fixed_window", Limit: 5, Window: time.Minute, Policies: []string{"anonymous", "per-user"}},
			want:   []string{"<code>anonymous</code>, <code>per-user</code>", `href="/ratelimit"`},
			absent: []string{"5 requests per 60 seconds"},
		},
		{
			name: "policy file lists its in-flight limits and calendar quotas",
			policy: Summary{Enabled: true, Policies: []string{"heavy"},
				Special: []string{"heavy: at most 4 requests at once (a place expires after 30s)", "heavy: 10000 per month in Europe/Berlin"}},
			want: []string{`<ul id="special">`, "<li>heavy: at most 4 requests at once (a place expires after 30s)</li>", "<li>heavy: 10000 per month in Europe/Berlin</li>"},
		},
		{
			name:   "disabled",
			policy: Summary{Enabled: false, Algorithm: "fixed_window", Limit: 5, Window: time.Minute},
			want:   []string{"Rate limiting is off"},
		},
	}
	links := []string{
		`href="/continents"`, `href="/continents/1"`, `href="/healthz"`, `href="/readyz"`, `href="/metrics"`,
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, limited := pageHandler(t, tt.policy)
			w := serve(h, http.MethodGet, "/")
			if w.Code != http.StatusOK {
				t.Fatalf("GET / status = %d, want 200; body %s", w.Code, w.Body)
			}
			if got := w.Header().Get("Content-Type"); got != "text/html; charset=utf-8" {
				t.Errorf("GET / Content-Type = %q, want text/html; charset=utf-8", got)
			}
			body := w.Body.String()
			for _, s := range append(tt.want, links...) {
				if !strings.Contains(body, s) {
					t.Errorf("GET / body lacks %q", s)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(body, s) {
					t.Errorf("GET / body has %q", s)
				}
			}
			if *limited != 0 {
				t.Errorf("limiters ran %d times for /, want 0", *limited)
			}
		})
	}
}

// TestPageMetricsElsewhere: with METRICS_ADDR, /metrics is not on this
// server, and the page does not link it.
func TestPageMetricsElsewhere(t *testing.T) {
	h, _ := pageHandlerMetrics(t, Summary{Enabled: true, Algorithm: "fixed_window", Limit: 5, Window: time.Minute}, nil)
	body := serve(h, http.MethodGet, "/").Body.String()
	if strings.Contains(body, `href="/metrics"`) || !strings.Contains(body, "METRICS_ADDR") {
		t.Errorf("GET / with metrics elsewhere: want no /metrics link and a mention of METRICS_ADDR; body %s", body)
	}
}

func TestPageNoBurstForWindows(t *testing.T) {
	h, _ := pageHandler(t, Summary{Enabled: true, Algorithm: "sliding_log", Limit: 5, Burst: 5, Window: time.Minute})
	if body := serve(h, http.MethodGet, "/").Body.String(); strings.Contains(body, "at once") {
		t.Errorf("GET / shows a burst for sliding_log; body:\n%s", body)
	}
}

func TestPageLimitersStillLimitAPI(t *testing.T) {
	h, limited := pageHandler(t, Summary{Enabled: true, Algorithm: "fixed_window", Limit: 5, Window: time.Minute})
	if w := serve(h, http.MethodGet, "/continents"); w.Code != http.StatusTooManyRequests {
		t.Errorf("GET /continents status = %d, want 429 from the limiter", w.Code)
	}
	if *limited != 1 {
		t.Errorf("limiters ran %d times for /continents, want 1", *limited)
	}
}

func TestPageHead(t *testing.T) {
	h, _ := pageHandler(t, Summary{Enabled: true, Algorithm: "fixed_window", Limit: 5, Window: time.Minute})
	get := serve(h, http.MethodGet, "/")
	head := serve(h, http.MethodHead, "/")
	if head.Code != http.StatusOK {
		t.Fatalf("HEAD / status = %d, want 200", head.Code)
	}
	if got, want := head.Header().Get("Content-Type"), get.Header().Get("Content-Type"); got != want {
		t.Errorf("HEAD / Content-Type = %q, want %q as GET", got, want)
	}
	if got, want := head.Header().Get("Content-Length"), get.Header().Get("Content-Length"); got != want {
		t.Errorf("HEAD / Content-Length = %q, want %q as GET", got, want)
	}
}

func TestPageAssets(t *testing.T) {
	h, limited := pageHandler(t, Summary{Enabled: true, Algorithm: "fixed_window", Limit: 5, Window: time.Minute})
	page := serve(h, http.MethodGet, "/").Body.String()
	tests := []struct {
		name        string
		contentType string
		contains    string
	}{
		{name: "app.js", contentType: "text/javascript; charset=utf-8", contains: "fetch('/continents'"},
		{name: "style.css", contentType: "text/css; charset=utf-8", contains: ":focus-visible"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The page links the asset with its content version.
			i := strings.Index(page, "/static/"+tt.name+"?v=")
			if i < 0 {
				t.Fatalf("GET / does not link /static/%s?v=...", tt.name)
			}
			url := page[i : i+strings.IndexByte(page[i:], '"')]
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				w := serve(h, method, url)
				if w.Code != http.StatusOK {
					t.Fatalf("%s %s status = %d, want 200", method, url, w.Code)
				}
				if got := w.Header().Get("Content-Type"); got != tt.contentType {
					t.Errorf("%s %s Content-Type = %q, want %q", method, url, got, tt.contentType)
				}
				if got := w.Header().Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("%s %s X-Content-Type-Options = %q, want nosniff", method, url, got)
				}
				if got := w.Header().Get("Cache-Control"); !strings.Contains(got, "immutable") {
					t.Errorf("%s %s Cache-Control = %q, want immutable for a versioned URL", method, url, got)
				}
			}
			if body := serve(h, http.MethodGet, url).Body.String(); !strings.Contains(body, tt.contains) {
				t.Errorf("GET %s body lacks %q", url, tt.contains)
			}
			// Without the current version the asset is served, but revalidated.
			unversioned := serve(h, http.MethodGet, "/static/"+tt.name)
			if got := unversioned.Header().Get("Cache-Control"); got != "no-cache" {
				t.Errorf("GET /static/%s Cache-Control = %q, want no-cache", tt.name, got)
			}
		})
	}
	if w := serve(h, http.MethodGet, "/static/index.html"); w.Code != http.StatusNotFound {
		t.Errorf("GET /static/index.html status = %d, want 404 (the template is not an asset)", w.Code)
	}
	if *limited != 0 {
		t.Errorf("limiters ran %d times for the page's assets, want 0", *limited)
	}
}
