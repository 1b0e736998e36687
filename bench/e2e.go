package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"tollgate/algorithms"
)

// e2eConfig is one server setup wrk is pointed at.
type e2eConfig struct {
	name string
	kind string            // tollgate, or a peer: ulule, ulule-stack or bare (gin without a limiter)
	env  map[string]string // tollgate: settings on top of the common ones
}

// e2eSample is one wrk run and what it cost.
type e2eSample struct {
	rps, p50, p99 float64 // p50, p99 in ms
	requests      int64
	non2xx        int64
	evalsha       int64 // script calls
	redisCmds     int64 // every command, those run inside scripts included
	dbQueries     int64 // MariaDB Questions, server-wide, minus our own
	mallocs       int64 // go_memstats_mallocs_total of the service
}

// e2eResult is every sample of one config.
type e2eResult struct {
	cfg     e2eConfig
	samples []e2eSample
	ratios  []float64 // rps / rps of "limiter off" in the same repetition
}

// hasMetrics says whether the server serves /metrics with the Go collector,
// so its allocations can be counted.
func (c e2eConfig) hasMetrics() bool { return c.kind == "tollgate" || c.kind == peerUluleStack }

func e2eConfigs() []e2eConfig {
	// Leases off unless a row says otherwise: the rows measure a decision per request.
	admitted := map[string]string{"RATE_LIMIT_LIMIT": "1000000000", "RATE_LIMIT_WINDOW": "1h", "RATE_LIMIT_LEASE": "off"}
	denied := map[string]string{"RATE_LIMIT_LIMIT": "1", "RATE_LIMIT_WINDOW": "1h"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cs := []e2eConfig{{name: "limiter off", kind: "tollgate", env: map[string]string{"RATE_LIMIT_ENABLED": "false"}}}
	for _, a := range algorithms.Windowed() {
		cs = append(cs, e2eConfig{name: a + ", all admitted", kind: "tollgate",
			env: with(admitted, "RATE_LIMIT_ALGORITHM", a, "RATE_LIMIT_LIMIT", strconv.Itoa(admitting(a).Requests))})
	}
	cs = append(cs, e2eConfig{name: "fixed_window, all admitted, leases on", kind: "tollgate",
		env: with(admitted, "RATE_LIMIT_ALGORITHM", "fixed_window", "RATE_LIMIT_LEASE", "auto")})
	cs = append(cs, e2eConfig{name: "fixed_window, all admitted, pipeline off", kind: "tollgate",
		env: with(admitted, "RATE_LIMIT_ALGORITHM", "fixed_window", "RATE_LIMIT_PIPELINE_BATCH", "0")})
	for _, a := range algorithms.Windowed() {
		cs = append(cs, e2eConfig{name: a + ", all denied", kind: "tollgate", env: with(denied, "RATE_LIMIT_ALGORITHM", a)})
	}
	cs = append(cs,
		e2eConfig{name: "fixed_window, all denied, deny cache off", kind: "tollgate",
			env: with(denied, "RATE_LIMIT_ALGORITHM", "fixed_window", "RATE_LIMIT_DENY_CACHE_SIZE", "0")},
		e2eConfig{name: "ulule/limiter gin middleware on the service's stack, all admitted", kind: peerUluleStack},
		e2eConfig{name: "ulule/limiter gin middleware on a bare gin server, all admitted", kind: peerUlule},
		e2eConfig{name: "bare gin, no limiter (reference)", kind: peerBare},
	)
	return cs
}

// measureEndToEnd builds the service and runs wrk against every config,
// interleaved, o.reps times.
func measureEndToEnd(ctx context.Context, log *slog.Logger, o options, s *redisServer, tmp string, m *machine) ([]e2eResult, error) {
	bin := filepath.Join(tmp, "tollgate")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = o.repo
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build of the service: %w: %s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	db, dsn, err := openBenchDB(ctx, o.mysqlDSN, o.database)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&m.mariadb); err != nil {
		return nil, fmt.Errorf("mariadb version: %w", err)
	}
	configs := e2eConfigs()
	results := make([]e2eResult, len(configs))
	bodyPath := filepath.Join(tmp, "continents.json")
	for rep := range o.reps {
		var offRPS float64
		for i, cfg := range configs {
			results[i].cfg = cfg
			if err := s.flush(ctx); err != nil {
				return nil, err
			}
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			base := "http://127.0.0.1:" + strconv.Itoa(port)
			var cmd *exec.Cmd
			if cfg.kind == "tollgate" {
				cmd = exec.CommandContext(ctx, bin)
				cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "PORT=" + strconv.Itoa(port),
					"REDIS_URL=" + s.url(), "DB_DRIVER=mysql", "DB_DSN=" + dsn,
					"REDIS_KEY_PREFIX=bench" + strconv.Itoa(rep) + ":",
					// The request log on, whatever the defaults become: every
					// service row, limiter off too, pays for its access line.
					"LOG_LEVEL=info", "LOG_FORMAT=json"}
				for k, v := range cfg.env {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			} else {
				cmd = exec.CommandContext(ctx, self, "-serve-peer", "127.0.0.1:"+strconv.Itoa(port),
					"-peer-kind", cfg.kind, "-peer-redis", s.url(), "-peer-body", bodyPath, "-peer-dsn", dsn)
			}
			cmd.Dir = tmp // no .env is read
			// The access log: a nil Stdout is /dev/null, opened by os/exec. Any
			// io.Writer, io.Discard too, would be a pipe and a goroutine in this
			// process copying every line, on the CPUs wrk and the server share.
			cmd.Stdout = nil
			// Errors only (the access log is on stdout); read after Wait.
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				return nil, fmt.Errorf("%s: start: %w", cfg.name, err)
			}
			sample, err := func() (e2eSample, error) {
				defer func() {
					// Its exit status is of no interest: it was told to stop.
					_ = cmd.Process.Signal(os.Interrupt)
					_ = cmd.Wait()
				}()
				if err := waitHealthy(ctx, base); err != nil {
					return e2eSample{}, fmt.Errorf("%s: %w", cfg.name, err)
				}
				if cfg.kind == "tollgate" && cfg.env["RATE_LIMIT_ENABLED"] == "false" {
					if err := saveBody(ctx, base+"/continents", bodyPath); err != nil {
						return e2eSample{}, err
					}
				}
				if _, err := runWrk(ctx, base+"/continents", time.Second); err != nil { // warm-up
					return e2eSample{}, err
				}
				return measureOnce(ctx, s, db, base, cfg.hasMetrics(), o.wrkDur)
			}()
			if err != nil {
				if msg := strings.TrimSpace(stderr.String()); msg != "" {
					err = fmt.Errorf("%w; its stderr: %s", err, msg)
				}
				return nil, err
			}
			if i == 0 {
				offRPS = sample.rps
			}
			results[i].samples = append(results[i].samples, sample)
			results[i].ratios = append(results[i].ratios, sample.rps/offRPS)
			log.Info("wrk", "rep", rep+1, "config", cfg.name, "rps", int(sample.rps), "p99_ms", sample.p99,
				"evalsha_per_req", ratio(sample.evalsha, sample.requests), "non2xx", sample.non2xx)
		}
	}
	return results, nil
}

