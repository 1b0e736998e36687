package middleware

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// value reads a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// series counts the series a vector holds.
func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 100)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

func TestMetricsCountEveryRequestUnderItsLabels(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	o := Outcome{Policy: "p", Algorithm: "gcra", Result: ResultLimited, Took: time.Millisecond}
	for range 3 {
		m.observe("GET", "/continents", 429, 0.001, o, true)
	}
	m.observe("GET", "/continents", 200, 0.001, Outcome{Policy: "p", Algorithm: "gcra", Result: ResultAllowed}, true)
	m.observe("BREW", "unmatched", 404, 0.001, Outcome{}, false)
	m.observe("XYZZY", "unmatched", 404, 0.001, Outcome{}, false)

	for _, tt := range []struct {
		name string
		c    prometheus.Counter
		want float64
	}{
		{"GET 429", m.requests.WithLabelValues("GET", "/continents", "429"), 3},
		{"GET 200", m.requests.WithLabelValues("GET", "/continents", "200"), 1},
		{"unknown methods folded", m.requests.WithLabelValues("other", "unmatched", "404"), 2},
		{"limited", m.decisions.WithLabelValues("p", "gcra", ResultLimited), 3},
		{"allowed", m.decisions.WithLabelValues("p", "gcra", ResultAllowed), 1},
	} {
		if got := value(t, tt.c); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	if n := series(m.requests); n != 3 {
		t.Errorf("request series: %d, want 3 (no series per unknown method)", n)
	}
	if n := series(m.duration); n != 2 {
		t.Errorf("duration series: %d, want 2 (one per route)", n)
	}
}
