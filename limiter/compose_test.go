package limiter

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
	"tollgate/redistest"
)

// The composition test (TestComposition) drives several engines on one Redis
// with a random, seeded sequence of steps and checks, after every step, the
// engine's promises against a plain reference model of what was admitted,
// granted, reset and held. Each feature holds alone (the other tests); this
// one looks for holes where they meet. Every feature after this one joins it:
// a rule set in composeSets, a step in (*composeRun).next, an invariant in
// composeInvariants.
//
//	go test -race -run TestComposition ./limiter/                        # seed 1 (composeDefaultSeed), as CI
//	TOLLGATE_COMPOSE_SEED=clock go test -race -run TestComposition ./limiter/  # a seed from the clock
//	go test -race -run TestComposition ./limiter/ -compose.seed=42 -compose.steps=5000
//	go test -race -run TestComposition ./limiter/ -compose.only=places   # one invariant (or a row: H2)
//	go test -race -run TestComposition ./limiter/ -compose.skip=H1,M4    # all but these
//
// The flags have variables too (TOLLGATE_COMPOSE_SEED, _STEPS, _ONLY, _SKIP,
// _START); a failure prints the seed, the step it failed at and the steps
// before it. The real Redis of TEST_REDIS_URL runs a shorter sequence on its
// own clock.
//
// -compose.plain runs instances without leases and injects no faults: the
// model alone against the plain engine, which must pass (with
// -compose.skip=H1 until calendar periods hold at Santiago's missing
// midnight). Each step draws from a stream of its own (seed, step number),
// so a seed always makes the same steps; their outcomes may still differ a
// little from run to run, since leases keep time by our clock.
//
// What it found on main at 2747fc0 (miniredis, the default 2000 steps; run
// one with -compose.seed=N -compose.only=INVARIANT):
//
//	seed  invariant  step  row  the hole
//	   3  errors       11  H1   calendar day in America/Santiago: every call fails from Redis's 2026-09-06 00:00 on ("more than a period away"), Grant, Reset and Peek too
//	   8  places        6  H2   a decision that timed out while Redis stalled took a place that nobody gives back
//	   3  limit       623  H3   1201 admitted under gcra's capacity 1200 from a reset during a flood: units leased before the reset are admitted on top of the fresh bucket
//	  10  limit      1771  H3   the same under fixed_window: 1001 in the window after a reset, limit 1000
//	   1  settle      102  H4   a sliding_window grant lost at quiescence (Redis has ~130 fewer left than granted): a give-back clamps the count at 0
//	   4  limit      1283  M2   after a reload from 2500 to 300, leases of the old limit admit the 301st request of the window
//	   6  unleased     14  M3   after a reload to lease: off, requests are still admitted from leases without reaching Redis
//	   3  unleased    793  M3   the same after a reload to a limit of 300, below minLeaseQuota
//	   9  remaining     1  M4   Remaining 1995 when 1994 remain: another instance's admission is not in a lease's answer
//	   9  cap        1002  L1   two grants of a whole quota while leases are out, then the give-backs: 5248 left under a limit of 2500, more than one quota beyond it
//
// What it found on main at 2cd58b2 (miniredis, 2000 steps, seeds 1-40; the
// seeds of the sequences then, before local mode joined and changed them):
//
//	seed  invariant  step  the hole
//	  12  settle      810  a sliding_window give-back after a reload lowered the limit below a grant's count raised the count to minus the new limit (wiped 186 granted units); also 13, 35, 37
//	  38  settle      352  a fixed_window grant stopped at the cap took no account of the leases out: their units used after it were admitted beyond the cap (234)
//	  28  settle      614  the model's: a reset that keeps a leased fixed window's units keeps its start too (docs/algorithms.md), the model opened a new window
//
// and with local mode (seeds of this version): seed 2 and 4, a reload during
// an outage dropped the charge of the units admitted under the old limit;
// seed 6, a lease take that found Redis down was taken locally, all its units
// charged back, used or not.
//
// Refunds and waits (issue 23) are steps too: a refund of a recent
// admission of a set whose rules all give back (under a lease, after a
// reset, a grant), the model un-admitting what the give-back promises and
// Redis checked to give exactly that back (buckets: at most the cost); and
// a burst of the set with delays, its waiting requests counted at their
// slots, a reset while they wait, some clients gone (refunded). Seeds 1-20
// on miniredis pass; -compose.norefund leaves both steps out. What they
// found: a request of a rule set with a delay whose cost is above an
// instance's share of the capacity (valid: at most the capacity) fails
// during an outage with ErrInvalidRule in local mode, which checks the
// delay against the share (-compose.fullcost, seed 1 step 822, seed 2
// step 450).
var (
	composeSeed     = flag.Uint64("compose.seed", 0, "TestComposition: the seed of the steps (0: composeDefaultSeed; or TOLLGATE_COMPOSE_SEED, =clock for one from the clock)")
	composeSteps    = flag.Int("compose.steps", 0, "TestComposition: steps per backend (0: 1000 on miniredis, 200 on real Redis; or TOLLGATE_COMPOSE_STEPS)")
	_               = flag.String("compose.only", "", "TestComposition: check only these invariants, by name or issue row, comma-separated (or TOLLGATE_COMPOSE_ONLY)")
	_               = flag.String("compose.skip", "", "TestComposition: do not check these invariants, by name or issue row (or TOLLGATE_COMPOSE_SKIP)")
	composeNoRefund = flag.Bool("compose.norefund", false, "TestComposition: no refund steps (refunds, clients gone while waiting)")
	composeFullCost = flag.Bool("compose.fullcost", false, "TestComposition: the set with delays has a request costing its whole capacity too (local mode fails it: a hole, off until fixed)")
	composePlain    = flag.Bool("compose.plain", false, "TestComposition: instances without leases and no injected faults: a check of the model itself, which must pass")
	_               = flag.String("compose.start", "", "TestComposition: miniredis's clock at the start, RFC 3339 (default 2026-09-05T21:00:00-04:00, before Santiago's missing midnight; or TOLLGATE_COMPOSE_START)")
)

// composeInvariants are the promises checked, each with the rows of issue 19
// whose holes break it: -compose.only and -compose.skip take either.
var composeInvariants = []struct {
	name, rows, doc string
}{
	{"limit", "H3 M2 L1", "an admission never takes a window (period, bucket since its reset, places at once) beyond the limit in force plus what was granted, counted from the last reset"},
	{"settle", "H3 H4 L1", "after quiescence (every engine closed, so every lease given back) Redis's count of every key equals the model's (token buckets: at most the model's bound)"},
	{"cap", "L1", "grants keep at most one quota beyond the limit: what Redis has left (a grant's answer, a peek at quiescence) is at most the quota plus the largest quota a grant was made under (sliding_window: plus two, its previous window weighs too)"},
	{"places", "H2", "places held in Redis equal the places of requests running, plus abandoned ones not yet expired"},
	{"remaining", "M4", "an admitted decision's Remaining is never above what truly remains (the model's; token buckets: its bound)"},
	{"unleased", "M3", "an admitted request of a rule set that must not be leased (NoLease, a limit under minLeaseQuota) reached Redis"},
	{"errors", "H1", "no call fails but with an injected fault, its timeout or the circuit it opened"},
	{"outage", "I21", "while Redis is down, an instance with local mode admits at most its share, ceil(limit/N), of every limit (places: at once), so all together at most N × ceil(limit/N) beyond the admissions before the outage; what they admitted is charged back (settle and limit check it after)"},
}

// composeSetting is a flag, or else its variable.
func composeSetting(f *flag.Flag, env string) string {
	if v := f.Value.String(); v != f.DefValue {
		return v
	}
	return os.Getenv(env)
}

// composeChecks reports which invariants are on: all, but for -compose.only
// and -compose.skip.
func composeChecks(t *testing.T) map[string]bool {
	t.Helper()
	match := func(list string) map[string]bool {
		out := map[string]bool{}
		for _, w := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' }) {
			found := false
			for _, inv := range composeInvariants {
				if strings.EqualFold(w, inv.name) || slices.Contains(strings.Fields(inv.rows), strings.ToUpper(w)) {
					out[inv.name], found = true, true
				}
			}
			if !found {
				t.Fatalf("compose: no invariant or row %q", w)
			}
		}
		return out
	}
	only := match(composeSetting(flag.Lookup("compose.only"), "TOLLGATE_COMPOSE_ONLY"))
	skip := match(composeSetting(flag.Lookup("compose.skip"), "TOLLGATE_COMPOSE_SKIP"))
	on := map[string]bool{}
	for _, inv := range composeInvariants {
		on[inv.name] = (len(only) == 0 || only[inv.name]) && !skip[inv.name]
	}
	return on
}

