// Command simulate replays one bursty request trace through every rate-limiting
// algorithm on an embedded Redis with a steered clock, and draws the admitted
// and rejected requests over time as an SVG, one lane per algorithm.
//
//	go run ./cmd/simulate -o docs/algorithms.svg
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"tollgate/algorithms"
	"tollgate/limiter"
)

func main() {
	out := flag.String("o", "docs/algorithms.svg", "where to write the SVG")
	flag.Parse()
	if err := run(*out, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "simulate:", err)
		os.Exit(1)
	}
}

// lane is one algorithm's outcome for every request of the trace.
type lane struct {
	name    string
	allowed []bool
}

// The trace and the limit it is played against.
var (
	limit = algorithms.Limit{Requests: 10, Window: 10 * time.Second}
	span  = 40 * time.Second
)

func run(out string, stdout io.Writer) error {
	trace := bursty()
	var lanes []lane
	for _, name := range algorithms.Windowed() {
		allowed, err := replay(name, trace)
		if err != nil {
			return fmt.Errorf("replay %s: %w", name, err)
		}
		lanes = append(lanes, lane{name: name, allowed: allowed})
		fmt.Fprintf(stdout, "%-15s admitted %2d of %d\n", name, count(allowed), len(trace))
	}
	svg := draw(trace, lanes)
	if err := os.WriteFile(out, []byte(svg), 0o644); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	fmt.Fprintln(stdout, "wrote", out)
	return nil
}

// bursty is the request trace: offsets from the start (a window edge), in
// order. One request in a quiet first window, then bursts arrive on both
// sides of its end (at 10 s: windows align to the epoch), then sustained
// traffic at twice the limit, then, after a pause, a burst from idle.
func bursty() []time.Duration {
	tr := []time.Duration{500 * time.Millisecond}
	every := func(from, to, step time.Duration) {
		for t := from; t < to; t += step {
			tr = append(tr, t)
		}
	}
	ms := time.Millisecond
	every(9000*ms, 10000*ms, 100*ms)  // just before the first window closes
	every(10000*ms, 11000*ms, 100*ms) // just after
	every(14*time.Second, 30*time.Second, 500*ms)
	every(34*time.Second, 35500*ms, 100*ms)
	return tr
}

// replay runs trace through the algorithm called name on a fresh embedded
// Redis whose clock is set to each request's time.
func replay(name string, trace []time.Duration) ([]bool, error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("start miniredis: %w", err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	spec, err := algorithms.Lookup(name)
	if err != nil {
		return nil, err
	}
	engine := limiter.New(rdb, limiter.Options{})
	rules := []limiter.Rule{{Algorithm: spec, Limit: limit, Key: "sim:" + name + ":client"}}
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // on a window edge
	var allowed []bool
	for _, at := range trace {
		m.SetTime(start.Add(at))
		res, err := engine.Decide(context.Background(), rules)
		if err != nil {
			return nil, fmt.Errorf("decide at %v: %w", at, err)
		}
		allowed = append(allowed, res.Allowed)
	}
	return allowed, nil
}

func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// Picture geometry, in SVG user units.
const (
	width     = 1000.0
	left      = 170.0 // lane labels
	right     = 30.0
	top       = 78.0 // title and legend
	laneH     = 56.0
	tickW     = 1.6
	bottomPad = 50.0 // axis labels
)

// draw renders the lanes as an SVG: admitted requests as green ticks above
// each lane's midline, rejected ones as red ticks below it.
func draw(trace []time.Duration, lanes []lane) string {
	plotW := width - left - right
	height := top + laneH*float64(len(lanes)) + bottomPad
	x := func(d time.Duration) float64 { return left + plotW*d.Seconds()/span.Seconds() }

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="Helvetica, Arial, sans-serif" font-size="13">`,
		width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>`)
	p(`<text x="%.0f" y="24" font-size="16" font-weight="bold">One bursty trace (%d requests) through every algorithm: limit %d per %v</text>`,
		left-150, len(trace), limit.Requests, limit.Window)

	// Legend.
	p(`<rect x="%.0f" y="40" width="4" height="14" fill="#2e9d45"/><text x="%.0f" y="52">admitted</text>`, left, left+10)
	p(`<rect x="%.0f" y="40" width="4" height="14" fill="#d33c3c"/><text x="%.0f" y="52">rejected (429)</text>`, left+100, left+110)

	// Grid and time axis.
	axisY := top + laneH*float64(len(lanes))
	for t := time.Duration(0); t <= span; t += 5 * time.Second {
		p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#bbb" stroke-dasharray="4 3"/>`, x(t), top-6, x(t), axisY)
	}
	p(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, left, axisY, width-right, axisY)
	for t := time.Duration(0); t <= span; t += 5 * time.Second {
		p(`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="black"/>`, x(t), axisY, x(t), axisY+5)
		p(`<text x="%.1f" y="%.0f" text-anchor="middle">%.0f</text>`, x(t), axisY+19, t.Seconds())
	}
	p(`<text x="%.0f" y="%.0f" text-anchor="middle">time (s)</text>`, left+plotW/2, axisY+40)

	// Lanes.
	for i, l := range lanes {
		y := top + laneH*float64(i)
		mid := y + laneH/2
		if i%2 == 0 {
			p(`<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="#f4f4f4"/>`, left, y, plotW, laneH)
		}
		p(`<text x="%.0f" y="%.0f" font-weight="bold">%s</text>`, left-150, mid-3, l.name)
		p(`<text x="%.0f" y="%.0f" fill="#444">%d of %d admitted</text>`, left-150, mid+14, count(l.allowed), len(trace))
		p(`<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ccc"/>`, left, mid, width-right, mid)
		for j, at := range trace {
			if l.allowed[j] {
				p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#2e9d45"/>`, x(at)-tickW/2, y+6, tickW, laneH/2-8)
			} else {
				p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d33c3c"/>`, x(at)-tickW/2, mid+2, tickW, laneH/2-8)
			}
		}
	}
	p(`</svg>`)
	return b.String()
}
