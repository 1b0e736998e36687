package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// Guard limits failed credential checks per client IP and per user name, so
// passwords and keys cannot be guessed at bcrypt's pace. Authenticate takes a
// place from it before checking credentials (Take); a failed check keeps its
// place for the window (Fail), any other gives it back (Give). Checks still
// running hold places too, so guesses sent all at once get no more checks
// than guesses sent in turn, while right credentials at most wait for the
// checks ahead of them.
//
// An address that passed a password check as a user is trusted for that
// user for the trusted TTL: its checks count in its own log only, not in the
// user's, so failures sent from elsewhere cannot lock the user out of the
// places they use.
type Guard struct {
	rdb      redis.Scripter
	prefix   string
	limit    []any // ARGV after the id: limit, window in ms
	timeout  time.Duration
	failOpen bool
	trust    *trustedAddrs // nil: no address is trusted
}

//go:embed guard.lua
var guardLua string

var guardScript = redis.NewScript(guardLua)

// maxGuardWindow bounds the window: the script counts it in µs, in a
// Lua number, which is exact up to 2^53.
const maxGuardWindow = 366 * 24 * time.Hour

// GuardOptions are a Guard's settings (AUTH_FAIL_LIMIT, AUTH_FAIL_WINDOW,
// AUTH_TRUSTED_TTL); Failures and Window have no default.
type GuardOptions struct {
	Prefix   string        // the keys' prefix in Redis
	Failures int           // failed checks admitted per Window, at least 1
	Window   time.Duration // 1ms to 366 days
	// TrustedTTL is how long an address stays trusted for a user after a
	// successful check; 0: no address is trusted.
	TrustedTTL time.Duration
	// Timeout bounds each Redis call; 0: 1s.
	Timeout time.Duration
	// FailOpen lets credentials be checked unguarded when Redis fails;
	// false: Authenticate fails with ErrGuardUnavailable (503), as the rate
	// limiter does.
	FailOpen bool
}

// NewGuard returns a Guard keeping its state in rdb, with the settings of o.
// Its error is a bug of the caller's: config checks the settings it is
// given.
func NewGuard(rdb redis.Scripter, o GuardOptions) (*Guard, error) {
	switch {
	case o.Failures < 1:
		return nil, fmt.Errorf("auth guard: %d failures, want at least 1", o.Failures)
	case o.Window < time.Millisecond || o.Window > maxGuardWindow:
		return nil, fmt.Errorf("auth guard: window %v, want 1ms to %v", o.Window, maxGuardWindow)
	case o.TrustedTTL < 0:
		return nil, fmt.Errorf("auth guard: trusted TTL %v, want 0 or more", o.TrustedTTL)
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = time.Second
	}
	g := &Guard{rdb: rdb, prefix: o.Prefix, limit: []any{o.Failures, o.Window.Milliseconds()}, timeout: timeout, failOpen: o.FailOpen}
	if o.TrustedTTL > 0 {
		g.trust = newTrustedAddrs(o.TrustedTTL)
	}
	return g, nil
}

// Places are the places one check took in the guard's logs; the zero value
// holds none.
type Places struct {
	id   string
	keys []string
}

