package middleware

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"

	"tollgate/auth"
)

// TestFail: each error is one status, headers and body; the causes of
// trouble on our side are never in the body.
func TestFail(t *testing.T) {
	cause := errors.New("dial tcp 127.0.0.1:3306: connection refused")
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantHeader http.Header // the headers Fail sets
		wantBody   map[string]any
	}{
		{"bad credentials", auth.ErrBadCredentials, http.StatusUnauthorized,
			http.Header{"Www-Authenticate": {`Basic realm="tollgate", charset="UTF-8"`}},
			map[string]any{"error": "invalid credentials"}},
		{"ambiguous", auth.ErrAmbiguous, http.StatusBadRequest, http.Header{},
			map[string]any{"error": "send one credential: Authorization or X-API-Key, not both, and each once"}},
		{"refused", &auth.RefusedError{RetryAfter: 1500 * time.Millisecond}, http.StatusTooManyRequests,
			http.Header{"Retry-After": {"2"}},
			map[string]any{"error": "too many failed authentication attempts", "retry_after": float64(2)}},
		{"refused under a second", &auth.RefusedError{RetryAfter: 0}, http.StatusTooManyRequests,
			http.Header{"Retry-After": {"1"}},
			map[string]any{"error": "too many failed authentication attempts", "retry_after": float64(1)}},
		{"busy", auth.ErrBusy, http.StatusServiceUnavailable, http.Header{"Retry-After": {"1"}},
			map[string]any{"error": "authentication busy"}},
		{"guard down", fmt.Errorf("%w: %w", auth.ErrGuardUnavailable, cause), http.StatusServiceUnavailable,
			http.Header{"Retry-After": {"1"}}, map[string]any{"error": "authentication unavailable"}},
		{"store down", fmt.Errorf("%w: %w", auth.ErrUnavailable, cause), http.StatusServiceUnavailable,
			http.Header{}, map[string]any{"error": "authentication unavailable"}},
		{"not found", fmt.Errorf("continent %w", ErrNotFound), http.StatusNotFound, http.Header{},
			map[string]any{"error": "continent not found"}},
		{"method", ErrMethodNotAllowed, http.StatusMethodNotAllowed, http.Header{},
			map[string]any{"error": "method not allowed"}},
		{"bad request", fmt.Errorf("%w: id must be an integer", ErrBadRequest), http.StatusBadRequest, http.Header{},
			map[string]any{"error": "id must be an integer"}},
		{"limiter down", fmt.Errorf("%w: %w", ErrLimiterUnavailable, cause), http.StatusServiceUnavailable,
			http.Header{"Retry-After": {"1"}}, map[string]any{"error": "rate limiter unavailable"}},
		{"panic", errPanic, http.StatusInternalServerError, http.Header{},
			map[string]any{"error": "internal error"}},
		{"anything else", cause, http.StatusInternalServerError, http.Header{},
			map[string]any{"error": "internal error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			c, _ := gin.CreateTestContext(w)
			Fail(c, NewThrottledLog(discard(), time.Minute), tt.err)

			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			h := w.Header().Clone()
			h.Del("Content-Type")
			if diff := cmp.Diff(tt.wantHeader, h); diff != "" {
				t.Errorf("headers mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantBody, decodeJSON(t, w)); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
