package limiter

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/algorithms"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/prelude.lua
var preludeLua string

//go:embed lua/driver.lua
var driverLua string

//go:embed lua/release.lua
var releaseLua string

//go:embed lua/single.lua
var singleLua string

//go:embed lua/giveback.lua
var giveBackLua string

//go:embed lua/lease.lua
var leaseLua string

// leaseAccounting is lease.lua with the time a lease is trusted to be out
// (leaseTrust) set before it: the drivers that take, end or reset leases
// start with it, and only they (plain decisions pay nothing for leases).
var leaseAccounting = fmt.Sprintf("local lease_trust = %d\n", leaseTrust.Milliseconds()) + leaseLua

// The drivers with the lease accounting before them.
var (
	leaseDriverLua   = leaseAccounting + driverLua
	leaseGiveBackLua = leaseAccounting + giveBackLua
)

// compose builds a script from algorithm modules: the prelude reads the clock
// and holds the table the modules register in by name, the driver decides
// the rules of KEYS and ARGV with them.
func compose(specs []algorithms.Spec) *redis.Script {
	return composeWith(specs, driverLua)
}

// composeSingle builds the script deciding one rule of spec's algorithm:
// its module with single.lua, which skips the general driver's tables and
// loops (the most common rule set is one limit, and Redis's one thread runs
// every line of a script on every call).
func composeSingle(spec algorithms.Spec) *redis.Script {
	return composeWith([]algorithms.Spec{spec}, singleLua)
}

// singleScript is the script deciding one rule of spec's algorithm alone:
// its flat script where it has one, else composeSingle's.
func singleScript(spec algorithms.Spec) *redis.Script {
	if spec.Fast != "" {
		return redis.NewScript(spec.Fast)
	}
	return composeSingle(spec)
}

// composeWith builds a script from modules and a driver: driverLua,
// singleLua, leaseDriverLua (lease takes and admin modes), leaseGiveBackLua,
// or releaseLua (gives back what held rules took).
func composeWith(specs []algorithms.Spec, driver string) *redis.Script {
	var b strings.Builder
	b.WriteString(preludeLua)
	for _, s := range specs {
		b.WriteString(s.Lua)
		b.WriteByte('\n')
	}
	b.WriteString(driver)
	return redis.NewScript(b.String())
}

// scripts decides rules with scripts composed of just the modules they use:
// Redis runs a module's definitions on every call, so a script carries no
// module its rules do not use. Each set of modules is composed on first use
// and kept; there are at most 2^len(table) sets, and a service uses a few.
type scripts struct {
	rdb redis.Scripter
	now func() time.Time // our clock, for calendar periods' starts and Epoch windows
	// offset is Redis's clock less ours (ns), as Redis's replies showed it
	// (call): the windows and periods the engine passes are Redis's.
	offset atomic.Int64

	composed sync.Map // module names joined by "," -> *redis.Script
	single   sync.Map // algorithm name -> *redis.Script of one rule
	giveBack sync.Map // algorithm name -> *redis.Script returning leased units

	mu   sync.RWMutex
	args map[ruleLimit][]any // a rule's ARGV entries but its cost, made once per algorithm and limit
}

// ruleLimit is a rule's algorithm (by name) and limit.
type ruleLimit struct {
	name  string
	limit algorithms.Limit
}

func newScripts(rdb redis.Scripter) *scripts {
	return &scripts{rdb: rdb, now: time.Now, args: map[ruleLimit][]any{}}
}

// rule is a Rule resolved for the scripts.
type rule struct {
	spec  algorithms.Spec
	limit algorithms.Limit
	cost  int
	key   string
	lease *leaseTake // Rule.lease
	delay time.Duration
}

// scriptFor returns the script with the modules of rs, and only those: for
// one rule, its algorithm's flat script (Spec.Fast), or its module with the
// one-rule driver.
func (s *scripts) scriptFor(rs []rule) *redis.Script {
	if len(rs) == 1 {
		name := rs[0].spec.Name
		if sc, ok := s.single.Load(name); ok {
			return sc.(*redis.Script)
		}
		sc, _ := s.single.LoadOrStore(name, singleScript(rs[0].spec))
		return sc.(*redis.Script)
	}
	return s.scriptWith(rs, driverLua)
}

