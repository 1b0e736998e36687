package middleware

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
	"tollgate/limiter"
	"tollgate/live"
	"tollgate/policy"
)

// Results of a rate-limit decision, as logged and counted.
const (
	ResultAllowed       = "allowed"
	ResultLimited       = "limited"
	ResultFailedOpen    = "failed_open"
	ResultFailedClosed  = "failed_closed"
	ResultShadowLimited = "shadow_limited"
	// Decided in this process at its share of the limits, Redis being
	// unavailable (RATE_LIMIT_ON_REDIS_ERROR=local).
	ResultLocalAllowed = "local_allowed"
	ResultLocalLimited = "local_limited"
)

// outcomeKey is where RateLimit leaves its Outcome in the gin context.
const outcomeKey = "tollgate.outcome"

// Outcome is what the limiter decided for a request, for logs and metrics.
type Outcome struct {
	Policy     string // the limit reported in the headers: the closest to exhaustion
	Algorithm  string
	Result     string // one of the Result constants
	Remaining  int
	Took       time.Duration // the limiter calls
	RedisError bool          // a call failed on Redis (not refused by an open circuit)
	// ShadowLimited are the shadow policies' limits that would have denied.
	ShadowLimited []PolicyRef
	// AsideDropped counts the shadow and candidate decisions (each set of
	// rules decided together one) not made: too many were under way.
	AsideDropped int
	// Candidate are the candidate policies' decisions (live.Policies.SetCandidate).
	Candidate []CandidateRef
	// Refunded are the policies whose limits the request's units went back
	// to (refund_on).
	Refunded []string
	// Waited is how long the request was held for its slot (a delay).
	Waited time.Duration
}

// A PolicyRef names one limit of a policy, for metrics.
type PolicyRef struct {
	Policy    string
	Algorithm string
}

// OutcomeOf returns the Outcome the limiter left, if it decided.
func OutcomeOf(c *gin.Context) (Outcome, bool) {
	v, ok := c.Get(outcomeKey)
	if !ok {
		return Outcome{}, false
	}
	o, ok := v.(Outcome)
	return o, ok
}

// decider decides rules: the engine, *limiter.Limiter.
type decider interface {
	Decide(ctx context.Context, rules []limiter.Rule) (limiter.Result, error)
	Peek(ctx context.Context, rules []limiter.Rule) (limiter.Result, error)
	// Release gives back what a Result holds (in-flight places).
	Release(ctx context.Context, res limiter.Result) error
}

// RateLimit applies the policies in force (live.Policies) to requests. All
// limits of the enforced policies that apply to a request are decided in
// one call, so a request denied by any of them is counted by none. Each
// request uses one snapshot of the policies.
type RateLimit struct {
	log     *slog.Logger
	decider decider
	// aside decides the shadow and candidate limits: an engine apart from
	// decider's (limiter.Limiter.Apart) when it has one, within
	// asideBudget.
	aside       decider
	asideBudget *asideBudget
	live        *live.Policies
	failOpen    bool
	warn        *ThrottledLog // Redis trouble
	tierWarn    *ThrottledLog // users of tiers a policy does not limit
	// ipv6Prefix groups IPv6 clients for policies keyed by IP (ipSubject).
	ipv6Prefix int
	// now is the clock overrides expire by.
	now func() time.Time

	view   atomic.Pointer[view] // the header texts of the snapshot last seen
	bodies sync.Pool            // *[]byte: 429 bodies' buffers (abortLimited)
	wait   *waiting             // requests held for their slot (wait.go); nil: none wait
}

// view is a live snapshot with the header texts of its limits, made once
// per snapshot rather than on every request.
type view struct {
	snap *live.Snapshot
	// texts holds each named limit's header data (by policy.NamedLimit.ID).
	texts []limitText
}

// current returns the view of the snapshot in force: the one made for it
// already, or a new one. Two requests that make one at once each get a
// whole one; the last stored is kept.
func (l *RateLimit) current() *view {
	s := l.live.Snapshot()
	if v := l.view.Load(); v != nil && v.snap == s {
		return v
	}
	v := &view{snap: s, texts: make([]limitText, len(s.Live.Limits()))}
	for _, nl := range s.Live.Limits() {
		lt := &v.texts[nl.ID]
		lt.name, lt.algorithm, lt.sfName, lt.unit = nl.Name, nl.Algorithm.Name, sfString(nl.Name), nl.Algorithm.Unit
		if p := nl.Limit.Period; p != "" {
			lt.per = "per " + string(p) + " in " + nl.Limit.Location.String()
		}
	}
	l.view.Store(v)
	return v
}

