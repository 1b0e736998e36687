// Package middleware holds the gin middleware of the API: recovery, request
// logging, client identity and rate limiting.
//
// Constructors follow the module's one style: what the value cannot work
// without as parameters, its optional settings in one options struct named
// after the type (NewRateLimit takes RateLimitOptions), each field saying
// what its zero value means.
package middleware

import (
	"errors"
	"net/http"
	"strconv"
	"sync"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// Errors handlers and middleware answer with Fail. Their text is the
// answer's "error", so it says what the client can know.
var (
	ErrNotFound         = errors.New("not found")
	ErrMethodNotAllowed = errors.New("method not allowed")
	// ErrLimiterUnavailable: the rate limit could not be decided and the
	// limiter fails closed (RATE_LIMIT_FAIL_OPEN=false).
	ErrLimiterUnavailable = errors.New("rate limiter unavailable")
	// ErrBadRequest is wrapped by input the client must change, e.g.
	// fmt.Errorf("%w: continent id must be an integer", ErrBadRequest);
	// the answer's error is the text after the ": ".
	ErrBadRequest = errors.New("bad request")
	// errPanic: a handler panicked (Recover has logged it).
	errPanic = errors.New("panic")
)

// Abort ends the request with status and the JSON body {"error": msg},
// plus any extra fields. Statuses are chosen by Fail; Abort only writes.
func Abort(c *gin.Context, status int, msg string, extra gin.H) {
	body := gin.H{"error": msg}
	for k, v := range extra {
		body[k] = v
	}
	c.AbortWithStatusJSON(status, body)
}

// Fail ends the request with the status, headers and body err calls for:
// it is the one place where an error becomes a status. (A request over its
// rate limit is not an error but a decision: the limiter answers it with
// its headers and the 429 of abortLimited, below.) Trouble on our side is
// written to warn when given, never to the client.
func Fail(c *gin.Context, warn *ThrottledLog, err error) {
	var refused *auth.RefusedError
	switch {
	case errors.Is(err, ErrNotFound):
		Abort(c, http.StatusNotFound, err.Error(), nil)
	case errors.Is(err, ErrMethodNotAllowed):
		Abort(c, http.StatusMethodNotAllowed, err.Error(), nil)
	case errors.Is(err, ErrBadRequest):
		msg := err.Error()
		if prefix := ErrBadRequest.Error() + ": "; len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
			msg = msg[len(prefix):]
		}
		Abort(c, http.StatusBadRequest, msg, nil)
	case errors.Is(err, auth.ErrBadCredentials):
		// The Basic challenge is sent for rejected API keys too: it is the
		// one scheme a browser can answer, and clients that send keys
		// ignore it.
		c.Header("WWW-Authenticate", `Basic realm="tollgate", charset="UTF-8"`)
		Abort(c, http.StatusUnauthorized, "invalid credentials", nil)
	case errors.Is(err, auth.ErrAmbiguous):
		Abort(c, http.StatusBadRequest, err.Error(), nil)
	case errors.As(err, &refused):
		secs := max(CeilSeconds(refused.RetryAfter), 1)
		c.Header("Retry-After", strconv.FormatInt(secs, 10))
		Abort(c, http.StatusTooManyRequests, "too many failed authentication attempts", gin.H{"retry_after": secs})
	case errors.Is(err, auth.ErrBusy):
		warn.Warn("credential checks busy", "err", err)
		c.Header("Retry-After", "1")
		Abort(c, http.StatusServiceUnavailable, "authentication busy", nil)
	case errors.Is(err, auth.ErrGuardUnavailable):
		warn.Warn("auth guard unavailable", "err", err, "fail_open", false)
		c.Header("Retry-After", "1")
		Abort(c, http.StatusServiceUnavailable, "authentication unavailable", nil)
	case errors.Is(err, auth.ErrUnavailable):
		warn.Warn("check credentials", "err", err)
		Abort(c, http.StatusServiceUnavailable, "authentication unavailable", nil)
	case errors.Is(err, ErrLimiterUnavailable):
		c.Header("Retry-After", "1")
		Abort(c, http.StatusServiceUnavailable, ErrLimiterUnavailable.Error(), nil)
	case errors.Is(err, errPanic):
		if c.Writer.Written() {
			c.Abort() // too late for a status
			return
		}
		Abort(c, http.StatusInternalServerError, "internal error", nil)
	default:
		warn.Warn("unexpected error", "err", err)
		Abort(c, http.StatusInternalServerError, "internal error", nil)
	}
}

// abortLimited answers a request over its rate limit: 429 with the body
// {"error", "message", "retry_after"}, after the limiter wrote its headers.
// The body is written by hand (deniedBody): it is the answer to floods, so
// it should cost little. It is written without c.Data, which also sets
// Content-Length in the header map: with Retry-After that is a ninth entry,
// and a map of more than eight costs two allocations of a table on every
// 429. net/http adds Content-Length itself to a body this small.
// The body's buffer comes from bodies and goes back once written (the
// writer copies it).
func abortLimited(c *gin.Context, bodies *sync.Pool, message string, retry int64) {
	c.Writer.Header()["Content-Type"] = []string{"application/json; charset=utf-8"}
	c.Writer.WriteHeader(http.StatusTooManyRequests)
	bp, _ := bodies.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = deniedBody((*bp)[:0], message, retry)
	_, _ = c.Writer.Write(*bp)
	bodies.Put(bp)
	c.Abort()
}
