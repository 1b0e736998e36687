// Package algorithms holds the rate-limiting algorithms. Each one is a Lua
// module (lua/<name>.lua) that checks a request without writing and commits it
// separately; scripts compose modules with a prelude that reads the clock with
// TIME, so every service instance sharing a Redis agrees on windows and
// refills, and a driver that records a request only if every rule admits it.
// Every decision is one atomic script, one round trip.
package algorithms

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// An Algorithm decides whether one more request for key may proceed, and records it if so.
type Algorithm interface {
	Allow(ctx context.Context, key string) (Decision, error)
}

// Decision is the outcome of one Allow call. Durations are relative to Now.
type Decision struct {
	Allowed    bool
	Limit      int           // requests per window; token bucket: capacity
	Window     time.Duration // the span Limit applies to
	Remaining  int           // left after this request, never negative
	ResetAfter time.Duration // until the quota is fully restored
	RetryAfter time.Duration // until a denied request could pass; 0 when Allowed
	Now        time.Time     // Redis's clock at the decision, so Reset does not wobble with ours
}

// Limit is the quota of one algorithm: Requests per Window. For token_bucket
// and gcra, Requests per Window is the refill rate and Burst the capacity.
type Limit struct {
	Requests int
	Window   time.Duration
	Burst    int // token_bucket, gcra: bucket capacity; 0 means Requests
}

// capacity is the most requests a token bucket or GCRA admits at once.
func (l Limit) capacity() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Requests
}

// ErrUnknown is returned by New for a name that is not an algorithm.
var ErrUnknown = errors.New("unknown algorithm")

// ErrInvalidLimit is returned by New for a Limit no algorithm can keep exactly.
var ErrInvalidLimit = errors.New("invalid limit")

// maxExact is 2^53: the scripts compute in Lua numbers (doubles), exact for
// integers up to here. Products of a count and a window in ms must stay below.
const maxExact = 1 << 53

// Validate reports whether l is a limit the algorithms can keep exactly: its
// ranges, and that the scripts' integer arithmetic (count × window in ms)
// stays below 2^53.
func (l Limit) Validate() error {
	ms := l.Window.Milliseconds()
	switch {
	case l.Requests < 1:
		return fmt.Errorf("%w: %d requests, want at least 1", ErrInvalidLimit, l.Requests)
	case l.Burst < 0:
		return fmt.Errorf("%w: burst %d, want 0 (same as requests) or more", ErrInvalidLimit, l.Burst)
	case ms < 1:
		return fmt.Errorf("%w: window %v, want at least 1ms", ErrInvalidLimit, l.Window)
	case int64(max(l.Requests, l.capacity())) > maxExact/ms:
		return fmt.Errorf("%w: %d requests per %v is beyond exact arithmetic; use a smaller limit or window", ErrInvalidLimit, max(l.Requests, l.capacity()), l.Window)
	}
	return nil
}

// ValidateFor is Validate plus what algorithm (hyphens or underscores)
// needs of l: gcra, for one, keeps times in µs and needs a smaller burst
// × window than Validate allows.
func (l Limit) ValidateFor(algorithm string) error {
	s, ok := lookup(algorithm)
	if !ok {
		return unknown(algorithm)
	}
	return s.validateLimit(l)
}

// validateLimit checks l for this algorithm.
func (s spec) validateLimit(l Limit) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if s.validate != nil {
		return s.validate(l)
	}
	return nil
}

// HasBurst reports whether algorithm (hyphens or underscores) has a
// capacity of its own, Limit.Burst: token_bucket and gcra do; the window
// algorithms admit Limit.Requests per window and nothing more.
func HasBurst(algorithm string) bool {
	s, ok := lookup(algorithm)
	return ok && s.bucket
}

// CheckCost reports whether a request of cost units can ever pass under l
// with algorithm: cost must not exceed what one window (or a full bucket)
// admits, nor what the algorithm can record in one call (sliding_log keeps
// one sorted-set member per unit).
func CheckCost(algorithm string, l Limit, cost int) error {
	s, ok := lookup(algorithm)
	if !ok {
		return unknown(algorithm)
	}
	capacity, what := l.Requests, "limit"
	if s.bucket && l.Burst > 0 {
		capacity, what = l.Burst, "burst"
	}
	switch {
	case cost < 1:
		return fmt.Errorf("%w: cost %d, want 1 or more", ErrInvalidLimit, cost)
	case cost > capacity:
		return fmt.Errorf("%w: cost %d exceeds the %s %d: no request could ever pass; want a cost of at most %d", ErrInvalidLimit, cost, what, capacity, capacity)
	case s.maxCost > 0 && cost > s.maxCost:
		return fmt.Errorf("%w: cost %d: %s records one entry per unit; want a cost of at most %d", ErrInvalidLimit, cost, s.name, s.maxCost)
	}
	return nil
}

// Names lists the algorithm names New accepts.
func Names() []string {
	return []string{"fixed_window", "sliding_log", "sliding_window", "token_bucket", "gcra"}
}

// Known reports whether name (hyphens or underscores) is an algorithm.
func Known(name string) bool {
	_, ok := lookup(name)
	return ok
}