// limitText is a named limit as the headers show it. It is used by pointer
// only (hdr must not be copied).
type limitText struct {
	name      string // the item in RateLimit-Policy: the policy, or policy-N for its Nth limit
	algorithm string
	sfName    string // name as a structured-field String
	// unit is what the quota counts when not requests per window (qu, and
	// no w: "concurrent-requests"); per says the quota's span in the 429
	// message when it is a calendar period ("month in Europe/Berlin").
	unit, per string
	hdr       atomic.Pointer[limitHeaders]
}

// limitHeaders are the header and body texts that depend only on a
// decision's Limit and Window, made on a limit's first decision and kept.
type limitHeaders struct {
	limit   int
	window  time.Duration
	quota   string // X-RateLimit-Limit
	item    string // the limit's item in RateLimit-Policy
	message string // the 429 message, up to the seconds to wait
}

// headers returns the texts for d, made anew only if d's Limit or Window
// differ from the last ones (they do not, for decisions of one limit).
func (lt *limitText) headers(d limiter.Decision) *limitHeaders {
	if h := lt.hdr.Load(); h != nil && h.limit == d.Limit && h.window == d.Window {
		return h
	}
	per := lt.per
	if per == "" {
		per = "per " + strconv.FormatFloat(d.Window.Seconds(), 'f', -1, 64) + "s"
	}
	// w is the span of the quota (a calendar's current period); a quota of
	// another unit (requests at once) has no window.
	item := lt.sfName + ";q=" + strconv.Itoa(d.Limit) + ";w=" + strconv.FormatInt(max(CeilSeconds(d.Window), 1), 10)
	if lt.unit != "" {
		item = lt.sfName + ";q=" + strconv.Itoa(d.Limit) + ";qu=" + sfString(lt.unit)
		per = "at once"
	}
	h := &limitHeaders{
		limit:   d.Limit,
		window:  d.Window,
		quota:   strconv.Itoa(d.Limit),
		item:    item,
		message: "Too many requests: " + strconv.Itoa(d.Limit) + " " + per + " allowed. Try again in ",
	}
	lt.hdr.Store(h)
	return h
}

// NewRateLimit returns a RateLimit deciding the policies in force p with d.
// d must bound its calls in time (limiter.Options.Timeout);
// failOpen chooses what a request gets when the limiter cannot decide (Redis
// down or slow): served unchecked, marked by "X-RateLimit-Checked: false", or
// 503 — availability of the API versus strictness of the limit. Clients
// counted by IP address are counted per IPv6 prefix of ipv6Prefix bits
// (ipSubject); exemptions by CIDR match the client's own address.
func NewRateLimit(log *slog.Logger, d decider, p *live.Policies, failOpen bool, ipv6Prefix int, o RateLimitOptions) *RateLimit {
	now := o.Clock
	if now == nil {
		now = time.Now
	}
	l := &RateLimit{log: log, decider: d, live: p, failOpen: failOpen, ipv6Prefix: ipv6Prefix, now: now,
		warn: NewThrottledLog(log, 10*time.Second), tierWarn: NewThrottledLog(log, time.Minute),
		aside: d, asideBudget: newAsideBudget(o.AsideSlow)}
	if o.MaxWaiting > 0 {
		l.wait = &waiting{most: int64(o.MaxWaiting), drain: o.Drain}
	}
	if a, ok := d.(interface{ Apart() *limiter.Limiter }); ok {
		l.aside = a.Apart()
	}
	return l
}

