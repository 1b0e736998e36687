package middleware

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/limiter"
)

// waiting bounds the requests an instance holds for their slot (a limit's
// delay) and counts them.
type waiting struct {
	most     int64
	reserved atomic.Int64 // requests decided with their delays, or held
	held     atomic.Int64 // requests being held: tollgate_ratelimit_waiting
	// drain is closed when the service shuts down: the requests held are
	// then refused at once (their slots given back), not left to the
	// shutdown deadline.
	drain <-chan struct{}
}

// Waiting is how many requests are being held for their slot now.
func (l *RateLimit) Waiting() int {
	if l.wait == nil {
		return 0
	}
	return int(l.wait.held.Load())
}

// reservation is a request's room to wait; release is idempotent.
type reservation struct {
	w    *waiting
	done bool
}

func (r *reservation) release() {
	if r != nil && !r.done {
		r.done = true
		r.w.reserved.Add(-1)
	}
}

// reserve makes room for a request of rules to wait, if a rule has a delay
// (nil if none does). Without room, the rules lose their delays: they
// decide as without one.
func (l *RateLimit) reserve(rules []limiter.Rule) *reservation {
	delayed := false
	for _, r := range rules {
		delayed = delayed || r.Delay > 0
	}
	if !delayed {
		return nil
	}
	if l.wait != nil && l.wait.reserved.Add(1) <= l.wait.most {
		return &reservation{w: l.wait}
	}
	if l.wait != nil {
		l.wait.reserved.Add(-1)
	}
	for i := range rules {
		rules[i].Delay = 0
	}
	return nil
}

// hold keeps an admitted request until its slot (the longest Wait of ds),
// telling the client in X-RateLimit-Delayed (ms). It reports whether the
// request is to be served: false when the client went away meanwhile, or
// the service is shutting down (answered 503): the slot is then given back.
func (l *RateLimit) hold(c *gin.Context, res limiter.Result, slot *reservation, o *Outcome) bool {
	defer slot.release()
	var wait time.Duration
	for _, d := range res.Decisions {
		wait = max(wait, d.Wait)
	}
	if wait <= 0 || l.wait == nil {
		return true
	}
	o.Waited = wait
	c.Set(outcomeKey, *o)
	c.Header("X-RateLimit-Delayed", strconv.FormatInt(wait.Milliseconds(), 10))
	l.wait.held.Add(1)
	defer l.wait.held.Add(-1)
	t := time.NewTimer(wait)
	defer t.Stop()
	ctx := c.Request.Context()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		l.giveBack(ctx, res)
		// Nobody to answer; the log and metrics say 499, as nginx does for
		// a client that closed its request.
		c.AbortWithStatus(statusClientGone)
		return false
	case <-l.wait.drain:
		l.giveBack(ctx, res)
		c.Header("Retry-After", strconv.FormatInt(max(CeilSeconds(wait), 1), 10))
		Abort(c, http.StatusServiceUnavailable, "shutting down", nil)
		return false
	}
}

// statusClientGone is the status logged for a request whose client went
// away while it waited (nginx's 499).
const statusClientGone = 499

// giveBack returns the slot of a request that will not be served.
func (l *RateLimit) giveBack(ctx context.Context, res limiter.Result) {
	r, ok := l.decider.(refunder)
	if !ok {
		return
	}
	if _, err := r.Refund(ctx, res); err != nil {
		l.warn.Warn("slot of a request not served not given back: it stays counted", "err", err)
	}
}
