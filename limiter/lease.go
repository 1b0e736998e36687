package limiter

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Leases: a rule set under heavy traffic takes several requests' worth of
// its quota in one decision (the request's rules with their costs times n,
// committed atomically by the same scripts as any decision, so never more
// than remains in any rule) and admits the next n-1 requests from memory.
// The units are counted in Redis when taken, so all instances together never
// admit more than the limit. What a lease can cost is under-admission: units
// one instance holds that another instance's requests cannot have. It is
// bounded three ways:
//   - size: a lease is at most about leaseHorizon of the rule set's observed
//     rate, and at most remaining/(2*N) of every rule, N the instances (the
//     remaining of the last decision), so leases shrink towards the end of a
//     quota and stop (plain decisions, exact) when under 2 requests' worth;
//   - time: a lease ends after leaseMaxAge (so also when the rate drops), at
//     the end of the window that counted it (Spec.LeaseFor) and at Close;
//     its unused units are then given back (the module's m.refund);
//   - scope: limits under minLeaseQuota per window, rules with NoLease and
//     algorithms without LeaseFor (requests in flight, say) are never leased.
const (
	// leaseHorizon is how much traffic one lease covers: at 10,000 requests
	// a second on one rule set, 1,000 requests per Redis call.
	leaseHorizon = 100 * time.Millisecond
	// leaseMaxAge ends a lease that was not used up: units held longer than
	// this are more likely stranded than needed.
	leaseMaxAge = 250 * time.Millisecond
	// leaseInstances is the number of instances assumed to share a rule
	// set's quota when sizing a lease, until they are counted (instances.go):
	// remaining/(2*N) each, so N instances hold at most half of what remains.
	leaseInstances = 4
	// minLeaseQuota: limits below it are never leased. At 1,000 per window
	// a lease is at most 125 units; the tutorial's 5 per minute (and any
	// limit a person counts by hand) is decided exactly, call by call.
	minLeaseQuota = 1000
	// maxLeases bounds the rule sets tracked; beyond it, decisions are plain.
	maxLeases = 10_000
	// leaseTrust is how long Redis counts a lease as out (lua/lease.lua)
	// after the commit that took it, unless its instance ends it sooner
	// (it does: the give-back, the next lease's commit or the sweep end
	// every lease within about leaseMaxAge). It bounds what an instance
	// that died (or a call that was lost) leaves counted through a reset,
	// and a give-back later than this gives nothing back: under-admission,
	// never over-admission. The slack over leaseMaxAge is for a busy
	// instance's sweep and slow calls (-race on a loaded 2-core machine
	// delayed give-backs by over a second).
	leaseTrust = 10 * time.Second
)

// leases is the engine's outermost stage when leasing is on.
type leases struct {
	next    stage // rule sets never leased: the deny cache and on
	leased  stage // rule sets that may be: denials kept at most leaseMaxAge
	scripts *scripts
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time
	// instances is how many instances share the quota (instances.go); nil:
	// leaseInstances.
	instances func() int
	// localMode reports whether decisions are local (local.go): no lease is
	// taken then (its units would be charged back whole, and given back to
	// Redis, not to the in-process one); nil: never.
	localMode func() bool

	taken atomic.Int64 // leases taken, for tests

	// entries holds each tracked rule set's *lease (by ruleSetKey): a
	// sync.Map, since requests on many keys look up and rarely add.
	entries sync.Map
	count   atomic.Int64 // entries, at most maxLeases
	closed  atomic.Bool
	// ending is held while leases are ended and given back by the sweep or
	// endAll, so that endAll returns only once a sweep under way has given
	// back what it took.
	ending sync.Mutex

	stop chan struct{}
	done chan struct{}
}

// lease is one rule set's lease and what sizes the next one.
type lease struct {
	mu     sync.Mutex
	rules  []rule        // resolved, costs as per request
	id     string        // of the lease in Redis (lua/lease.lua)
	open   bool          // the lease is out in Redis: end() ends it there
	n      int           // requests' worth it took
	left   int           // requests this instance may still admit from it
	ds     []Decision    // of the commit that took it: Remaining after it
	at     time.Time     // local clock at the commit
	until  time.Time     // local clock: the lease ends
	taking bool          // a lease is being taken: others wait for it (taken)
	taken  chan struct{} // closed when the lease being taken is taken, or not
	gone   bool          // dropped from leases.entries: use a new one

	seen     int       // requests since since: the observed rate
	since    time.Time //
	headroom int       // requests' worth the last decision left in every rule /(2*leaseInstances); -1: none known
	used     time.Time // last request
}