// RateLimitOptions are a RateLimit's optional settings; each field says
// what its zero value means.
type RateLimitOptions struct {
	// Clock is the clock overrides expire by; nil: time.Now. Tests move it.
	Clock func() time.Time
	// MaxWaiting is how many requests may wait for their slot under limits
	// with a delay at once (RATE_LIMIT_MAX_WAITING); beyond it, such limits
	// answer 429 as without a delay. 0: none wait.
	MaxWaiting int
	// Drain, when closed (shutdown), refuses the requests waiting with 503
	// and gives their slots back; nil: never.
	Drain <-chan struct{}
	// AsideSlow is how long a candidate or shadow decision may take before
	// the next ones are dropped for a while (asideBudget); 0: 25ms. Tests
	// that count every candidate decision on a loaded machine raise it.
	AsideSlow time.Duration
}

// caller is what the policies know of the request's sender, read from the
// identity Identify left: the one place the adapter reads it.
func (l *RateLimit) caller(c *gin.Context, s *live.Snapshot) policy.Caller {
	id := Identity(c)
	who := policy.Caller{Tier: Tier(c), Header: c.Request.Header}
	switch id.Kind {
	case auth.User:
		who.User = id.Name
	case auth.IP:
		who.IP = id.Addr
	}
	if who.IP == "" && (who.User == "" || s.KeysByIP) { // no Identify in front, or a user counted by IP
		who.IP = ipSubject(c, l.ipv6Prefix)
	}
	if s.ExemptsCIDRs {
		who.Addr, _ = clientAddr(c) // the real address, not its group
	}
	if s.HasOverrides {
		who.Now = l.now()
	}
	return who
}

// rules lists the limits of set that apply to the request from who: of
// policies matching its route (or of every policy, for anyRoute), for its
// tier, minus exemptions.
func (l *RateLimit) rules(c *gin.Context, set *policy.Set, who policy.Caller, anyRoute bool, out []policy.Applied) []policy.Applied {
	var unlisted string
	if anyRoute {
		out, unlisted = set.AllRules(who, out)
	} else {
		out, unlisted = set.Rules(c.Request.Method, c.FullPath(), who, out)
	}
	if unlisted != "" {
		// Most likely a typo in a user's tier or in the file.
		l.tierWarn.Warn("user's tier has no limits in the policy, which has no default limits: not limited by it",
			"policy", unlisted, "tier", who.Tier)
	}
	return out
}

func rulesOf(as []policy.Applied) []limiter.Rule {
	rules := make([]limiter.Rule, len(as))
	for i, a := range as {
		rules[i] = a.Rule
	}
	return rules
}