// Take takes a place for a check from ip for the user name (empty for an
// API key, which names no user) in each of its logs: the log of ip, and the
// log of name, which an address trusted for name does without when it is
// full or busy. A log full of failures
// refuses at once, and retryAfter is when a failure leaves it. A log whose
// free places are held by checks still running is waited on (they may fail
// or give their places back) until ctx ends, which refuses with a retryAfter
// of a second. A refused check holds no place. An error is Redis failing or
// not answering within the guard's timeout.
func (g *Guard) Take(ctx context.Context, ip, name string) (c Places, allowed bool, retryAfter time.Duration, err error) {
	c.id = rand.Text()
	// One script per log: on a cluster the logs live in different slots.
	// A place taken in the first log is given back if the second refuses.
	refuse := func(retryAfter time.Duration, err error) (Places, bool, time.Duration, error) {
		_ = g.Give(ctx, c) // best effort: a place not given back ends with its window; the refusal stands
		if err != nil {
			return Places{}, false, 0, fmt.Errorf("auth guard: take: %w", err)
		}
		return Places{}, false, retryAfter, nil
	}
	// ctx bounds only the wait: each call has the guard's own timeout, so
	// a Redis that does not answer in time is a failure of Redis (fail open
	// or closed), never taken for a busy log.
	calls := context.WithoutCancel(ctx)
logs:
	for i, key := range g.keys(ip, name) {
		wait := 10 * time.Millisecond
		askedTrust := false
		for {
			reply, err := g.run(calls, key, "take", c.id)
			if err != nil {
				return refuse(0, err)
			}
			if reply[0] == 0 {
				break
			}
			// The user's log is full or busy: an address trusted for
			// the user does without it. Asked only then, so a check costs
			// no more Redis calls while its user is not under attack.
			if i == 1 && !askedTrust {
				askedTrust = true
				trusted, err := g.trusted(calls, ip, name)
				if err != nil {
					return refuse(0, err)
				}
				if trusted {
					continue logs
				}
			}
			if reply[0] == 1 {
				return refuse(time.Duration(reply[1])*time.Millisecond, nil)
			}
			// Busy: wait for the checks ahead, at first less than a
			// bcrypt check lasts, then longer, so that a crowd of waiters
			// does not keep Redis busy.
			select {
			case <-ctx.Done():
				return refuse(time.Second, nil)
			case <-time.After(wait + mrand.N(wait)):
			}
			wait = min(2*wait, 200*time.Millisecond)
		}
		c.keys = append(c.keys, key)
	}
	return c, true, 0, nil
}

// Fail records that c's check failed: its places stay taken for the window.
func (g *Guard) Fail(ctx context.Context, c Places) error {
	return g.end(ctx, c, "fail")
}

// Give gives back c's places: its credentials were right, or could not be
// checked.
func (g *Guard) Give(ctx context.Context, c Places) error {
	return g.end(ctx, c, "give")
}

// end ends c's check in each of its logs. It runs even when ctx is canceled
// (the client went away): a place left taken counts as a failure until the
// window passes.
func (g *Guard) end(ctx context.Context, c Places, op string) error {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, key := range c.keys {
		if _, err := g.run(ctx, key, op, c.id); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("auth guard: %s: %w", op, err)
	}
	return nil
}

// run runs the guard's script on one log, within the guard's timeout.
func (g *Guard) run(ctx context.Context, key, op, id string) ([]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	reply, err := guardScript.Run(ctx, g.rdb, []string{key}, append([]any{op, id}, g.limit...)...).Int64Slice()
	if err == nil && len(reply) != 2 {
		err = fmt.Errorf("script reply %v, want 2 numbers", reply)
	}
	return reply, err
}

// Admit decides whether remembered credentials of name (known right, so no
// check runs and no place is taken) are accepted from ip: from an address
// trusted for name, always; from another, only while name's log is not full
// of failures, and then ip becomes trusted for name. A refusal's retryAfter
// is when a failure leaves the log. An error is Redis failing.
func (g *Guard) Admit(ctx context.Context, ip, name string) (allowed bool, retryAfter time.Duration, err error) {
	ctx = context.WithoutCancel(ctx)
	trusted, err := g.trusted(ctx, ip, name)
	if err != nil {
		return false, 0, fmt.Errorf("auth guard: admit: %w", err)
	}
	if trusted {
		return true, 0, nil
	}
	reply, err := g.run(ctx, g.keys("", name)[1], "peek", "")
	if err != nil {
		return false, 0, fmt.Errorf("auth guard: admit: %w", err)
	}
	if reply[0] != 0 {
		return false, time.Duration(reply[1]) * time.Millisecond, nil
	}
	if err := g.Trust(ctx, ip, name); err != nil {
		return false, 0, fmt.Errorf("auth guard: admit: %w", err)
	}
	return true, 0, nil
}

// keys are the logs a check from ip for name counts in. The user name is
// hashed: what a client sends as a name may be a password typed in the wrong
// field, and must not end up in Redis.
func (g *Guard) keys(ip, name string) []string {
	keys := []string{g.prefix + "authfail:ip:" + ip}
	if name != "" {
		keys = append(keys, g.prefix+"authfail:user:"+nameHash(name))
	}
	return keys
}

// nameHash is how a user name appears in the guard's Redis keys: the first
// 16 hex digits of its SHA-256, never the name itself.
func nameHash(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:8])
}
