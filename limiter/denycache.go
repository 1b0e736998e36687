package limiter

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/algorithms"
)

// denyCache remembers rule sets the wrapped stage denied and denies them
// again from memory until the latest RetryAfter of the rules that denied,
// without asking Redis: a client flooding a closed limit then costs Redis
// nothing.
//
// It is exact for every algorithm because a denied request is recorded in
// none of its rules (sliding_log only trims entries that already left the
// window) and, while one rule denies, every request to its key (which always
// carries the same cost) is denied too, so nothing can make its earliest
// admission earlier than the RetryAfter Redis gave. The cache counts
// RetryAfter from before the call and one millisecond short (Redis rounds
// durations up to whole ms), so it never denies a request Redis would admit.
// Held rules (concurrency) are the exception: a place is given back when a
// request ends, at any moment, so a denial by one is never cached (a set is
// cached only as long as its other, unheld rules deny it).
// What it cannot see is state changed outside the engine (a key deleted by
// hand, a Redis failover that lost writes, an instance with a different
// limit): those take effect for a cached set once its entry expires, at most
// its RetryAfter. Leases give units back, which can admit a request sooner:
// behind leases (New), rule sets that may be leased are held at most hold.
// Grants and resets are told (Limiter.Follow): forget drops
// the denials they made stale, and a denial decided before a forget is not
// stored after it.
//
// Memory is bounded: at most size entries, each dropped at its expiry;
// when full, expired entries are swept and, if none were, an arbitrary one
// is dropped (forgetting a denial is always safe, it only costs a Redis call).
type denyCache struct {
	next stage
	size int
	now  func() time.Time
	// hold > 0 keeps a denial at most this long: behind leases, whose
	// give-backs can admit a request before the RetryAfter Redis gave.
	hold time.Duration

	mu     sync.Mutex
	denied map[string]denial
	swept  time.Time // last full sweep of expired entries

	forgets atomic.Uint64 // calls of forget so far
}

// denial is one cached denial (one Decision per rule), valid until until.
type denial struct {
	ds []Decision
	// limits are the rules' limits: a rule on the same key with another
	// limit (a reloaded policy file, an override, another tier) is not this
	// denial, and goes to Redis.
	limits []algorithms.Limit
	at     time.Time // local clock just before the call that denied
	until  time.Time
}

var _ stage = (*denyCache)(nil)

// newDenyCache wraps next with a cache of at most size denied rule sets.
func newDenyCache(next stage, size int) *denyCache {
	return &denyCache{next: next, size: max(size, 1), now: time.Now, denied: make(map[string]denial)}
}

// decide answers a cached denial of rules, or asks the wrapped stage and
// remembers a denial. Peeks are answered from memory too: a cached denial
// is what Redis would answer.
func (dc *denyCache) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	key := ruleSetKey(rules)
	now := dc.now()
	if ds, ok := dc.lookup(key, rules, now); ok {
		return ds, false, nil
	}
	forgets := dc.forgets.Load()
	ds, allowed, err := dc.next.decide(ctx, rules, commit)
	if err != nil || allowed {
		return ds, allowed, err
	}
	var wait time.Duration
	for i, d := range ds {
		if !d.Allowed && !heldRule(rules[i]) {
			// With a delay, the request is admitted (for later) once its
			// slot is no further ahead than the delay.
			wait = max(wait, d.RetryAfter-rules[i].Delay)
		}
	}
	// Denials shorter than the safety margin are not worth remembering.
	if wait > time.Millisecond {
		limits := make([]algorithms.Limit, len(rules))
		for i, r := range rules {
			limits[i] = r.Limit
		}
		until := now.Add(wait - time.Millisecond)
		if dc.hold > 0 {
			until = minTime(until, now.Add(dc.hold))
		}
		dc.store(key, denial{ds: ds, limits: limits, at: now, until: until}, forgets)
	}
	return ds, false, nil
}

// heldRule reports whether r's algorithm holds what it admits until
// Release (concurrency): its denials can end at any moment.
func heldRule(r Rule) bool {
	return r.Algorithm.Held
}

// ruleSetKey names a set of rules: their keys, and costs other than one.
func ruleSetKey(rules []Rule) string {
	if len(rules) == 1 && rules[0].Cost <= 1 && rules[0].Delay == 0 {
		return rules[0].Key
	}
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r.Key)
		if r.Cost > 1 {
			b.WriteByte('*')
			b.WriteString(strconv.Itoa(r.Cost))
		}
		if r.Delay > 0 {
			// Decided without its delay (no room to wait), a rule set is
			// denied sooner: the two denials must not answer for each other.
			b.WriteByte('~')
			b.WriteString(strconv.FormatInt(r.Delay.Milliseconds(), 10))
		}
		b.WriteByte(0)
	}
	return b.String()
}

// len reports how many denials are cached, expired ones included until swept.
func (dc *denyCache) len() int {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return len(dc.denied)
}

// lookup returns the cached denial of key aged to now, if it still holds
// and was made for the limits of rules.
func (dc *denyCache) lookup(key string, rules []Rule, now time.Time) ([]Decision, bool) {
	dc.mu.Lock()
	e, ok := dc.denied[key]
	if ok && (!now.Before(e.until) || !sameLimits(e.limits, rules)) {
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
		d.held = nil // given back by the caller of the call that held it
		ds[i] = d
	}
	return ds, true
}

func sameLimits(limits []algorithms.Limit, rules []Rule) bool {
	if len(limits) != len(rules) {
		return false
	}
	for i, r := range rules {
		if r.Limit != limits[i] {
			return false
		}
	}
	return true
}

// store keeps e unless forget was called since forgets was read (before
// the call that denied): the denial may be stale.
func (dc *denyCache) store(key string, e denial, forgets uint64) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.forgets.Load() != forgets {
		return
	}
	if _, ok := dc.denied[key]; !ok && len(dc.denied) >= dc.size {
		dc.evict(e.at)
	}
	dc.denied[key] = e
}

// forget drops the denials of rule sets with a key under hash tag tag (a
// key without one is its own tag). Any set whose keys contain tag goes:
// forgetting too much is safe.
func (dc *denyCache) forget(tag string) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	dc.forgets.Add(1)
	for k := range dc.denied {
		if strings.Contains(k, tag) {
			delete(dc.denied, k)
		}
	}
}

// evict makes room for one entry. A full sweep is O(size), so it runs at
// most once a second; otherwise one arbitrary entry goes.
func (dc *denyCache) evict(now time.Time) {
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
