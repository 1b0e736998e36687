package live

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/policy"
)

// OverrideSource reads the overrides not expired at now, as the policies
// take them (models.Store). With some rows left out, it returns the others
// and an error naming those.
type OverrideSource interface {
	PolicyOverrides(ctx context.Context, now time.Time) ([]policy.Override, error)
}

// warner logs warnings, throttled (middleware.ThrottledLog).
type warner interface {
	Warn(msg string, args ...any)
}

// Watch is what keeps the policies in force current while the service runs.
type Watch struct {
	// PolicyFile and CandidateFile are the files watched ("": none).
	// Version is the policy file's version in force (ReadFile), and
	// Candidate with CandidateVersion the candidate file read at start-up.
	PolicyFile, CandidateFile string
	Version, CandidateVersion string
	Routes                    []policy.Route   // the routes a policy may name (ReadFile)
	Reload                    <-chan os.Signal // SIGHUP: read the policy files now
	Poll                      time.Duration    // how often the files are checked for changes
	// Settle is how long a changed policy file must stay unchanged before
	// it is loaded (0: twice Poll).
	Settle time.Duration
	// Overrides are read every Refresh, by the clock Now.
	Overrides OverrideSource
	Refresh   time.Duration
	Now       func() time.Time
	// Warn takes the refresher's warnings (a database down for long would
	// make one per Refresh).
	Warn warner
}

// Start loads the overrides into p, and starts what keeps them and the
// policy files of w current while the service runs: the watcher of the
// files (and w.Reload) and the refresher of the overrides. They stop with
// ctx. The candidate file, read at start-up, is in p already
// (SetCandidate). The reload counters and version gauges are registered on
// reg.
//
// It returns a function that stops them and waits until they have.
func Start(ctx context.Context, log *slog.Logger, reg prometheus.Registerer, p *Policies, w Watch) (stop func(), err error) {
	liveReloads, candidateReloads, err := newReloadMetrics(reg, p)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	read := func(path string) ([]policy.Policy, string, error) { return ReadFile(path, w.Routes) }
	var files []*policyFile
	settle := cmp.Or(w.Settle, 2*w.Poll)
	if w.PolicyFile != "" {
		files = append(files, &policyFile{kind: "live", path: w.PolicyFile, seen: w.Version, read: read, settle: settle, use: p.SetPolicies, reloads: liveReloads})
	}
	if w.CandidateFile != "" {
		files = append(files, &policyFile{kind: "candidate", path: w.CandidateFile, seen: w.CandidateVersion, read: read, settle: settle, reloads: candidateReloads,
			use: func(pols []policy.Policy, v string) error { p.SetCandidate(pols, v); return nil }})
	}
	overrides, err := LoadOverrides(ctx, w.Overrides, w.Now())
	if overrides == nil && err != nil {
		return nil, err
	}
	if err := errors.Join(err, p.SetOverrides(overrides)); err != nil {
		log.Warn("overrides left out", "err", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { watchPolicies(ctx, log, files, w.Reload, w.Poll) })
	wg.Go(func() { refreshOverrides(ctx, log, w.Warn, w.Overrides, p, w.Refresh, w.Now, overrides) })
	return func() { cancel(); wg.Wait() }, nil
}

// newReloadMetrics registers tollgate_policy_reloads_total and
// tollgate_candidate_policy_reloads_total, and the info gauges of the
// versions in use, read from p.
func newReloadMetrics(reg prometheus.Registerer, p *Policies) (live, candidate *prometheus.CounterVec, err error) {
	live = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_policy_reloads_total",
		Help: "Reloads of RATE_LIMIT_POLICY_FILE (SIGHUP or a change on disk) by result: ok, or invalid (refused; the running policies keep serving).",
	}, []string{"result"})
	candidate = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_candidate_policy_reloads_total",
		Help: "Reloads of RATE_LIMIT_CANDIDATE_FILE by result: ok, or invalid (refused; the running candidate stays).",
	}, []string{"result"})
	for _, c := range []prometheus.Collector{live, candidate, versionInfo{p,
		prometheus.NewDesc("tollgate_policy_info", "1, labelled with the first 12 hex digits of the SHA-256 of the policy file in use.", []string{"sha256"}, nil),
		prometheus.NewDesc("tollgate_candidate_policy_info", "1, labelled with the first 12 hex digits of the SHA-256 of the candidate policy file in use.", []string{"sha256"}, nil),
	}} {
		if err := reg.Register(c); err != nil {
			return nil, nil, err
		}
	}
	return live, candidate, nil
}

// versionInfo collects the info gauges from the snapshot, so a scrape
// never sees two versions or none.
type versionInfo struct {
	p               *Policies
	live, candidate *prometheus.Desc
}

func (v versionInfo) Describe(ch chan<- *prometheus.Desc) { ch <- v.live; ch <- v.candidate }

func (v versionInfo) Collect(ch chan<- prometheus.Metric) {
	live, candidate, _ := v.p.Versions()
	if live != "" {
		ch <- prometheus.MustNewConstMetric(v.live, prometheus.GaugeValue, 1, live)
	}
	if candidate != "" {
		ch <- prometheus.MustNewConstMetric(v.candidate, prometheus.GaugeValue, 1, candidate)
	}
}

// overridesTimeout bounds one read of the overrides.
const overridesTimeout = 5 * time.Second

// LoadOverrides reads the overrides of src not expired at now, within a
// deadline of its own. A row that does not read as one (edited by hand) is
// left out and named in the error.
func LoadOverrides(ctx context.Context, src OverrideSource, now time.Time) ([]policy.Override, error) {
	ctx, cancel := context.WithTimeout(ctx, overridesTimeout)
	defer cancel()
	return src.PolicyOverrides(ctx, now)
}

// refreshOverrides reads the overrides every every, until ctx is done, and
// hands them to p when they changed. While the database fails, the
// overrides last read stay (an expired one still stops applying: requests
// check the expiry themselves).
func refreshOverrides(ctx context.Context, log *slog.Logger, warn warner, src OverrideSource, p *Policies, every time.Duration, now func() time.Time, last []policy.Override) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		overrides, err := LoadOverrides(ctx, src, now())
		if err != nil && overrides == nil {
			warn.Warn("read overrides: keeping those last read", "err", err)
			continue
		}
		if slices.EqualFunc(overrides, last, sameOverride) {
			continue
		}
		last = overrides
		if err := errors.Join(err, p.SetOverrides(overrides)); err != nil {
			log.Warn("overrides left out", "err", err)
		}
		log.Info("overrides loaded", "count", len(overrides))
	}
}

func sameOverride(a, b policy.Override) bool {
	return a.ID == b.ID && a.User == b.User && a.Prefix == b.Prefix && a.Policy == b.Policy &&
		a.Limit == b.Limit && a.Window == b.Window && a.Expires.Equal(b.Expires)
}
