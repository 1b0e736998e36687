package main

import (
	"fmt"
	"strings"
)

// targetRow is one of issue 22's targets (its section 3) and this run's
// figure for it. Every target is a ratio of two figures of the same run.
type targetRow struct {
	target   string  // what is measured and the bound, as the issue says it
	figure   string  // this run's figure, as the report shows it
	value    float64 // the figure the bound applies to
	atLeast  bool    // value must be ≥ bound; else ≤
	bound    float64
	measured bool // false: this run has no figure for it
}

func (t targetRow) verdict() string {
	switch {
	case !t.measured:
		return "**not measured**"
	case t.atLeast && t.value >= t.bound, !t.atLeast && t.value <= t.bound:
		return "met"
	default:
		return "**not met**"
	}
}

// named is a figure of one algorithm (or configuration).
type named struct {
	name  string
	value float64
}

// worstBest returns the smallest and the largest of xs (higher is better).
func worstBest(xs []named) (worst, best named) {
	for i, x := range xs {
		if i == 0 || x.value < worst.value {
			worst = x
		}
		if i == 0 || x.value > best.value {
			best = x
		}
	}
	return worst, best
}

// everyAlgorithm is the row of a target every algorithm must meet (the
// worst decides), showing the worst and the best.
func everyAlgorithm(target string, bound float64, xs []named, extra string) targetRow {
	row := targetRow{target: target, atLeast: true, bound: bound, measured: len(xs) > 0}
	if row.measured {
		worst, best := worstBest(xs)
		row.value = worst.value
		row.figure = fmt.Sprintf("%.2f× (worst: %s) to %.2f× (best: %s)%s", worst.value, worst.name, best.value, best.name, extra)
	}
	return row
}

// targetRows computes every target of issue 22 from this run's figures.
func (r *report) targetRows() []targetRow {
	var rows []targetRow

	// Redis µs per script call ÷ ulule's, section 3.
	var peer *scriptUsec
	for i := range r.usec {
		if r.usec[i].subject == "ulule" {
			peer = &r.usec[i]
		}
	}
	usecBounds := []struct {
		algorithm string
		bound     float64
	}{{"fixed_window", 1.2}, {"sliding_window", 1.4}, {"token_bucket", 1.5}, {"gcra", 1.5}, {"sliding_log", 2.5}}
	for _, t := range usecBounds {
		row := targetRow{target: fmt.Sprintf("Redis µs per script call ÷ ulule/limiter's, %s ≤ %.1f", t.algorithm, t.bound), bound: t.bound}
		for _, u := range r.usec {
			if u.subject == t.algorithm && peer != nil {
				row.value, row.measured = median(u.ratio), true
				row.figure = fmt.Sprintf("%.2f× (%.1f µs; ulule/limiter %.1f µs)", row.value, median(u.usec), median(peer.usec))
			}
		}
		rows = append(rows, row)
	}

	// End to end, section 4: each ratio within a repetition (the
	// configurations run interleaved), then their median, as the table's
	// "× limiter off".
	vs := func(a, b e2eResult) float64 {
		var rs []float64
		for i := range min(len(a.samples), len(b.samples)) {
			if b.samples[i].rps > 0 {
				rs = append(rs, a.samples[i].rps/b.samples[i].rps)
			}
		}
		return median(rs)
	}
	var off, bare, lease *e2eResult
	var admitted, denied []*e2eResult
	for i := range r.e2e {
		e := &r.e2e[i]
		switch name := e.cfg.name; {
		case e.cfg.kind == peerBare:
			bare = e
		case e.cfg.kind != "tollgate":
		case e.cfg.env["RATE_LIMIT_ENABLED"] == "false":
			off = e
		case strings.HasSuffix(name, ", all admitted, leases on"):
			lease = e
		case strings.HasSuffix(name, ", all admitted"):
			admitted = append(admitted, e)
		case strings.HasSuffix(name, ", all denied"):
			denied = append(denied, e)
		}
	}
	overOff := func(es []*e2eResult, suffix string) []named {
		var xs []named
		for _, e := range es {
			if off != nil {
				xs = append(xs, named{strings.TrimSuffix(e.cfg.name, suffix), vs(*e, *off)})
			}
		}
		return xs
	}
	row := targetRow{target: "limiter off ÷ bare gin (the service's request log on) ≥ 0.85", atLeast: true, bound: 0.85}
	if off != nil && bare != nil {
		row.value, row.measured = vs(*off, *bare), true
		row.figure = fmt.Sprintf("%.2f× (%.0f ÷ %.0f req/s)", row.value, median(rpsOf(*off)), median(rpsOf(*bare)))
	}
	rows = append(rows, row)
	// A row whose requests were not all decided by Redis (timeouts under
	// load answered in local mode) measures something else: say so.
	var unfair string
	for _, e := range admitted {
		var calls, reqs int64
		for _, s := range e.samples {
			calls, reqs = calls+s.evalsha, reqs+s.requests
		}
		if c := ratio(calls, reqs); reqs > 0 && c < 0.98 {
			unfair += fmt.Sprintf("; %s: %.3f script calls per request, so some were decided without Redis (local mode after timeouts), which flatters it", strings.TrimSuffix(e.cfg.name, ", all admitted"), c)
		}
	}
	rows = append(rows, everyAlgorithm("all admitted, no lease ÷ limiter off ≥ 0.7, every algorithm", 0.7,
		overOff(admitted, ", all admitted"), unfair))
	row = targetRow{target: "all admitted, leases ÷ limiter off ≥ 0.95 (fixed_window)", atLeast: true, bound: 0.95}
	if lease != nil && off != nil {
		row.value, row.measured = vs(*lease, *off), true
		row.figure = fmt.Sprintf("%.2f×", row.value)
	}
	rows = append(rows, row)
	rows = append(rows, everyAlgorithm("all denied ÷ limiter off ≥ 0.95, every algorithm", 0.95,
		overOff(denied, ", all denied"), ""))

	// Decisions per second from Go, section 2: the engine as the service
	// builds it by default (pipelined), leases off, 64 goroutines.
	for _, keys := range []string{"spread", "hot"} {
		var bestPeer named
		for _, d := range r.decisions {
			if d.goroutines == 64 && d.keys == keys && isPeer(d.subject) && d.perSec > bestPeer.value {
				bestPeer = named{d.subject, d.perSec}
			}
		}
		var xs []named
		for _, d := range r.decisions {
			if d.goroutines == 64 && d.keys == keys && bestPeer.value > 0 && strings.HasSuffix(d.subject, " +pipeline") {
				name := strings.TrimSuffix(strings.TrimPrefix(d.subject, "tollgate "), " +pipeline")
				xs = append(xs, named{name, d.perSec / bestPeer.value})
			}
		}
		rows = append(rows, everyAlgorithm(
			fmt.Sprintf("decisions/s through the engine, no lease, %s keys ÷ best peer ≥ 1.5, every algorithm", keys), 1.5,
			xs, fmt.Sprintf("; best peer: %s, %.0f/s", bestPeer.name, bestPeer.value)))
	}

	// Redis calls per admitted request with leases, section 4.
	row = targetRow{target: "Redis calls per admitted request with leases ≤ 0.01", bound: 0.01}
	if lease != nil {
		var calls, ok int64
		for _, s := range lease.samples {
			calls, ok = calls+s.evalsha, ok+s.requests-s.non2xx
		}
		row.value, row.measured = ratio(calls, ok), ok > 0
		row.figure = fmt.Sprintf("%.4f (%d script calls, %d admitted requests)", row.value, calls, ok)
	}
	rows = append(rows, row)
	return rows
}

