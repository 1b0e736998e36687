package routes

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// A Check reports whether a dependency answers before ctx is done.
type Check func(ctx context.Context) error

// healthz answers while the process serves.
func healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readyz runs every check at once under one short deadline; any failure
// makes the instance not ready (503), so a load balancer can route around it.
func readyz(log *slog.Logger, checks map[string]Check) gin.HandlerFunc {
	return func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), time.Second)
		defer cancel()
		var mu sync.Mutex
		var wg sync.WaitGroup
		status, body := http.StatusOK, gin.H{}
		for name, check := range checks {
			wg.Go(func() {
				err := check(ctx)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					log.Warn("not ready", "check", name, "err", err)
					status, body[name] = http.StatusServiceUnavailable, "unavailable"
					return
				}
				body[name] = "ok"
			})
		}
		wg.Wait()
		c.JSON(status, body)
	}
}