// New returns the algorithm called name (hyphens or underscores), keeping its
// state in rdb under keys that start with prefix.
func New(name string, rdb redis.Scripter, prefix string, l Limit) (Algorithm, error) {
	s, ok := lookup(name)
	if !ok {
		return nil, unknown(name)
	}
	if err := s.validateLimit(l); err != nil {
		return nil, err
	}
	return s.new(rdb, prefix, l), nil
}

func unknown(name string) error {
	return fmt.Errorf("%w %q: want one of %s", ErrUnknown, name, strings.Join(Names(), ", "))
}

// lookup is the one place that knows every algorithm by name: adding one is
// a Go file (its type and spec), a Lua module in lua/, a case here and its
// name in Names.
func lookup(name string) (spec, bool) {
	switch strings.ReplaceAll(name, "-", "_") {
	case "fixed_window":
		return fixedWindow, true
	case "sliding_log":
		return slidingLog, true
	case "sliding_window":
		return slidingWindow, true
	case "token_bucket":
		return tokenBucket, true
	case "gcra":
		return gcra, true
	}
	return spec{}, false
}

// spec is what the scripts need to know about one algorithm.
type spec struct {
	name string // the module's name in the scripts' algorithms table
	bit  int    // its index in Names, for sets of modules
	lua  string // the module: lua/<name>.lua
	// args are the module's ARGV entries under l, before the cost.
	args func(l Limit) []any
	// bucket: Decision.Limit is the capacity (Limit.Burst), not Limit.Requests.
	bucket bool
	// validate checks what this algorithm needs of a Limit beyond
	// Limit.Validate; nil if nothing.
	validate func(l Limit) error
	// maxCost is the largest cost one request may have; 0: no cap but the limit.
	maxCost int
	// script is the prelude, this module and the driver: one algorithm's Allow.
	script *redis.Script
	new    func(rdb redis.Scripter, prefix string, l Limit) Algorithm
}

// quota is Decision.Limit under l.
func (s spec) quota(l Limit) int {
	if s.bucket {
		return l.capacity()
	}
	return l.Requests
}

//go:embed lua/prelude.lua
var preludeLua string

//go:embed lua/driver.lua
var driverLua string

// compose builds a script from Lua modules (lua/<algorithm>.lua): the prelude
// reads the clock and holds the table the modules register in by name, the
// driver decides the rules of KEYS and ARGV with them. Each Allow runs a
// script of its own module only; Multi runs one with every module.
func compose(modules ...string) *redis.Script {
	return redis.NewScript(preludeLua + strings.Join(modules, "\n") + "\n" + driverLua)
}

// rule is a Rule resolved for the scripts.
type rule struct {
	spec  spec
	limit Limit
	cost  int
	key   string
}

// newNonce returns 64 random bits: they keep sliding_log members unique when
// requests from any number of instances share a microsecond.
func newNonce() string {
	return strconv.FormatUint(rand.Uint64(), 16)
}

// nonceFor returns a nonce when a rule of rs needs one (sliding_log), else "".
func nonceFor(rs []rule) string {
	for _, r := range rs {
		if r.spec.name == slidingLog.name {
			return newNonce()
		}
	}
	return ""
}

// decide runs s, composed with the modules of rules, on rules whose keys share
// a hash slot, and turns its reply (per rule {allowed, remaining, reset_ms,
// retry_ms}, then now_ms) into one Decision per rule. argsOf gives a rule's
// ARGV entries before its cost (nil: made from its spec).
func decide(ctx context.Context, rdb redis.Scripter, s *redis.Script, rules []rule, nonce string, commit bool, argsOf func(rule) []any) ([]Decision, bool, error) {
	keys := make([]string, len(rules))
	flag := 0
	if commit {
		flag = 1
	}
	args := make([]any, 0, 2+6*len(rules))
	args = append(args, flag, nonce)
	for i, r := range rules {
		keys[i] = r.key
		if argsOf != nil {
			args = append(args, argsOf(r)...)
		} else {
			args = append(args, r.spec.name)
			args = append(args, r.spec.args(r.limit)...)
		}
		args = append(args, r.cost)
	}
	reply, err := s.Run(ctx, rdb, keys, args...).Int64Slice()
	if err != nil {
		return nil, false, fmt.Errorf("run script: %w", err)
	}
	if want := 4*len(rules) + 1; len(reply) != want {
		return nil, false, fmt.Errorf("run script: got %d values, want %d", len(reply), want)
	}
	now := time.UnixMilli(reply[len(reply)-1])
	ds := make([]Decision, len(rules))
	allowed := true
	for i, r := range rules {
		v := reply[4*i : 4*i+4]
		ds[i] = Decision{
			Allowed:    v[0] == 1,
			Limit:      r.spec.quota(r.limit),
			Window:     r.limit.Window,
			Remaining:  int(max(v[1], 0)),
			ResetAfter: time.Duration(v[2]) * time.Millisecond,
			RetryAfter: time.Duration(v[3]) * time.Millisecond,
			Now:        now,
		}
		allowed = allowed && ds[i].Allowed
	}
	return ds, allowed, nil
}

// allowOne records one request for key under l if s admits it: the Allow of
// every algorithm.
func allowOne(ctx context.Context, rdb redis.Scripter, s spec, key string, l Limit) (Decision, error) {
	ds, _, err := decide(ctx, rdb, s.script, []rule{{spec: s, limit: l, cost: 1, key: key}}, newNonce(), true, nil)
	if err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}
