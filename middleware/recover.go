package middleware

import (
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/gin-gonic/gin"
)

// Recover turns a panic in a later handler into a logged 500 with a JSON body,
// so one bad request never takes the process down.
func Recover(log *slog.Logger) gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if err, ok := r.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(r) // the server's own signal to drop the connection
			}
			log.Error("panic", "err", r, "path", c.FullPath(), "stack", string(debug.Stack()))
			Fail(c, nil, errPanic)
		}()
		c.Next()
	}
}