// errInjected is the failure faultyRedis injects.
var errInjected = errors.New("injected Redis failure")

// faultyRedis is one instance's connection to Redis, through which the test
// stalls or fails the next commits (decisions that record: ARGV[1] is
// modeCommit, modeHeld, modeLease or modeDelay; give-backs, releases and admin calls
// pass) and counts them.
// A stalled commit is a Redis that answers too late: it runs once its
// caller's context is done (at once if that has no deadline within 50ms),
// then the caller gets context.DeadlineExceeded, as when Redis was stopped
// for longer than the deadline and ran the script when it came back.
type faultyRedis struct {
	redis.Scripter

	mu      sync.Mutex
	down    bool     // Redis is down: every call fails
	stall   int      // the next commits to stall
	fail    int      // the next commits to fail, not run
	commits int      // commits that reached this connection
	late    []string // keys of stalled commits, run after their caller gave up
}

func (f *faultyRedis) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return f.run(ctx, keys, args, func(ctx context.Context) *redis.Cmd { return f.Scripter.Eval(ctx, script, keys, args...) })
}

func (f *faultyRedis) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return f.run(ctx, keys, args, func(ctx context.Context) *redis.Cmd { return f.Scripter.EvalSha(ctx, sha, keys, args...) })
}

func (f *faultyRedis) run(ctx context.Context, keys []string, args []any, call func(context.Context) *redis.Cmd) *redis.Cmd {
	commit := len(args) > 0 && (args[0] == any(modeCommit) || args[0] == any(modeHeld) || args[0] == any(modeLease) || args[0] == any(modeDelay))
	f.mu.Lock()
	if f.down {
		if commit {
			f.commits++
		}
		f.mu.Unlock()
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errInjected)
		return cmd
	}
	if !commit {
		f.mu.Unlock()
		return call(ctx)
	}
	f.commits++
	fail, stall := f.fail > 0, f.stall > 0
	if fail {
		f.fail--
	}
	f.mu.Unlock()
	switch {
	case fail:
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errInjected)
		return cmd
	case !stall:
		return call(ctx)
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < 50*time.Millisecond {
		<-ctx.Done()
	}
	r := call(context.WithoutCancel(ctx))
	if err := r.Err(); err != nil && strings.Contains(err.Error(), "NOSCRIPT") {
		return r // go-redis sends the script itself next: that call stalls
	}
	f.mu.Lock()
	f.stall--
	f.late = append(f.late, keys...)
	f.mu.Unlock()
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(context.DeadlineExceeded)
	return cmd
}

// setDown makes every call fail (down) or pass again.
func (f *faultyRedis) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// arm sets the next commits to stall and fail; disarm clears what was not
// used and returns the keys of commits that ran late.
func (f *faultyRedis) arm(stall, fail int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stall, f.fail = stall, fail
}

func (f *faultyRedis) disarm() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	late := f.late
	f.stall, f.fail, f.late = 0, 0, nil
	return late
}

func (f *faultyRedis) committed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.commits
}

// endLeases ends every lease of l as if leaseMaxAge had passed: the test
// moves Redis's clock (and the engines' Clock) in jumps, while the leases
// keep time by time.Now; a lease must not outlive the jump.
func endLeases(l *Limiter) {
	if l.leases != nil {
		l.leases.expire(time.Now().Add(leaseMaxAge + time.Millisecond))
	}
}

// leasesTaken is how many leases l took.
func leasesTaken(l *Limiter) int64 {
	if l.leases == nil {
		return 0
	}
	return l.leases.taken.Load()
}

// modelRule is the reference model of one key: what was admitted, granted
// and reset, as a plain engine deciding every request alone would count it.
type modelRule struct {
	spec   algorithms.Spec
	key    string
	limits []algorithms.Limit // per variant of its set
	v      int                // the variant in force
	delay  time.Duration      // Rule.Delay (buckets): admitted requests wait for their slot
	// doubtUntil: a commit ran after its caller gave up (it may have
	// counted units nobody was admitted for): until then Redis may count
	// more than the model, never less.
	doubtUntil time.Time
	// steps of the last reset, reload and grant, for the messages.
	resetAt, reloadAt, grantAt int
	// resetLeased is the units of leases out at the last reset: a reset
	// leaves them counted (so that no instance admits them on top of the
	// fresh quota), the used ones among them for good, so Redis may count
	// up to that many more than the model until the window ends.
	resetLeased int
	// grantLeased is the units of leases out at the grants since the last
	// reset: a window's grant leaves them counted beyond its cap (so their
	// give-backs never cross it), the used ones among them for good
	// (docs/algorithms.md, "What holds under leases": Grant).
	grantLeased int
	// grantQuota is the largest quota in force at a grant since the last
	// reset: grants keep one such quota beyond the limit at most.
	grantQuota int

	open  bool  // fixed_window, calendar: start is known
	start int64 // fixed_window, calendar: the window's (period's) start, ms
	span  int64 // fixed_window: the window's length, ms (a reload may change it)
	n     int   // fixed_window, calendar: its count, grants subtracted

	w         int64 // sliding_window: the current aligned window's start, ms
	cur, prev int   // sliding_window: its count and the previous one's

	t0              time.Time // token_bucket, gcra: full at t0 (start, reset)
	admitted, given int       // token_bucket, gcra: since t0

	log    []int64 // sliding_log: one admission time (µs) per unit, oldest first
	credit int     // sliding_log: a grant's credits
	lapse  int64   // sliding_log: when they lapse, µs

	places []*place // concurrency

	// outage is the units each instance admitted (places: took) locally
	// in the current outage.
	outage map[*composeEngine]int
}

// place is what one admitted request holds of a concurrency rule.
type place struct {
	expiry int64 // ms on Redis's clock
	cost   int
	gone   bool // released, or reset
}

func (r *modelRule) limit() algorithms.Limit { return r.limits[r.v] }

func (r *modelRule) quota() int { return r.spec.Quota(r.limit()) }

// exact reports whether the model knows r's count exactly; for the buckets
// it knows a bound.
func (r *modelRule) exact() bool { return !r.spec.Bucket }

// roll brings the model to now: windows and periods that ended are
// forgotten, as the modules forget them.
func (r *modelRule) roll(now time.Time) {
	l := r.limit()
	ms, window := now.UnixMilli(), l.Window.Milliseconds()
	switch r.spec.Name {
	case "fixed_window":
		// Windows align to the epoch, each counted at a key of its own
		// (<key>:<n>): another window, or another length, counts afresh.
		if start := floorDiv(ms, window) * window; !r.open || start != r.start || window != r.span {
			r.open, r.start, r.span, r.n = true, start, window, 0
		}
	case "calendar":
		if s, _ := calendarPeriod(now, l.Location); !r.open || s.UnixMilli() != r.start {
			r.open, r.start, r.n = true, s.UnixMilli(), 0
		}
	case "sliding_window":
		start := ms - ms%window
		switch r.w {
		case start:
		case start - window:
			r.prev, r.cur = r.cur, 0
		default:
			r.prev, r.cur = 0, 0
		}
		r.w = start
	case "sliding_log":
		us := now.UnixMicro()
		i := 0
		for i < len(r.log) && r.log[i] <= us-window*1000 {
			i++
		}
		r.log = r.log[i:]
		if r.credit > 0 && r.lapse <= us {
			r.credit = 0
		}
	}
}

// admit records an admitted request of cost at now.
func (r *modelRule) admit(now time.Time, cost int) {
	r.roll(now)
	switch r.spec.Name {
	case "fixed_window", "calendar":
		r.n += cost
	case "sliding_window":
		r.cur += cost
	case "token_bucket", "gcra":
		r.admitted += cost
	case "sliding_log":
		use := min(cost, r.credit)
		r.credit -= use
		for range cost - use {
			r.log = append(r.log, now.UnixMicro())
		}
	case "concurrency":
		r.places = append(r.places, &place{expiry: now.UnixMilli() + r.limit().Window.Milliseconds(), cost: cost})
	}
}