// leaseTake marks a commit as a lease taken (Rule.lease): the lease's id,
// and the member (leaseMember) of the rule set's previous lease, used up,
// that the commit ends in Redis ("" if none), so that ending a used-up
// lease costs no call of its own.
type leaseTake struct {
	id   string
	ends string
}

// giveBack is a lease's unused units, to be returned to Redis; with none
// (left 0), the end of a used-up lease.
type giveBack struct {
	rules []rule
	ds    []Decision
	id    string
	n     int // requests' worth taken
	left  int // requests' worth unused
}

var _ stage = (*leases)(nil)

func newLeases(next, leased stage, s *scripts, timeout time.Duration, log *slog.Logger) *leases {
	if timeout <= 0 {
		timeout = time.Second
	}
	l := &leases{next: next, leased: leased, scripts: s, timeout: timeout, log: log, now: time.Now,
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.sweep()
	return l
}

// leasable reports whether rules may be leased: checked on every request
// before anything is made for a lease (a small limit, the common case of a
// rule set never leased, makes no key).
func leasable(rules []Rule) bool {
	for _, r := range rules {
		if s := r.Algorithm; r.NoLease || r.Delay > 0 || s.LeaseFor == nil || s.Quota(r.Limit) < minLeaseQuota {
			return false
		}
	}
	return true
}

// decide admits from this instance's lease on rules if it has one, else
// decides plainly or takes a new lease. Peeks are never leased.
func (l *leases) decide(ctx context.Context, rules []Rule, commit bool) ([]Decision, bool, error) {
	if !commit {
		return l.next.decide(ctx, rules, commit)
	}
	e := l.entry(rules)
	if e == nil {
		return l.next.decide(ctx, rules, commit)
	}
	now := l.now()
	e.mu.Lock()
	if e.gone { // swept as idle after this request found it
		e.mu.Unlock()
		return l.decide(ctx, rules, commit)
	}
	e.seen++
	e.used = now
	for e.taking && (e.left == 0 || !now.Before(e.until)) {
		// A lease is being taken: wait for it rather than ask Redis alone
		// (at 64 requests at once, those plain calls were most of a leased
		// key's Redis calls). The take is bounded by the engine's timeout.
		taken := e.taken
		e.mu.Unlock()
		select {
		case <-taken:
		case <-ctx.Done():
			return l.leased.decide(ctx, rules, commit) // fails as a plain call would
		}
		now = l.now()
		e.mu.Lock()
		if e.gone {
			e.mu.Unlock()
			return l.decide(ctx, rules, commit)
		}
	}
	if e.left > 0 && now.Before(e.until) {
		e.left--
		ds := e.answer(now)
		e.mu.Unlock()
		return ds, true, nil
	}
	back := e.end()
	n := e.size(now)
	if n < 2 || l.localMode != nil && l.localMode() {
		e.mu.Unlock()
		l.giveBack(back)
		ds, allowed, err := l.leased.decide(ctx, rules, commit)
		if err == nil {
			e.mu.Lock()
			e.headroom = headroom(e.rules, ds, l.instanceCount())
			e.mu.Unlock()
		}
		return ds, allowed, err
	}
	e.taking, e.taken = true, make(chan struct{})
	e.seen, e.since = 0, now
	e.mu.Unlock()
	ended := back
	if back != nil && back.left == 0 {
		back = nil // ended by the commit that takes the next lease
	} else {
		ended = nil
	}
	l.giveBack(back)

	id := newNonce()
	many := make([]Rule, len(rules))
	for i, r := range rules {
		many[i] = r
		many[i].Cost = e.rules[i].cost * n
		many[i].lease = &leaseTake{id: id}
		if ended != nil {
			many[i].lease.ends = ended.member(i)
		}
	}
	ds, allowed, err := l.leased.decide(ctx, many, true)
	if err == nil && !allowed || err != nil && l.localMode != nil && l.localMode() {
		// Less left than n requests' worth, or Redis failed and local mode
		// began (no lease is taken locally): this request alone, exactly.
		ds, allowed, err = l.leased.decide(ctx, rules, true)
		n = 1
	}
	e.mu.Lock()
	e.taking = false
	close(e.taken)
	if err != nil || !allowed || n == 1 {
		if err == nil {
			e.headroom = headroom(e.rules, ds, l.instanceCount())
		}
		e.mu.Unlock()
		// The previous lease was not ended by a commit: end it alone.
		l.giveBack(ended)
		return ds, allowed, err
	}
	l.taken.Add(1)
	e.ds, e.at, e.id, e.n, e.left, e.open = ds, now, id, n, n-1, true
	e.until = now.Add(leaseMaxAge)
	for i, r := range e.rules {
		e.until = minTime(e.until, now.Add(r.spec.LeaseFor(r.limit, ds[i].ResetAfter)))
	}
	e.headroom = headroom(e.rules, ds, l.instanceCount())
	out := e.answer(now)
	e.mu.Unlock()
	// If Close ran meanwhile, its give-back may have missed this lease.
	if l.closed.Load() {
		e.mu.Lock()
		back := e.end()
		e.mu.Unlock()
		l.giveBack(back)
	}
	return out, true, nil
}

// entry returns the lease record of rules, made on first use; nil when rules
// are not leasable, the engine is closed or too many rule sets are tracked.
func (l *leases) entry(rules []Rule) *lease {
	if len(rules) == 0 || l.closed.Load() || !leasable(rules) {
		return nil
	}
	key := leaseSetKey(rules)
	if e, ok := l.entries.Load(key); ok {
		return e.(*lease)
	}
	rs, err := resolve(rules)
	if err != nil || l.count.Load() >= maxLeases {
		return nil
	}
	e, loaded := l.entries.LoadOrStore(key, &lease{rules: rs, headroom: -1, since: l.now()})
	if !loaded {
		l.count.Add(1)
	}
	return e.(*lease)
}

// size is how many requests' worth the next lease takes: leaseHorizon of
// the rate seen since the last lease (or the first request), at most the
// headroom the last decision left. Called with e.mu held.
func (e *lease) size(now time.Time) int {
	elapsed := max(now.Sub(e.since), time.Millisecond)
	if elapsed > leaseMaxAge*4 {
		// An old burst must not size leases for a slow key: observe anew.
		e.seen, e.since = 1, now
		return 0
	}
	if e.headroom < 2 || e.seen < 2 {
		return 0
	}
	n := int(int64(e.seen) * int64(leaseHorizon) / int64(elapsed))
	return min(n, e.headroom)
}

// headroom is the most requests' worth of rs a lease may take after ds: what
// every rule has left, in requests, shared by leaseInstances instances, half
// of it.
func headroom(rs []rule, ds []Decision, instances int) int {
	h := -1
	for i, r := range rs {
		n := ds[i].Remaining / r.cost / (2 * instances)
		if h < 0 || n < h {
			h = n
		}
	}
	return h
}

// answer is the decisions of a request admitted from the lease at now, with
// e.left requests' worth still unused. Called with e.mu held.
func (e *lease) answer(now time.Time) []Decision {
	return e.answerAs(now, e.left)
}

// answerAs is answer with left unused. Remaining is the lease's unused
// units: what the limit surely still admits now, over all instances (they
// are counted in Redis and only this instance admits them). What Redis had
// left at the lease is not added: other instances may have taken all of it
// since (plain decisions take any amount), and no instance knows how much
// without asking Redis.
func (e *lease) answerAs(now time.Time, left int) []Decision {
	elapsed := now.Sub(e.at)
	ds := make([]Decision, len(e.ds))
	for i, d := range e.ds {
		d.Remaining = left * e.rules[i].cost
		d.leaseReset = d.Now.Add(d.ResetAfter).UnixMilli()
		d.ResetAfter = max(d.ResetAfter-elapsed, 0)
		d.Now = d.Now.Add(elapsed)
		d.taken, d.lease, d.leaseID = &e.rules[i], e, e.id
		ds[i] = d
	}
	return ds
}

// end ends e's lease, returning what is to be given back, or ended in
// Redis (nil if nothing: no lease out). Called with e.mu held.
func (e *lease) end() *giveBack {
	if !e.open {
		return nil
	}
	b := &giveBack{rules: e.rules, ds: e.ds, id: e.id, n: e.n, left: e.left}
	e.left, e.open = 0, false
	return b
}

// member is b's lease's member in the lease set of rule i (lua/lease.lua).
func (b *giveBack) member(i int) string {
	return leaseMember(b.id, b.n*b.rules[i].cost, b.ds[i].Now.Add(b.ds[i].ResetAfter))
}

// giveBack returns a lease's unused units, rule by rule (each alone is a
// correct give-back; none needs the others). Errors are logged: units not
// given back are under-admission until the window or bucket forgets them.
func (l *leases) giveBack(b *giveBack) {
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	for i, r := range b.rules {
		reset := b.ds[i].Now.Add(b.ds[i].ResetAfter)
		if _, err := l.scripts.refund(ctx, r, b.id, b.n*r.cost, b.left*r.cost, reset); err != nil {
			l.log.Warn("lease give-back failed", "err", err, "units", b.left*r.cost)
		}
	}
}

// sweep ends leases that aged out, and forgets idle rule sets, every
// leaseMaxAge/5 until Close.
func (l *leases) sweep() {
	defer close(l.done)
	t := time.NewTicker(leaseMaxAge / 5)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.expire(l.now())
		}
	}
}

