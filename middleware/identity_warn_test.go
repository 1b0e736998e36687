package middleware

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth/authtest"
)

// TestIdentifyDatabaseErrorsWarnThrottled: while the database fails, every
// credential check answers 503, and the log gets one warning per period,
// not a line per request (a flood of logins would be a flood of lines).
func TestIdentifyDatabaseErrorsWarnThrottled(t *testing.T) {
	var logs syncBuffer
	users := &authtest.FakeUsers{Name: "alice", Password: "right", Err: errors.New("dial tcp 127.0.0.1:3306: connection refused")}
	r := gin.New()
	r.GET("/x", newIdentify(slog.New(slog.NewJSONHandler(&logs, nil)), users, nil, time.Second, time.Minute, time.Minute, 64), func(c *gin.Context) {
		c.String(http.StatusOK, Identity(c).Subject())
	})
	const n = 20
	for i := range n {
		w := serve(t, r, "192.0.2.1:1234", map[string]string{"Authorization": basic("alice", strings.Repeat("x", i+1))})
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("request %d: status %d, want 503", i+1, w.Code)
		}
	}
	if got := strings.Count(logs.String(), `"msg":"check credentials"`); got != 1 {
		t.Errorf("%d database failures logged %d warnings, want 1 (throttled)", n, got)
	}
}
