package middleware

import (
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus series the middleware records.
type Metrics struct {
	decisions   *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	redisErrors prometheus.Counter
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	candidate   *prometheus.CounterVec
	// asideDropped: candidate and shadow decisions dropped (Outcome.AsideDropped).
	asideDropped prometheus.Counter
	refunds      *prometheus.CounterVec
	waits        prometheus.Histogram

	// The series requests touch, by label values, so that a request does
	// not hash its labels into each vector: every label comes from a small
	// set (methods are folded, routes are patterns, policies configured).
	requestSeries   children[requestLabels, prometheus.Counter]
	durationSeries  children[string, prometheus.Observer]
	decisionSeries  children[decisionLabels, prometheus.Counter]
	latencySeries   children[string, prometheus.Observer]
	candidateSeries children[CandidateRef, prometheus.Counter]
}

type requestLabels struct {
	method, route string
	status        int
}

type decisionLabels struct {
	policy, algorithm, result string
}

// children caches one vector's series by their label values. Requests only
// read the map, with no lock (a shared lock's counter is a write every core
// contends for); a new series replaces the map with a copy, rarely.
type children[K comparable, V any] struct {
	mu sync.Mutex // held to add a series
	m  atomic.Pointer[map[K]V]
}

func (c *children[K, V]) get(k K, newSeries func(K) V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[K]V{}
	if old := c.m.Load(); old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
		m = maps.Clone(*old)
	}
	v := newSeries(k)
	m[k] = v
	c.m.Store(&m)
	return v
}

// knownMethod is method if it is a standard one, else "OTHER": a client can
// send any token as a method (50 KB of one is accepted), and each would be a
// new series and a log line as long. The request log and the metrics use it.
func knownMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "OTHER"
}

// NewMetrics creates the middleware's series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_decisions_total",
			Help: "Rate-limit decisions by policy, algorithm and result (allowed, limited, local_allowed, local_limited, failed_open, failed_closed, shadow_limited).",
		}, []string{"policy", "algorithm", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_ratelimit_call_duration_seconds",
			Help:    "Duration of one limiter call (one Redis round trip), by algorithm.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"algorithm"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_redis_errors_total",
			Help: "RateLimit calls that failed on Redis (errors and timeouts; not calls refused by the open circuit).",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_http_requests_total",
			Help: "HTTP requests by method, route pattern and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_http_request_duration_seconds",
			Help:    "HTTP request duration by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		candidate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_candidate_decisions_total",
			Help: "Decisions of the candidate policy file's limits (RATE_LIMIT_CANDIDATE_FILE), never enforced, by limit and result (allowed, limited, failed).",
		}, []string{"policy", "result"}),
		asideDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_candidate_dropped_total",
			Help: "Candidate and shadow decisions not made (each set of rules decided together one): too many were under way on the instance.",
		}),
		refunds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_refunds_total",
			Help: "Requests whose units went back to a policy's limits, their response's status being one of its refund_on.",
		}, []string{"policy"}),
		waits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tollgate_ratelimit_wait_seconds",
			Help:    "How long requests admitted for a later slot (a limit's delay) were held before being served.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	for _, c := range []prometheus.Collector{m.decisions, m.latency, m.redisErrors, m.requests, m.duration, m.candidate, m.asideDropped, m.refunds, m.waits} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) observe(method, route string, status int, seconds float64, o Outcome, decided bool) {
	if m == nil {
		return
	}
	m.requestSeries.get(requestLabels{knownMethod(method), route, status}, func(l requestLabels) prometheus.Counter {
		return m.requests.WithLabelValues(l.method, l.route, strconv.Itoa(l.status))
	}).Inc()
	m.durationSeries.get(route, func(route string) prometheus.Observer {
		return m.duration.WithLabelValues(route)
	}).Observe(seconds)
	if !decided {
		return
	}
	for _, s := range o.ShadowLimited {
		m.decision(s.Policy, s.Algorithm, ResultShadowLimited).Inc()
	}
	if o.AsideDropped > 0 {
		m.asideDropped.Add(float64(o.AsideDropped))
	}
	for _, ref := range o.Candidate {
		m.candidateSeries.get(ref, func(ref CandidateRef) prometheus.Counter {
			return m.candidate.WithLabelValues(ref.Policy, ref.Result)
		}).Inc()
	}
	if o.Waited > 0 {
		m.waits.Observe(o.Waited.Seconds())
	}
	for _, p := range o.Refunded {
		m.refunds.WithLabelValues(p).Inc()
	}
	if o.Policy == "" { // only shadow policies applied
		return
	}
	m.decision(o.Policy, o.Algorithm, o.Result).Inc()
	m.latencySeries.get(o.Algorithm, func(algorithm string) prometheus.Observer {
		return m.latency.WithLabelValues(algorithm)
	}).Observe(o.Took.Seconds())
	if o.RedisError {
		m.redisErrors.Inc()
	}
}

func (m *Metrics) decision(policy, algorithm, result string) prometheus.Counter {
	return m.decisionSeries.get(decisionLabels{policy, algorithm, result}, func(l decisionLabels) prometheus.Counter {
		return m.decisions.WithLabelValues(l.policy, l.algorithm, l.result)
	})
}
