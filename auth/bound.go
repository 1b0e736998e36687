package auth

import (
	"context"
	"time"
)

// BoundedUsers is a user store whose password and key checks (each a
// bcrypt or a lookup) run at most n at once, so a flood of guesses costs an
// instance at most n cores of bcrypt, and right credentials wait behind at
// most a bounded queue instead of every guess in flight.
type BoundedUsers struct {
	users Users
	slots chan struct{}
	wait  time.Duration
}

// BoundChecks returns users with at most n checks running at once; a check
// waits up to wait for a slot, then fails with ErrBusy.
func BoundChecks(users Users, n int, wait time.Duration) *BoundedUsers {
	return &BoundedUsers{users: users, slots: make(chan struct{}, max(n, 1)), wait: wait}
}

// CheckPassword is the store's CheckPassword once a slot is free.
func (bu *BoundedUsers) CheckPassword(ctx context.Context, name, password string) (string, string, bool, error) {
	if err := bu.acquire(ctx); err != nil {
		return "", "", false, err
	}
	defer bu.release()
	return bu.users.CheckPassword(ctx, name, password)
}

// CheckAPIKey is the store's CheckAPIKey once a slot is free.
func (bu *BoundedUsers) CheckAPIKey(ctx context.Context, key string) (string, string, bool, error) {
	if err := bu.acquire(ctx); err != nil {
		return "", "", false, err
	}
	defer bu.release()
	return bu.users.CheckAPIKey(ctx, key)
}

func (bu *BoundedUsers) acquire(ctx context.Context) error {
	select {
	case bu.slots <- struct{}{}:
		return nil
	default:
	}
	timer := time.NewTimer(bu.wait)
	defer timer.Stop()
	select {
	case bu.slots <- struct{}{}:
		return nil
	case <-timer.C:
		return ErrBusy
	case <-ctx.Done():
		return ErrBusy
	}
}

func (bu *BoundedUsers) release() { <-bu.slots }
