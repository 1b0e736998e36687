package routes

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/middleware"
)

// limitState is one limit's state in GET /ratelimit.
type limitState struct {
	Name          string `json:"name"`
	Algorithm     string `json:"algorithm"`
	Limit         int    `json:"limit"`
	WindowSeconds int64  `json:"window_seconds"`
	Remaining     int    `json:"remaining"`
	Reset         int64  `json:"reset"`
	ResetAfter    int64  `json:"reset_after_seconds"`
}

// overrideState is the override that replaces a policy's limits for the
// caller.
type overrideState struct {
	ID      int64   `json:"id"`
	Subject string  `json:"subject"`
	Expires *string `json:"expires"` // RFC 3339, UTC; null: never
}

// policyState is one policy's limits in GET /ratelimit.
type policyState struct {
	Name     string         `json:"name"`
	Routes   []string       `json:"routes"`
	Shadow   bool           `json:"shadow"`
	RefundOn []string       `json:"refund_on,omitempty"` // statuses whose requests give their units back
	Override *overrideState `json:"override,omitempty"`  // replaces the policy's limits for this caller
	Limits   []limitState   `json:"limits"`
}

// showRateLimit answers the caller's current state for every policy that
// applies to them, on any route, without consuming anything.
func showRateLimit(limit *middleware.RateLimit) gin.HandlerFunc {
	return func(c *gin.Context) {
		s, all, res, err := limit.Peek(c)
		if err != nil {
			middleware.Fail(c, nil, middleware.ErrLimiterUnavailable) // logged by Peek
			return
		}
		body := gin.H{"identity": string(middleware.Identity(c).Kind), "tier": middleware.Tier(c), "policies": []policyState{}}
		if s.Version != "" {
			body["policy_sha256"] = s.Version
		}
		if s.CandidateVersion != "" {
			body["candidate_sha256"] = s.CandidateVersion
		}
		if len(all) == 0 {
			c.JSON(http.StatusOK, body)
			return
		}
		var states []policyState
		for i, a := range all {
			if len(states) == 0 || states[len(states)-1].Name != a.Policy.Name {
				routes := []string{"*"}
				if len(a.Policy.Match) > 0 {
					routes = routes[:0]
					for _, m := range a.Policy.Match {
						routes = append(routes, m.Method+" "+m.Path)
					}
				}
				states = append(states, policyState{Name: a.Policy.Name, Routes: routes, Shadow: a.Policy.Shadow, RefundOn: a.Policy.RefundOnText()})
				if o := a.Override; o != nil {
					st := &overrideState{ID: o.ID, Subject: o.Subject()}
					if !o.Expires.IsZero() {
						e := o.Expires.UTC().Format(time.RFC3339)
						st.Expires = &e
					}
					states[len(states)-1].Override = st
				}
			}
			d := res.Decisions[i]
			now := d.Now
			if now.IsZero() {
				now = time.Now()
			}
			st := &states[len(states)-1]
			st.Limits = append(st.Limits, limitState{
				Name: a.Limit.Name, Algorithm: a.Limit.Algorithm.Name, Limit: d.Limit,
				WindowSeconds: max(middleware.CeilSeconds(d.Window), 1), Remaining: max(d.Remaining, 0),
				Reset: middleware.CeilUnix(now.Add(d.ResetAfter)), ResetAfter: middleware.CeilSeconds(d.ResetAfter),
			})
		}
		body["policies"] = states
		c.JSON(http.StatusOK, body)
	}
}