// expire gives back the leases that ended by now (all of them once closed),
// ends in Redis those used up that no new lease ended, and forgets rule
// sets unused for a few lease ages.
func (l *leases) expire(now time.Time) {
	l.ending.Lock()
	defer l.ending.Unlock()
	var backs []*giveBack
	closed := l.closed.Load()
	l.entries.Range(func(k, v any) bool {
		e := v.(*lease)
		e.mu.Lock()
		if closed || !now.Before(e.until) || e.left == 0 && !e.taking {
			if b := e.end(); b != nil {
				backs = append(backs, b)
			}
		}
		if e.left == 0 && !e.taking && now.Sub(e.used) > 4*leaseMaxAge {
			e.gone = true
			l.entries.Delete(k)
			l.count.Add(-1)
		}
		e.mu.Unlock()
		return true
	})
	for _, b := range backs {
		l.giveBack(b)
	}
}

// endAll ends every lease and forgets every rule set now, giving back the
// unused units before it returns: the next request of a rule set takes a
// lease anew, under the rules it then has.
func (l *leases) endAll() {
	l.ending.Lock()
	defer l.ending.Unlock()
	var backs []*giveBack
	l.entries.Range(func(k, v any) bool {
		e := v.(*lease)
		e.mu.Lock()
		if b := e.end(); b != nil {
			backs = append(backs, b)
		}
		// A lease being taken stays: it is taken after this call, under
		// the rules of the requests that take it.
		if !e.gone && !e.taking {
			e.gone = true
			l.entries.Delete(k)
			l.count.Add(-1)
		}
		e.mu.Unlock()
		return true
	})
	for _, b := range backs {
		l.giveBack(b)
	}
}