// Handler limits requests: it sets the rate-limit headers and answers 429
// when any enforced limit denies.
func (l *RateLimit) Handler() gin.HandlerFunc {
	return func(c *gin.Context) {
		v := l.current() // the whole request is decided under this snapshot
		s := v.snap
		who := l.caller(c, s)
		var buf [4]policy.Applied // most requests have a limit or two: no allocation
		all := l.rules(c, s.Live, who, false, buf[:0])
		var candidate []policy.Applied
		if s.Candidate != nil {
			candidate = l.rules(c, s.Candidate, who, false, nil)
		}
		if len(all) == 0 && len(candidate) == 0 {
			c.Next()
			return
		}
		enforced, shadow := splitShadow(all, s.Live.AnyShadow())
		ctx := c.Request.Context()
		start := time.Now()
		var o Outcome
		var side *aside
		if len(shadow) > 0 || len(candidate) > 0 {
			// Shadow limits are decided apart: their denials must never keep
			// an enforced limit from counting the request.
			side = &aside{d: l.aside, budget: l.asideBudget}
			side.start(ctx, shadow, candidate)
			defer func() {
				side.wg.Wait()
				if side.shadowErr != nil {
					l.warn.Warn("shadow limits unavailable", "err", side.shadowErr)
				}
				o.ShadowLimited = side.shadowLimited
				o.Candidate = append(side.candidate[0], side.candidate[1]...)
				o.AsideDropped = side.dropped
				c.Set(outcomeKey, o)
				for _, res := range side.held {
					l.release(ctx, l.aside, res)
				}
			}()
		}
		var ds []limiter.Decision
		allowed, local := true, false
		var err error
		var res limiter.Result
		var slot *reservation // room to wait for a slot (wait.go)
		if len(enforced) > 0 {
			rules := rulesOf(enforced)
			slot = l.reserve(rules)
			defer slot.release()
			res, err = l.decider.Decide(ctx, rules)
			ds, allowed, local = res.Decisions, res.Allowed, res.Local()
			if res.Holds() {
				// Deferred: the places go back when the request ends, however
				// it ends (a panic unwinds through here before Recover).
				defer l.release(ctx, l.decider, res)
			}
		}
		o.Took = time.Since(start)
		if err != nil {
			o.Policy, o.Algorithm = enforced[0].Limit.Name, enforced[0].Limit.Algorithm.Name
			o.RedisError = !errors.Is(err, limiter.ErrCircuitOpen)
			l.warn.Warn("rate limiter unavailable", "err", err, "fail_open", l.failOpen)
			if l.failOpen {
				o.Result = ResultFailedOpen
				c.Set(outcomeKey, o)
				c.Header("X-RateLimit-Checked", "false")
				c.Next()
				return
			}
			o.Result = ResultFailedClosed
			c.Set(outcomeKey, o)
			Fail(c, nil, ErrLimiterUnavailable)
			return
		}
		if len(enforced) == 0 {
			o.Result = ResultAllowed
			c.Set(outcomeKey, o)
			c.Next()
			return
		}
		var ibuf [4]headerItem
		items := ibuf[:0]
		for i, a := range enforced {
			items = append(items, headerItem{lt: &v.texts[a.Limit.ID], d: ds[i]})
		}
		chosen := closest(items)
		d := items[chosen].d
		o.Policy, o.Algorithm, o.Remaining = items[chosen].lt.name, items[chosen].lt.algorithm, max(d.Remaining, 0)
		o.Result = ResultAllowed
		if !allowed {
			o.Result = ResultLimited
		}
		if local {
			// The headers show this instance's share, not the limit.
			o.Result = ResultLocalAllowed
			if !allowed {
				o.Result = ResultLocalLimited
			}
			c.Header("X-RateLimit-Checked", "local")
		}
		c.Set(outcomeKey, o)
		setHeaders(c.Writer.Header(), items, chosen)
		if !allowed {
			abortLimited(c, &l.bodies, items[chosen].lt.headers(d).message, retryAfterSeconds(d))
			return
		}
		if !l.hold(c, res, slot, &o) {
			return
		}
		l.next(c, res, enforced, items, &o)
	}
}

// release gives back the places res holds, once the request has ended,
// through d, the decider that decided it. The engine gives the call a
// deadline of its own: ctx (the request's) is often done by now, and a
// client that went away must not keep its places.
func (l *RateLimit) release(ctx context.Context, d decider, res limiter.Result) {
	if err := d.Release(ctx, res); err != nil {
		l.warn.Warn("in-flight places not given back yet: retried until Redis answers, or they expire", "err", err)
	}
}

// deniedBody appends the 429's JSON, {"error", "message", "retry_after"}, to b. message is
// the limit's text up to the seconds (digits and plain words: nothing to escape).
func deniedBody(b []byte, message string, retry int64) []byte {
	b = append(b, `{"error":"rate limit exceeded","message":"`...)
	b = append(b, message...)
	b = strconv.AppendInt(b, retry, 10)
	b = append(b, ` seconds.","retry_after":`...)
	b = strconv.AppendInt(b, retry, 10)
	return append(b, '}')
}

// headerItem is one enforced limit's decision, named as in RateLimit-Policy.
type headerItem struct {
	lt *limitText
	d  limiter.Decision
}

// closest picks the limit the headers report: of the denying ones, the one
// that denies longest; when all admit, the one with the least remaining.
func closest(items []headerItem) int {
	best := -1
	for i, it := range items {
		if it.d.Allowed {
			continue
		}
		if best < 0 || it.d.RetryAfter > items[best].d.RetryAfter {
			best = i
		}
	}
	if best >= 0 {
		return best
	}
	best = 0
	for i, it := range items {
		b := items[best].d
		if it.d.Remaining < b.Remaining || it.d.Remaining == b.Remaining && it.d.ResetAfter > b.ResetAfter {
			best = i
		}
	}
	return best
}

