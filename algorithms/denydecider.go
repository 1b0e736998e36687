package algorithms

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// DenyingDecider is DenyCache for a Decider: once a set of rules denies a
// request, the same set is denied from memory until the latest RetryAfter of
// the rules that denied, without asking Redis. It is exact for the same
// reasons as DenyCache: a denied request is recorded in none of the rules,
// and while one rule denies, every request to its key (which always carries
// the same cost) is denied too, so nothing can make its earliest admission
// earlier. Place it in front of the Breaker: answers from memory must neither
// close an open circuit nor reset its count of failures.
type DenyingDecider struct {
	next ruleDecider
	c    *DenyCache // its map and bounds; c.next is unused
}

// ruleDecider is what a DenyingDecider wraps: Multi, or a Breaker around it.
type ruleDecider interface {
	Decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error)
}

var _ ruleDecider = (*DenyingDecider)(nil)

// NewDenyingDecider wraps next with a cache of at most size denied rule sets.
func NewDenyingDecider(next ruleDecider, size int) *DenyingDecider {
	return &DenyingDecider{next: next, c: NewDenyCache(nil, size)}
}

// Decide answers a cached denial of rules, or asks the wrapped Decider and
// remembers a denial.
func (dd *DenyingDecider) Decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	key := ruleSetKey(rules)
	now := dd.c.now()
	if ds, ok := dd.c.lookupAll(key, now); ok {
		return ds, false, nil
	}
	ds, allowed, err := dd.next.Decide(ctx, rules, commit)
	if err != nil || allowed {
		return ds, allowed, err
	}
	var wait time.Duration
	for _, d := range ds {
		if !d.Allowed {
			wait = max(wait, d.RetryAfter)
		}
	}
	if wait > time.Millisecond {
		dd.c.store(key, denial{ds: ds, at: now, until: now.Add(wait - time.Millisecond)})
	}
	return ds, false, nil
}

// Len reports how many denials are cached.
func (dd *DenyingDecider) Len() int { return dd.c.Len() }

// ruleSetKey names a set of rules: their keys, and costs other than one.
func ruleSetKey(rules []Rule) string {
	if len(rules) == 1 && rules[0].Cost <= 1 {
		return rules[0].Key
	}
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r.Key)
		if r.Cost > 1 {
			b.WriteByte('*')
			b.WriteString(strconv.Itoa(r.Cost))
		}
		b.WriteByte(0)
	}
	return b.String()
}
