package models

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm/logger"
)

// errorPeriod is how often failed queries are logged at most: a database
// that is down fails every credential check and every overrides refresh,
// and one line per query would flood the log (docs/operating.md).
const errorPeriod = 10 * time.Second

// throttle lets one event through per period and counts those it held back.
type throttle struct {
	period time.Duration
	now    func() time.Time
	mu     sync.Mutex
	last   time.Time
	held   int
}

// allow reports whether an event may be logged now, and how many were held
// back since the last one that was.
func (th *throttle) allow() (ok bool, heldBack int) {
	th.mu.Lock()
	defer th.mu.Unlock()
	now := th.now()
	if !th.last.IsZero() && now.Sub(th.last) < th.period {
		th.held++
		return false, 0
	}
	heldBack = th.held
	th.last, th.held = now, 0
	return true, heldBack
}

// queryLog is GORM's slog logger with failed queries logged at most once
// per errorPeriod, with the number held back. The callers get every error
// and handle it; the log only needs to say that queries fail.
type queryLog struct {
	logger.Interface
	log    *slog.Logger
	failed *throttle
}

func newQueryLog(log *slog.Logger) queryLog {
	return queryLog{
		Interface: logger.NewSlogLogger(log, logger.Config{
			SlowThreshold:             200 * time.Millisecond,
			LogLevel:                  logger.Warn,
			IgnoreRecordNotFoundError: true,
			ParameterizedQueries:      true, // never log values (password hashes)
		}),
		log:    log,
		failed: &throttle{period: errorPeriod, now: time.Now},
	}
}

// LogMode keeps the throttle: GORM calls it for sessions in Debug mode.
func (q queryLog) LogMode(level logger.LogLevel) logger.Interface {
	q.Interface = q.Interface.LogMode(level)
	return q
}

// ParamsFilter leaves the values out of logged statements: they may be
// password hashes or keys' digests.
func (q queryLog) ParamsFilter(_ context.Context, sql string, _ ...any) (string, []any) {
	return sql, nil
}

// Trace logs a failed query (at most once per errorPeriod) or a slow one.
func (q queryLog) Trace(ctx context.Context, begin time.Time, fc func() (sql string, rowsAffected int64), err error) {
	if err == nil || errors.Is(err, logger.ErrRecordNotFound) {
		q.Interface.Trace(ctx, begin, fc, err)
		return
	}
	ok, heldBack := q.failed.allow()
	if !ok {
		return
	}
	sql, _ := fc()
	q.log.ErrorContext(ctx, "database query failed", "sql", sql, "err", err,
		"duration_ms", time.Since(begin).Milliseconds(), "suppressed", heldBack)
}

// driverLog is the MySQL driver's logger (it reports broken connections
// on its own, once per bad packet): warnings of the service's log, at most
// once per errorPeriod.
type driverLog struct {
	log  *slog.Logger
	warn *throttle
}

func (d driverLog) Print(v ...any) {
	if ok, heldBack := d.warn.allow(); ok {
		d.log.Warn("mysql driver", "detail", fmt.Sprint(v...), "suppressed", heldBack)
	}
}
