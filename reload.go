package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/middleware"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/routes"
	"tollgate/username"
)

// policyPoll is how often the policy files are stat'ed to see whether they
// changed, when nothing says so sooner (SIGHUP). A file is read only when
// its stat changed, and loaded once it stayed the same for twice as long
// (policySettle).
const policyPoll = 3 * time.Second

// maxPolicyFile bounds a policy file's size (README: Reload). A larger file
// is refused unread: real ones are a few KB, and a file read and hashed
// every few seconds must stay cheap.
const maxPolicyFile = 1 << 20

// errPolicyFileSize is a policy file over maxPolicyFile.
var errPolicyFileSize = errors.New("over the limit of 1 MiB for a policy file")

// runOptions are what tests change in run; main leaves them at their defaults
// but for the reload signal.
type runOptions struct {
	reload     <-chan os.Signal // SIGHUP: read the policy files now
	policyPoll time.Duration    // how often the policy files are checked for changes
	// policySettle is how long a changed policy file must stay unchanged
	// before it is loaded (0: twice policyPoll).
	policySettle time.Duration
	now          func() time.Time // the clock overrides and remembered credentials expire by
	environ      func() []string  // the variables set, for the unknown-setting warnings; nil: none
}

// runOption changes one of run's options.
type runOption func(*runOptions)

// withReload makes each value on ch reload the policy files.
func withReload(ch <-chan os.Signal) runOption { return func(o *runOptions) { o.reload = ch } }

// withPolicyPoll checks the policy files every d.
func withPolicyPoll(d time.Duration) runOption { return func(o *runOptions) { o.policyPoll = d } }

// withPolicySettle loads a changed policy file once it stayed unchanged for d.
func withPolicySettle(d time.Duration) runOption { return func(o *runOptions) { o.policySettle = d } }

// withClock makes now the clock overrides and remembered credentials expire by.
func withClock(now func() time.Time) runOption { return func(o *runOptions) { o.now = now } }

// readPolicyFile reads and checks the policy file at path exactly as
// start-up does, and returns its policies and version: the first 12 hex
// digits of its SHA-256. A file over maxPolicyFile is refused unread.
func readPolicyFile(path string) ([]policy.Policy, string, error) {
	text, err := readBounded(path)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(text)
	version := hex.EncodeToString(sum[:6])
	policies, err := policy.Parse(bytes.NewReader(text))
	if err == nil {
		err = errors.Join(policy.CheckRoutes(policies, routes.Limited()), policy.CheckTiers(policies))
	}
	return policies, version, err
}

// readBounded reads the file at path if it has at most maxPolicyFile bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxPolicyFile {
		return nil, fmt.Errorf("%d bytes: %w", fi.Size(), errPolicyFileSize)
	}
	text, err := io.ReadAll(io.LimitReader(f, maxPolicyFile+1)) // it may grow while read
	if err != nil {
		return nil, err
	}
	if len(text) > maxPolicyFile {
		return nil, fmt.Errorf("more than %d bytes: %w", maxPolicyFile, errPolicyFileSize)
	}
	return text, nil
}

// fileStat is what stat says of a file that changes when it is written or
// renamed over: its size, modification time and identity (inode). A file
// that cannot be stat'ed has only err. The zero fileStat is none.
type fileStat struct {
	info os.FileInfo
	err  string
}

// statFile stats the file at path.
func statFile(path string) fileStat {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStat{err: err.Error()}
	}
	return fileStat{info: fi}
}

// same reports whether a and b say the same of the file.
func (a fileStat) same(b fileStat) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil && a.err == b.err
	}
	return a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime()) && os.SameFile(a.info, b.info)
}