// scriptWith returns the script with the modules of rs, and only those, and
// driver: driverLua, leaseDriverLua, or releaseLua to give back what held
// rules took.
func (s *scripts) scriptWith(rs []rule, driver string) *redis.Script {
	var one [1]string
	names := one[:0]
	for _, r := range rs {
		if !slices.Contains(names, r.spec.Name) {
			names = append(names, r.spec.Name)
		}
	}
	if len(names) > 1 {
		slices.Sort(names)
	}
	key := strings.Join(names, ",")
	switch driver {
	case releaseLua:
		key = "release:" + key
	case leaseDriverLua:
		key = "lease:" + key
	case refundLua:
		key = "refund:" + key
	}
	if sc, ok := s.composed.Load(key); ok {
		return sc.(*redis.Script)
	}
	specs := make([]algorithms.Spec, 0, len(names))
	for _, name := range names {
		for _, r := range rs {
			if r.spec.Name == name {
				specs = append(specs, r.spec)
				break
			}
		}
	}
	sc, _ := s.composed.LoadOrStore(key, composeWith(specs, driver))
	return sc.(*redis.Script)
}

// argsOf returns the ARGV entries of r before its cost: its algorithm's name
// and the module's arguments. They are the same on every call with the same
// limit, so they are made (and boxed for go-redis) once; at most a few
// hundred limits are configured, so the map stays small.
func (s *scripts) argsOf(r rule) []any {
	k := ruleLimit{r.spec.Name, r.limit}
	s.mu.RLock()
	a, ok := s.args[k]
	s.mu.RUnlock()
	if ok {
		return a
	}
	a = append([]any{r.spec.Name}, r.spec.Args(r.limit)...)
	s.mu.Lock()
	if len(s.args) < maxCachedArgs {
		s.args[k] = a
	}
	s.mu.Unlock()
	return a
}

// maxCachedArgs bounds the argument cache: a caller making limits on the
// fly cannot grow it without end (beyond it, arguments are made per call).
const maxCachedArgs = 4096

// newNonce returns 64 random bits: they keep sliding_log members unique when
// requests from any number of instances share a microsecond.
func newNonce() string {
	return strconv.FormatUint(rand.Uint64(), 16)
}

// nonceFor returns a nonce when a rule of rs needs one, else "".
func nonceFor(rs []rule) string {
	for _, r := range rs {
		if r.spec.Nonce {
			return newNonce()
		}
	}
	return ""
}

// decide checks every rule and, only if all admit and commit is true,
// records the request in all of them (Limiter.Decide; commit false is
// Limiter.Peek).
func (s *scripts) decide(ctx context.Context, rules []Rule, commit bool) (decisions []Decision, allowed bool, err error) {
	rs, err := resolve(rules)
	if err != nil || len(rs) == 0 {
		return nil, err == nil, err
	}
	nonce := nonceFor(rs)
	if rs[0].lease != nil {
		nonce = rs[0].lease.id // leased rule sets need no other nonce
	}
	cc, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return s.run(ctx, s.rdb, rs, nonce, modeOf(commit))
	}
	groups := byHashTag(rs)
	if len(groups) == 1 {
		return s.run(ctx, cc, rs, nonce, modeOf(commit))
	}
	decisions = make([]Decision, len(rs))
	each := func(commit bool) (bool, error) {
		all := true
		for _, g := range groups {
			sub := make([]rule, len(g))
			for j, i := range g {
				sub[j] = rs[i]
			}
			ds, ok, err := s.run(ctx, cc, sub, nonce, modeOf(commit))
			for j, i := range g {
				if ds != nil { // on an error, the places the call may take
					decisions[i] = ds[j]
				}
			}
			if err != nil {
				return false, err
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
		// Groups committed before the error may hold places: the decisions
		// carry them, for Release.
		return decisions, false, err
	}
	return decisions, allowed, nil
}

// The driver's modes (ARGV[1]): decide and record, peek, decide and record
// as a lease taken (run picks it for a commit of rules with a lease id),
// reset; a grant of n units is "g<n>". modeHeld is modeCommit for rules that
// hold places: the last key is the call's release mark (markKey), and the
// script records nothing once it exists.
const (
	modeCommit = "1"
	modePeek   = "0"
	modeLease  = "l"
	modeReset  = "r"
	modeHeld   = "h"
	// modeDelay is modeCommit for rules with a delay (Rule.Delay): each
	// rule's delay in ms follows its cost.
	modeDelay = "d"
)

func modeOf(commit bool) string {
	if commit {
		return modeCommit
	}
	return modePeek
}

// admin runs an admin mode (reset, grant) on rules, in one script per hash
// tag, and returns what a peek then answers.
func (s *scripts) admin(ctx context.Context, rules []Rule, mode string) ([]Decision, error) {
	rs, err := resolve(rules)
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	nonce := nonceFor(rs)
	cc, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		ds, _, err := s.run(ctx, s.rdb, rs, nonce, mode)
		return ds, err
	}
	decisions := make([]Decision, len(rs))
	for _, g := range byHashTag(rs) {
		sub := make([]rule, len(g))
		for j, i := range g {
			sub[j] = rs[i]
		}
		ds, _, err := s.run(ctx, cc, sub, nonce, mode)
		if err != nil {
			return nil, err
		}
		for j, i := range g {
			decisions[i] = ds[j]
		}
	}
	return decisions, nil
}

