package middleware

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
)

// slogLine is a's line as slog's JSONHandler writes it, as RequestLog logs
// it without a LogHandler.
func slogLine(t *testing.T, a *accessLine) string {
	t.Helper()
	var b bytes.Buffer
	r := slog.NewRecord(a.end, slog.LevelInfo, "request", 0)
	r.AddAttrs(slog.String("method", a.method), slog.String("route", a.route), slog.Int("status", a.status))
	a.attrs(&r)
	if err := slog.NewJSONHandler(&b, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestAppendAccessAsSlog: the hand-written access line is byte for byte
// slog's, times and durations included, or is refused (ok false) when a
// field would need escaping.
func TestAppendAccessAsSlog(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 12, 7, 23, 5, 9, 120_000_000, time.UTC)
	base := accessLine{end: end, method: "GET", route: "/continents", status: 200, took: 1234 * time.Microsecond, requestID: "0123456789abcdef"}
	with := func(f func(a *accessLine)) accessLine {
		a := base
		f(&a)
		return a
	}
	tests := []struct {
		name   string
		a      accessLine
		wantOK bool
	}{
		{"plain", base, true},
		{"whole seconds, zero duration", with(func(a *accessLine) { a.end, a.took = end.Truncate(time.Second), 0 }), true},
		{"nanoseconds, a zone", with(func(a *accessLine) { a.end = time.Date(2026, 3, 29, 2, 30, 0, 1, berlin) }), true},
		{"monotonic reading", with(func(a *accessLine) { a.end = time.Now() }), true},
		{"one microsecond", with(func(a *accessLine) { a.took = time.Microsecond }), true},
		{"sub-microsecond", with(func(a *accessLine) { a.took = 999 }), true},
		{"hours", with(func(a *accessLine) { a.took = 30*time.Hour + 7*time.Microsecond }), true},
		{"longest", with(func(a *accessLine) { a.took = time.Duration(1<<63 - 1) }), true},
		{"identity, decided, shadow", with(func(a *accessLine) {
			a.identity, a.decided, a.decision, a.remaining = "key", true, ResultLimited, 0
			a.shadowLimited = []PolicyRef{{Policy: "strict"}, {Policy: "night-2"}}
		}), true},
		{"unmatched, OTHER, 404", with(func(a *accessLine) { a.method, a.route, a.status = "OTHER", "unmatched", 404 }), true},
		{"quote in a policy", with(func(a *accessLine) { a.shadowLimited = []PolicyRef{{Policy: `a"b`}} }), false},
		{"non-ASCII policy", with(func(a *accessLine) { a.shadowLimited = []PolicyRef{{Policy: "zürich"}} }), false},
		{"HTML in a route", with(func(a *accessLine) { a.route = "/a<b>&" }), false},
		{"control byte", with(func(a *accessLine) { a.requestID = "a\tb" }), false},
		{"year 10000", with(func(a *accessLine) { a.end = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := appendAccess(nil, &tt.a)
			if ok != tt.wantOK {
				t.Fatalf("appendAccess() ok = %v, want %v (line %s)", ok, tt.wantOK, got)
			}
			if !ok {
				return
			}
			if want := slogLine(t, &tt.a); string(got) != want {
				t.Errorf("appendAccess()\n got %s\nwant %s", got, want)
			}
		})
	}
}

// TestLogHandlerEscapes: a line with something to escape goes through slog
// (the same line as without a LogHandler), and lines logged with
// attributes added (WithAttrs) keep them.
func TestLogHandlerEscapes(t *testing.T) {
	t.Parallel()
	shadow := func(c *gin.Context) {
		c.Set(outcomeKey, Outcome{Policy: "p", Algorithm: "gcra", Result: ResultAllowed, Remaining: 1,
			ShadowLimited: []PolicyRef{{Policy: `zürich "night"`}}})
	}
	duration := regexp.MustCompile(`"duration_ms":[0-9.]+`)
	line := func(h slog.Handler, b *strings.Builder) string {
		gin.SetMode(gin.ReleaseMode)
		r := gin.New()
		r.Use(RequestLog(slog.New(h), nil))
		r.GET("/x", shadow, func(c *gin.Context) { c.Status(http.StatusOK) })
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		req.Header.Set(RequestIDHeader, "r1")
		r.ServeHTTP(httptest.NewRecorder(), req)
		return duration.ReplaceAllString(b.String()[strings.Index(b.String(), `"level"`):], `"duration_ms":D`) // past the time
	}
	var viaSlog, viaHandler strings.Builder
	want := line(slog.NewJSONHandler(&viaSlog, nil), &viaSlog)
	if got := line(NewLogHandler(&viaHandler, nil), &viaHandler); got != want {
		t.Errorf("through LogHandler\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(want, `"shadow_limited":"zürich \"night\""`) {
		t.Errorf("line %s: shadow_limited not escaped as expected", want)
	}
	var withAttrs strings.Builder
	if got := line(NewLogHandler(&withAttrs, nil).WithAttrs([]slog.Attr{slog.String("instance", "a")}), &withAttrs); !strings.Contains(got, `"msg":"request","instance":"a","method":"GET"`) {
		t.Errorf("through LogHandler.WithAttrs: %s, want the attribute kept", got)
	}
}
