package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is the redis-server this run started for itself.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
}

// startRedis starts redis-server on a spare port, without persistence, so
// nothing else shares it and it can be flushed.
func startRedis(ctx context.Context, dir string) (*redisServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server (apt-get install redis-server): %w", err)
	}
	s := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rdb := s.client(1)
		err := rdb.Ping(ctx).Err()
		rdb.Close()
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("redis-server on %s did not answer: %w", s.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the run's redis-server, killing it if it takes more than 5s;
// its exit status is of no interest.
func (s *redisServer) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
	}
}

func (s *redisServer) url() string { return "redis://" + s.addr + "/0" }

// client returns a go-redis client with a pool of pool connections.
func (s *redisServer) client(pool int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.addr, PoolSize: pool})
}

// flush empties the run's own Redis between measurements.
func (s *redisServer) flush(ctx context.Context) error {
	rdb := s.client(1)
	defer rdb.Close()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("flush bench redis: %w", err)
	}
	return rdb.ConfigResetStat(ctx).Err()
}

// commandStats returns calls per command (lowercase) from INFO commandstats.
func (s *redisServer) commandStats(ctx context.Context) (map[string]int64, error) {
	calls, _, err := s.commandStatsUsec(ctx)
	return calls, err
}

// commandStatsUsec returns calls and µs spent per command (lowercase) from
// INFO commandstats. A script's µs include the commands it runs.
func (s *redisServer) commandStatsUsec(ctx context.Context) (calls, usec map[string]int64, err error) {
	rdb := s.client(1)
	defer rdb.Close()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, nil, fmt.Errorf("info commandstats: %w", err)
	}
	out, usec := map[string]int64{}, map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		// cmdstat_evalsha:calls=12,usec=...
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		fields := strings.Split(rest, ",")
		n, _ := strconv.ParseInt(fields[0], 10, 64)
		out[name] = n
		if len(fields) > 1 {
			u, _ := strconv.ParseInt(strings.TrimPrefix(fields[1], "usec="), 10, 64)
			usec[name] = u
		}
	}
	return out, usec, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// ceiling is what redis-benchmark gets out of the same Redis for a one-key script.
type ceiling struct {
	pipeline int
	rps      float64
	p50, p99 float64 // ms
}

// measureCeiling runs redis-benchmark EVALSHA of a one-key script that
// increments a key and reads TIME, at -c 50, -P 1 and -P 16.
func measureCeiling(ctx context.Context, s *redisServer) ([]ceiling, error) {
	rdb := s.client(1)
	defer rdb.Close()
	const script = "redis.call('TIME') return redis.call('INCR', KEYS[1])"
	sha, err := rdb.ScriptLoad(ctx, script).Result()
	if err != nil {
		return nil, fmt.Errorf("script load: %w", err)
	}
	host, port, _ := net.SplitHostPort(s.addr)
	var out []ceiling
	for _, p := range []int{1, 16} {
		n := map[int]int{1: 200_000, 16: 1_000_000}[p] // a few seconds each
		cmd := exec.CommandContext(ctx, "redis-benchmark", "-h", host, "-p", port, "-c", "50",
			"-n", strconv.Itoa(n), "-P", strconv.Itoa(p), "-r", "10000", "--csv",
			"evalsha", sha, "1", "ceiling:__rand_int__")
		b, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark -P %d: %w", p, err)
		}
		c, err := parseBenchmarkCSV(string(b))
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark -P %d: %w: %s", p, err, b)
		}
		c.pipeline = p
		out = append(out, c)
	}
	return out, nil
}

// parseBenchmarkCSV reads redis-benchmark --csv: a header, then
// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms".
func parseBenchmarkCSV(s string) (ceiling, error) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) < 2 {
		return ceiling{}, fmt.Errorf("want a header and a row")
	}
	f := strings.Split(strings.ReplaceAll(lines[len(lines)-1], `"`, ""), ",")
	if len(f) < 7 {
		return ceiling{}, fmt.Errorf("want 8 fields, got %q", lines[len(lines)-1])
	}
	num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
	return ceiling{rps: num(1), p50: num(4), p99: num(6)}, nil
}

// cpuTime is the CPU time (user and system) redis-server has used so far,
// from /proc (Linux): how busy its one thread was over a run.
func (s *redisServer) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("redis-server CPU time: %w", err)
	}
	// Fields after the command name (which is in parentheses): utime and
	// stime are the 14th and 15th fields of the line, in clock ticks
	// (100 a second on Linux).
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("redis-server CPU time: short /proc stat line")
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("redis-server CPU time: %q %q", fields[11], fields[12])
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
