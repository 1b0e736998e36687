package auth

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"tollgate/redistest"
)

// TestGuardBusyIsNotDown: a wait for a place that runs out is a refusal
// (429 after a second), never a Redis failure, which would let the check run
// unguarded when the guard fails open.
func TestGuardBusyIsNotDown(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			guard, err := NewGuard(g.Client, GuardOptions{Prefix: g.Prefix, Failures: 1, Window: time.Minute, TrustedTTL: 720 * time.Hour, Timeout: time.Second, FailOpen: true})
			if err != nil {
				t.Fatalf("NewGuard: %v", err)
			}
			first, allowed, _, err := guard.Take(t.Context(), "192.0.2.1", "bob")
			if err != nil || !allowed {
				t.Fatalf("first Take = allowed %v, err %v; want a place", allowed, err)
			}
			for _, wait := range []time.Duration{0, time.Millisecond, 30 * time.Millisecond, 300 * time.Millisecond} {
				ctx, cancel := context.WithTimeout(t.Context(), wait)
				_, allowed, retryAfter, err := guard.Take(ctx, "192.0.2.1", "carol")
				cancel()
				if err != nil || allowed || retryAfter != time.Second {
					t.Errorf("Take while busy, waiting %v = allowed %v, retry after %v, err %v; want refused, 1s, no error",
						wait, allowed, retryAfter, err)
				}
			}
			if err := guard.Give(t.Context(), first); err != nil {
				t.Fatalf("Give: %v", err)
			}
			if _, allowed, _, err := guard.Take(t.Context(), "192.0.2.1", "carol"); err != nil || !allowed {
				t.Errorf("Take after Give = allowed %v, err %v; want a place", allowed, err)
			}
		})
	}
}

// TestGuardSilentRedisIsDown: a Redis that does not answer is a Redis
// failure (fail open or 503), even when the wait for a place runs out first;
// it must not be taken for a log full of checks (429).
func TestGuardSilentRedisIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // accepts and never answers
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	rdb := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	guard, err := NewGuard(rdb, GuardOptions{Prefix: "test:", Failures: 10, Window: time.Minute, TrustedTTL: 720 * time.Hour, Timeout: 300 * time.Millisecond, FailOpen: true})
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, allowed, retryAfter, err := guard.Take(ctx, "192.0.2.1", "bob")
	if err == nil || allowed || retryAfter != 0 {
		t.Errorf("Take on a silent Redis = allowed %v, retry after %v, err %v; want an error", allowed, retryAfter, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Take on a silent Redis took %v, want about the guard's 300ms timeout", took)
	}
}

func TestNewGuardRejectsBadLimit(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { rdb.Close() })
	if _, err := NewGuard(rdb, GuardOptions{Prefix: "p:", Failures: 0, Window: time.Minute, TrustedTTL: 720 * time.Hour, Timeout: time.Second, FailOpen: true}); err == nil {
		t.Error("NewGuard(limit 0) = nil error, want one")
	}
}
