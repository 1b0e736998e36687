package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	ulule "github.com/ulule/limiter/v3"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"tollgate/algorithms"
	"tollgate/limiter"
)

// The service's defaults (config), measured here: the pipeline
// (RATE_LIMIT_PIPELINE_BATCH, RATE_LIMIT_PIPELINE_WINDOW; the engine's own
// number of batches under way) and the deny cache (RATE_LIMIT_DENY_CACHE_SIZE).
const (
	pipeBatch     = 16
	pipeWindow    = 0
	pipeConns     = 2 // the engine's default
	denyCacheSize = 10_000
)

// decisionRun is one subject, one key pattern, one concurrency.
type decisionRun struct {
	subject    string
	keys       string // "spread" (10,000 keys) or "hot" (one key)
	goroutines int
	n          int64
	errors     int64
	perSec     float64
	p50, p99   time.Duration
	scriptUsec float64 // µs Redis spent per script call (EVALSHA), commands inside included
	redisCPU   float64 // redis-server's CPU time over the run's wall time: 1 is its one thread saturated
}

// decider is one limiter under test: decide once for key.
type decider func(ctx context.Context, key string) error

// limit admits everything during a run: the cost of a decision, not of a denial.
var benchLimit = algorithms.Limit{Requests: 1_000_000_000, Window: time.Hour}

// admitting is benchLimit, or for an algorithm that refuses it (sliding_log
// keeps an entry per request: at most 10⁶) 10⁶ an hour, which no run reaches
// on one key either.
func admitting(algorithm string) algorithms.Limit {
	if benchLimit.ValidateFor(algorithm) == nil {
		return benchLimit
	}
	return algorithms.Limit{Requests: 1_000_000, Window: time.Hour}
}