// run runs the script of rules, whose keys share a hash slot, in mode, and
// turns its reply (per rule {allowed, remaining, reset_ms, retry_ms}, then
// now_ms) into one Decision per rule.
func (s *scripts) run(ctx context.Context, rdb redis.Scripter, rules []rule, nonce, mode string) ([]Decision, bool, error) {
	if mode == modeCommit && rules[0].lease != nil {
		mode = modeLease
	}
	single := len(rules) == 1 && (mode == modeCommit || mode == modePeek)
	var mark string // the call's release mark, when it may take places
	if mode == modeCommit {
		for _, r := range rules {
			if r.spec.Held {
				mark = markKey(r.key, nonce)
				break
			}
		}
		if mark == "" && delayed(rules) {
			mode, single = modeDelay, false
		}
	}
	// A lease taken or an admin mode runs the lease accounting, with each
	// rule's lease set after the rules' keys; a lease taken ends the rule
	// set's previous lease, used up, if it is still out.
	leased := mode != modeCommit && mode != modePeek && mode != modeDelay
	var script *redis.Script
	switch {
	case single:
		script = s.scriptFor(rules)
	case leased:
		script = s.scriptWith(rules, leaseDriverLua)
	default:
		script = s.scriptWith(rules, driverLua)
	}
	build := func(at time.Time) ([]string, []any) {
		keys := make([]string, len(rules), 2*len(rules)+1)
		args := make([]any, 0, 2+6*len(rules))
		args = append(args, mode, nonce)
		if mark != "" {
			args[0] = modeHeld // the driver knows modeCommit as that
		}
		for i, r := range rules {
			a := s.argsOf(r)
			if single {
				a = a[1:] // single.lua knows its module: no name
			}
			args, keys[i] = perCall(append(args, a...), r, at)
			args = append(args, r.cost)
			if mode == modeDelay {
				args = append(args, r.delay.Milliseconds())
			}
		}
		if leased {
			for _, r := range rules {
				keys = append(keys, leaseSet(r.key))
				if mode == modeLease {
					args = append(args, r.lease.ends)
				}
			}
		}
		if mark != "" {
			keys = append(keys, mark)
		}
		return keys, args
	}
	reply, err := s.call(ctx, rdb, script, true, build).Int64Slice()
	if err == nil && len(reply) != 4*len(rules)+1 {
		err = fmt.Errorf("got %d values, want %d", len(reply), 4*len(rules)+1)
	}
	if err != nil {
		return unsure(rules, nonce, mark), false, fmt.Errorf("run script: %w", err)
	}
	now := time.UnixMilli(reply[len(reply)-1])
	ds := make([]Decision, len(rules))
	allowed := true
	for i, r := range rules {
		v := reply[4*i : 4*i+4]
		_, window := r.limit.Span(now) // a calendar's current period on Redis's clock
		ds[i] = Decision{
			Allowed:    v[0] == 1,
			Limit:      r.spec.Quota(r.limit),
			Window:     window,
			Remaining:  int(max(v[1], 0)),
			ResetAfter: time.Duration(v[2]) * time.Millisecond,
			RetryAfter: time.Duration(v[3]) * time.Millisecond,
			Now:        now,
		}
		if ds[i].Allowed {
			// An admitted request's retry is its wait (a slot ahead, modeDelay).
			ds[i].Wait, ds[i].RetryAfter = ds[i].RetryAfter, 0
		}
		allowed = allowed && ds[i].Allowed
	}
	if (mode == modeCommit || mode == modeDelay) && allowed {
		for i, r := range rules {
			if r.spec.Held {
				ds[i].held = &held{rule: r, nonce: nonce, mark: mark}
			} else if r.spec.LeaseFor != nil {
				ds[i].taken = &rules[i] // for Refund
			}
		}
	}
	return ds, allowed, nil
}