// policyFile is one policy file a reloader keeps in use.
type policyFile struct {
	kind    string // "live" or "candidate", for logs
	path    string
	seen    string                                             // the version last read, valid or not
	read    func(path string) ([]policy.Policy, string, error) // readPolicyFile; tests count the reads
	settle  time.Duration                                      // how long a change must stay before it is loaded
	use     func(policies []policy.Policy, version string) error
	reloads *prometheus.CounterVec

	stat    fileStat  // the file when last read (zero: not yet read by the watcher)
	pending fileStat  // the file as changed since, not yet loaded
	since   time.Time // when pending was first seen
}

// check stats the file, and reloads it when it changed since it was last
// read and then stayed the same for the settle time: a file written in
// place is not read half-written, unless a write pauses longer than that
// (README: write it elsewhere and rename it). An unchanged file is not read.
func (f *policyFile) check(log *slog.Logger, now time.Time) {
	st := statFile(f.path)
	switch {
	case st.same(f.stat):
		f.pending = fileStat{}
	case !st.same(f.pending):
		f.pending, f.since = st, now
	case now.Sub(f.since) >= f.settle:
		f.reload(log, false, now)
	}
}

// reload reads the file, and uses it when it is valid and (unless forced)
// not what was last read. A file that cannot be read or fails the checks is
// refused, logged and counted; the policies in use stay. A file that
// changed while it was read (not forced) is left for the next check.
func (f *policyFile) reload(log *slog.Logger, forced bool, now time.Time) {
	before := statFile(f.path)
	policies, version, err := f.read(f.path)
	if after := statFile(f.path); !forced && !after.same(before) {
		f.pending, f.since = after, now
		return
	}
	f.stat, f.pending = before, fileStat{}
	if !forced && version == f.seen { // unchanged ("" when unreadable)
		return
	}
	f.seen = version
	trigger := "changed"
	if forced {
		trigger = "signal"
	}
	if err != nil {
		log.Error("policy file refused: the running policies keep serving", "file", f.kind, "path", f.path, "sha256", version, "trigger", trigger, "err", err)
		f.reloads.WithLabelValues("invalid").Inc()
		return
	}
	if err := f.use(policies, version); err != nil {
		log.Warn("overrides left out", "err", err)
	}
	f.reloads.WithLabelValues("ok").Inc()
	log.Info("policy file loaded", "file", f.kind, "path", f.path, "sha256", version, "trigger", trigger)
}

// watchPolicies reloads files on each value of reload, and checks them
// every poll (policyFile.check), until ctx is done.
func watchPolicies(ctx context.Context, log *slog.Logger, files []*policyFile, reload <-chan os.Signal, poll time.Duration) {
	if len(files) == 0 {
		return
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-reload:
			forced = true
		case <-tick.C:
		}
		now := time.Now()
		for _, f := range files {
			if forced {
				f.reload(log, true, now)
			} else {
				f.check(log, now)
			}
		}
	}
}

// newReloadMetrics registers tollgate_policy_reloads_total and
// tollgate_candidate_policy_reloads_total, and the info gauges of the
// versions in use, read from limit.
func newReloadMetrics(reg prometheus.Registerer, limit *middleware.RateLimit) (live, candidate *prometheus.CounterVec, err error) {
	live = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_policy_reloads_total",
		Help: "Reloads of RATE_LIMIT_POLICY_FILE (SIGHUP or a change on disk) by result: ok, or invalid (refused; the running policies keep serving).",
	}, []string{"result"})
	candidate = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_candidate_policy_reloads_total",
		Help: "Reloads of RATE_LIMIT_CANDIDATE_FILE by result: ok, or invalid (refused; the running candidate stays).",
	}, []string{"result"})
	for _, c := range []prometheus.Collector{live, candidate, versionInfo{limit,
		prometheus.NewDesc("tollgate_policy_info", "1, labelled with the first 12 hex digits of the SHA-256 of the policy file in use.", []string{"sha256"}, nil),
		prometheus.NewDesc("tollgate_candidate_policy_info", "1, labelled with the first 12 hex digits of the SHA-256 of the candidate policy file in use.", []string{"sha256"}, nil),
	}} {
		if err := reg.Register(c); err != nil {
			return nil, nil, err
		}
	}
	return live, candidate, nil
}