// over says how the model is beyond the limit in force at now ("" if not):
// checked after every admission.
func (r *modelRule) over(now time.Time) string {
	r.roll(now)
	l := r.limit()
	window := l.Window.Milliseconds()
	switch r.spec.Name {
	case "fixed_window", "calendar":
		if r.n > l.Requests {
			return fmt.Sprintf("the window holds %d (grants subtracted), limit %d", r.n, l.Requests)
		}
	case "sliding_window":
		elapsed := now.UnixMilli() - r.w
		if int64(r.cur)*window+int64(r.prev)*(window-elapsed) > int64(l.Requests)*window {
			return fmt.Sprintf("estimate %d + %d×%d/%d (grants subtracted) beyond the limit %d", r.cur, r.prev, window-elapsed, window, l.Requests)
		}
	case "token_bucket", "gcra":
		// A request admitted with a wait (Rule.Delay) is counted at its
		// slot, at most the delay ahead: the refill until then is its.
		if b := r.truth(now.Add(r.delay)); b < 0 {
			return fmt.Sprintf("%d admitted since %v: beyond capacity %d + refill + %d granted by %d", r.admitted, r.t0.Format(time.RFC3339Nano), l.Capacity(), r.given, -b)
		}
	case "sliding_log":
		if used := len(r.log) - r.credit; used > l.Requests {
			return fmt.Sprintf("%d in the last window (credits subtracted), limit %d", used, l.Requests)
		}
	case "concurrency":
		if held := r.held(now); held > l.Requests {
			return fmt.Sprintf("%d places held, limit %d", held, l.Requests)
		}
	}
	return ""
}

// truth is what remains now: what a plain engine would answer, for the
// exact kinds; for the buckets, the most that can remain.
func (r *modelRule) truth(now time.Time) int {
	r.roll(now)
	l := r.limit()
	window := l.Window.Milliseconds()
	switch r.spec.Name {
	case "fixed_window", "calendar":
		return l.Requests - r.n
	case "sliding_window":
		elapsed := now.UnixMilli() - r.w
		return int(floorDiv(int64(l.Requests)*window-int64(r.prev)*(window-elapsed)-int64(r.cur)*window, window))
	case "token_bucket":
		refill := int64(l.Requests) * now.Sub(r.t0).Milliseconds() / window
		return l.Capacity() + int(refill) + r.given - r.admitted
	case "gcra":
		interval := max((l.Window.Microseconds()+int64(l.Requests)-1)/int64(l.Requests), 1)
		return l.Capacity() + int(now.Sub(r.t0).Microseconds()/interval) + r.given - r.admitted
	case "sliding_log":
		return l.Requests - len(r.log) + r.credit
	case "concurrency":
		return l.Requests - r.held(now)
	}
	panic("compose: no model for " + r.spec.Name)
}

// capBound is the most Remaining may say under grants: the quota plus
// one quota (in force at a grant) beyond it; sliding_window's previous
// window weighs too.
func (r *modelRule) capBound() int {
	beyond := max(r.quota(), r.grantQuota)
	switch {
	case r.spec.Held:
		return r.quota()
	case r.spec.Name == "sliding_window":
		return r.quota() + 2*beyond
	}
	return r.quota() + beyond
}

func (r *modelRule) held(now time.Time) int {
	ms, held := now.UnixMilli(), 0
	for _, p := range r.places {
		if !p.gone && p.expiry > ms {
			held += p.cost
		}
	}
	return held
}

// grant records a grant of n units at now, as the module's m.grant does.
func (r *modelRule) grant(now time.Time, n int) {
	r.roll(now)
	l := r.limit()
	r.grantQuota = max(r.grantQuota, r.quota())
	switch r.spec.Name {
	case "fixed_window", "calendar":
		r.n = max(r.n-n, -l.Requests)
	case "sliding_window":
		r.cur = max(r.cur-n, -l.Requests)
	case "token_bucket", "gcra":
		r.given += n
	case "sliding_log":
		back := min(n, len(r.log))
		r.log = r.log[:len(r.log)-back]
		if n > back {
			r.credit = min(r.credit+n-back, l.Requests)
			r.lapse = now.UnixMicro() + l.Window.Microseconds()
		}
	}
}

// reset records a Reset at now: the key is gone.
func (r *modelRule) reset(now time.Time) {
	r.open, r.n, r.cur, r.prev = false, 0, 0, 0
	r.t0, r.admitted, r.given = now, 0, 0
	r.log, r.credit = nil, 0
	r.grantQuota, r.grantLeased = 0, 0
	for _, p := range r.places {
		p.gone = true
	}
	r.doubtUntil = time.Time{}
}

// doubt records a commit that ran after its caller gave up, at now: Redis
// may count more than the model until the window that counted it is over.
func (r *modelRule) doubt(now time.Time) {
	r.roll(now)
	l := r.limit()
	until := now.Add(2 * l.Window)
	if until.After(r.doubtUntil) {
		r.doubtUntil = until
	}
}

