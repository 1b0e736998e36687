package limiter

import (
	"context"
	_ "embed"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/announce.lua
var announceLua string

// Instances: how many instances share the Redis, N. Local decisions take
// ceil(limit/N) of every limit (local.go) and leases size themselves by it
// (lease.go). It is counted, not guessed: every instance announces itself
// in a sorted set, its entry lapsing after instanceTTL unless refreshed
// every announceEvery; one script prunes lapsed entries, adds this one and
// counts. While Redis does not answer, the last count holds: the instances
// a Redis outage cuts off are the ones that decide locally.
const (
	announceEvery = 2 * time.Second
	instanceTTL   = 3 * announceEvery // two missed refreshes before an instance is forgotten
)

// instances keeps the count of the instances sharing a Redis.
type instances struct {
	rdb     redis.Scripter
	key, id string
	script  *redis.Script
	timeout time.Duration
	fixed   int // > 0: N fixed (RATE_LIMIT_INSTANCES), nothing announced

	n atomic.Int64 // the last count; 0: none yet
	// ctx ends at close: an announce under way then must not hold up a
	// shutdown (Redis may hang).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newInstances counts the instances announcing themselves under key on rdb,
// or always answers fixed if it is > 0. Counting starts with one announce,
// bounded by timeout, before it returns, then every announceEvery until
// close.
func newInstances(rdb redis.Scripter, key string, fixed int, timeout time.Duration) *instances {
	in := &instances{rdb: rdb, key: key, id: newNonce() + newNonce(), script: redis.NewScript(announceLua),
		timeout: max(timeout, time.Second), fixed: fixed}
	in.ctx, in.cancel = context.WithCancel(context.Background())
	if fixed > 0 {
		return in
	}
	_ = in.announce(in.ctx, instanceTTL) // a Redis down at start: the next tick counts
	in.wg.Go(func() {
		t := time.NewTicker(announceEvery)
		defer t.Stop()
		for {
			select {
			case <-in.ctx.Done():
				return
			case <-t.C:
				_ = in.announce(in.ctx, instanceTTL)
			}
		}
	})
	return in
}

// announce refreshes this instance's entry (ttl 0: removes it) and stores
// the count.
func (in *instances) announce(ctx context.Context, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, in.timeout)
	defer cancel()
	n, err := in.script.Run(ctx, in.rdb, []string{in.key}, in.id, ttl.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("announce instance: %w", err)
	}
	if ttl > 0 {
		in.n.Store(max(n, 1))
	}
	return nil
}

// count is N: fixed, or the last count, or, before any, leaseInstances.
func (in *instances) count() int {
	if in == nil {
		return leaseInstances
	}
	if in.fixed > 0 {
		return in.fixed
	}
	if n := in.n.Load(); n > 0 {
		return int(n)
	}
	return leaseInstances
}

// close stops announcing and removes this instance's entry, so the others
// count one fewer at once; it waits for that at most closeTimeout.
func (in *instances) close() {
	if in == nil || in.fixed > 0 {
		return
	}
	in.cancel()
	in.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = in.announce(ctx, 0)
}

// closeTimeout bounds what Close waits for Redis (an instance's entry
// removed): a hung Redis must not hold up a shutdown; the entry lapses anyway.
const closeTimeout = 200 * time.Millisecond
