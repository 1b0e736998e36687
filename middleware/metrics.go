package middleware

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus series the middleware records.
type Metrics struct {
	decisions   *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	redisErrors prometheus.Counter
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
}

// NewMetrics creates the middleware's series and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_ratelimit_decisions_total",
			Help: "Rate-limit decisions by policy, algorithm and result (allowed, limited, failed_open, failed_closed, shadow_limited).",
		}, []string{"policy", "algorithm", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tollgate_ratelimit_call_duration_seconds",
			Help:    "Duration of one limiter call (one Redis round trip), by algorithm.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"algorithm"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tollgate_redis_errors_total",
			Help: "Limiter calls that failed on Redis (errors and timeouts; not calls refused by the open circuit).",
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
	}
	for _, c := range []prometheus.Collector{m.decisions, m.latency, m.redisErrors, m.requests, m.duration} {
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
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route).Observe(seconds)
	if !decided {
		return
	}
	for _, s := range o.ShadowLimited {
		m.decisions.WithLabelValues(s.Policy, s.Algorithm, ResultShadowLimited).Inc()
	}
	if o.Policy == "" { // only shadow policies applied
		return
	}
	m.decisions.WithLabelValues(o.Policy, o.Algorithm, o.Result).Inc()
	m.latency.WithLabelValues(o.Algorithm).Observe(o.Took.Seconds())
	if o.RedisError {
		m.redisErrors.Inc()
	}
}
