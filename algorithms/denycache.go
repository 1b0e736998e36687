package algorithms

import (
	"context"
	"sync"
	"time"
)

// DenyCache remembers identities the wrapped algorithm denied and denies them
// again from memory until their RetryAfter, without asking Redis: a client
// flooding a closed limit then costs Redis nothing.
//
// It is exact for every algorithm here because a denied request writes no
// state (sliding_log only trims entries that already left the window) and,
// while an identity is over its limit, no other request for it can be
// admitted, so nothing can make its earliest admission earlier than the
// RetryAfter Redis gave. The cache counts RetryAfter from before the call
// and one millisecond short (Redis rounds durations up to whole ms), so it
// never denies a request Redis would admit. What it cannot see is state
// changed outside the algorithm (a key deleted by hand, a Redis failover
// that lost writes, an instance with a different limit): those take effect
// for a cached identity once its entry expires, at most its RetryAfter.
//
// Memory is bounded: at most size entries, each dropped at its expiry;
// when full, expired entries are swept and, if none were, an arbitrary one
// is dropped (forgetting a denial is always safe, it only costs a Redis call).
type DenyCache struct {
	next Algorithm
	size int
	now  func() time.Time

	mu     sync.Mutex
	denied map[string]denial
	swept  time.Time // last full sweep of expired entries
}

// denial is one cached denial (one Decision, or one per rule), valid until
// until.
type denial struct {
	ds    []Decision
	at    time.Time // local clock just before the call that denied
	until time.Time
}

var _ Algorithm = (*DenyCache)(nil)

// NewDenyCache wraps next with a cache of at most size denied identities.
func NewDenyCache(next Algorithm, size int) *DenyCache {
	return &DenyCache{next: next, size: max(size, 1), now: time.Now, denied: make(map[string]denial)}
}

// Allow denies key from memory while a denial of it is cached, and asks the
// wrapped algorithm otherwise.
func (dc *DenyCache) Allow(ctx context.Context, key string) (Decision, error) {
	now := dc.now()
	if ds, ok := dc.lookupAll(key, now); ok {
		return ds[0], nil
	}
	d, err := dc.next.Allow(ctx, key)
	// Denials shorter than the safety margin are not worth remembering.
	if err == nil && !d.Allowed && d.RetryAfter > time.Millisecond {
		dc.store(key, denial{ds: []Decision{d}, at: now, until: now.Add(d.RetryAfter - time.Millisecond)})
	}
	return d, err
}

// Len reports how many denials are cached, expired ones included until swept.
func (dc *DenyCache) Len() int {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return len(dc.denied)
}

// lookupAll returns the cached denial of key aged to now, if it still holds.
func (dc *DenyCache) lookupAll(key string, now time.Time) ([]Decision, bool) {
	dc.mu.Lock()
	e, ok := dc.denied[key]
	if ok && !now.Before(e.until) {
		delete(dc.denied, key)
		ok = false
	}
	dc.mu.Unlock()
	if !ok {
		return nil, false
	}
	elapsed := now.Sub(e.at)
	ds := make([]Decision, len(e.ds))
	for i, d := range e.ds {
		d.RetryAfter = max(d.RetryAfter-elapsed, 0)
		d.ResetAfter = max(d.ResetAfter-elapsed, d.RetryAfter)
		d.Now = d.Now.Add(elapsed)
		ds[i] = d
	}
	return ds, true
}

func (dc *DenyCache) store(key string, e denial) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if _, ok := dc.denied[key]; !ok && len(dc.denied) >= dc.size {
		dc.evict(e.at)
	}
	dc.denied[key] = e
}

// evict makes room for one entry. A full sweep is O(size), so it runs at
// most once a second; otherwise one arbitrary entry goes.
func (dc *DenyCache) evict(now time.Time) {
	if now.Sub(dc.swept) >= time.Second {
		dc.swept = now
		for k, e := range dc.denied {
			if !now.Before(e.until) {
				delete(dc.denied, k)
			}
		}
		if len(dc.denied) < dc.size {
			return
		}
	}
	for k := range dc.denied {
		delete(dc.denied, k)
		return
	}
}
