package middleware

import (
	"context"
	"slices"

	"github.com/gin-gonic/gin"

	"tollgate/limiter"
	"tollgate/policy"
)

// refunder gives an admitted request's units back (limiter.Limiter.Refund).
type refunder interface {
	Refund(ctx context.Context, res limiter.Result) (limiter.Result, error)
}

// next runs the rest of the chain. When a policy of enforced refunds some
// statuses (refund_on), it first wraps the writer, so that the response's
// status is known before its headers go out: a status that policy refunds
// gives the request's units back in that policy's limits, and the
// rate-limit headers are written anew from what they then have left.
func (l *RateLimit) next(c *gin.Context, res limiter.Result, enforced []policy.Applied, items []headerItem, o *Outcome) {
	r, ok := l.decider.(refunder)
	if !ok || res.Local() || !slices.ContainsFunc(enforced, func(a policy.Applied) bool { return len(a.Policy.RefundOn) > 0 }) {
		c.Next()
		return
	}
	// The writer's hook outlives this call as far as the compiler can
	// tell: it gets copies, so that enforced, items and o, on the
	// handler's stack, stay there for every request that refunds nothing.
	ro := new(Outcome)
	*ro = *o
	defer func() { *o = *ro }() // a panic too: the handler's deferred work reads o
	l.nextRefunding(c, r, res, slices.Clone(enforced), slices.Clone(items), ro)
}

// nextRefunding is next for a request some status of which is refunded.
func (l *RateLimit) nextRefunding(c *gin.Context, r refunder, res limiter.Result, enforced []policy.Applied, items []headerItem, o *Outcome) {
	w := &refundWriter{ResponseWriter: c.Writer}
	w.before = func(status int) {
		var sub limiter.Result
		var at []int
		for i, a := range enforced {
			if a.Policy.RefundOn != nil && a.Policy.Refunds(status) {
				sub.Decisions = append(sub.Decisions, res.Decisions[i])
				at = append(at, i)
			}
		}
		if len(at) == 0 {
			return
		}
		sub.Allowed = true
		after, err := r.Refund(c.Request.Context(), sub)
		if err != nil {
			l.warn.Warn("refund not made: the request stays counted", "err", err)
			return
		}
		for j, i := range at {
			items[i].d = after.Decisions[j]
			if name := enforced[i].Policy.Name; !slices.Contains(o.Refunded, name) {
				o.Refunded = append(o.Refunded, name)
			}
		}
		chosen := closest(items)
		o.Policy, o.Algorithm, o.Remaining = items[chosen].lt.name, items[chosen].lt.algorithm, max(items[chosen].d.Remaining, 0)
		c.Set(outcomeKey, *o)
		setHeaders(w.Header(), items, chosen)
	}
	c.Writer = w
	c.Next()
	// A handler that wrote nothing: gin writes the headers after this
	// middleware returns, past the wrapper.
	w.settle()
}

// refundWriter runs before once, with the response's status, just before
// the headers are written.
type refundWriter struct {
	gin.ResponseWriter
	before func(status int)
	done   bool
}

func (w *refundWriter) settle() {
	if !w.done {
		w.done = true
		w.before(w.Status())
	}
}

// WriteHeaderNow writes the headers, after the refund.
func (w *refundWriter) WriteHeaderNow() {
	w.settle()
	w.ResponseWriter.WriteHeaderNow()
}

// Write writes the headers (after the refund) and b.
func (w *refundWriter) Write(b []byte) (int, error) {
	w.settle()
	return w.ResponseWriter.Write(b)
}

// WriteString writes the headers (after the refund) and s.
func (w *refundWriter) WriteString(s string) (int, error) {
	w.settle()
	return w.ResponseWriter.WriteString(s)
}

// Flush writes the headers (after the refund) and flushes.
func (w *refundWriter) Flush() {
	w.settle()
	w.ResponseWriter.Flush()
}
