package middleware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/algorithms"
)

// Results of a rate-limit decision, as logged and counted.
const (
	ResultAllowed      = "allowed"
	ResultLimited      = "limited"
	ResultFailedOpen   = "failed_open"
	ResultFailedClosed = "failed_closed"
)

// outcomeKey is where RateLimit leaves its Outcome in the gin context.
const outcomeKey = "tollgate.outcome"

// Outcome is what RateLimit decided for a request, for logs and metrics.
type Outcome struct {
	Policy     string
	Algorithm  string
	Result     string // one of the Result constants
	Remaining  int
	Took       time.Duration // the limiter call
	RedisError bool          // the call failed on Redis (not refused by an open circuit)
}

// OutcomeOf returns the Outcome RateLimit left, if it ran.
func OutcomeOf(c *gin.Context) (Outcome, bool) {
	v, ok := c.Get(outcomeKey)
	if !ok {
		return Outcome{}, false
	}
	o, ok := v.(Outcome)
	return o, ok
}

// RateLimit asks alg whether the caller (see Identity) may proceed, sets the
// rate-limit headers and answers 429 when not. When the limiter cannot decide
// in time (Redis down or slow), failOpen chooses between serving the request
// unchecked, marked by "X-RateLimit-Checked: false", and answering 503:
// availability of the API versus strictness of the limit.
//
// The policy name labels the headers; algorithm names alg in logs and metrics.
func RateLimit(log *slog.Logger, alg algorithms.Algorithm, policy, algorithm string, timeout time.Duration, failOpen bool) gin.HandlerFunc {
	warn := newThrottledLog(log, 10*time.Second)
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), timeout)
		start := time.Now()
		d, err := alg.Allow(ctx, Identity(c))
		took := time.Since(start)
		cancel()
		o := Outcome{Policy: policy, Algorithm: algorithm, Took: took, Remaining: max(d.Remaining, 0)}
		if err != nil {
			o.RedisError = !errors.Is(err, algorithms.ErrCircuitOpen)
			warn.Warn("rate limiter unavailable", "err", err, "fail_open", failOpen)
			if failOpen {
				o.Result = ResultFailedOpen
				c.Set(outcomeKey, o)
				c.Header("X-RateLimit-Checked", "false")
				c.Next()
				return
			}
			o.Result = ResultFailedClosed
			c.Set(outcomeKey, o)
			c.Header("Retry-After", "1")
			Abort(c, http.StatusServiceUnavailable, "rate limiter unavailable", nil)
			return
		}
		o.Result = ResultAllowed
		if !d.Allowed {
			o.Result = ResultLimited
		}
		c.Set(outcomeKey, o)
		setHeaders(c.Writer.Header(), policy, d, d.Now)
		if !d.Allowed {
			retry := retryAfterSeconds(d)
			Abort(c, http.StatusTooManyRequests, "rate limit exceeded", gin.H{
				"retry_after": retry,
				"message": fmt.Sprintf("Too many requests: %d per %ss allowed. Try again in %d seconds.",
					d.Limit, strconv.FormatFloat(d.Window.Seconds(), 'f', -1, 64), retry),
			})
			return
		}
		c.Next()
	}
}

// setHeaders writes every rate-limit header of d: the de facto X-RateLimit-*
// fields, the IETF draft's RateLimit-Policy and RateLimit (structured field
// lists), and Retry-After when d denies. now is the clock d was decided on.
func setHeaders(h http.Header, policy string, d algorithms.Decision, now time.Time) {
	remaining := max(d.Remaining, 0)
	reset := ceilSeconds(d.ResetAfter)
	name := sfString(policy)
	h.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(ceilUnix(now.Add(d.ResetAfter)), 10))
	h.Set("RateLimit-Policy", fmt.Sprintf("%s;q=%d;w=%d", name, d.Limit, max(ceilSeconds(d.Window), 1)))
	h.Set("RateLimit", fmt.Sprintf("%s;r=%d;t=%d", name, remaining, reset))
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(retryAfterSeconds(d), 10))
	}
}

// retryAfterSeconds rounds up, and is at least 1: a client retrying at once
// would only be denied again.
func retryAfterSeconds(d algorithms.Decision) int64 {
	return max(ceilSeconds(d.RetryAfter), 1)
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// sfString formats s as a structured-field String (RFC 9651).
func sfString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// throttledLog logs at most once per period, counting what it held back, so
// an outage under load does not flood the log.
type throttledLog struct {
	log        *slog.Logger
	period     time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func newThrottledLog(log *slog.Logger, period time.Duration) *throttledLog {
	return &throttledLog{log: log, period: period}
}

func (tl *throttledLog) Warn(msg string, args ...any) {
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
