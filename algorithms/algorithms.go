// Package algorithms holds the rate-limiting algorithms: one table of specs,
// each naming a Lua module (lua/<name>.lua), the module's arguments and what
// it needs of a Limit. A module checks a request without writing and commits
// it separately; the engine (package limiter) composes the modules a set of
// rules needs into one script, so a request is recorded only if every rule
// admits it. The module contract is written at the top of limiter/lua/prelude.lua.
//
// Adding an algorithm is one Lua module in lua/ and one entry in table; the
// conformance suite in limiter runs every entry, so it needs no new test code.
// Two kinds need more than a window, and say so in their Spec rather than by
// name: held algorithms (concurrency), whose requests keep what they take
// until the engine gives it back (m.release), and calendar ones, whose
// windows are calendar periods the engine passes as arguments.
package algorithms

import (
	"embed"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Limit is the quota of one algorithm: Requests per Window. For token_bucket
// and gcra, Requests per Window is the refill rate and Burst the capacity.
// For concurrency, Requests is how many requests may be under way at once and
// Window how long one holds its place at most (its timeout). For calendar,
// Requests per Period in Location; Window is the longest such period
// (CalendarLimit sets it).
type Limit struct {
	Requests int
	Window   time.Duration
	Burst    int // token_bucket, gcra: bucket capacity; 0 means Requests
	// Period and Location: calendar's period and its time zone (nil: UTC);
	// "" and nil for the other algorithms.
	Period   Period
	Location *time.Location
}

// Capacity is the most requests a token bucket or GCRA admits at once: Burst,
// or Requests when Burst is 0.
func (l Limit) Capacity() int {
	if l.Burst > 0 {
		return l.Burst
	}
	return l.Requests
}

// ErrUnknown is returned for a name that is not an algorithm.
var ErrUnknown = errors.New("unknown algorithm")

// ErrInvalidLimit is returned for a Limit an algorithm cannot keep exactly.
var ErrInvalidLimit = errors.New("invalid limit")

// maxExact is 2^53: the scripts compute in Lua numbers (doubles), exact for
// integers up to here. Products of a count and a window in ms must stay below.
const maxExact = 1 << 53

// mostExact is the largest count the scripts keep exactly under l: 2^53
// divided by the window in ms where they multiply counts by times (the
// window algorithms weigh, refill and space out units over the window),
// 2^53 itself under a calendar's (l.Period set), whose counts are only
// added and compared: its Window bounds a period and is no factor.
func (l Limit) mostExact() int64 {
	if l.Period != "" {
		return maxExact
	}
	return maxExact / max(l.Window.Milliseconds(), 1)
}

// Validate reports whether l is a limit the algorithms can keep exactly: its
// ranges, and that the scripts' integer arithmetic (count × window in ms;
// a calendar's counts alone) stays below 2^53.
func (l Limit) Validate() error {
	ms := l.Window.Milliseconds()
	switch {
	case l.Requests < 1:
		return fmt.Errorf("%w: %d requests, want at least 1", ErrInvalidLimit, l.Requests)
	case l.Burst < 0:
		return fmt.Errorf("%w: burst %d, want 0 (same as requests) or more", ErrInvalidLimit, l.Burst)
	case ms < 1:
		return fmt.Errorf("%w: window %v, want at least 1ms", ErrInvalidLimit, l.Window)
	case int64(max(l.Requests, l.Capacity())) > l.mostExact():
		return fmt.Errorf("%w: %d requests per %v is beyond exact arithmetic; use a smaller limit or window", ErrInvalidLimit, max(l.Requests, l.Capacity()), l.Window)
	case l.Period != "" && l.Window != l.Period.longest():
		return fmt.Errorf("%w: period %q with window %v: want a day, week or month made by CalendarLimit", ErrInvalidLimit, l.Period, l.Window)
	}
	return nil
}

// ValidateFor is Validate plus what algorithm (hyphens or underscores)
// needs of l: gcra, for one, keeps times in µs and needs a smaller burst
// × window than Validate allows.
func (l Limit) ValidateFor(algorithm string) error {
	s, err := Lookup(algorithm)
	if err != nil {
		return err
	}
	return s.Validate(l)
}

// Spec is one algorithm as the engine needs to know it.
type Spec struct {
	// Name is the algorithm's name in configuration, keys and the scripts'
	// table of modules (the module registers itself as algorithms.<Name>).
	Name string
	// Doc is one line for people: what the algorithm promises.
	Doc string
	// Lua is the module, lua/<Name>.lua.
	Lua string
	// Fast is the script that decides one rule of this algorithm alone,
	// lua/fast/<Name>.lua: the module's check and commit written out flat,
	// on the same state, with the KEYS, ARGV and reply of the engine's
	// one-rule driver (limiter/lua/single.lua), and nothing else: Redis runs
	// every line of a script on every call, and one limit alone is the most
	// common rule set. "" means the module with the one-rule driver. The
	// engine's tests compare the two on every call.
	Fast string
	// Args are the module's ARGV entries under l, before the cost.
	Args func(l Limit) []any
	// Bucket: the quota a decision reports is the capacity (Limit.Burst),
	// not Limit.Requests.
	Bucket bool
	// Nonce: the module needs a value unique per call (sliding_log's members).
	Nonce bool
	// Check is what the algorithm needs of a Limit beyond Limit.Validate; nil
	// if nothing.
	Check func(l Limit) error
	// MaxCost is the largest cost one request may have; 0: no cap but the limit.
	MaxCost int
	// Horizon is how long one admitted request weighs on decisions under l:
	// the bound of a reset, a retry and a key's TTL, and how long an
	// exhausted quota takes to come back in full.
	Horizon func(l Limit) time.Duration
	// Grants: the module has m.grant, so an operator can give an identity
	// more units for the current window (limiter.Limiter.Grant).
	Grants bool
	// Held: an admitted request holds its units until it ends, when the
	// engine gives them back (limiter.Limiter.Release, which calls the
	// module's m.release), or until Limit.Window (its timeout) passes. A
	// policy file calls that window "timeout".
	Held bool
	// Calendar: windows are calendar periods (Limit.Period in
	// Limit.Location), and the module's ARGV entries after Args are the
	// period starts around now (Limit.Starts). A policy file gives
	// "period" and "timezone" instead of a window.
	Calendar bool
	// Epoch: windows align to the epoch (window n spans [n, n+1) × the
	// window on Redis's clock) and window n is counted at key
	// "<rule key>:<n>" (in the rule key's hash slot): the engine passes that key as the
	// rule's and n after Args, computed from its clock (WindowAt); the
	// module answers "WRONGWINDOW <Redis's now_ms>" without writing when n
	// is not Redis's window, and the engine asks again with Redis's.
	Epoch bool
	// Unit is what the quota counts, for RateLimit-Policy's qu; "" means
	// requests per window.
	Unit string
	// LeaseFor is how long units of l taken now, with resetAfter the reset
	// the decision reported, may be admitted later from memory (the engine's
	// leases) without admitting more than the algorithm would: for the
	// window algorithms, until the window that counted them closes. nil:
	// never leased. A leasable module has m.refund and m.reset
	// (limiter/lua/prelude.lua).
	LeaseFor func(l Limit, resetAfter time.Duration) time.Duration
}

// Validate checks l for this algorithm.
func (s Spec) Validate(l Limit) error {
	if err := l.Validate(); err != nil {
		return err
	}
	if l.Period != "" && !s.Calendar {
		return fmt.Errorf("%w: %s has no calendar period: want a window", ErrInvalidLimit, s.Name)
	}
	if s.Check != nil {
		return s.Check(l)
	}
	return nil
}

// CheckCost reports whether a request of cost units can ever pass under l
// with this algorithm: cost must not exceed what one window (or a full
// bucket) admits, nor what the algorithm can record in one call
// (sliding_log keeps one sorted-set member per unit).
func (s Spec) CheckCost(l Limit, cost int) error {
	capacity, what := l.Requests, "limit"
	if s.Bucket && l.Burst > 0 {
		capacity, what = l.Burst, "burst"
	}
	switch {
	case cost < 1:
		return fmt.Errorf("%w: cost %d, want 1 or more", ErrInvalidLimit, cost)
	case cost > capacity:
		return fmt.Errorf("%w: cost %d exceeds the %s %d: no request could ever pass; want a cost of at most %d", ErrInvalidLimit, cost, what, capacity, capacity)
	case s.MaxCost > 0 && cost > s.MaxCost:
		return fmt.Errorf("%w: cost %d: %s records one entry per unit; want a cost of at most %d", ErrInvalidLimit, cost, s.Name, s.MaxCost)
	}
	return nil
}

// ErrNoGrant is returned for a grant under an algorithm that has none.
var ErrNoGrant = errors.New("algorithm cannot grant")

// CheckGrant reports whether n units can be granted at once under l with
// this algorithm: one quota at most, and no more than one request may cost
// (sliding_log writes one entry per unit). A grant may go beyond the quota
// (a support desk's extra try must work on a full quota too), but the
// modules keep at most one quota beyond it however many grants come: more
// than that is a new plan (a tier), not one more try.
func (s Spec) CheckGrant(l Limit, n int) error {
	most := s.Quota(l)
	if s.MaxCost > 0 {
		most = min(most, s.MaxCost)
	}
	switch {
	case !s.Grants:
		return fmt.Errorf("%w: %s has no grant", ErrNoGrant, s.Name)
	case n < 1 || n > most:
		return fmt.Errorf("%w: grant of %d units under %s, want 1 to %d", ErrInvalidLimit, n, s.Name, most)
	case int64(2*max(l.Requests, l.Capacity())) > l.mostExact():
		// Grants hold up to twice the quota: beyond exact arithmetic here.
		return fmt.Errorf("%w: grants under %s: %d per %v is too large to grant in exactly", ErrInvalidLimit, s.Name, s.Quota(l), l.Window)
	}
	return nil
}

// Quota is the limit a decision under l reports: the capacity for buckets,
// else the requests per window.
func (s Spec) Quota(l Limit) int {
	if s.Bucket {
		return l.Capacity()
	}
	return l.Requests
}

// window is the args of the modules that take a limit and a window in ms.
func window(l Limit) []any { return []any{l.Requests, l.Window.Milliseconds()} }

// oneWindow is the horizon of the algorithms that forget a request after one window.
func oneWindow(l Limit) time.Duration { return l.Window }

// anyTime is LeaseFor of the buckets: a token taken earlier than it is used
// only makes the bucket stricter meanwhile, so a leased unit never expires.
func anyTime(Limit, time.Duration) time.Duration { return math.MaxInt64 }

// The sliding log's caps: members per identity, members per call.
const (
	slidingLogMaxLimit = 1_000_000
	slidingLogMaxCost  = 10_000
)

// The concurrency limit's caps: places per identity, places per request
// (one sorted-set member each, as sliding_log), the longest timeout (how
// long a place of an instance that died stays taken).
const (
	concurrencyMaxLimit   = 100_000
	concurrencyMaxCost    = 1_000
	concurrencyMaxTimeout = 24 * time.Hour
)

// table is every algorithm, in the order Names lists them.
var table = []Spec{
	{
		Name:    "fixed_window",
		Doc:     "Limit requests per window, windows aligned to the epoch (a minute's starts at :00); up to twice the limit across a window edge.",
		Lua:     module("fixed_window"),
		Fast:    fast("fixed_window"),
		Args:    window,
		Epoch:   true,
		Horizon: oneWindow,
		Grants:  true,
		// The reset after a commit is the end of the window that counted it.
		LeaseFor: func(_ Limit, resetAfter time.Duration) time.Duration { return resetAfter },
	},
	{
		Name:  "sliding_log",
		Doc:   "Exactly Limit requests in any window-long span; memory grows with the limit.",
		Lua:   module("sliding_log"),
		Fast:  fast("sliding_log"),
		Args:  window,
		Nonce: true,
		// One sorted-set member per admitted unit: a limit caps the set's
		// size per identity, a cost the members one call writes (one
		// request of cost 200000 ran a second in Redis and wrote 28 MB).
		Check: func(l Limit) error {
			if l.Requests > slidingLogMaxLimit {
				return fmt.Errorf("%w: sliding_log keeps one entry per request: limit %d, want at most %d (or fixed_window, sliding_window, token_bucket, gcra for larger limits)",
					ErrInvalidLimit, l.Requests, slidingLogMaxLimit)
			}
			return nil
		},
		MaxCost: slidingLogMaxCost,
		Horizon: oneWindow,
		Grants:  true,
	},
	{
		Name: "sliding_window",
		Doc:  "Two counters weighted by overlap: at most the limit per aligned window, 2×limit-1 in any span.",
		Lua:  module("sliding_window"),
		Fast: fast("sliding_window"),
		Args: window,
		// A request counts in its own window and, weighted down to zero, in
		// the next one: the approximation needs twice the window.
		Horizon: func(l Limit) time.Duration { return 2 * l.Window },
		Grants:  true,
		// The reset after a commit is one window after the end of the window
		// that counted it; a unit used in the next window would be weighted
		// as if admitted before it.
		LeaseFor: func(l Limit, resetAfter time.Duration) time.Duration { return max(resetAfter-l.Window, 0) },
	},
	{
		Name:   "token_bucket",
		Doc:    "Bursts up to the capacity (Burst), refilled at Limit per window, continuously.",
		Lua:    module("token_bucket"),
		Fast:   fast("token_bucket"),
		Args:   func(l Limit) []any { return []any{l.Requests, l.Window.Milliseconds(), l.Capacity()} },
		Bucket: true,
		// An empty bucket is full again after capacity tokens' refill.
		Horizon: func(l Limit) time.Duration {
			return l.Window * time.Duration(l.Capacity()) / time.Duration(l.Requests)
		},
		Grants:   true,
		LeaseFor: anyTime,
	},
	{
		Name:   "gcra",
		Doc:    "The token bucket as one timestamp per identity (generic cell rate algorithm).",
		Lua:    module("gcra"),
		Fast:   fast("gcra"),
		Args:   func(l Limit) []any { return []any{gcraInterval(l), l.Capacity()} },
		Bucket: true,
		// The script keeps the TAT in µs since the epoch, up to burst intervals
		// ahead of now: that must stay an exact integer for centuries to come.
		Check: func(l Limit) error {
			if int64(l.Capacity()) > maxExact/2/gcraInterval(l) {
				return fmt.Errorf("%w: gcra: burst %d of one request per %v is beyond exact arithmetic; use a smaller burst or a shorter window",
					ErrInvalidLimit, l.Capacity(), time.Duration(gcraInterval(l))*time.Microsecond)
			}
			return nil
		},
		// The token bucket's, with the interval in whole µs and the total
		// rounded up to a whole ms.
		Horizon: func(l Limit) time.Duration {
			total := time.Duration(int64(l.Capacity())*gcraInterval(l)) * time.Microsecond
			return (total + time.Millisecond - 1).Truncate(time.Millisecond)
		},
		Grants:   true,
		LeaseFor: anyTime,
	},
	{
		Name:  "concurrency",
		Doc:   "At most Limit requests under way at once; a place is given back when its request ends, or after the timeout if its instance died.",
		Lua:   module("concurrency"),
		Args:  window,
		Nonce: true,
		Held:  true,
		Unit:  "concurrent-requests",
		Check: func(l Limit) error {
			switch {
			case l.Requests > concurrencyMaxLimit:
				return fmt.Errorf("%w: concurrency keeps one entry per request under way: limit %d, want at most %d", ErrInvalidLimit, l.Requests, concurrencyMaxLimit)
			case l.Window > concurrencyMaxTimeout:
				return fmt.Errorf("%w: concurrency timeout %v, want at most %v (a place of an instance that died stays taken that long)", ErrInvalidLimit, l.Window, concurrencyMaxTimeout)
			}
			return nil
		},
		MaxCost: concurrencyMaxCost,
		// The newest place expires one timeout after it was taken.
		Horizon: oneWindow,
	},
	{
		Name:     "calendar",
		Doc:      "Limit requests per calendar day, ISO week or month in a time zone, reset at the first instant of the period's first day (local midnight, or where the clock skips it, the instant it skips to).",
		Lua:      module("calendar"),
		Args:     func(l Limit) []any { return []any{l.Requests} },
		Calendar: true,
		Check: func(l Limit) error {
			if l.Period == "" {
				return fmt.Errorf("%w: calendar needs a period: want day, week or month", ErrInvalidLimit)
			}
			return nil
		},
		// The longest period: a month of 31 days with a day that the
		// largest daylight-saving shift lengthens (26 hours in Antarctica/Troll).
		Horizon: oneWindow,
		Grants:  true,
	},
}

// WindowAt is the number of the epoch-aligned window of l holding t: the
// windows of Epoch algorithms are [n × Window, (n+1) × Window) ms since
// the epoch.
func (l Limit) WindowAt(t time.Time) int64 {
	return floorDiv(t.UnixMilli(), max(l.Window.Milliseconds(), 1))
}

// floorDiv is a / b rounded down (b > 0): windows before 1970 too.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// gcraInterval is the emission interval in whole µs: whole microseconds keep
// the script's arithmetic exact; rounding up makes the rate at most a
// microsecond per request slower, never faster.
func gcraInterval(l Limit) int64 {
	requests := int64(max(l.Requests, 1))
	return max((l.Window.Microseconds()+requests-1)/requests, 1)
}

//go:embed lua/*.lua lua/fast/*.lua
var modules embed.FS

// module returns lua/<name>.lua; a missing file is a programming error that
// every test run finds at start-up.
func module(name string) string {
	b, err := modules.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(fmt.Sprintf("algorithms: module %s: %v", name, err))
	}
	return string(b)
}

