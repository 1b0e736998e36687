package algorithms

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ErrInvalidRule is returned by Decide for rules it cannot decide: a negative
// cost or two rules on one key.
var ErrInvalidRule = errors.New("invalid rule")

// A Rule is one limit of a multi-limit decision.
type Rule struct {
	Algorithm string // one of Names(); hyphens accepted
	Limit     Limit
	// Cost is how many units this request takes; 0 means 1. A cost above
	// the limit (the capacity for token_bucket and gcra) is always denied,
	// with RetryAfter the algorithm's full horizon.
	Cost int
	// Key is the full Redis key. Rules whose keys share a {hash tag} (or have
	// none) are decided in one script.
	Key string
}

// mixedScripts holds, for every set of two or more algorithms (a bit per
// algorithm, in the order of Names), a script with just their modules: Redis
// runs a module's definitions on every call, so a script carries no module
// its rules do not use. Rules of one algorithm run that algorithm's own script.
var mixedScripts = func() map[uint]*redis.Script {
	names := Names()
	scripts := map[uint]*redis.Script{}
	for set := uint(1); set < 1<<len(names); set++ {
		var lua []string
		for i, name := range names {
			if set&(1<<i) != 0 {
				s, _ := lookup(name)
				lua = append(lua, s.lua)
			}
		}
		if len(lua) > 1 {
			scripts[set] = compose(lua...)
		}
	}
	return scripts
}()

// scriptFor returns the script with the modules of rs, and only those.
func scriptFor(rs []rule) *redis.Script {
	var set uint
	for _, r := range rs {
		set |= 1 << r.spec.bit
	}
	if set == 1<<rs[0].spec.bit {
		return rs[0].spec.script
	}
	return mixedScripts[set]
}

// Multi decides several rules at once.
type Multi struct {
	rdb redis.Scripter

	mu   sync.RWMutex
	args map[ruleLimit][]any // a rule's ARGV entries but its cost, made once per algorithm and limit
}

// ruleLimit is a rule's algorithm (by spec name) and limit.
type ruleLimit struct {
	name  string
	limit Limit
}

// NewMulti returns a Multi keeping its state in rdb.
func NewMulti(rdb redis.Scripter) *Multi {
	return &Multi{rdb: rdb, args: map[ruleLimit][]any{}}
}

// argsOf returns the ARGV entries of r before its cost: its algorithm's name
// and the module's arguments. They are the same on every call with the same
// limit, so they are made (and boxed for go-redis) once; at most a few
// hundred limits are configured, so the map stays small.
func (m *Multi) argsOf(r rule) []any {
	k := ruleLimit{r.spec.name, r.limit}
	m.mu.RLock()
	a, ok := m.args[k]
	m.mu.RUnlock()
	if ok {
		return a
	}
	a = append([]any{r.spec.name}, r.spec.args(r.limit)...)
	m.mu.Lock()
	if len(m.args) < maxCachedArgs {
		m.args[k] = a
	}
	m.mu.Unlock()
	return a
}

// maxCachedArgs bounds Multi's argument cache: a caller making limits on the
// fly cannot grow it without end (beyond it, arguments are made per call).
const maxCachedArgs = 4096

// Decide checks every rule and, only if all admit and commit is true, records
// the request in all of them, in one Lua script (one round trip), atomically.
// A request denied by any rule is recorded in none. commit=false is a peek:
// nothing is recorded (except garbage collection such as sliding_log's trim),
// Allowed says whether a request of this cost would be admitted now and
// Remaining is what is left now. With commit=true, Remaining is what is left
// after this request (0 when denied by that rule; what is left now for a rule
// that admits a request another rule denied). decisions are in the order of
// rules; allowed is true when every rule admits. No rules allow everything.
//
// On a *redis.ClusterClient, rules whose keys fall under different hash tags
// cannot share a script: Decide peeks at every group and, only if all admit,
// commits each group in turn, each re-checking and committing atomically. A
// group that has become full in between denies the request after the groups
// before it recorded it, so atomicity across hash tags is per group.
func (m *Multi) Decide(ctx context.Context, rules []Rule, commit bool) (decisions []Decision, allowed bool, err error) {
	rs, err := resolve(rules)
	if err != nil || len(rs) == 0 {
		return nil, err == nil, err
	}
	nonce := nonceFor(rs)
	cc, ok := m.rdb.(*redis.ClusterClient)
	if !ok {
		return decide(ctx, m.rdb, scriptFor(rs), rs, nonce, commit, m.argsOf)
	}
	groups := byHashTag(rs)
	if len(groups) == 1 {
		return decide(ctx, cc, scriptFor(rs), rs, nonce, commit, m.argsOf)
	}
	decisions = make([]Decision, len(rs))
	each := func(commit bool) (bool, error) {
		all := true
		for _, g := range groups {
			sub := make([]rule, len(g))
			for j, i := range g {
				sub[j] = rs[i]
			}
			ds, ok, err := decide(ctx, cc, scriptFor(sub), sub, nonce, commit, m.argsOf)
			if err != nil {
				return false, err
			}
			for j, i := range g {
				decisions[i] = ds[j]
			}
			all = all && ok
		}
		return all, nil
	}
	allowed, err = each(false)
	if err != nil {
		return nil, false, err
	}
	if !commit {
		return decisions, allowed, nil
	}
	if !allowed {
		for i := range decisions {
			if !decisions[i].Allowed {
				decisions[i].Remaining = 0 // as the driver answers a commit
			}
		}
		return decisions, false, nil
	}
	allowed, err = each(true)
	if err != nil {
		return nil, false, err
	}
	return decisions, allowed, nil
}

// resolve checks rules and looks up their algorithms.
func resolve(rules []Rule) ([]rule, error) {
	rs := make([]rule, len(rules))
	for i, r := range rules {
		s, ok := lookup(r.Algorithm)
		if !ok {
			return nil, fmt.Errorf("rule %d: %w", i, unknown(r.Algorithm))
		}
		if err := s.validateLimit(r.Limit); err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		// Two rules on one key would both check the state before either
		// records: the second write would overwrite the first. A request has
		// a handful of rules: comparing them pairwise is cheaper than a map.
		for _, prev := range rules[:i] {
			if prev.Key == r.Key {
				return nil, fmt.Errorf("rule %d: %w: key %q used twice", i, ErrInvalidRule, r.Key)
			}
		}
		cost := r.Cost
		switch {
		case cost < 0:
			return nil, fmt.Errorf("rule %d: %w: cost %d, want 0 (one) or more", i, ErrInvalidRule, cost)
		case cost == 0:
			cost = 1
		}
		rs[i] = rule{spec: s, limit: r.Limit, cost: cost, key: r.Key}
	}
	return rs, nil
}

// byHashTag groups the indexes of rs by their keys' hash tag, the part of a
// key Redis Cluster hashes: rules of one group share a slot, so a script.
func byHashTag(rs []rule) [][]int {
	var groups [][]int
	index := map[string]int{}
	for i, r := range rs {
		tag := hashTag(r.key)
		g, ok := index[tag]
		if !ok {
			g = len(groups)
			index[tag] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// hashTag is what Redis Cluster hashes of key: the part between the first
// "{" and the next "}" if that is not empty, else the whole key.
func hashTag(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			return key[open+1 : open+1+n]
		}
	}
	return key
}