// perCall appends to args the ARGV entries of r that depend on the moment
// at (on Redis's clock, as we know it) and returns them with the key the
// script is to use for r: a calendar's period starts around at, with the
// rule's key; an Epoch module's window number, with that window's key.
func perCall(args []any, r rule, at time.Time) ([]any, string) {
	switch {
	case r.spec.Calendar:
		for _, t := range r.limit.Starts(at) {
			args = append(args, t.UnixMilli())
		}
	case r.spec.Epoch:
		n := r.limit.WindowAt(at)
		return append(args, n), windowKey(r.key, n)
	}
	return args, r.key
}

// windowTries bounds the calls one script call makes while Redis answers
// that the windows it was given are not Redis's: the second call carries
// Redis's own, so it fails again only for windows shorter than a round trip.
const windowTries = 3

// call runs sc with the keys and arguments build makes for a moment on
// Redis's clock, as our clock corrected by the offset Redis's replies
// showed, and runs it again (windowTries in all) while Redis answers
// "WRONGWINDOW <its now_ms>": the script then wrote nothing, and the next
// call is made for Redis's clock. nowLast: the reply is an array ending
// with Redis's now_ms, which corrects the offset too.
func (s *scripts) call(ctx context.Context, rdb redis.Scripter, sc *redis.Script, nowLast bool, build func(at time.Time) ([]string, []any)) *redis.Cmd {
	for try := 1; ; try++ {
		sent := s.now()
		keys, args := build(sent.Add(time.Duration(s.offset.Load())))
		cmd := sc.Run(ctx, rdb, keys, args...)
		redisNow, wrong := wrongWindow(cmd.Err())
		if !wrong && nowLast {
			if v, ok := cmd.Val().([]any); ok && len(v) > 0 {
				redisNow, _ = v[len(v)-1].(int64)
			}
		}
		if redisNow != 0 {
			got := s.now()
			s.offset.Store(int64(time.UnixMilli(redisNow).Sub(sent.Add(got.Sub(sent) / 2))))
		}
		if !wrong || try == windowTries {
			return cmd
		}
	}
}

// wrongWindow reports whether err is a module's answer that the window it
// was given is not Redis's (fixed_window.lua, m.verify), and Redis's now_ms.
func wrongWindow(err error) (int64, bool) {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return 0, false
	}
	// Redis prefixes "ERR " and appends where the script raised it.
	_, rest, ok := strings.Cut(rerr.Error(), "WRONGWINDOW ")
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, " ")
	ms, perr := strconv.ParseInt(digits, 10, 64)
	return ms, perr == nil
}

// unsure returns, for a call of rules that failed, the places it may have
// taken all the same (nil when it could take none): a script whose caller
// timed out may have run, or still run later (Redis read it before a stall).
// Release gives them back and leaves the call's mark, so that the script,
// should it run after that, records nothing: the caller knows the places'
// identity (the nonce) before the script runs.
func unsure(rules []rule, nonce, mark string) []Decision {
	if mark == "" {
		return nil
	}
	ds := make([]Decision, len(rules))
	for i, r := range rules {
		if r.spec.Held {
			ds[i].held = &held{rule: r, nonce: nonce, mark: mark, unsure: true}
		}
	}
	return ds
}

// markKey is the release mark of the call with nonce deciding key (and the
// keys under its hash tag): in key's hash slot, so on a cluster in the same
// script.
func markKey(key, nonce string) string {
	if hashTag(key) != key {
		return key + ":released:" + nonce
	}
	return "{" + key + "}:released:" + nonce
}

// release gives back what the held rules took, in one script per hash tag.
func (s *scripts) release(ctx context.Context, hs []*held) error {
	rs := make([]rule, len(hs))
	for i, h := range hs {
		rs[i] = h.rule
	}
	groups := s.scriptGroups(rs)
	var errs []error
	for _, g := range groups {
		keys := make([]string, len(g), len(g)+1)
		args := make([]any, 0, 2+4*len(g))
		// A call that failed leaves its mark for as long as a place it
		// took lives: its script, run later, then takes none.
		var markFor time.Duration
		for _, i := range g {
			if hs[i].unsure {
				markFor = max(markFor, rs[i].limit.Window, time.Millisecond)
			}
		}
		args = append(args, hs[g[0]].nonce, markFor.Milliseconds())
		sub := make([]rule, len(g))
		for j, i := range g {
			keys[j], sub[j] = rs[i].key, rs[i]
			args = append(args, s.argsOf(rs[i])...)
			args = append(args, rs[i].cost)
		}
		if markFor > 0 {
			keys = append(keys, hs[g[0]].mark)
		}
		if err := s.scriptWith(sub, releaseLua).Run(ctx, s.rdb, keys, args...).Err(); err != nil {
			errs = append(errs, fmt.Errorf("release: %w", err))
		}
	}
	return errors.Join(errs...)
}

