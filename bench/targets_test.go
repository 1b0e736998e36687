package main

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTargetRows feeds targetRows one run's figures, two repetitions, and
// checks each target's figure and verdict: ratios within a repetition, then
// the median; the worst algorithm decides.
func TestTargetRows(t *testing.T) {
	tollgate := func(name string, env map[string]string, rps ...float64) e2eResult {
		e := e2eResult{cfg: e2eConfig{name: name, kind: "tollgate", env: env}}
		for _, v := range rps {
			e.samples = append(e.samples, e2eSample{rps: v, requests: int64(v) * 10, evalsha: int64(v) * 10})
		}
		return e
	}
	lease := tollgate("fixed_window, all admitted, leases on", nil, 950, 980)
	lease.samples[0].evalsha, lease.samples[1].evalsha = 50, 49 // 99 calls, 19,300 requests
	local := tollgate("gcra, all admitted", nil, 900, 900)
	local.samples[1].evalsha = 4500 // 13,500 calls, 18,000 requests: a quarter decided locally
	bare := e2eResult{cfg: e2eConfig{name: "bare gin", kind: peerBare}, samples: []e2eSample{{rps: 1000}, {rps: 1250}}}
	r := report{
		usec: []scriptUsec{
			{subject: "fixed_window", usec: []float64{12, 13}, ratio: []float64{1.2, 1.3}},
			{subject: "sliding_window", usec: []float64{14}, ratio: []float64{1.4}},
			{subject: "token_bucket", usec: []float64{15}, ratio: []float64{1.5}},
			{subject: "gcra", usec: []float64{16}, ratio: []float64{1.6}},
			{subject: "sliding_log", usec: []float64{20}, ratio: []float64{2.0}},
			{subject: "ulule", usec: []float64{10, 10}, ratio: []float64{1, 1}},
		},
		decisions: []decisionRun{
			{subject: "tollgate fixed_window +pipeline", keys: "spread", goroutines: 64, perSec: 1600},
			{subject: "tollgate gcra +pipeline", keys: "spread", goroutines: 64, perSec: 1500},
			{subject: "tollgate gcra +pipeline +lease", keys: "spread", goroutines: 64, perSec: 100},
			{subject: "tollgate gcra", keys: "spread", goroutines: 64, perSec: 100},
			{subject: "tollgate gcra +pipeline", keys: "spread", goroutines: 1, perSec: 10},
			{subject: "redis_rate (GCRA)", keys: "spread", goroutines: 64, perSec: 900},
			{subject: "ulule/limiter (fixed window)", keys: "spread", goroutines: 64, perSec: 1000},
			{subject: "tollgate fixed_window +pipeline", keys: "hot", goroutines: 64, perSec: 2000},
			{subject: "ulule/limiter (fixed window)", keys: "hot", goroutines: 64, perSec: 1000},
		},
		e2e: []e2eResult{
			tollgate("limiter off", map[string]string{"RATE_LIMIT_ENABLED": "false"}, 1000, 1000),
			tollgate("fixed_window, all admitted", nil, 700, 800),
			local,
			lease,
			tollgate("fixed_window, all admitted, pipeline off", nil, 100, 100),
			tollgate("fixed_window, all denied", nil, 960, 950),
			tollgate("fixed_window, all denied, deny cache off", nil, 100, 100),
			{cfg: e2eConfig{name: "ulule/limiter gin middleware on a bare gin server, all admitted", kind: peerUlule},
				samples: []e2eSample{{rps: 10}, {rps: 10}}},
			bare,
		},
	}
	type row struct{ Target, Figure, Verdict string }
	var got []row
	for _, tr := range r.targetRows() {
		got = append(got, row{tr.target, tr.figure, tr.verdict()})
	}
	want := []row{
		{"Redis µs per script call ÷ ulule/limiter's, fixed_window ≤ 1.2", "1.30× (13.0 µs; ulule/limiter 10.0 µs)", "**not met**"},
		{"Redis µs per script call ÷ ulule/limiter's, sliding_window ≤ 1.4", "1.40× (14.0 µs; ulule/limiter 10.0 µs)", "met"},
		{"Redis µs per script call ÷ ulule/limiter's, token_bucket ≤ 1.5", "1.50× (15.0 µs; ulule/limiter 10.0 µs)", "met"},
		{"Redis µs per script call ÷ ulule/limiter's, gcra ≤ 1.5", "1.60× (16.0 µs; ulule/limiter 10.0 µs)", "**not met**"},
		{"Redis µs per script call ÷ ulule/limiter's, sliding_log ≤ 2.5", "2.00× (20.0 µs; ulule/limiter 10.0 µs)", "met"},
		{"limiter off ÷ bare gin (the service's request log on) ≥ 0.85", "1.00× (1000 ÷ 1250 req/s)", "met"},
		{"all admitted, no lease ÷ limiter off ≥ 0.7, every algorithm", "0.80× (worst: fixed_window) to 0.90× (best: gcra); gcra: 0.750 script calls per request, so some were decided without Redis (local mode after timeouts), which flatters it", "met"},
		{"all admitted, leases ÷ limiter off ≥ 0.95 (fixed_window)", "0.98×", "met"},
		{"all denied ÷ limiter off ≥ 0.95, every algorithm", "0.96× (worst: fixed_window) to 0.96× (best: fixed_window)", "met"},
		{"decisions/s through the engine, no lease, spread keys ÷ best peer ≥ 1.5, every algorithm",
			"1.50× (worst: gcra) to 1.60× (best: fixed_window); best peer: ulule/limiter (fixed window), 1000/s", "met"},
		{"decisions/s through the engine, no lease, hot keys ÷ best peer ≥ 1.5, every algorithm",
			"2.00× (worst: fixed_window) to 2.00× (best: fixed_window); best peer: ulule/limiter (fixed window), 1000/s", "met"},
		{"Redis calls per admitted request with leases ≤ 0.01", fmt.Sprintf("%.4f (99 script calls, 19300 admitted requests)", 99.0/19300), "met"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targetRows() mismatch (-want +got):\n%s", diff)
	}
}

// TestTargetRowsUnmeasured: a run without a figure says so rather than
// passing or failing the target.
func TestTargetRowsUnmeasured(t *testing.T) {
	for _, tr := range (&report{}).targetRows() {
		if got := tr.verdict(); got != "**not measured**" {
			t.Errorf("%s: verdict() = %q, want **not measured**", tr.target, got)
		}
	}
}