// measureOnce runs wrk once and takes Redis, database and allocation
// counters around it.
func measureOnce(ctx context.Context, s *redisServer, db *sql.DB, base string, metrics bool, d time.Duration) (e2eSample, error) {
	before, err := s.commandStats(ctx)
	if err != nil {
		return e2eSample{}, err
	}
	q0, err := questions(ctx, db)
	if err != nil {
		return e2eSample{}, err
	}
	var m0 int64
	if metrics {
		if m0, err = mallocs(ctx, base); err != nil {
			return e2eSample{}, err
		}
	}
	w, err := runWrk(ctx, base+"/continents", d)
	if err != nil {
		return e2eSample{}, err
	}
	if metrics {
		m1, err := mallocs(ctx, base)
		if err != nil {
			return e2eSample{}, err
		}
		w.mallocs = m1 - m0
	}
	q1, err := questions(ctx, db)
	if err != nil {
		return e2eSample{}, err
	}
	w.dbQueries = q1 - q0 - 1 // the first SHOW STATUS counts itself
	after, err := s.commandStats(ctx)
	if err != nil {
		return e2eSample{}, err
	}
	for name, n := range after {
		if name == "info" || name == "config|resetstat" || name == "flushall" {
			continue
		}
		w.redisCmds += n - before[name]
	}
	w.evalsha = after["evalsha"] - before["evalsha"] + after["eval"] - before["eval"]
	return w, nil
}

var wrkLatency = regexp.MustCompile(`^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$`)

// runWrk runs wrk -t2 -c64 --latency for d and parses its summary.
func runWrk(ctx context.Context, url string, d time.Duration) (e2eSample, error) {
	cmd := exec.CommandContext(ctx, "wrk", "-t2", "-c64", "-d"+strconv.Itoa(max(int(d.Seconds()), 1))+"s", "--latency", url)
	out, err := cmd.Output()
	if err != nil {
		return e2eSample{}, fmt.Errorf("wrk (apt-get install -y wrk): %w", err)
	}
	var w e2eSample
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if m := wrkLatency.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			v *= map[string]float64{"us": 0.001, "ms": 1, "s": 1000}[m[3]]
			if m[1] == "50" {
				w.p50 = v
			} else {
				w.p99 = v
			}
		}
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			w.rps, _ = strconv.ParseFloat(f[1], 64)
		case strings.Contains(line, "requests in") && len(f) > 0:
			w.requests, _ = strconv.ParseInt(f[0], 10, 64)
		case strings.HasPrefix(line, "  Non-2xx or 3xx responses:") && len(f) == 5:
			w.non2xx, _ = strconv.ParseInt(f[4], 10, 64)
		}
	}
	if w.rps == 0 || w.requests == 0 {
		return e2eSample{}, fmt.Errorf("wrk: no result in %s", out)
	}
	return w, nil
}

func waitHealthy(ctx context.Context, base string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s/healthz did not answer 200 within 60s", base)
}

func saveBody(ctx context.Context, url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !json.Valid(b) {
		return fmt.Errorf("get %s: status %d, %d bytes, %v", url, resp.StatusCode, len(b), err)
	}
	return os.WriteFile(path, b, 0o644)
}

// mallocs reads the service's heap allocation count from /metrics.
func mallocs(ctx context.Context, base string) (int64, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("get /metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_mallocs_total "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("no go_memstats_mallocs_total in /metrics")
}

// openBenchDB creates the service's database on the server of dsn and
// returns a handle on the server and the service's DSN.
func openBenchDB(ctx context.Context, dsn, database string) (*sql.DB, string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("-mysql: %w", err)
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, "", fmt.Errorf("open mariadb: %w", err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+database+"`"); err != nil {
		db.Close()
		return nil, "", fmt.Errorf("create database %s (is MariaDB running?): %w", database, err)
	}
	svc := cfg.Clone()
	svc.DBName = database
	svc.ParseTime = true
	return db, svc.FormatDSN(), nil
}

// questions is MariaDB's server-wide count of statements received.
func questions(ctx context.Context, db *sql.DB) (int64, error) {
	var name string
	var n int64
	if err := db.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Questions'").Scan(&name, &n); err != nil {
		return 0, fmt.Errorf("show status: %w", err)
	}
	return n, nil
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// median of xs (which it sorts).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
