package middleware

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// RequestIDHeader carries a request's id; a valid one from the client is
// kept, else one is made, and it is echoed in the response.
const RequestIDHeader = "X-Request-ID"

// RequestLog writes one access line per request and records it in m (nil:
// no metrics). It logs the route pattern, not the raw path, the kind of
// identity (user, for a password; key, for an API key; or ip), never a
// credential or a header.
func RequestLog(log *slog.Logger, m *Metrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		id := c.GetHeader(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		c.Header(RequestIDHeader, id)
		c.Next()
		took := time.Since(start)
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		status := c.Writer.Status()
		o, decided := OutcomeOf(c)
		m.observe(c.Request.Method, route, status, took.Seconds(), o, decided)
		attrs := []slog.Attr{
			slog.String("method", knownMethod(c.Request.Method)),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(took.Microseconds())/1000),
			slog.String("request_id", id),
		}
		if id := Identity(c); id.Kind != "" {
			kind := string(id.Kind)
			if id.ByKey {
				kind = "key" // a user, identified by an API key
			}
			attrs = append(attrs, slog.String("identity", kind))
		}
		if decided && o.Policy != "" {
			attrs = append(attrs, slog.String("decision", o.Result), slog.Int("remaining", o.Remaining))
		}
		for _, s := range o.ShadowLimited {
			attrs = append(attrs, slog.String("shadow_limited", s.Policy))
		}
		log.LogAttrs(c.Request.Context(), slog.LevelInfo, "request", attrs...)
	}
}

// validRequestID accepts short ids of letters, digits and -_.: anything else
// could forge log lines or bloat them.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ThrottledLog logs warnings at most once per period, counting what it held
// back, so an outage under load does not flood the log.
type ThrottledLog struct {
	log        *slog.Logger
	period     time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// NewThrottledLog returns a ThrottledLog writing to log.
func NewThrottledLog(log *slog.Logger, period time.Duration) *ThrottledLog {
	return &ThrottledLog{log: log, period: period}
}

// Warn logs msg with args and the number of warnings held back since the
// last one, unless one was logged less than a period ago. A nil
// ThrottledLog logs nothing.
func (tl *ThrottledLog) Warn(msg string, args ...any) {
	if tl == nil {
		return
	}
	tl.mu.Lock()
	now := time.Now()
	if now.Sub(tl.last) < tl.period {
		tl.suppressed++
		tl.mu.Unlock()
		return
	}
	suppressed := tl.suppressed
	tl.last, tl.suppressed = now, 0
	tl.mu.Unlock()
	tl.log.Warn(msg, append(args, "suppressed", suppressed)...)
}