// fast returns lua/fast/<name>.lua, the flat one-rule script (Spec.Fast).
func fast(name string) string {
	return module("fast/" + name)
}

// Names lists the algorithms, in the order of the table.
func Names() []string {
	names := make([]string, len(table))
	for i, s := range table {
		names[i] = s.Name
	}
	return names
}

// Windowed lists the algorithms a limit per window describes in full, in
// the order of Names: all but the held (concurrency) and calendar ones,
// which need fields of a policy file (a timeout; a period and time zone).
// The RATE_LIMIT_* variables, the simulation and the benchmarks take these.
func Windowed() []string {
	var names []string
	for _, s := range table {
		if !s.Held && !s.Calendar {
			names = append(names, s.Name)
		}
	}
	return names
}

// Specs lists every algorithm's spec, in the order of Names.
func Specs() []Spec {
	return append([]Spec(nil), table...)
}

// Known reports whether name (hyphens or underscores) is an algorithm.
func Known(name string) bool {
	_, err := Lookup(name)
	return err == nil
}

// Lookup returns the spec of the algorithm called name (hyphens or
// underscores), or an error wrapping ErrUnknown that lists the names.
func Lookup(name string) (Spec, error) {
	want := strings.ReplaceAll(name, "-", "_")
	for _, s := range table {
		if s.Name == want {
			return s, nil
		}
	}
	return Spec{}, fmt.Errorf("%w %q: want one of %s", ErrUnknown, name, strings.Join(Names(), ", "))
}