// measureDecisions calls every limiter from 64 goroutines (and Tollgate's
// from one, with and without the pipeline) and records decisions/s and latency.
// Tollgate's rows decide the way the service does, without ("plain") and with
// ("+pipeline") the pipeline.
func measureDecisions(ctx context.Context, log *slog.Logger, s *redisServer, dur time.Duration) ([]decisionRun, error) {
	rdb := s.client(64)
	defer rdb.Close()
	type subject struct {
		name string
		make func(prefix string) (decider, func(), error)
	}
	var subjects []subject
	// The engine as main.go builds it: deny cache, timeout (RATE_LIMIT_TIMEOUT's
	// default, 100ms), circuit breaker, scripts with the rules' modules, on
	// the pipeline or (RATE_LIMIT_PIPELINE_BATCH=0) on the client itself; one
	// rule per request, as the default policy has.
	chain := func(name string, pipelined bool, lease ...bool) func(prefix string) (decider, func(), error) {
		return func(prefix string) (decider, func(), error) {
			o := limiter.Options{Timeout: 100 * time.Millisecond, DenyCacheSize: denyCacheSize, Lease: len(lease) > 0}
			if pipelined {
				o.PipelineBatch, o.PipelineWindow, o.PipelineConns = pipeBatch, pipeWindow, pipeConns
			}
			spec, err := algorithms.Lookup(name) // once, as a policy does at load
			if err != nil {
				return nil, nil, err
			}
			l := limiter.New(rdb, o)
			return func(ctx context.Context, key string) error {
				_, err := l.Decide(ctx, []limiter.Rule{{Algorithm: spec, Limit: admitting(name), Key: prefix + key}})
				return err
			}, l.Close, nil
		}
	}
	for _, name := range algorithms.Windowed() {
		subjects = append(subjects, subject{"tollgate " + name, chain(name, false)})
	}
	for _, name := range algorithms.Windowed() {
		subjects = append(subjects, subject{"tollgate " + name + " +pipeline", chain(name, true)})
	}
	// RATE_LIMIT_LEASE=auto: what the service does with a large limit.
	for _, s := range algorithms.Specs() {
		if s.LeaseFor != nil {
			subjects = append(subjects, subject{"tollgate " + s.Name + " +pipeline +lease", chain(s.Name, true, true)})
		}
	}
	subjects = append(subjects,
		subject{"redis_rate (GCRA)", func(prefix string) (decider, func(), error) {
			l := redis_rate.NewLimiter(rdb)
			lim := redis_rate.PerHour(benchLimit.Requests)
			return func(ctx context.Context, key string) error {
				_, err := l.Allow(ctx, prefix+key, lim)
				return err
			}, func() {}, nil
		}},
		subject{"ulule/limiter (fixed window)", func(prefix string) (decider, func(), error) {
			store, err := sredis.NewStoreWithOptions(rdb, ulule.StoreOptions{Prefix: prefix, MaxRetry: 3})
			if err != nil {
				return nil, nil, err
			}
			l := ulule.New(store, ulule.Rate{Period: time.Hour, Limit: int64(benchLimit.Requests)})
			return func(ctx context.Context, key string) error {
				_, err := l.Get(ctx, key)
				return err
			}, func() {}, nil
		}},
	)
	var runs []decisionRun
	one := func(sub subject, keys string, goroutines int, d time.Duration) error {
		if err := s.flush(ctx); err != nil {
			return err
		}
		dec, done, err := sub.make("b:")
		if err != nil {
			return fmt.Errorf("%s: %w", sub.name, err)
		}
		defer done()
		cpu0, err := s.cpuTime()
		if err != nil {
			return err
		}
		wall0 := time.Now()
		r := drive(ctx, dec, keys, goroutines, d)
		cpu1, err := s.cpuTime()
		if err != nil {
			return err
		}
		r.redisCPU = (cpu1 - cpu0).Seconds() / time.Since(wall0).Seconds()
		r.subject = sub.name
		calls, usec, err := s.commandStatsUsec(ctx)
		if err != nil {
			return err
		}
		if n := calls["evalsha"] + calls["eval"]; n > 0 {
			r.scriptUsec = float64(usec["evalsha"]+usec["eval"]) / float64(n)
		}
		log.Info("decisions", "subject", sub.name, "keys", keys, "goroutines", goroutines, "per_sec", int(r.perSec), "p99", r.p99.String(), "redis_cpu", fmt.Sprintf("%.2f", r.redisCPU), "script_usec", fmt.Sprintf("%.1f", r.scriptUsec), "errors", r.errors)
		runs = append(runs, r)
		return nil
	}
	for _, keys := range []string{"spread", "hot"} {
		for _, sub := range subjects {
			if err := one(sub, keys, 64, dur); err != nil {
				return nil, err
			}
		}
	}
	ping := subject{"go-redis PING (no limiter)", func(string) (decider, func(), error) {
		return func(ctx context.Context, _ string) error { return rdb.Ping(ctx).Err() }, func() {}, nil
	}}
	if err := one(ping, "spread", 64, dur); err != nil {
		return nil, err
	}
	// One caller: the pipeline must cost nothing measurable when there is
	// nothing to batch.
	for _, sub := range subjects[:2*len(algorithms.Windowed())] { // plain and +pipeline
		if err := one(sub, "spread", 1, dur/3); err != nil {
			return nil, err
		}
	}
	return runs, nil
}

// drive calls dec from goroutines for d and measures every call.
func drive(ctx context.Context, dec decider, keys string, goroutines int, d time.Duration) decisionRun {
	var keyNames []string
	if keys == "hot" {
		keyNames = []string{"hot"}
	} else {
		for i := range 10_000 {
			keyNames = append(keyNames, "k"+strconv.Itoa(i))
		}
	}
	lat := make([][]time.Duration, goroutines)
	errs := make([]int64, goroutines)
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for g := range goroutines {
		wg.Go(func() {
			out := make([]time.Duration, 0, 1<<16)
			for i := g; ; i += goroutines {
				t0 := time.Now()
				if !t0.Before(stop) || ctx.Err() != nil {
					break
				}
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				if err := dec(cctx, keyNames[i%len(keyNames)]); err != nil {
					errs[g]++
				}
				cancel()
				out = append(out, time.Since(t0))
			}
			lat[g] = out
		})
	}
	wg.Wait()
	took := time.Since(start)
	var all []time.Duration
	var nerr int64
	for g := range goroutines {
		all = append(all, lat[g]...)
		nerr += errs[g]
	}
	slices.Sort(all)
	r := decisionRun{keys: keys, goroutines: goroutines, n: int64(len(all)), errors: nerr}
	if len(all) > 0 {
		r.perSec = float64(len(all)) / took.Seconds()
		r.p50 = all[len(all)/2]
		r.p99 = all[len(all)*99/100]
	}
	return r
}

// allocRow is one line of go test -benchmem.
type allocRow struct {
	name                         string
	nsPerOp, bPerOp, allocsPerOp float64
}
