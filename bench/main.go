// Command bench measures Tollgate against Redis's own ceiling and against the
// rate limiters users would otherwise pick (go-redis/redis_rate,
// ulule/limiter), on one machine in one run, and writes docs/BENCHMARKS.md.
// It is a module of its own so the peers never enter the service's
// dependencies. Run it from the repository root with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// options are the command's flags.
type options struct {
	repo      string        // repository root (built and documented)
	out       string        // the Markdown report
	mysqlDSN  string        // server for the end-to-end runs (its own database is created)
	database  string        // database the service uses on that server
	decideDur time.Duration // one decisions-from-Go run
	wrkDur    time.Duration // one wrk run
	reps      int           // end-to-end repetitions
	quick     bool
	only      string // "decisions": measure only that (logged, no report), to iterate
	command   string // as the report quotes it
}

func main() {
	var o options
	flag.StringVar(&o.repo, "repo", "..", "repository root")
	flag.StringVar(&o.out, "out", "", "report path (default <repo>/docs/BENCHMARKS.md)")
	flag.StringVar(&o.mysqlDSN, "mysql", "root@tcp(127.0.0.1:3306)/test", "MariaDB/MySQL DSN (go-sql-driver) of a user that may create a database")
	flag.StringVar(&o.database, "database", "tollgate_bench", "database the service under test uses (created if absent)")
	flag.DurationVar(&o.decideDur, "decide", 10*time.Second, "duration of each decisions-from-Go run")
	flag.DurationVar(&o.wrkDur, "wrk", 10*time.Second, "duration of each wrk run")
	flag.IntVar(&o.reps, "reps", 3, "end-to-end repetitions (medians are reported)")
	flag.StringVar(&o.only, "only", "", "measure only this section and log its figures, writing no report: decisions, or usec (Redis µs per script call of each algorithm and of ulule's, 8 goroutines, 10,000 keys, -reps times, -decide each)")
	flag.BoolVar(&o.quick, "quick", false, "short runs to iterate (-decide 2s -wrk 3s -reps 1); figures are not for publishing")
	serve := flag.String("serve-peer", "", "internal: serve a peer server on this address")
	kind := flag.String("peer-kind", peerUlule, "internal: "+peerUlule+", "+peerBare+" or "+peerUluleStack)
	redisURL := flag.String("peer-redis", "", "internal: Redis URL of the peer server")
	bodyPath := flag.String("peer-body", "", "internal: the continents JSON the "+peerUlule+" and "+peerBare+" peers serve")
	peerDSN := flag.String("peer-dsn", "", "internal: MySQL DSN of the "+peerUluleStack+" peer (the service's)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *serve != "" {
		if err := servePeer(ctx, *serve, *kind, *redisURL, *bodyPath, *peerDSN); err != nil {
			fmt.Fprintln(os.Stderr, "peer:", err)
			os.Exit(1)
		}
		return
	}
	if o.only != "" && o.only != "decisions" && o.only != "usec" {
		fmt.Fprintf(os.Stderr, "bench: -only %q: want decisions or usec\n", o.only)
		os.Exit(2)
	}
	if o.quick {
		o.decideDur, o.wrkDur, o.reps = 2*time.Second, 3*time.Second, 1
	}
	if o.out == "" {
		o.out = filepath.Join(o.repo, "docs", "BENCHMARKS.md")
	}
	o.command = "make bench"
	if len(os.Args) > 1 {
		o.command = "cd bench && go run . " + strings.Join(os.Args[1:], " ")
	}
	if err := run(ctx, log, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// run measures everything in order and writes the report.
func run(ctx context.Context, log *slog.Logger, o options) error {
	started := time.Now()
	if err := checkTools(); err != nil && o.only != "usec" { // usec needs redis-server alone
		return err
	}
	tmp, err := os.MkdirTemp("", "tollgate-bench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	srv, err := startRedis(ctx, tmp)
	if err != nil {
		return err
	}
	defer srv.stop()
	log.Info("redis started", "addr", srv.addr)

	r := report{options: o, machine: describeMachine(ctx, srv)}
	if o.only == "usec" {
		_, err := measureScriptUsec(ctx, log, srv, o.decideDur, o.reps)
		return err
	}
	log.Info("ceiling: redis-benchmark")
	if r.ceiling, err = measureCeiling(ctx, srv); err != nil {
		return err
	}
	log.Info("decisions from Go")
	if r.decisions, err = measureDecisions(ctx, log, srv, o.decideDur); err != nil {
		return err
	}
	if o.only == "decisions" {
		return nil
	}
	log.Info("redis µs per script call")
	if r.usec, err = measureScriptUsec(ctx, log, srv, o.decideDur, o.reps); err != nil {
		return err
	}
	log.Info("three instances with leases")
	if r.leases, err = measureLeaseCheck(ctx, log, srv); err != nil {
		return err
	}
	log.Info("allocations: go test -benchmem")
	if r.allocs, err = measureAllocs(ctx, o.repo, srv); err != nil {
		return err
	}
	log.Info("end to end")
	if r.e2e, err = measureEndToEnd(ctx, log, o, srv, tmp, &r.machine); err != nil {
		return err
	}
	r.took = time.Since(started)
	if err := r.write(o.out); err != nil {
		return err
	}
	log.Info("report written", "path", o.out, "took", r.took.Round(time.Second).String())
	return nil
}

// checkTools fails at once, before minutes of measuring, when a program the
// run needs is not installed.
func checkTools() error {
	var missing []string
	for _, name := range []string{"wrk", "redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s not found in PATH: apt-get install wrk redis-server redis-tools", strings.Join(missing, ", "))
	}
	return nil
}
