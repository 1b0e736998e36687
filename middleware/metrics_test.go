package middleware

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
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
		{"unknown methods folded", m.requests.WithLabelValues("OTHER", "unmatched", "404"), 2},
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

// TestHugeMethodIsOTHER: net/http accepts any token as a method, 50 KB of
// one too; the access log and the metrics name it OTHER, so the log line
// stays short and no series is made per method.
func TestHugeMethodIsOTHER(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	r := gin.New()
	r.Use(RequestLog(slog.New(slog.NewJSONHandler(&logs, nil)), m))
	r.GET("/continents", func(c *gin.Context) { c.Status(http.StatusOK) })
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	method := strings.Repeat("X", 50<<10)
	fmt.Fprintf(conn, "%s /continents HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", method)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()

	line := logs.String()
	if len(line) > 1000 || strings.Contains(line, "XXXX") {
		t.Errorf("log of a 50 KB method: %d bytes %.200q..., want a short line", len(line), line)
	}
	if !strings.Contains(line, `"method":"OTHER"`) {
		t.Errorf("log %q lacks \"method\":\"OTHER\"", line)
	}
	if got := value(t, m.requests.WithLabelValues("OTHER", "unmatched", strconv.Itoa(resp.StatusCode))); got != 1 {
		t.Errorf("requests{method=OTHER} = %v, want 1", got)
	}
	if n := series(m.requests); n != 1 {
		t.Errorf("request series: %d, want 1", n)
	}
}

// syncBuffer is a bytes.Buffer safe for a server's goroutines and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
