package middleware

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// TestRequestLogLine pins the access line, field by field and in order, in
// both formats, and through LogHandler, which writes it by hand: a faster
// request log must write the very same line. The
// time and the duration vary; they are replaced by T and D.
func TestRequestLogLine(t *testing.T) {
	anonymous := func(c *gin.Context) {
		c.Set(identityKey, auth.Identity{Kind: auth.IP, Addr: "192.0.2.1", Tier: "anonymous"})
	}
	byKey := func(c *gin.Context) {
		c.Set(identityKey, auth.Identity{Kind: auth.User, Name: "bob", Tier: "gold", ByKey: true})
	}
	decided := func(c *gin.Context) {
		c.Set(outcomeKey, Outcome{Policy: "default", Algorithm: "gcra", Result: ResultAllowed, Remaining: 4,
			ShadowLimited: []PolicyRef{{Policy: "strict", Algorithm: "fixed_window"}, {Policy: "night", Algorithm: "gcra"}}})
	}
	tests := []struct {
		name     string
		method   string
		target   string
		header   map[string]string
		handlers []gin.HandlerFunc
		json     string
		text     string
	}{
		{
			name: "anonymous", method: http.MethodGet, target: "/x/7", header: map[string]string{"X-Request-ID": "abc-123"},
			handlers: []gin.HandlerFunc{anonymous},
			json:     `{"time":T,"level":"INFO","msg":"request","method":"GET","route":"/x/:id","status":200,"duration_ms":D,"request_id":"abc-123","identity":"ip"}`,
			text:     `time=T level=INFO msg=request method=GET route=/x/:id status=200 duration_ms=D request_id=abc-123 identity=ip`,
		},
		{
			name: "no identity", method: http.MethodHead, target: "/x/7", header: map[string]string{"X-Request-ID": "a.b_c"},
			json: `{"time":T,"level":"INFO","msg":"request","method":"HEAD","route":"/x/:id","status":200,"duration_ms":D,"request_id":"a.b_c"}`,
			text: `time=T level=INFO msg=request method=HEAD route=/x/:id status=200 duration_ms=D request_id=a.b_c`,
		},
		{
			name: "decided, shadow limited", method: http.MethodGet, target: "/x/7", header: map[string]string{"X-Request-ID": "r1"},
			handlers: []gin.HandlerFunc{byKey, decided},
			json:     `{"time":T,"level":"INFO","msg":"request","method":"GET","route":"/x/:id","status":200,"duration_ms":D,"request_id":"r1","identity":"key","decision":"allowed","remaining":4,"shadow_limited":"strict","shadow_limited":"night"}`,
			text:     `time=T level=INFO msg=request method=GET route=/x/:id status=200 duration_ms=D request_id=r1 identity=key decision=allowed remaining=4 shadow_limited=strict shadow_limited=night`,
		},
		{
			name: "unmatched, unknown method", method: "BREW", target: "/nowhere", header: map[string]string{"X-Request-ID": "r2"},
			json: `{"time":T,"level":"INFO","msg":"request","method":"OTHER","route":"unmatched","status":404,"duration_ms":D,"request_id":"r2"}`,
			text: `time=T level=INFO msg=request method=OTHER route=unmatched status=404 duration_ms=D request_id=r2`,
		},
		{
			name: "fresh id", method: http.MethodGet, target: "/x/7", header: map[string]string{"X-Request-ID": "bad id"},
			json: `{"time":T,"level":"INFO","msg":"request","method":"GET","route":"/x/:id","status":200,"duration_ms":D,"request_id":"ID"}`,
			text: `time=T level=INFO msg=request method=GET route=/x/:id status=200 duration_ms=D request_id=ID`,
		},
	}
	// vary replaces what differs from run to run: the time, the duration
	// and a fresh request id.
	type vary struct {
		re   *regexp.Regexp
		with string
	}
	jsonVary := []vary{
		{regexp.MustCompile(`"time":"[^"]+"`), `"time":T`},
		{regexp.MustCompile(`"duration_ms":[0-9.e+-]+`), `"duration_ms":D`},
		{regexp.MustCompile(`"request_id":"[0-9a-f]{16}"`), `"request_id":"ID"`},
	}
	textVary := []vary{
		{regexp.MustCompile(`^time=\S+`), `time=T`},
		{regexp.MustCompile(`duration_ms=\S+`), `duration_ms=D`},
		{regexp.MustCompile(`request_id=[0-9a-f]{16}\b`), `request_id=ID`},
	}
	normalize := func(vs []vary, line string) string {
		line = strings.TrimSuffix(line, "\n")
		for _, v := range vs {
			line = v.re.ReplaceAllString(line, v.with)
		}
		return line
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range []struct {
				name string
				new  func(*strings.Builder) slog.Handler
				vary []vary
				want string
			}{
				{"json", func(b *strings.Builder) slog.Handler { return slog.NewJSONHandler(b, nil) }, jsonVary, tt.json},
				{"json (LogHandler)", func(b *strings.Builder) slog.Handler { return NewLogHandler(b, nil) }, jsonVary, tt.json},
				{"text", func(b *strings.Builder) slog.Handler { return slog.NewTextHandler(b, nil) }, textVary, tt.text},
			} {
				var logs strings.Builder
				gin.SetMode(gin.ReleaseMode)
				r := gin.New()
				r.Use(RequestLog(slog.New(f.new(&logs)), nil))
				r.Match([]string{http.MethodGet, http.MethodHead}, "/x/:id", append(tt.handlers, func(c *gin.Context) { c.Status(http.StatusOK) })...)
				req := httptest.NewRequest(tt.method, tt.target, nil)
				for k, v := range tt.header {
					req.Header.Set(k, v)
				}
				r.ServeHTTP(httptest.NewRecorder(), req)
				if got := normalize(f.vary, logs.String()); got != f.want {
					t.Errorf("%s line\n got %s\nwant %s", f.name, got, f.want)
				}
			}
		})
	}
}

// TestRequestLogKeysFresh: the maps behind c.Set are reused from request
// to request, never shared: a request sees none of an earlier one's keys,
// and concurrent requests none of each other's (go test -race).
func TestRequestLogKeysFresh(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(RequestLog(slog.New(slog.DiscardHandler), nil))
	r.GET("/x/:id", func(c *gin.Context) {
		if v, ok := c.Get("seen"); ok {
			c.String(http.StatusConflict, "%v", v)
			return
		}
		c.Set("seen", c.Param("id"))
		c.Status(http.StatusOK)
	})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				w := httptest.NewRecorder()
				r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, fmt.Sprintf("/x/%d-%d", g, i), nil))
				if w.Code != http.StatusOK {
					t.Errorf("request %d-%d: status %d, saw key from request %s", g, i, w.Code, w.Body)
					return
				}
			}
		})
	}
	wg.Wait()
}