// setHeaders writes every rate-limit header: the de facto X-RateLimit-* and
// the IETF draft's RateLimit of the chosen limit, RateLimit-Policy listing
// every limit (structured field lists), and Retry-After when it denies. Times
// are on the decision's (Redis's) clock.
func setHeaders(h http.Header, items []headerItem, chosen int) {
	it := items[chosen]
	d := it.d
	remaining := max(d.Remaining, 0)
	now := d.Now
	if now.IsZero() {
		now = time.Now()
	}
	lh := it.lt.headers(d)
	policy := lh.item
	if len(items) > 1 {
		list := make([]string, len(items))
		for i, other := range items {
			list[i] = other.lt.headers(other.d).item
		}
		policy = strings.Join(list, ", ")
	}
	// One backing array for every value, and keys already in canonical form
	// (http.Header.Set would allocate both on every request).
	v := make([]string, 6)
	v[0], v[3] = lh.quota, policy
	// RateLimit's t is the delay until more quota: the full reset while
	// there is quota left, and Retry-After's value on a denial (for a bucket,
	// the next token, long before the bucket is full again).
	t := CeilSeconds(d.ResetAfter)
	if !d.Allowed {
		t = retryAfterSeconds(d)
	}
	// The numbers and RateLimit are written into one string, which the
	// values then share: one allocation instead of four or five.
	var buf [160]byte
	b := strconv.AppendInt(buf[:0], int64(remaining), 10)
	endRemaining := len(b)
	b = strconv.AppendInt(b, CeilUnix(now.Add(d.ResetAfter)), 10)
	endReset := len(b)
	b = strconv.AppendInt(b, t, 10)
	endT := len(b)
	b = append(b, it.lt.sfName...)
	b = append(b, ";r="...)
	b = append(b, b[:endRemaining]...)
	b = append(b, ";t="...)
	b = append(b, b[endReset:endT]...)
	all := string(b)
	v[1], v[2], v[4] = all[:endRemaining], all[endRemaining:endReset], all[endT:]
	if !d.Allowed {
		v[5] = all[endReset:endT]
		h[hdrRetryAfter] = v[5:6:6]
	}
	h[hdrLimit], h[hdrRemaining], h[hdrReset] = v[0:1:1], v[1:2:2], v[2:3:3]
	h[hdrPolicy], h[hdrRateLimit] = v[3:4:4], v[4:5:5]
}

// The rate-limit headers' names, in the canonical form http.Header keeps
// (X-RateLimit-Limit is sent as X-Ratelimit-Limit either way).
const (
	hdrLimit      = "X-Ratelimit-Limit"
	hdrRemaining  = "X-Ratelimit-Remaining"
	hdrReset      = "X-Ratelimit-Reset"
	hdrPolicy     = "Ratelimit-Policy"
	hdrRateLimit  = "Ratelimit"
	hdrRetryAfter = "Retry-After"
)

// Peek returns, without consuming anything, the state of every limit of
// the policies in force that applies to the request's caller on any route,
// in the order of res.Decisions, and the snapshot they are of. An engine
// that cannot answer is logged (throttled) here, and its error returned.
func (l *RateLimit) Peek(c *gin.Context) (s *live.Snapshot, applied []policy.Applied, res limiter.Result, err error) {
	s = l.live.Snapshot()
	applied = l.rules(c, s.Live, l.caller(c, s), true, nil)
	if len(applied) == 0 {
		return s, nil, limiter.Result{}, nil
	}
	res, err = l.decider.Peek(c.Request.Context(), rulesOf(applied))
	if err != nil {
		l.warn.Warn("rate limiter unavailable", "err", err)
		return s, nil, limiter.Result{}, err
	}
	return s, applied, res, nil
}

// retryAfterSeconds rounds up, and is at least 1: a client retrying at once
// would only be denied again.
func retryAfterSeconds(d limiter.Decision) int64 {
	return max(CeilSeconds(d.RetryAfter), 1)
}

// CeilSeconds is d in whole seconds, rounded up: the headers' and
// /ratelimit's seconds.
func CeilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}

// CeilUnix is t in Unix seconds, rounded up: the headers' and /ratelimit's
// reset times.
func CeilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// sfString formats s as a structured-field String (RFC 9651).
func sfString(s string) string {
	return `"` + sfEscaper.Replace(s) + `"`
}

// sfEscaper escapes a structured-field String's two special characters.
var sfEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)
