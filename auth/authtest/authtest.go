// Package authtest has a fake of auth.Users for tests of the packages that
// authenticate (auth, middleware): one user, that user's API keys, a call
// count, an error to answer with and a gate to hold calls at.
package authtest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// FakeUsers is an auth.Users that knows one user (of Tier, "free" when empty)
// and that user's API keys; it counts its calls, answers Err when set, and
// holds every call until Release is closed when Release is not nil.
type FakeUsers struct {
	Name, Password, Tier string
	Err                  error
	Release              chan struct{} // nil: answer at once

	mu     sync.Mutex
	calls  int
	called chan struct{}   // closed at the next call
	keys   map[string]bool // key: revoked
}

// CheckPassword reports whether name and password are the user's.
func (u *FakeUsers) CheckPassword(ctx context.Context, name, password string) (string, string, bool, error) {
	if err := u.call(ctx); err != nil {
		return "", "", false, err
	}
	if name != u.Name || password != u.Password {
		return "", "", false, nil
	}
	return u.Name, u.tier(), true, nil
}

// CheckAPIKey reports whether key is one of the user's keys, not revoked.
func (u *FakeUsers) CheckAPIKey(ctx context.Context, key string) (string, string, bool, error) {
	if err := u.call(ctx); err != nil {
		return "", "", false, err
	}
	u.mu.Lock()
	revoked, ok := u.keys[key]
	u.mu.Unlock()
	if !ok || revoked {
		return "", "", false, nil
	}
	return u.Name, u.tier(), true, nil
}

// WaitCalls waits until n checks have been asked of u, failing t after 10s.
func (u *FakeUsers) WaitCalls(t testing.TB, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		u.mu.Lock()
		calls := u.calls
		if u.called == nil {
			u.called = make(chan struct{})
		}
		called := u.called
		u.mu.Unlock()
		if calls >= n {
			return
		}
		select {
		case <-called:
		case <-timeout:
			t.Fatalf("%d checks asked within 10s, want %d", calls, n)
		}
	}
}

// SetKey adds key for the user, or revokes it.
func (u *FakeUsers) SetKey(key string, revoked bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.keys == nil {
		u.keys = map[string]bool{}
	}
	u.keys[key] = revoked
}

// SetErr makes the calls from now on answer err (nil: answer normally).
func (u *FakeUsers) SetErr(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.Err = err
}

// Calls is how many checks were asked of u.
func (u *FakeUsers) Calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls
}

func (u *FakeUsers) tier() string {
	if u.Tier == "" {
		return "free"
	}
	return u.Tier
}

func (u *FakeUsers) call(ctx context.Context) error {
	u.mu.Lock()
	u.calls++
	if u.called != nil {
		close(u.called)
		u.called = nil
	}
	u.mu.Unlock()
	if u.Release != nil {
		select {
		case <-u.Release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.Err
}
