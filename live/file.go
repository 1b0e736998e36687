package live

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
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tollgate/policy"
)

// Poll is how often the policy files are stat'ed to see whether they
// changed, when nothing says so sooner (SIGHUP). A file is read only when
// its stat changed, and loaded once it stayed the same for twice as long
// (Watch.Settle).
const Poll = 3 * time.Second

// MaxFile bounds a policy file's size (docs: Reload). A larger file is
// refused unread: real ones are a few KB, and a file read and hashed every
// few seconds must stay cheap.
const MaxFile = 1 << 20

// errFileSize is a policy file over MaxFile.
var errFileSize = errors.New("over the limit of 1 MiB for a policy file")

// ReadFile reads and checks the policy file at path exactly as start-up
// does, routes being the routes a policy may name, and returns its policies
// and version: the first 12 hex digits of its SHA-256. A file over MaxFile
// is refused unread.
func ReadFile(path string, routes []policy.Route) ([]policy.Policy, string, error) {
	text, err := readBounded(path)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(text)
	version := hex.EncodeToString(sum[:6])
	policies, err := policy.Parse(bytes.NewReader(text))
	if err == nil {
		err = errors.Join(policy.CheckRoutes(policies, routes), policy.CheckTiers(policies))
	}
	return policies, version, err
}

// readBounded reads the file at path if it has at most MaxFile bytes.
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
	if fi.Size() > MaxFile {
		return nil, fmt.Errorf("%d bytes: %w", fi.Size(), errFileSize)
	}
	text, err := io.ReadAll(io.LimitReader(f, MaxFile+1)) // it may grow while read
	if err != nil {
		return nil, err
	}
	if len(text) > MaxFile {
		return nil, fmt.Errorf("more than %d bytes: %w", MaxFile, errFileSize)
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
	read    func(path string) ([]policy.Policy, string, error) // ReadFile; tests count the reads
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
// (docs: write it elsewhere and rename it). An unchanged file is not read.
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
