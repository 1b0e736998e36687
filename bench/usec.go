package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	ulule "github.com/ulule/limiter/v3"
	sredis "github.com/ulule/limiter/v3/drivers/store/redis"

	"tollgate/algorithms"
	"tollgate/limiter"
)

// measureScriptUsec measures only Redis's time per script call (INFO
// commandstats usec_per_call of EVALSHA, the commands a script runs
// included) of each windowed algorithm's plain decision and of ulule's
// script, from 8 goroutines over 10,000 keys, reps times interleaved, and
// logs each run and the medians with their ratio to ulule's median. It is
// Redis-side CPU time: noisy on a loaded machine, hence the repetitions.
func measureScriptUsec(ctx context.Context, log *slog.Logger, s *redisServer, d time.Duration, reps int) error {
	rdb := s.client(8)
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
	usec := map[string][]float64{}
	for rep := range reps {
		for _, sub := range subjects {
			if err := s.flush(ctx); err != nil {
				return err
			}
			dec, done, err := sub.make("b:")
			if err != nil {
				return fmt.Errorf("%s: %w", sub.name, err)
			}
			r := drive(ctx, dec, "spread", 8, d)
			done()
			calls, us, err := s.commandStatsUsec(ctx)
			if err != nil {
				return err
			}
			n := calls["evalsha"] + calls["eval"]
			if n == 0 || r.errors > 0 {
				return fmt.Errorf("%s: %d script calls, %d errors", sub.name, n, r.errors)
			}
			u := float64(us["evalsha"]+us["eval"]) / float64(n)
			usec[sub.name] = append(usec[sub.name], u)
			log.Info("script usec", "rep", rep+1, "subject", sub.name, "calls", n, "usec_per_call", fmt.Sprintf("%.2f", u))
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	base := median(usec["ulule"])
	for _, sub := range subjects {
		m := median(usec[sub.name])
		log.Info("script usec median", "subject", sub.name, "usec_per_call", fmt.Sprintf("%.2f", m), "x_ulule", fmt.Sprintf("%.2f", m/base), "runs", fmt.Sprint(usec[sub.name]))
	}
	return nil
}
