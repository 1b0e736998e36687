package middleware

import (
	"context"
	"errors"
	"time"
)

// ErrChecksBusy is a credential check that found no free slot in time: the
// instance is busy, the credential was not checked (503, not a failure).
var ErrChecksBusy = errors.New("too many credential checks at once")

// CheckLimiter is a user store whose password and key checks (each a bcrypt
// or a lookup) run at most n at once, so a flood of guesses costs an
// instance at most n cores of bcrypt, and right credentials wait behind at
// most a bounded queue instead of every guess in flight.
type CheckLimiter struct {
	users userChecker
	slots chan struct{}
	wait  time.Duration
}

// LimitChecks returns users with at most n checks running at once; a check
// waits up to wait for a slot, then fails with ErrChecksBusy.
func LimitChecks(users userChecker, n int, wait time.Duration) *CheckLimiter {
	return &CheckLimiter{users: users, slots: make(chan struct{}, max(n, 1)), wait: wait}
}

// CheckPassword is the store's CheckPassword once a slot is free.
func (cl *CheckLimiter) CheckPassword(ctx context.Context, name, password string) (string, string, bool, error) {
	if err := cl.acquire(ctx); err != nil {
		return "", "", false, err
	}
	defer cl.release()
	return cl.users.CheckPassword(ctx, name, password)
}

// CheckAPIKey is the store's CheckAPIKey once a slot is free.
func (cl *CheckLimiter) CheckAPIKey(ctx context.Context, key string) (string, string, bool, error) {
	if err := cl.acquire(ctx); err != nil {
		return "", "", false, err
	}
	defer cl.release()
	return cl.users.CheckAPIKey(ctx, key)
}

func (cl *CheckLimiter) acquire(ctx context.Context) error {
	select {
	case cl.slots <- struct{}{}:
		return nil
	default:
	}
	timer := time.NewTimer(cl.wait)
	defer timer.Stop()
	select {
	case cl.slots <- struct{}{}:
		return nil
	case <-timer.C:
		return ErrChecksBusy
	case <-ctx.Done():
		return ErrChecksBusy
	}
}

func (cl *CheckLimiter) release() { <-cl.slots }
