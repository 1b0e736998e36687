package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"tollgate/algorithms"
	"tollgate/limiter"
)

// leaseCheck is the three-instance lease check of one algorithm: three
// engines with leases on the run's Redis, as three instances of the service,
// and 300 goroutines sending requests between them.
type leaseCheck struct {
	algorithm string
	limit     int
	requests  int
	admitted  int
	bound     int // the documented under-admission bound: instances × limit / 8
	left      int // what Redis has left after every instance's Close
	errors    int64
	took      time.Duration
}

// Its figures: the limit, the smallest that is leased, and the concurrency.
const (
	leaseCheckLimit     = 1000
	leaseCheckInstances = 3
	leaseCheckCallers   = 300
)

// measureLeaseCheck runs the check for every algorithm that leases, with the
// limit's worth of requests (the burst ends at the limit, so what leases
// hold unused shows) and with twice as many.
func measureLeaseCheck(ctx context.Context, log *slog.Logger, s *redisServer) ([]leaseCheck, error) {
	rdb := s.client(64)
	defer rdb.Close()
	var out []leaseCheck
	for _, spec := range algorithms.Specs() {
		if spec.LeaseFor == nil {
			continue
		}
		for _, requests := range []int{leaseCheckLimit, 2 * leaseCheckLimit} {
			if err := s.flush(ctx); err != nil {
				return nil, err
			}
			rule := limiter.Rule{Algorithm: spec, Key: "lease:{k}",
				Limit: algorithms.Limit{Requests: leaseCheckLimit, Window: time.Hour}}
			var engines [leaseCheckInstances]*limiter.Limiter
			for i := range engines {
				engines[i] = limiter.New(rdb, limiter.Options{Timeout: time.Second, DenyCacheSize: denyCacheSize,
					PipelineBatch: pipeBatch, PipelineWindow: pipeWindow, PipelineConns: pipeConns, Lease: true})
			}
			var next, admitted, errs atomic.Int64
			start := time.Now()
			var wg sync.WaitGroup
			for c := range leaseCheckCallers {
				wg.Go(func() {
					l := engines[c%leaseCheckInstances]
					for next.Add(1) <= int64(requests) {
						res, err := l.Decide(ctx, []limiter.Rule{rule})
						switch {
						case err != nil:
							errs.Add(1)
						case res.Allowed:
							admitted.Add(1)
						}
					}
				})
			}
			wg.Wait()
			took := time.Since(start)
			for _, l := range engines {
				l.Close()
			}
			res, err := limiter.New(rdb, limiter.Options{}).Peek(ctx, []limiter.Rule{rule})
			if err != nil {
				return nil, fmt.Errorf("lease check %s: peek: %w", spec.Name, err)
			}
			c := leaseCheck{algorithm: spec.Name, limit: leaseCheckLimit, requests: requests,
				admitted: int(admitted.Load()), bound: leaseCheckInstances * leaseCheckLimit / 8,
				left: res.Decisions[0].Remaining, errors: errs.Load(), took: took}
			log.Info("lease check", "algorithm", c.algorithm, "requests", c.requests, "admitted", c.admitted, "left", c.left, "errors", c.errors)
			out = append(out, c)
		}
	}
	return out, nil
}
