package auth

import (
	"fmt"
	"testing"
	"time"

	"tollgate/redistest"
)

// TestGuardTrustedAddrsBounded: a user's trusted addresses are kept to
// maxTrustedAddrs, the most recent.
func TestGuardTrustedAddrsBounded(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			guard, err := NewGuard(g.Client, GuardOptions{Prefix: g.Prefix, Failures: 10, Window: time.Minute, TrustedTTL: time.Hour, Timeout: time.Second})
			if err != nil {
				t.Fatalf("NewGuard: %v", err)
			}
			for i := range maxTrustedAddrs + 10 {
				if err := guard.Trust(t.Context(), fmt.Sprintf("10.0.%d.%d", i/256, i%256), "bob"); err != nil {
					t.Fatalf("Trust: %v", err)
				}
			}
			keys := g.Keys(t)
			if len(keys) != 1 {
				t.Fatalf("keys %v, want one set of trusted addresses", keys)
			}
			if n, err := g.Client.ZCard(t.Context(), keys[0]).Result(); err != nil || n != maxTrustedAddrs {
				t.Errorf("trusted addresses kept: %d (err %v), want %d", n, err, maxTrustedAddrs)
			}
			if ttl, err := g.Client.PTTL(t.Context(), keys[0]).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
				t.Errorf("PTTL = %v (err %v), want up to the trusted TTL", ttl, err)
			}
		})
	}
}
