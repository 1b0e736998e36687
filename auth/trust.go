package auth

import (
	"context"
	_ "embed"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed trust.lua
var trustLua string

var trustScript = redis.NewScript(trustLua)

const (
	// maxTrustedAddrs bounds the addresses kept per user in Redis: a user
	// who logs in from more places within the trusted TTL loses the least
	// recent ones first.
	maxTrustedAddrs = 256
	// trustMemory is how long an instance believes an address trusted
	// without asking Redis again, so remembered credentials from where a
	// user works cost no Redis call per request. Trust is only added, runs
	// out or is pushed out by newer addresses: believing it for a few
	// minutes more at most is the price.
	trustMemory = 5 * time.Minute
	// trustMemorySize bounds the (address, user) pairs remembered.
	trustMemorySize = 10_000
)

// trustedAddrs is the trusted TTL and this instance's memory of the
// (address, user) pairs Redis said were trusted, and until when.
type trustedAddrs struct {
	ttl time.Duration

	mu    sync.Mutex
	until map[string]time.Time
}

func newTrustedAddrs(ttl time.Duration) *trustedAddrs {
	return &trustedAddrs{ttl: ttl, until: make(map[string]time.Time)}
}

func (ta *trustedAddrs) remembered(ip, name string) bool {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	until, ok := ta.until[ip+"\x00"+name]
	return ok && time.Now().Before(until)
}

func (ta *trustedAddrs) remember(ip, name string, left time.Duration) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if len(ta.until) >= trustMemorySize {
		clear(ta.until) // rare; the next requests ask Redis once more
	}
	ta.until[ip+"\x00"+name] = time.Now().Add(min(left, trustMemory))
}

// trusted reports whether ip is trusted for name: it passed a password
// check as name within the trusted TTL.
func (g *Guard) trusted(ctx context.Context, ip, name string) (bool, error) {
	if g.trust == nil {
		return false, nil
	}
	if g.trust.remembered(ip, name) {
		return true, nil
	}
	left, err := g.runTrust(ctx, name, "check", ip)
	if err != nil || left <= 0 {
		return false, err
	}
	g.trust.remember(ip, name, time.Duration(left)*time.Millisecond)
	return true, nil
}

// Trust records that a check of name's password from ip passed: ip is
// trusted for name for the trusted TTL from now.
func (g *Guard) Trust(ctx context.Context, ip, name string) error {
	if g.trust == nil {
		return nil
	}
	if _, err := g.runTrust(context.WithoutCancel(ctx), name, "add", ip); err != nil {
		return fmt.Errorf("auth guard: trust: %w", err)
	}
	g.trust.remember(ip, name, g.trust.ttl)
	return nil
}

// runTrust runs the trust script on name's trusted addresses, within the
// guard's timeout.
func (g *Guard) runTrust(ctx context.Context, name, op, ip string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	key := g.prefix + "authfail:trusted:" + nameHash(name)
	ttl := max(g.trust.ttl.Milliseconds(), 1)
	return trustScript.Run(ctx, g.rdb, []string{key}, op, ip, ttl, maxTrustedAddrs).Int64()
}