// versionInfo collects the info gauges from the limiter's snapshot, so a
// scrape never sees two versions or none.
type versionInfo struct {
	limit           *middleware.RateLimit
	live, candidate *prometheus.Desc
}

func (v versionInfo) Describe(ch chan<- *prometheus.Desc) { ch <- v.live; ch <- v.candidate }

func (v versionInfo) Collect(ch chan<- prometheus.Metric) {
	live, candidate, _ := v.limit.Versions()
	if live != "" {
		ch <- prometheus.MustNewConstMetric(v.live, prometheus.GaugeValue, 1, live)
	}
	if candidate != "" {
		ch <- prometheus.MustNewConstMetric(v.candidate, prometheus.GaugeValue, 1, candidate)
	}
}

// overridesTimeout bounds one read of the overrides.
const overridesTimeout = 5 * time.Second

// loadOverrides reads the overrides not expired at now, as the policies
// take them. A row that does not read as one (edited by hand) is left out
// and named in the error.
func loadOverrides(ctx context.Context, store *models.Store, now time.Time) ([]policy.Override, error) {
	ctx, cancel := context.WithTimeout(ctx, overridesTimeout)
	defer cancel()
	rows, err := store.Overrides(ctx, now)
	if err != nil {
		return nil, err
	}
	out := make([]policy.Override, 0, len(rows))
	var errs []error
	for _, r := range rows {
		o, err := overrideOf(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

// overrideOf is the row r as the policies take it.
func overrideOf(r models.OverrideRow) (policy.Override, error) {
	o := policy.Override{ID: r.ID, Policy: r.Policy, Limit: r.Requests, Window: time.Duration(r.WindowMS) * time.Millisecond}
	if r.ExpiresAt != nil {
		o.Expires = *r.ExpiresAt
	}
	user, hasUser := strings.CutPrefix(r.Subject, "user:")
	var err error
	switch {
	case hasUser:
		o.User = user
		if !username.Valid(user) {
			err = fmt.Errorf("%w: %q: want user:NAME of %s", policy.ErrOverride, r.Subject, username.Rule)
		}
	case strings.HasPrefix(r.Subject, "ip:"):
		_, o.Prefix, err = policy.ParseOverrideSubject(r.Subject)
	default:
		err = fmt.Errorf("%w: %q: want user:NAME or ip:CIDR", policy.ErrOverride, r.Subject)
	}
	if err == nil {
		err = policy.CheckOverride(o)
	}
	if err != nil {
		return policy.Override{}, fmt.Errorf("override %d: %w", r.ID, err)
	}
	return o, nil
}

// refreshOverrides reads the overrides every every, until ctx is done, and
// hands them to limit when they changed. While the database fails, the
// overrides last read stay (an expired one still stops applying: requests
// check the expiry themselves).
func refreshOverrides(ctx context.Context, log *slog.Logger, store *models.Store, limit *middleware.RateLimit, every time.Duration, now func() time.Time, last []policy.Override) {
	warn := middleware.NewThrottledLog(log, time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		overrides, err := loadOverrides(ctx, store, now())
		if err != nil && overrides == nil {
			warn.Warn("read overrides: keeping those last read", "err", err)
			continue
		}
		if slices.EqualFunc(overrides, last, sameOverride) {
			continue
		}
		last = overrides
		if err := errors.Join(err, limit.SetOverrides(overrides)); err != nil {
			log.Warn("overrides left out", "err", err)
		}
		log.Info("overrides loaded", "count", len(overrides))
	}
}

func sameOverride(a, b policy.Override) bool {
	return a.ID == b.ID && a.User == b.User && a.Prefix == b.Prefix && a.Policy == b.Policy &&
		a.Limit == b.Limit && a.Window == b.Window && a.Expires.Equal(b.Expires)
}
