package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
)

// Guard limits failed credential checks per client IP and per user name, so
// passwords and keys cannot be guessed at bcrypt's pace. Identify asks it
// before checking credentials (a peek, which records nothing) and tells it
// about each failure; successful checks are not counted.
type Guard struct {
	multi    *algorithms.Multi
	prefix   string
	limit    algorithms.Limit
	timeout  time.Duration
	failOpen bool
}

// guardAlgorithm is exact: at most limit failures in any window-long span,
// and cheap, since a key holds at most limit entries.
const guardAlgorithm = "sliding_log"

// NewGuard returns a Guard admitting l.Requests failures per l.Window, with
// its state under prefix in rdb; each Redis call gets timeout. When Redis
// fails, failOpen lets credentials be checked unguarded; otherwise Identify
// answers 503, as the rate limiter does.
func NewGuard(rdb redis.Scripter, prefix string, l algorithms.Limit, timeout time.Duration, failOpen bool) (*Guard, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("auth guard: %w", err)
	}
	return &Guard{multi: algorithms.NewMulti(rdb), prefix: prefix, limit: l, timeout: timeout, failOpen: failOpen}, nil
}

// Check reports whether another attempt from ip, for the user name (empty
// for an API key, which names no user), may be checked; if not, retryAfter
// is when one may.
func (g *Guard) Check(ctx context.Context, ip, name string) (allowed bool, retryAfter time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	ds, allowed, err := g.multi.Decide(ctx, g.rules(ip, name), false)
	if err != nil {
		return false, 0, fmt.Errorf("auth guard: peek: %w", err)
	}
	for _, d := range ds {
		if !d.Allowed {
			retryAfter = max(retryAfter, d.RetryAfter)
		}
	}
	return allowed, retryAfter, nil
}

// Fail records a failed check from ip for the user name (empty for an API key).
func (g *Guard) Fail(ctx context.Context, ip, name string) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if _, _, err := g.multi.Decide(ctx, g.rules(ip, name), true); err != nil {
		return fmt.Errorf("auth guard: record failure: %w", err)
	}
	return nil
}

// rules are the counters an attempt touches. The user name is hashed: what
// a client sends as a name may be a password typed in the wrong field, and
// must not end up in Redis.
func (g *Guard) rules(ip, name string) []algorithms.Rule {
	rules := []algorithms.Rule{{Algorithm: guardAlgorithm, Limit: g.limit, Key: g.prefix + "authfail:ip:" + ip}}
	if name != "" {
		sum := sha256.Sum256([]byte(name))
		rules = append(rules, algorithms.Rule{Algorithm: guardAlgorithm, Limit: g.limit,
			Key: g.prefix + "authfail:user:" + hex.EncodeToString(sum[:8])})
	}
	return rules
}
