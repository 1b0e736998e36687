package middleware

import (
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// RequestIDHeader carries a request's id; a valid one from the client is
// kept, else one is made, and it is echoed in the response.
const RequestIDHeader = "X-Request-ID"

// requestIDHeader is RequestIDHeader in canonical form: the header maps
// are indexed with it as it is, not with a canonical copy made per request.
const requestIDHeader = "X-Request-Id"

// RequestLog writes one access line per request and records it in m (nil:
// no metrics); a log on a LogHandler gets the line without slog's
// formatting (the same bytes). It logs the route pattern, not the raw path, the kind of
// identity (user, for a password; key, for an API key; or ip), never a
// credential or a header.
func RequestLog(log *slog.Logger, m *Metrics) gin.HandlerFunc {
	base := log.Handler()
	fast, _ := base.(*LogHandler) // writes the line itself
	var lines children[lineKind, slog.Handler]
	withKind := func(k lineKind) slog.Handler {
		return base.WithAttrs([]slog.Attr{slog.String("method", k.method), slog.String("route", k.route), slog.Int("status", k.status)})
	}
	// The maps behind c.Set (identity, outcome), reused: gin makes one per
	// request else, and drops it at the next. Nothing keeps a request's gin
	// context past its handlers (c.Copy copies the map), so its map is free
	// once the line is written.
	keys := sync.Pool{New: func() any { return map[any]any{} }}
	return func(c *gin.Context) {
		start := time.Now()
		var pooled map[any]any
		if c.Keys == nil {
			pooled = keys.Get().(map[any]any)
			c.Keys = pooled
		}
		id := ""
		if v := c.Request.Header[requestIDHeader]; len(v) > 0 {
			id = v[0]
		}
		if !validRequestID(id) {
			id = newRequestID()
		}
		c.Writer.Header()[requestIDHeader] = []string{id}
		c.Next()
		end := time.Now()
		took := end.Sub(start)
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		status := c.Writer.Status()
		method := knownMethod(c.Request.Method)
		o, decided := OutcomeOf(c)
		m.observe(method, route, status, took.Seconds(), o, decided)
		if ctx := c.Request.Context(); base.Enabled(ctx, slog.LevelInfo) {
			a := accessLine{end: end, method: method, route: route, status: status, took: took, requestID: id,
				decided: decided && o.Policy != "", decision: o.Result, remaining: o.Remaining, shadowLimited: o.ShadowLimited}
			if id := Identity(c); id.Kind != "" {
				a.identity = string(id.Kind)
				if id.ByKey {
					a.identity = "key" // a user, identified by an API key
				}
			}
			if fast == nil || !fast.writeAccess(&a) {
				// What log.LogAttrs(ctx, slog.LevelInfo, "request", method,
				// route, status, ...) writes, without the caller's program
				// counter, which no line shows, and with the first three
				// fields formatted once per kind of line (lineKind). The
				// time is the request's end.
				r := slog.NewRecord(end, slog.LevelInfo, "request", 0)
				a.attrs(&r)
				_ = lines.get(lineKind{method, route, status}, withKind).Handle(ctx, r) // as slog.Logger does: nowhere to report it
			}
		}
		if pooled != nil {
			c.Keys = nil
			clear(pooled)
			keys.Put(pooled)
		}
	}
}

// lineKind is what a request's access line starts with, after the message:
// each comes from a small set (methods are folded, routes are patterns), as
// the metrics' labels do, so the log's handler with them attached
// (WithAttrs), which formats them once, is kept for each kind.
type lineKind struct {
	method, route string
	status        int
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

// newRequestID is 16 lowercase hex digits, 64 random bits: unique enough to
// find one request's lines, from the runtime's per-thread generator
// (math/rand/v2, seeded from the system's randomness) rather than a system
// call per request.
func newRequestID() string {
	const digits = "0123456789abcdef"
	x := rand.Uint64()
	var b [16]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = digits[x&0xf]
		x >>= 4
	}
	return string(b[:])
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