// edge is the next instant after now where r's window or period ends (or a
// place expires); zero if none.
func (r *modelRule) edge(now time.Time) time.Time {
	r.roll(now)
	l := r.limit()
	switch r.spec.Name {
	case "fixed_window":
		return time.UnixMilli(r.start + l.Window.Milliseconds())
	case "sliding_window":
		return time.UnixMilli(r.w + l.Window.Milliseconds())
	case "calendar":
		_, end := calendarPeriod(now, l.Location)
		return end
	case "concurrency":
		var first time.Time
		for _, p := range r.places {
			if e := time.UnixMilli(p.expiry); !p.gone && e.After(now) && (first.IsZero() || e.Before(first)) {
				first = e
			}
		}
		return first
	}
	return time.Time{}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// calendarPeriod is the calendar day holding now in loc, computed apart
// from the engine's code: from the first instant whose local date is now's
// to the first instant of the next date (minutes are fine enough: zones
// change their offsets on whole minutes).
func calendarPeriod(now time.Time, loc *time.Location) (start, end time.Time) {
	y, m, d := now.In(loc).Date()
	return firstInstant(y, m, d, loc), firstInstant(y, m, d+1, loc)
}

var firstInstants sync.Map // "zone y-m-d" -> time.Time

func firstInstant(y int, m time.Month, d int, loc *time.Location) time.Time {
	noon := time.Date(y, m, d, 12, 0, 0, 0, loc) // exists in every zone
	wy, wm, wd := noon.Date()
	key := fmt.Sprintf("%s %d-%d-%d", loc, wy, wm, wd)
	if v, ok := firstInstants.Load(key); ok {
		return v.(time.Time)
	}
	s := time.Date(wy, wm, wd, 0, 0, 0, 0, loc).Add(-4 * time.Hour).Truncate(time.Minute)
	for {
		if sy, sm, sd := s.In(loc).Date(); sy == wy && sm == wm && sd == wd {
			firstInstants.Store(key, s)
			return s
		}
		s = s.Add(time.Minute)
	}
}

// modelSet is one set of rules requests are decided by, with its variants:
// a reload switches every rule to its limit of another variant.
type modelSet struct {
	name    string
	rules   []*modelRule
	noLease []bool // per variant
	v       int
	costs   []int // a request's cost is one of these
	burst   int   // most requests in a burst
}

func (s *modelSet) decideRules(cost int) []Rule {
	rs := make([]Rule, len(s.rules))
	for i, r := range s.rules {
		rs[i] = Rule{Algorithm: r.spec, Limit: r.limit(), Cost: cost, Key: r.key, NoLease: s.noLease[s.v], Delay: r.delay}
	}
	return rs
}

// leasable reports whether the set may be leased, as the engine documents it.
func (s *modelSet) leasable() bool {
	if s.noLease[s.v] {
		return false
	}
	for _, r := range s.rules {
		if r.spec.LeaseFor == nil || r.quota() < minLeaseQuota {
			return false
		}
	}
	return true
}

// refundable reports whether every rule of s has a give-back (Refund).
func (s *modelSet) refundable() bool {
	for _, r := range s.rules {
		switch r.spec.Name {
		case "fixed_window", "sliding_window", "token_bucket", "gcra":
		default:
			return false
		}
	}
	return true
}

func (s *modelSet) held() bool {
	for _, r := range s.rules {
		if r.spec.Held {
			return true
		}
	}
	return false
}

// composeSets is the rule sets a run decides, with prefix on their keys
// and calendars in loc.
func composeSets(t *testing.T, prefix string, loc *time.Location) []*modelSet {
	t.Helper()
	spec := func(name string) algorithms.Spec {
		s, err := algorithms.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	window := func(w time.Duration, ns ...int) []algorithms.Limit {
		var ls []algorithms.Limit
		for _, n := range ns {
			ls = append(ls, algorithms.Limit{Requests: n, Window: w})
		}
		return ls
	}
	calendar := func(ns ...int) []algorithms.Limit {
		var ls []algorithms.Limit
		for _, n := range ns {
			l, err := algorithms.CalendarLimit(n, algorithms.Day, loc)
			if err != nil {
				t.Fatal(err)
			}
			ls = append(ls, l)
		}
		return ls
	}
	repeat := func(l algorithms.Limit, n int) []algorithms.Limit {
		var ls []algorithms.Limit
		for range n {
			ls = append(ls, l)
		}
		return ls
	}
	rule := func(set, name string, limits []algorithms.Limit) *modelRule {
		return &modelRule{spec: spec(name), key: prefix + "{" + set + "}:" + name, limits: limits}
	}
	delayed := func(r *modelRule, d time.Duration) *modelRule {
		r.delay = d
		return r
	}
	bucket := algorithms.Limit{Requests: 1000, Window: time.Hour, Burst: 1500}
	gcra := algorithms.Limit{Requests: 1000, Window: 10 * time.Minute, Burst: 1200}
	sets := []*modelSet{
		// Leased, then reloaded to a larger limit, to lease: off, to a
		// limit too small to lease.
		{name: "fw", rules: []*modelRule{rule("fw", "fixed_window", window(10*time.Minute, 1000, 2500, 1000, 300))},
			noLease: []bool{false, false, true, false}, costs: []int{1, 1, 1, 2, 3}, burst: 50},
		{name: "sw+tb", rules: []*modelRule{
			rule("swtb", "sliding_window", window(6*time.Hour, 2000, 1200, 2000)),
			rule("swtb", "token_bucket", repeat(bucket, 3)),
		}, noLease: []bool{false, false, true}, costs: []int{1, 1, 2}, burst: 50},
		{name: "gcra", rules: []*modelRule{rule("gcra", "gcra", repeat(gcra, 2))},
			noLease: []bool{false, true}, costs: []int{1, 1, 1, 4}, burst: 50},
		{name: "fw+conc", rules: []*modelRule{
			rule("fwc", "fixed_window", window(time.Minute, 40, 25)),
			rule("fwc", "concurrency", window(30*time.Second, 3, 2)),
		}, noLease: []bool{false, false}, costs: []int{1, 1, 2}, burst: 6},
		{name: "log+cal", rules: []*modelRule{
			rule("logcal", "sliding_log", window(time.Minute, 30, 20)),
			rule("logcal", "calendar", calendar(100, 60)),
		}, noLease: []bool{false, false}, costs: []int{1, 1, 2}, burst: 10},
		{name: "conc", rules: []*modelRule{rule("conc", "concurrency", window(10*time.Second, 4, 2))},
			noLease: []bool{false, false}, costs: []int{1}, burst: 3},
		// Shaping: both buckets with a delay (never leased), so that a
		// burst waits for its slots. Costs at most every instance's
		// share of the capacity (ceil(8/4)); -compose.fullcost adds one
		// of the whole capacity, which local mode refuses (the report of
		// issue 23's composition: an outage makes it an invalid rule).
		{name: "delay", rules: []*modelRule{delayed(rule("delay", "gcra", repeat(algorithms.Limit{Requests: 20, Window: 10 * time.Second, Burst: 8}, 2)), 2*time.Second),
			delayed(rule("delay", "token_bucket", repeat(algorithms.Limit{Requests: 30, Window: 10 * time.Second, Burst: 8}, 2)), time.Second),
		}, noLease: []bool{false, true}, costs: []int{1, 1, 2}, burst: 12},
	}
	if *composeFullCost {
		sets[len(sets)-1].costs = append(sets[len(sets)-1].costs, 8)
	}
	return sets
}

// composeEngine is one instance: an engine on its own faulty connection.
type composeEngine struct {
	l     *Limiter
	f     *faultyRedis
	opts  Options
	about string
	local *miniredis.Miniredis // its in-process Redis (Options.Local), or nil
}

// request is one admitted request of a held set, under way.
type request struct {
	e      *composeEngine
	res    Result
	places []*place
	about  string
}

// admission is an admitted request of a refundable set, which a refund
// step may give back: with the model's window of each rule as it counted
// it (fixed_window: its start; sliding_window: its aligned start).
type admission struct {
	e      *composeEngine
	s      *modelSet
	cost   int
	res    Result
	step   int
	reload int     // the set's last reload then
	window []int64 // per rule
	wait   time.Duration
}

// composeRun is one run of the composition test on one backend.
type composeRun struct {
	t       *testing.T
	name    string
	seed    uint64
	rng     *rand.Rand
	rdb     redis.UniversalClient
	mini    *miniredis.Miniredis // nil on a real Redis
	checker *Limiter             // plain, on the plain connection: peeks and admin calls
	engines []*composeEngine
	sets    []*modelSet
	rules   []*modelRule
	running []*request
	recent  []*admission // the last admissions of refundable sets, to refund
	on      map[string]bool
	locals  []*miniredis.Miniredis // per instance: its in-process Redis, or nil

	mu  sync.Mutex
	now time.Time // miniredis's clock, steered

	step      int
	refunds   int // refunds made (waiting: of requests that waited)
	waiting   int
	steps     []string
	failed    map[string]bool
	decisions int
	admitted  int
	local     int // decisions made locally
	outages   int
	downAt    time.Time // Redis's clock as the current outage began
	leases    int64     // taken by the instances closed so far
	faulted   bool      // a fault was armed in this step
}

// clock is Redis's clock: the steered one, or TIME.
func (c *composeRun) clock() time.Time {
	if c.mini != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.now
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now, err := c.rdb.Time(ctx).Result()
	if err != nil {
		c.t.Fatalf("TIME: %v", err)
	}
	return now
}

func (c *composeRun) logf(format string, args ...any) {
	c.steps = append(c.steps, fmt.Sprintf("%5d %s", c.step, fmt.Sprintf(format, args...)))
}

// violate reports a broken invariant, the first time for each.
func (c *composeRun) violate(invariant, format string, args ...any) {
	c.t.Helper()
	if !c.on[invariant] || c.failed[invariant] {
		return
	}
	c.failed[invariant] = true
	rows := ""
	for _, inv := range composeInvariants {
		if inv.name == invariant {
			rows = inv.rows
		}
	}
	last := c.steps[max(0, len(c.steps)-composeShown()):]
	c.t.Errorf("invariant %s (rows %s) broken at step %d of seed %d: %s\nreproduce: go test -race -count=1 -run 'TestComposition/^%s$' ./limiter/ -compose.seed=%d -compose.only=%s\nthe steps before it (of %d):\n%s",
		invariant, rows, c.step, c.seed, fmt.Sprintf(format, args...), c.name, c.seed, invariant, len(c.steps), strings.Join(last, "\n"))
}

// newEngines makes the run's instances, the same on every call (a
// quiescence closes them and starts them again).
func (c *composeRun) newEngines(opts []Options) {
	c.engines = nil
	for i, o := range opts {
		f := &faultyRedis{Scripter: c.rdb}
		var rdb redis.Scripter = f
		if o.PipelineBatch > 0 {
			// A pipeline needs the client itself: no faults, no count.
			rdb = c.rdb
		}
		var local *miniredis.Miniredis
		if i < len(c.locals) && c.locals[i] != nil {
			// A new process: an empty in-process Redis.
			local = c.locals[i]
			local.FlushAll()
		}
		c.engines = append(c.engines, &composeEngine{l: New(rdb, o), f: f, opts: o, local: local,
			about: fmt.Sprintf("e%d(lease=%v deny=%d timeout=%v pipeline=%d local=%v)", i, o.Lease, o.DenyCacheSize, o.Timeout, o.PipelineBatch, local != nil)})
	}
}

// allowedError reports whether err is one the step's faults explain.
func (c *composeRun) allowedError(err error) bool {
	switch {
	case errors.Is(err, errInjected), errors.Is(err, ErrCircuitOpen):
		return true
	case errors.Is(err, context.DeadlineExceeded):
		return c.faulted
	}
	return false
}

// decide decides one request of set with cost on e and checks it.
func (c *composeRun) decide(ctx context.Context, e *composeEngine, s *modelSet, cost int) (Result, error) {
	c.t.Helper()
	rules := s.decideRules(cost)
	before := e.f.committed()
	res, err := e.l.Decide(ctx, rules)
	c.decisions++
	if err != nil {
		if !c.allowedError(err) {
			c.violate("errors", "%s: Decide(%s, cost %d): %v", e.about, s.name, cost, err)
		}
		if res.Holds() {
			c.release(&request{e: e, res: res, about: "failed " + s.name})
		}
		return res, err
	}
	if res.Local() {
		c.decidedLocally(e, s, cost, res)
		return res, nil
	}
	now := c.clock()
	if !res.Allowed {
		if res.Holds() {
			c.release(&request{e: e, res: res, about: "denied " + s.name})
		}
		return res, nil
	}
	c.admitted++
	req := &request{e: e, res: res, about: fmt.Sprintf("%s cost %d at step %d", s.name, cost, c.step)}
	for i, r := range s.rules {
		at := now
		if r.spec.Held && c.mini == nil {
			at = res.Decisions[i].Now // the member's expiry is counted from Redis's clock at the commit
		}
		r.admit(at, cost)
		if r.spec.Held {
			req.places = append(req.places, r.places[len(r.places)-1])
		}
		if why := r.over(now); why != "" {
			c.violate("limit", "%s: Decide(%s, cost %d) admitted on %s: %s%s", e.about, s.name, cost, r.spec.Name, why, r.history())
		}
		d := res.Decisions[i]
		if truth := max(r.truth(now), 0); d.Remaining > truth {
			c.violate("remaining", "%s: Decide(%s, cost %d) on %s: Remaining %d, but %d remain%s", e.about, s.name, cost, r.spec.Name, d.Remaining, truth, r.history())
		}
	}
	if e.opts.Lease && e.opts.PipelineBatch == 0 && !s.leasable() && e.f.committed() == before {
		c.violate("unleased", "%s: Decide(%s, cost %d) admitted without reaching Redis (from a lease), but the set may not be leased now (variant %d, lease off: %v)%s",
			e.about, s.name, cost, s.v, s.noLease[s.v], s.rules[0].history())
	}
	if s.held() {
		c.running = append(c.running, req)
	}
	if s.refundable() {
		a := &admission{e: e, s: s, cost: cost, res: res, step: c.step, reload: s.rules[0].reloadAt}
		for i, r := range s.rules {
			a.window = append(a.window, map[bool]int64{true: r.start, false: r.w}[r.spec.Name == "fixed_window"])
			a.wait = max(a.wait, res.Decisions[i].Wait)
		}
		if c.recent = append(c.recent, a); len(c.recent) > 64 {
			c.recent = c.recent[1:]
		}
	}
	return res, nil
}

// decidedLocally checks a decision e made locally, Redis being down, and
// records what it admitted: it is charged back when Redis answers, so the
// model counts it as admitted (places taken locally stay local: Redis
// never holds them). Remaining and the limit shown are the instance's
// share, not checked against the model.
func (c *composeRun) decidedLocally(e *composeEngine, s *modelSet, cost int, res Result) {
	c.t.Helper()
	c.local++
	if !res.Allowed {
		if res.Holds() {
			c.release(&request{e: e, res: res, about: "denied locally " + s.name})
		}
		return
	}
	c.admitted++
	now := c.clock()
	for _, r := range s.rules {
		if !r.spec.Held {
			r.admit(now, cost)
		}
		if r.outage == nil {
			r.outage = map[*composeEngine]int{}
		}
		r.outage[e] += cost
		// The share, computed apart from the engine's: every count of the
		// limit ceil(count/N).
		n, l := e.opts.Instances, r.limit()
		l.Requests = (l.Requests + n - 1) / n
		if l.Burst > 0 {
			l.Burst = (l.Burst + n - 1) / n
		}
		// Per window (on miniredis no time passes in an outage; a real
		// Redis's clock runs on): a share per window begun, buckets the
		// share's refill since.
		share, elapsed := r.spec.Quota(l), now.Sub(c.downAt)
		bound := share * (1 + int((elapsed+r.limit().Window-1)/r.limit().Window))
		if r.spec.Bucket {
			// A request with a wait (Rule.Delay) counts at its slot, at
			// most the delay ahead: the share's refill until then too.
			ahead := elapsed + r.delay
			bound = share + int((int64(l.Requests)*ahead.Microseconds()+l.Window.Microseconds()-1)/l.Window.Microseconds())
		}
		if r.outage[e] > bound {
			c.violate("outage", "%s: Decide(%s, cost %d) admitted locally on %s: %d in this outage (%v), beyond its share ceil(%d/%d) = %d (%d with the windows begun or refill since)%s",
				e.about, s.name, cost, r.spec.Name, r.outage[e], elapsed, r.quota(), n, share, bound, r.history())
		}
	}
	if s.held() {
		c.running = append(c.running, &request{e: e, res: res, about: fmt.Sprintf("%s cost %d at step %d, local", s.name, cost, c.step)})
	}
}

// outage: Redis is down for a while (every call of every instance fails),
// requests keep coming, then it is back: instances with local mode decide
// at their share and charge it back. Leases are given back first (a lease
// in hand during an outage is not part of this step).
func (c *composeRun) outage(ctx context.Context) {
	c.t.Helper()
	c.faulted = true
	c.outages++
	for _, e := range c.engines {
		endLeases(e.l)
	}
	for _, r := range c.rules {
		r.outage = nil
	}
	c.recent = nil // a refund during an outage is not made; not this step's
	c.downAt = c.clock()
	var cut []*composeEngine // the instances the outage reaches: a pipeline bypasses the faults
	for _, e := range c.engines {
		e.f.setDown(true)
		if e.opts.PipelineBatch == 0 {
			cut = append(cut, e)
		}
	}
	var did []string
	for range 1 + c.pick(4) {
		s := c.sets[c.pick(len(c.sets))]
		if c.pick(4) == 0 {
			c.reload(s) // the policy file changes while Redis is away
		}
		cost := s.costs[c.pick(len(s.costs))]
		n := 1 + c.pick(2*s.burst)
		if c.pick(3) == 0 {
			n += min(s.rules[0].quota(), 1200) / cost // beyond a share
		}
		admitted := 0
		for range n {
			if res, err := c.decide(ctx, cut[c.pick(len(cut))], s, cost); err == nil && res.Allowed {
				admitted++
			}
		}
		did = append(did, fmt.Sprintf("%s cost %d: %d of %d admitted", s.name, cost, admitted, n))
	}
	for _, e := range c.engines {
		e.f.setDown(false)
	}
	// Redis answers again: each instance's probe charges back and ends
	// local mode (here at once, not at its next tick).
	for _, e := range c.engines {
		for try := 0; e.l.LocalMode(); try++ {
			if !e.l.local.recover() && try == 20 {
				c.violate("errors", "%s: Redis back, local mode does not end", e.about)
				break
			}
		}
	}
	c.logf("Redis down, then back: %s", strings.Join(did, "; "))
	c.checkPlaces("an outage")
}

// history names the last reset, reload and grant of r, for a message.
func (r *modelRule) history() string {
	var parts []string
	for _, h := range []struct {
		what string
		at   int
	}{{"reset", r.resetAt}, {"reload", r.reloadAt}, {"grant", r.grantAt}} {
		if h.at > 0 {
			parts = append(parts, fmt.Sprintf("last %s at step %d", h.what, h.at))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// release ends a request under way through the engine that admitted it.
func (c *composeRun) release(req *request) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := req.e.l.Release(ctx, req.res)
	switch {
	case err == nil:
		for _, p := range req.places {
			p.gone = true
		}
	case errors.Is(err, ErrCircuitOpen), errors.Is(err, errInjected):
		// Its places expire after the timeout (or are given back in the
		// background): the model keeps them until then.
	default:
		c.violate("errors", "%s: Release(%s): %v", req.e.about, req.about, err)
	}
}

// checkPlaces compares the places held in Redis with the model's. An
// engine may give places back in the background: a difference must last
// 200ms (of our clock; Redis's stands still on miniredis) to count.
func (c *composeRun) checkPlaces(why string) {
	c.t.Helper()
	if !c.on["places"] || c.failed["places"] {
		return
	}
	for _, r := range c.rules {
		if !r.spec.Held {
			continue
		}
		for try := 0; ; try++ {
			now := c.clock()
			got, ok := c.peek(r)
			if !ok {
				break
			}
			want := max(r.truth(now), 0)
			if got == want {
				break
			}
			if try == 20 {
				c.violate("places", "after %s: %s has %d places free in Redis, want %d (limit %d, %d held by requests running or abandoned and not expired)",
					why, r.key, got, want, r.limit().Requests, r.held(now))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// peek is what Redis has left of r alone, asked by the plain checker.
func (c *composeRun) peek(r *modelRule) (int, bool) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.checker.Peek(ctx, []Rule{{Algorithm: r.spec, Limit: r.limit(), Key: r.key}})
	if err != nil {
		c.violate("errors", "Peek(%s): %v", r.key, err)
		return 0, false
	}
	return res.Decisions[0].Remaining, true
}

// leasedOut is the units of r's leases out now, as Redis records them
// (lease.lua: members "<id>:<units>:<reset_at>" scored by when they lapse).
func (c *composeRun) leasedOut(ctx context.Context, r *modelRule) int {
	units := 0
	for _, n := range c.leasedBy(ctx, r) {
		units += n
	}
	return units
}

// leasedBy is the units of r's leases out now by the reset (ms) of the
// commit that took them, which names their window.
func (c *composeRun) leasedBy(ctx context.Context, r *modelRule) map[int64]int {
	members, err := c.rdb.ZRangeByScore(ctx, leaseSet(r.key), &redis.ZRangeBy{Min: "-inf", Max: "+inf"}).Result()
	if err != nil {
		c.violate("errors", "ZRANGEBYSCORE %s: %v", leaseSet(r.key), err)
		return nil
	}
	by := map[int64]int{}
	for _, m := range members {
		parts := strings.Split(m, ":")
		if len(parts) >= 3 {
			n, _ := strconv.Atoi(parts[len(parts)-2])
			at, _ := strconv.ParseInt(parts[len(parts)-1], 10, 64)
			by[at] += n
		}
	}
	return by
}

// quiesce ends every request under way (a graceful shutdown waits for
// them), closes every engine (their leases are given back) and compares
// Redis's count of every key with the model's; then starts the engines
// again.
func (c *composeRun) quiesce() {
	c.t.Helper()
	for _, req := range c.running {
		c.release(req)
	}
	c.running = nil
	c.recent = nil // their engines are closed
	for _, e := range c.engines {
		e.l.Close()
		c.leases += leasesTaken(e.l)
	}
	now := c.clock()
	for _, r := range c.rules {
		got, ok := c.peek(r)
		if !ok {
			continue
		}
		truth := r.truth(now)
		want := max(truth, 0)
		switch {
		case r.spec.Held:
			if got != want {
				c.violate("places", "at quiescence: %s has %d places free, want %d", r.key, got, want)
			}
		case !r.exact() || now.Before(r.doubtUntil):
			if got > want {
				c.violate("settle", "at quiescence: %s (%s) has %d left in Redis, more than the model's %s %d%s",
					r.key, r.spec.Name, got, map[bool]string{true: "count leaves", false: "bound"}[r.exact()], want, r.history())
			}
		case got < want && want-got <= r.resetLeased+r.grantLeased:
			// Units leased before the last reset or a grant and used before
			// it: the reset or grant kept them counted (leases' documented
			// under-admission).
		case got != want:
			c.violate("settle", "at quiescence: %s (%s) has %d left in Redis, want %d (limit %d)%s",
				r.key, r.spec.Name, got, want, r.limit().Requests, r.history())
		}
		if got > r.capBound() {
			c.violate("cap", "at quiescence: %s (%s) has %d left, more than %d%s", r.key, r.spec.Name, got, r.capBound(), r.history())
		}
	}
	opts := make([]Options, len(c.engines))
	for i, e := range c.engines {
		opts[i] = e.opts
	}
	c.newEngines(opts)
}

// advance moves Redis's clock (and the engines') by d: on miniredis at
// once, ending the leases that would have ended meanwhile; a real Redis
// keeps its own time, and the run only pauses a little.
func (c *composeRun) advance(d time.Duration) {
	if c.mini == nil {
		time.Sleep(min(d, 5*time.Millisecond))
		return
	}
	from := c.clock()
	to := from.Add(d)
	crosses := d >= leaseMaxAge
	for _, r := range c.rules {
		if e := r.edge(from); !e.IsZero() && !e.After(to) && r.spec.LeaseFor != nil {
			crosses = true
		}
	}
	if crosses {
		for _, e := range c.engines {
			endLeases(e.l)
		}
	}
	c.mu.Lock()
	c.now = to
	c.mu.Unlock()
	c.mini.SetTime(to)
	for _, m := range c.locals {
		if m != nil {
			m.SetTime(to)
		}
	}
}

func (c *composeRun) pick(n int) int { return c.rng.IntN(n) }

// next runs one random step.
func (c *composeRun) next() {
	c.t.Helper()
	c.step++
	c.faulted = false
	// Each step draws from its own stream: what it does depends on the
	// seed and its number only, not on how earlier steps came out (leases
	// keep time by our clock, so outcomes may differ from run to run).
	c.rng = rand.New(rand.NewPCG(c.seed, uint64(c.step)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := c.engines[c.pick(len(c.engines))]
	s := c.sets[c.pick(len(c.sets))]
	cost := s.costs[c.pick(len(s.costs))]
	p := c.pick(100)
	if p >= 54 && p < 60 && (e.opts.PipelineBatch > 0 || e.local != nil) {
		// Faults need the faulty connection, and an instance that stays
		// out of local mode (the outage step's): e0 never pipelines nor
		// decides locally.
		e = c.engines[0]
	}
	switch {
	case p < 21: // one request
		res, err := c.decide(ctx, e, s, cost)
		c.logf("%s decide %s cost %d: allowed=%v err=%v", e.about, s.name, cost, res.Allowed, err)
		if s.held() {
			c.checkPlaces("a decision")
		}
	case p < 23 && *composeNoRefund:
		c.logf("no refund: -compose.norefund")
	case p < 23: // an admitted request is refunded (its response is a 404, a 5xx)
		if len(c.recent) == 0 {
			c.logf("refund: none admitted")
			return
		}
		c.refund(c.recent[c.pick(len(c.recent))], "refund")
	case p < 25 && *composeNoRefund:
		c.logf("no waits: -compose.norefund")
	case p < 25: // requests wait for their slots; a client goes away meanwhile
		c.waits(ctx)
	case p < 42: // a burst, mostly on one instance: leases are taken
		n := 1 + c.pick(s.burst)
		admitted := 0
		for range n {
			on := e
			if c.pick(4) == 0 {
				on = c.engines[c.pick(len(c.engines))]
			}
			if res, err := c.decide(ctx, on, s, cost); err == nil && res.Allowed {
				admitted++
			}
		}
		c.logf("%s burst %s cost %d: %d of %d admitted", e.about, s.name, cost, admitted, n)
		if s.held() {
			c.checkPlaces("a burst")
		}
	case p < 52: // a request under way ends
		if len(c.running) == 0 {
			c.logf("release: none running")
			return
		}
		i := c.pick(len(c.running))
		req := c.running[i]
		c.running = slices.Delete(c.running, i, i+1)
		c.release(req)
		c.logf("release %s via %s", req.about, req.e.about)
		c.checkPlaces("a release")
	case p < 54: // a request under way is abandoned: its instance died
		if len(c.running) == 0 {
			c.logf("abandon: none running")
			return
		}
		i := c.pick(len(c.running))
		c.logf("abandon %s", c.running[i].about)
		c.running = slices.Delete(c.running, i, i+1)
	case p < 60 && *composePlain:
		c.logf("no fault: -compose.plain")
	case p < 58: // Redis stalls past the caller's deadline, then runs the script
		c.faulted = true
		if c.pick(2) == 0 {
			s = c.heldSet()
			cost = s.costs[c.pick(len(s.costs))]
		}
		e.f.arm(1, 0)
		short, cancel := context.WithTimeout(ctx, 2*time.Millisecond)
		res, err := c.decide(short, e, s, cost)
		cancel()
		late := e.f.disarm()
		now := c.clock()
		for _, k := range late {
			for _, r := range c.rules {
				// An Epoch rule's script key is its window's (<key>:<n>).
				if (r.key == k || r.spec.Epoch && strings.HasPrefix(k, r.key+":")) && !r.spec.Held {
					r.doubt(now)
				}
			}
		}
		c.logf("%s stall, decide %s cost %d: allowed=%v err=%v, ran late on %v", e.about, s.name, cost, res.Allowed, err, late)
		c.checkPlaces("a stalled decision")
	case p < 60: // Redis fails the next commits
		c.faulted = true
		n := 1 + c.pick(4)
		e.f.arm(0, n)
		for range n {
			_, _ = c.decide(ctx, e, s, cost) // injected failures: the model checks the outcome
		}
		e.f.disarm()
		c.logf("%s fail %d commits of %s", e.about, n, s.name)
	case p < 66: // an operator grants
		c.grant(ctx, s)
	case p < 69: // an operator resets
		c.reset(ctx, s)
	case p < 72: // the policy file is reloaded: other limits, or lease: off
		c.reload(s)
	case p < 73: // a flood on a leased set, something happening meanwhile
		c.flood(ctx)
	case p < 75 && !*composePlain: // Redis down for a while, then back
		c.outage(ctx)
	case p < 85: // a little time passes
		d := time.Duration(1+c.pick(3000)) * time.Millisecond
		c.advance(d)
		c.logf("advance %v", d)
		c.checkPlaces("time passed")
	case p < 89: // much time passes
		d := time.Duration(1+c.pick(180)) * time.Minute
		c.advance(d)
		c.logf("advance %v", d)
		c.checkPlaces("time passed")
	case p < 93: // to just before, at or after a window's edge
		r := c.rules[c.pick(len(c.rules))]
		now := c.clock()
		edge := r.edge(now)
		if edge.IsZero() {
			c.logf("advance to an edge: %s has none", r.key)
			return
		}
		to := edge.Add(time.Duration(c.pick(3)-1) * time.Millisecond)
		if !to.After(now) {
			return
		}
		c.advance(to.Sub(now))
		c.logf("advance %v to %s's edge %v", to.Sub(now), r.key, to.Sub(edge))
		c.checkPlaces("time passed to an edge")
	case p < 95: // quiescence
		c.logf("quiesce")
		c.quiesce()
	default: // requests of a held set, which the release steps end
		s = c.heldSet()
		res, err := c.decide(ctx, e, s, 1)
		c.logf("%s decide %s: allowed=%v err=%v", e.about, s.name, res.Allowed, err)
		c.checkPlaces("a decision")
	}
}

// refund gives back a's units through the engine that admitted it, and
// the model un-admits what the give-back's guarantee (docs/algorithms.md,
// Refunds) says: a window's count goes down by the cost if it still is
// the window that counted it (after a reset too: the documented
// over-admission of at most the cost), a bucket gets at most the cost (its
// bound takes all of it: never more than had it not been counted).
func (c *composeRun) refund(a *admission, why string) {
	c.t.Helper()
	c.recent = slices.DeleteFunc(c.recent, func(x *admission) bool { return x == a })
	now := c.clock()
	for _, r := range a.s.rules {
		if now.Before(r.doubtUntil) || r.reloadAt != a.reload {
			// A late commit (the model's windows may not be Redis's) or
			// a reload since (other windows): not modelled.
			c.logf("%s of %s cost %d (step %d): skipped, doubt or reload since", why, a.s.name, a.cost, a.step)
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lands := make([]bool, len(a.s.rules))
	for i, r := range a.s.rules {
		r.roll(now)
		switch r.spec.Name {
		case "fixed_window":
			// A reset deleted the window's key unless leases were out:
			// then the give-back finds nothing, unless a request since
			// counted in it again (its units given back once more, as
			// Refund says).
			n, err := c.rdb.Exists(ctx, windowKey(r.key, r.start/r.span)).Result()
			if err != nil {
				c.violate("errors", "EXISTS %s: %v", r.key, err)
				return
			}
			lands[i] = n == 1 && r.start == a.window[i]
		case "sliding_window":
			// After a reset the key may be gone: nothing to give back to.
			n, err := c.rdb.Exists(ctx, r.key).Result()
			if err != nil {
				c.violate("errors", "EXISTS %s: %v", r.key, err)
				return
			}
			lands[i] = n == 1 && (r.w == a.window[i] || r.w == a.window[i]+r.limit().Window.Milliseconds())
		default:
			lands[i] = true
		}
	}
	before := make([]int, len(a.s.rules))
	for i, r := range a.s.rules {
		before[i], _ = c.peek(r)
	}
	out, err := a.e.l.Refund(ctx, a.res)
	c.logf("%s %s cost %d (step %d, wait %v) via %s: lands %v, err=%v", why, a.s.name, a.cost, a.step, a.wait, a.e.about, lands, err)
	if err != nil {
		if !errors.Is(err, ErrCircuitOpen) {
			c.violate("errors", "%s: Refund(%s cost %d of step %d): %v", a.e.about, a.s.name, a.cost, a.step, err)
		}
		return
	}
	c.refunds++
	if a.wait > 0 {
		c.waiting++
	}
	for i, r := range a.s.rules {
		if lands[i] {
			switch r.spec.Name {
			case "fixed_window":
				r.n -= a.cost
			case "sliding_window":
				if r.w == a.window[i] {
					r.cur -= a.cost
				} else {
					r.prev -= a.cost
				}
			default:
				r.admitted -= a.cost
			}
		}
		// What Redis gives back at once: a window's whole cost where it
		// lands (nothing if it went back to the lease it came from, in
		// memory), a bucket at most the cost (miniredis: no refill
		// meanwhile). Seen when nothing hides it (Remaining 0).
		after, _ := c.peek(r)
		got, want, lease := after-before[i], 0, a.res.Decisions[i].lease != nil
		if lands[i] {
			want = a.cost
		}
		switch {
		case before[i] <= 0:
		case r.exact() && (r.spec.Name == "fixed_window" || r.w == a.window[i]) && got != want && (!lease || got != 0):
			c.violate("settle", "%s: Refund(%s cost %d of step %d) on %s: Redis gave back %d, want %d (from a lease: %v)%s", a.e.about, a.s.name, a.cost, a.step, r.spec.Name, got, want, lease, r.history())
		case !r.exact() && c.mini != nil && (got < 0 || got > a.cost):
			c.violate("settle", "%s: Refund(%s cost %d of step %d) on %s: the bucket gave back %d, want 0 to %d%s", a.e.about, a.s.name, a.cost, a.step, r.spec.Name, got, a.cost, r.history())
		}
		if truth := max(r.truth(now), 0); out.Decisions[i].Remaining > truth {
			c.violate("remaining", "%s: Refund(%s cost %d of step %d) on %s: Remaining %d, but %d remain%s", a.e.about, a.s.name, a.cost, a.step, r.spec.Name, out.Decisions[i].Remaining, truth, r.history())
		}
	}
}

// waits decides a burst of the set with delays, whose requests wait for
// their slots; meanwhile time passes, an operator may reset, and some
// clients go away (their requests refunded, their slots given back).
func (c *composeRun) waits(ctx context.Context) {
	c.t.Helper()
	var s *modelSet
	for _, set := range c.sets {
		if set.rules[0].delay > 0 {
			s = set
		}
	}
	cost := s.costs[c.pick(len(s.costs))]
	n := 1 + c.pick(s.burst)
	var waiting []*admission
	admitted := 0
	for range n {
		res, err := c.decide(ctx, c.engines[c.pick(len(c.engines))], s, cost)
		if err != nil || !res.Allowed {
			continue
		}
		admitted++
		if a := c.recent[len(c.recent)-1]; &a.res.Decisions[0] == &res.Decisions[0] && a.wait > 0 {
			waiting = append(waiting, a)
		}
	}
	c.logf("waits %s cost %d: %d of %d admitted, %d waiting", s.name, cost, admitted, n, len(waiting))
	if c.pick(3) == 0 {
		c.reset(ctx, s) // while requests wait
	}
	if c.pick(2) == 0 {
		d := time.Duration(1+c.pick(500)) * time.Millisecond
		c.advance(d)
		c.logf("advance %v", d)
	}
	for _, a := range waiting {
		if c.pick(2) == 0 {
			c.refund(a, "client gone while waiting:")
		}
	}
}

// grant grants a rule of s a random number of units.
func (c *composeRun) grant(ctx context.Context, s *modelSet) {
	c.t.Helper()
	c.grantN(ctx, s, 0)
}

// grantN grants a rule of s n units: 0, a random number; -1, its quota.
func (c *composeRun) grantN(ctx context.Context, s *modelSet, n int) {
	c.t.Helper()
	r := s.rules[c.pick(len(s.rules))]
	if !r.spec.Grants {
		c.logf("grant: %s cannot", r.spec.Name)
		return
	}
	switch n {
	case 0:
		n = 1 + c.pick(r.quota())
	case -1:
		n = r.quota()
	}
	if r.spec.MaxCost > 0 {
		n = min(n, r.spec.MaxCost)
	}
	admin := c.admin()
	now := c.clock()
	leased := c.leasedOut(ctx, r)
	res, err := admin.Grant(ctx, []Rule{{Algorithm: r.spec, Limit: r.limit(), Key: r.key}}, n)
	c.logf("grant %d on %s (%s, limit %d): err=%v", n, r.key, r.spec.Name, r.limit().Requests, err)
	if err != nil {
		c.violate("errors", "Grant(%s, %d): %v", r.key, n, err)
		r.doubt(now)
		return
	}
	r.grant(now, n)
	r.grantAt = c.step
	r.grantLeased += leased
	if d := res.Decisions[0]; d.Remaining > r.capBound() {
		c.violate("cap", "Grant(%s, %d) on %s: Remaining %d, more than %d%s", r.key, n, r.spec.Name, d.Remaining, r.capBound(), r.history())
	}
}

// reset resets a rule of s.
func (c *composeRun) reset(ctx context.Context, s *modelSet) {
	c.t.Helper()
	r := s.rules[c.pick(len(s.rules))]
	now := c.clock()
	by := c.leasedBy(ctx, r)
	leased := 0
	for _, n := range by {
		leased += n
	}
	_, err := c.admin().Reset(ctx, []Rule{{Algorithm: r.spec, Limit: r.limit(), Key: r.key}})
	c.logf("reset %s: err=%v", r.key, err)
	if err != nil {
		c.violate("errors", "Reset(%s): %v", r.key, err)
		return
	}
	r.reset(now)
	r.resetAt = c.step
	r.resetLeased = leased
	if r.spec.Held {
		c.checkPlaces("a reset")
	}
}

// reload switches s to another of its variants: other limits, or lease: off.
func (c *composeRun) reload(s *modelSet) {
	if len(s.noLease) < 2 {
		return
	}
	s.v = (s.v + 1 + c.pick(len(s.noLease)-1)) % len(s.noLease)
	for _, r := range s.rules {
		r.v = s.v
		r.reloadAt = c.step
	}
	var limits []string
	for _, r := range s.rules {
		limits = append(limits, fmt.Sprintf("%s %d/%v", r.spec.Name, r.limit().Requests, r.limit().Window))
	}
	c.logf("reload %s to variant %d: %s, lease off %v", s.name, s.v, strings.Join(limits, ", "), s.noLease[s.v])
}

// flood decides more than a quota's worth of a leasable set on random
// instances, leased at once, and early in it an operator resets or grants,
// or the policy file is reloaded: under load, as the issue saw it.
func (c *composeRun) flood(ctx context.Context) {
	c.t.Helper()
	var leasable []*modelSet
	for _, s := range c.sets {
		if s.rules[0].spec.LeaseFor != nil && s.rules[0].delay == 0 { // delays are never leased
			leasable = append(leasable, s)
		}
	}
	s := leasable[c.pick(len(leasable))]
	cost := s.costs[c.pick(len(s.costs))]
	// After the event, a quota's worth and more: a reset's fresh quota is
	// used up too.
	quota := min(s.rules[0].quota(), 1200) / cost
	at, event := c.pick(quota/4), c.pick(5)
	n := at + quota + 100/cost
	admitted := 0
	for i := range n {
		if i == at {
			switch event {
			case 0:
				c.reset(ctx, s)
			case 1:
				c.grant(ctx, s)
			case 2:
				c.reload(s)
			}
		}
		if res, err := c.decide(ctx, c.engines[c.pick(len(c.engines))], s, cost); err == nil && res.Allowed {
			admitted++
		}
	}
	c.logf("flood %s cost %d: %d of %d admitted, event %d at %d", s.name, cost, admitted, n, event, at)
	if event == 3 {
		// A support desk's two grants of a whole quota while leases are
		// out, then the leases end: their give-backs must not cross the
		// grants' cap.
		c.grantN(ctx, s, -1)
		c.grantN(ctx, s, -1)
		for _, e := range c.engines {
			endLeases(e.l)
		}
		c.logf("leases ended")
		for _, r := range s.rules {
			if got, ok := c.peek(r); ok && got > r.capBound() {
				c.violate("cap", "after two grants and the leases' give-backs: %s (%s) has %d left, more than %d%s", r.key, r.spec.Name, got, r.capBound(), r.history())
			}
		}
	}
}

// heldSet is a random set with a concurrency rule.
func (c *composeRun) heldSet() *modelSet {
	var held []*modelSet
	for _, s := range c.sets {
		if s.held() {
			held = append(held, s)
		}
	}
	return held[c.pick(len(held))]
}

// admin is the engine an admin call goes through: the checker, or an
// instance (whose deny cache then forgets).
func (c *composeRun) admin() *Limiter {
	if i := c.pick(len(c.engines) + 1); i < len(c.engines) {
		return c.engines[i].l
	}
	return c.checker
}

// TestComposition is the composition test (see the top of this file): on
// miniredis with a steered clock, and on the real Redis of TEST_REDIS_URL
// with its own.
func TestComposition(t *testing.T) {
	seed := *composeSeed
	s := os.Getenv("TOLLGATE_COMPOSE_SEED")
	switch {
	case seed != 0:
	case s == "clock":
		seed = uint64(time.Now().UnixNano())
	case s != "":
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("TOLLGATE_COMPOSE_SEED=%q: %v", s, err)
		}
	default:
		// CI's run (go test -race ./... once) is the same every time: a
		// new sequence per run would make CI fail on the holes the next
		// seed finds rather than on a change; sweeps pass seeds.
		seed = composeDefaultSeed
	}
	steps := *composeSteps
	if s := os.Getenv("TOLLGATE_COMPOSE_STEPS"); steps == 0 && s != "" {
		var err error
		if steps, err = strconv.Atoi(s); err != nil {
			t.Fatalf("TOLLGATE_COMPOSE_STEPS=%q: %v", s, err)
		}
	}
	start := time.Date(2026, 9, 5, 21, 0, 0, 0, time.FixedZone("-04", -4*3600))
	if s := composeSetting(flag.Lookup("compose.start"), "TOLLGATE_COMPOSE_START"); s != "" {
		var err error
		if start, err = time.Parse(time.RFC3339, s); err != nil {
			t.Fatalf("compose start %q: %v", s, err)
		}
	}
	santiago, err := time.LoadLocation("America/Santiago")
	if err != nil {
		t.Fatal(err)
	}
	on := composeChecks(t)
	backends := map[string]func(t *testing.T) *redistest.Redis{"miniredis": redistest.Embedded}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) *redistest.Redis { return redistest.Real(t, url) }
	}
	for name, newRedis := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRedis(t)
			n := steps
			if n == 0 {
				// Under -race on a loaded 2-core machine: about 15s each
				// (sweeps without -race: -compose.steps=2000 and seeds).
				n = map[bool]int{true: 1000, false: 200}[r.Mini != nil]
			}
			c := &composeRun{t: t, name: name, seed: seed, rng: rand.New(rand.NewPCG(seed, 19)), rdb: r.Client, mini: r.Mini,
				on: on, failed: map[string]bool{}}
			var clock func() time.Time
			if r.Mini != nil {
				c.now = start.Truncate(time.Millisecond)
				r.Mini.SetTime(c.now)
				r.Mini.ClockTTL(true)
				clock = c.clock
			}
			c.sets = composeSets(t, r.Prefix, santiago)
			now := c.clock()
			for _, s := range c.sets {
				for _, r := range s.rules {
					r.t0 = now
					c.rules = append(c.rules, r)
				}
			}
			c.checker = New(r.Client, Options{Clock: clock})
			opts := make([]Options, 2+c.pick(3))
			c.locals = make([]*miniredis.Miniredis, len(opts))
			for i := range opts {
				// e0 never decides locally: the stall and fail steps
				// run on it (local mode is the outage step's).
				local := !*composePlain && i > 0 && (i == len(opts)-1 || c.pick(3) == 0)
				opts[i] = Options{
					Lease:           (i == 0 || c.pick(3) > 0) && !*composePlain,
					DenyCacheSize:   []int{0, 1000}[c.pick(2)],
					Timeout:         []time.Duration{0, 5 * time.Second}[c.pick(2)],
					PipelineBatch:   []int{0, 0, 8}[c.pick(3)] * min(i, 1),
					BreakerFailures: 3,
					BreakerCooldown: 10 * time.Millisecond,
					Clock:           clock,
					Log:             slog.New(slog.DiscardHandler),
				}
				if local {
					// Local mode: its own in-process Redis, on our clock,
					// and N fixed at the run's instances; no pipeline (the
					// faults need the faulty connection).
					m := miniredis.RunT(t)
					if r.Mini != nil {
						m.SetTime(c.now)
					}
					lrdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
					t.Cleanup(func() { lrdb.Close() })
					c.locals[i] = m
					opts[i].Local, opts[i].Instances, opts[i].PipelineBatch = lrdb, len(opts), 0
				}
			}
			c.newEngines(opts)
			var about []string
			for _, e := range c.engines {
				about = append(about, e.about)
			}
			t.Logf("seed %d, %d steps from %v, instances %s", seed, n, c.clock(), strings.Join(about, ", "))
			began := time.Now()
			for range n {
				c.next()
			}
			// The end: every request under way ends, every lease is given back.
			c.step++
			c.logf("quiesce")
			c.quiesce()
			c.checkPlaces("the end")
			for _, e := range c.engines {
				e.l.Close()
			}
			elapsed := time.Since(began)
			if r.Mini != nil {
				t.Logf("miniredis ran %d commands", r.Mini.CommandCount())
			}
			t.Logf("%d steps, %d decisions (%d admitted, %d leases taken, %d outages, %d decided locally, %d refunded, %d of them waiting) in %v: %.0f steps/s, %.0f decisions/s; seed %d",
				n, c.decisions, c.admitted, c.leases, c.outages, c.local, c.refunds, c.waiting, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), float64(c.decisions)/elapsed.Seconds(), seed)
		})
	}
}

// composeDefaultSeed is the seed without -compose.seed or
// TOLLGATE_COMPOSE_SEED (=clock draws one from the clock).
const composeDefaultSeed = 1

// composeShown is how many steps a failure shows: TOLLGATE_COMPOSE_SHOW, or 40.
func composeShown() int {
	if n, err := strconv.Atoi(os.Getenv("TOLLGATE_COMPOSE_SHOW")); err == nil && n > 0 {
		return n
	}
	return 40
}
