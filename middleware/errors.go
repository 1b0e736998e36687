// Package middleware holds the gin middleware of the API: recovery, request
// logging, client identity and rate limiting.
package middleware

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// Abort ends the request with status and the JSON body {"error": msg},
// plus any extra fields.
func Abort(c *gin.Context, status int, msg string, extra gin.H) {
	body := gin.H{"error": msg}
	for k, v := range extra {
		body[k] = v
	}
	c.AbortWithStatusJSON(status, body)
}

// abortError ends the request with the status, headers and body err calls
// for: it is where an error becomes a status. Errors of trouble on our side
// are written to warn, not to the client.
func abortError(c *gin.Context, warn *ThrottledLog, err error) {
	var refused *auth.RefusedError
	switch {
	case errors.Is(err, auth.ErrBadCredentials):
		// The Basic challenge is sent for rejected API keys too: it is the
		// one scheme a browser can answer, and clients that send keys
		// ignore it.
		c.Header("WWW-Authenticate", `Basic realm="tollgate", charset="UTF-8"`)
		Abort(c, http.StatusUnauthorized, "invalid credentials", nil)
	case errors.Is(err, auth.ErrAmbiguous):
		Abort(c, http.StatusBadRequest, err.Error(), nil)
	case errors.As(err, &refused):
		secs := max(ceilSeconds(refused.RetryAfter), 1)
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
	default:
		warn.Warn("unexpected error", "err", err)
		Abort(c, http.StatusInternalServerError, "internal error", nil)
	}
}
