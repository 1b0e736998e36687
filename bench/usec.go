package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	ulule "github.com/ulule/limiter/v3"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"tollgate/algorithms"
	"tollgate/limiter"
)

// usecGoroutines call each limiter in the usec measurement (as in issue
// 22's first measurement), over section 2's 10,000 spread keys.
const usecGoroutines = 8

// scriptUsec is Redis's time per script call of one subject, one figure per
// repetition.
type scriptUsec struct {
	subject string    // an algorithm's name, or "ulule"
	usec    []float64 // µs per EVALSHA, the commands the script runs included
	ratio   []float64 // usec ÷ ulule's usec of the same repetition
	calls   []int64   // script calls counted in each repetition
}

// measureScriptUsec measures only Redis's time per script call (INFO
// commandstats usec_per_call of EVALSHA, the commands a script runs
// included) of each windowed algorithm's plain decision and of ulule's
// script, from 8 goroutines over 10,000 keys, reps times interleaved. It is
// Redis-side CPU time: noisy on a loaded machine, hence the repetitions.
// ulule's row comes last; every other row's ratio is taken against ulule's
// figure of the same repetition.
func measureScriptUsec(ctx context.Context, log *slog.Logger, s *redisServer, d time.Duration, reps int) ([]scriptUsec, error) {
	rdb := s.client(usecGoroutines)
	defer rdb.Close()
	type subject struct {
		name string
		make func(prefix string) (decider, func(), error)
	}
	var subjects []subject
	for _, name := range algorithms.Windowed() {
		subjects = append(subjects, subject{name, func(prefix string) (decider, func(), error) {
			spec, err := algorithms.Lookup(name) // once, as a policy does at load
			if err != nil {
				return nil, nil, err
			}
			l := limiter.New(rdb, limiter.Options{Timeout: 100 * time.Millisecond})
			return func(ctx context.Context, key string) error {
				_, err := l.Decide(ctx, []limiter.Rule{{Algorithm: spec, Limit: admitting(name), Key: prefix + key}})
				return err
			}, l.Close, nil
		}})
	}
	subjects = append(subjects, subject{"ulule", func(prefix string) (decider, func(), error) {
		store, err := sredis.NewStoreWithOptions(rdb, ulule.StoreOptions{Prefix: prefix, MaxRetry: 3})
		if err != nil {
			return nil, nil, err
		}
		l := ulule.New(store, ulule.Rate{Period: time.Hour, Limit: int64(benchLimit.Requests)})
		return func(ctx context.Context, key string) error {
			_, err := l.Get(ctx, key)
			return err
		}, func() {}, nil
	}})
	out := make([]scriptUsec, len(subjects))
	for rep := range reps {
		for i, sub := range subjects {
			if err := s.flush(ctx); err != nil {
				return nil, err
			}
			dec, done, err := sub.make("b:")
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sub.name, err)
			}
			r := drive(ctx, dec, "spread", usecGoroutines, d)
			done()
			calls, us, err := s.commandStatsUsec(ctx)
			if err != nil {
				return nil, err
			}
			n := calls["evalsha"] + calls["eval"]
			if n == 0 || r.errors > 0 {
				return nil, fmt.Errorf("script usec of %s: %d script calls, %d errors", sub.name, n, r.errors)
			}
			u := float64(us["evalsha"]+us["eval"]) / float64(n)
			out[i].subject = sub.name
			out[i].usec = append(out[i].usec, u)
			out[i].calls = append(out[i].calls, n)
			log.Info("script usec", "rep", rep+1, "subject", sub.name, "calls", n, "usec_per_call", fmt.Sprintf("%.2f", u))
		}
		peer := out[len(out)-1].usec[rep]
		for i := range out {
			out[i].ratio = append(out[i].ratio, out[i].usec[rep]/peer)
		}
	}
	for _, u := range out {
		log.Info("script usec median", "subject", u.subject, "usec_per_call", fmt.Sprintf("%.2f", median(u.usec)),
			"x_ulule", fmt.Sprintf("%.2f", median(u.ratio)), "runs", fmt.Sprint(u.usec))
	}
	return out, nil
}