// leaseSetKey names the lease record of rules: every rule's key and all
// that decides it (algorithm, limit, cost, NoLease), so a lease is only
// ever used by the rules that took it. After a reload that changes any of
// them, requests find no lease (a new record is made, or none if the new
// rules are not leasable) and the old lease ends at its sweep.
func leaseSetKey(rules []Rule) string {
	b := make([]byte, 0, 64*len(rules))
	for _, r := range rules {
		b = append(b, r.Key...)
		b = append(b, 0)
		b = append(b, r.Algorithm.Name...)
		b = append(b, 0)
		b = strconv.AppendInt(b, int64(r.Limit.Requests), 10)
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(r.Limit.Window), 10)
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(r.Limit.Burst), 10)
		b = append(b, '/')
		b = append(b, r.Limit.Period...)
		if r.Limit.Location != nil {
			b = append(b, '/')
			b = append(b, r.Limit.Location.String()...)
		}
		b = append(b, '*')
		b = strconv.AppendInt(b, int64(r.Cost), 10)
		if r.NoLease {
			b = append(b, '!')
		}
		b = append(b, 0)
	}
	return string(b)
}

// close stops leasing and gives back every lease's unused units.
func (l *leases) close() {
	if !l.closed.CompareAndSwap(false, true) {
		return
	}
	close(l.stop)
	<-l.done
	l.expire(l.now())
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// instanceCount is how many instances share the quota.
func (l *leases) instanceCount() int {
	if l.instances == nil {
		return leaseInstances
	}
	return l.instances()
}

// len reports how many rule sets are tracked.
func (l *leases) len() int { return int(l.count.Load()) }

// EndLeases ends every lease of this engine now and gives back their unused
// units before it returns; leasing goes on with the next request, under the
// rules it then has. A reload calls it once the new policy is in force: no
// request is then admitted from a lease taken under the old one. Without
// leases it does nothing.
func (l *Limiter) EndLeases() {
	if l.leases != nil {
		l.leases.endAll()
	}
}