// rpsOf lists the req/s of each of e's repetitions.
func rpsOf(e e2eResult) []float64 {
	var xs []float64
	for _, s := range e.samples {
		xs = append(xs, s.rps)
	}
	return xs
}

// targets writes the Targets section: issue 22's targets, this run's
// figures, and where each figure comes from.
func (r *report) targets(p func(string, ...any)) {
	p("## Targets")
	p("")
	p("Issue 22's targets (its section 3), each a ratio of two figures of this run:")
	p("")
	p("| target | this run | |")
	p("|---|---|---|")
	for _, t := range r.targetRows() {
		figure := t.figure
		if !t.measured {
			figure = "–"
		}
		p("| %s | %s | %s |", t.target, figure, t.verdict())
	}
	p("")
	p("Where each figure comes from:")
	p("")
	p("- *Redis µs per script call ÷ ulule/limiter's*: section 3's *× ulule*, the median over the repetitions of")
	p("  the algorithm's µs per EVALSHA over ulule/limiter's in the same repetition.")
	p("- *limiter off ÷ bare gin*: section 4, the median over the repetitions of the two req/s' ratio. *limiter off*")
	p("  is the service (`RATE_LIMIT_ENABLED=false`) with the rest of its stack: request log on (one JSON line per")
	p("  request), metrics, request id, identity; *bare gin* is a tiny gin server serving the same records without")
	p("  any of them.")
	p("- *all admitted, no lease*, *all admitted, leases* and *all denied* ÷ limiter off: section 4's *× limiter off*,")
	p("  each repetition's ratio to *limiter off* of the same repetition, then the median. No lease:")
	p("  `RATE_LIMIT_LEASE=off`, limit 10⁹ per hour (sliding_log 10⁶); leases: fixed_window, `RATE_LIMIT_LEASE=auto`,")
	p("  10⁹ per hour; all denied: limit 1 per hour, the deny cache on. Where every algorithm is measured, the worst")
	p("  must meet the target.")
	p("- *decisions/s through the engine ÷ best peer*: section 2's *× best peer* of the `+pipeline` rows (the engine")
	p("  as the service builds it by default, leases off), 64 goroutines; the best peer is the faster of")
	p("  redis_rate and ulule/limiter on the same keys. The worst algorithm must meet the target.")
	p("- *Redis calls per admitted request with leases*: script calls (EVALSHA and EVAL: the engine reaches Redis")
	p("  only through scripts) during *fixed_window, all admitted, leases on*, over the requests answered 200,")
	p("  every repetition together.")
	p("")
	p("What bounds a miss is measured below, not guessed: *Redis CPU* in 2. shows how near Redis's one thread is")
	p("to saturation, and section 3 how much of it each script takes. The *all denied* rows run the same code")
	p("(answers from the deny cache, no Redis), so their spread is this machine's run-to-run noise. End to end,")
	p("*limiter off* against *fixed_window, all admitted* is what Tollgate's limiter costs the service, and")
	p("*fixed_window, all admitted* against *ulule/limiter gin middleware on the service's stack* compares the two")
	p("limiters alone.")
	p("")
}