// refund gives units of r back: a lease's unused units, the lease id, taken
// the units its commit took and reset the reset that commit returned (on
// Redis's clock). It reports whether they were given back: not if the lease
// was no longer out in Redis (given back already, or older than leaseTrust).
func (s *scripts) refund(ctx context.Context, r rule, id string, taken, units int, reset time.Time) (bool, error) {
	sc, ok := s.giveBack.Load(r.spec.Name)
	if !ok {
		sc, _ = s.giveBack.LoadOrStore(r.spec.Name, composeWith([]algorithms.Spec{r.spec}, leaseGiveBackLua))
	}
	member := leaseMember(id, taken, reset)
	n, err := s.call(ctx, s.rdb, sc.(*redis.Script), false, func(at time.Time) ([]string, []any) {
		args, key := perCall(append([]any{units, reset.UnixMilli(), member}, s.argsOf(r)[1:]...), r, at)
		return []string{key, leaseSet(r.key)}, args
	}).Int()
	if err != nil {
		return false, fmt.Errorf("give back %d units of %s: %w", units, r.key, err)
	}
	return n == 1, nil
}

// leaseMember is a lease's member in its rule's lease set (lua/lease.lua):
// its id, the units it took, the reset its commit returned.
func leaseMember(id string, taken int, reset time.Time) string {
	return id + ":" + strconv.Itoa(taken) + ":" + strconv.FormatInt(reset.UnixMilli(), 10)
}

// leaseSet is the key of the set of leases out on key (lua/lease.lua), in
// key's hash slot: key's hash tag, or key itself as the tag.
func leaseSet(key string) string {
	if hashTag(key) != key {
		return key + ":leases"
	}
	return "{" + key + "}:leases"
}

// windowKey is the key counting window n of the rule at key, under an
// Epoch algorithm: key with ":<n>", in key's hash slot: key's hash tag, or
// key itself as the tag, named after it so that the window's key still
// starts with key ("<key>:{<key>}:<n>"). The suffix is the key layout's
// version: layout 1 (fixed_window before it) kept a hash at key itself.
func windowKey(key string, n int64) string {
	if hashTag(key) != key {
		return key + ":" + strconv.FormatInt(n, 10)
	}
	return key + ":{" + key + "}:" + strconv.FormatInt(n, 10)
}

// checkSpec reports whether s is an algorithm of the table as a rule
// carries it, not the zero Spec of a rule made without one.
func checkSpec(s algorithms.Spec) error {
	if s.Name == "" || s.Lua == "" || s.Args == nil {
		return fmt.Errorf("%w: the rule carries no algorithm (set Rule.Algorithm from algorithms.Lookup)", algorithms.ErrUnknown)
	}
	return nil
}

// resolve checks rules for the scripts.
func resolve(rules []Rule) ([]rule, error) {
	rs := make([]rule, len(rules))
	for i, r := range rules {
		s := r.Algorithm
		if err := checkSpec(s); err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		if err := s.Validate(r.Limit); err != nil {
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
		if r.Delay < 0 || r.Delay > 0 && (!s.Bucket || cost > r.Limit.Capacity()) {
			return nil, fmt.Errorf("rule %d: %w: delay %v under %s with cost %d: want 0, or a bucket algorithm (token_bucket, gcra) and a cost it can admit", i, ErrInvalidRule, r.Delay, s.Name, cost)
		}
		rs[i] = rule{spec: s, limit: r.Limit, cost: cost, key: r.Key, lease: r.lease, delay: r.Delay}
	}
	return rs, nil
}

// scriptGroups is the indexes of rs in the groups one script each may
// decide: by hash tag on a cluster (byHashTag), else all of them at once.
func (s *scripts) scriptGroups(rs []rule) [][]int {
	if _, ok := s.rdb.(*redis.ClusterClient); ok {
		return byHashTag(rs)
	}
	all := make([]int, len(rs))
	for i := range rs {
		all[i] = i
	}
	return [][]int{all}
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

// delayed reports whether a rule of rs has a delay (Rule.Delay).
func delayed(rs []rule) bool {
	for _, r := range rs {
		if r.delay > 0 {
			return true
		}
	}
	return false
}
