package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// measureAllocs runs the middleware's and the limiter package's
// benchmarks with -benchmem on the run's Redis: the allocations of the
// rate-limit middleware per request, of one decision, direct, pipelined
// and answered by the deny cache, and of a whole request with the limiter
// off and admitted (with and without a lease).
func measureAllocs(ctx context.Context, repo string, s *redisServer) ([]allocRow, error) {
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^(BenchmarkLimiter|BenchmarkDecide|BenchmarkPipelined|BenchmarkDenyCache|BenchmarkRequest)",
		"-benchmem", "-benchtime", "1s", "./middleware/", "./limiter/", "./routes/")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "TEST_REDIS_URL="+s.url())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go test -bench ./middleware/ ./limiter/ ./routes/: %w: %s%s", err, out, stderr.Bytes())
	}
	var rows []allocRow
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i] // the -GOMAXPROCS suffix
		}
		rows = append(rows, allocRow{name: name, nsPerOp: num(2), bPerOp: num(4), allocsPerOp: num(6)})
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("go test -bench ./middleware/ ./limiter/: no benchmark lines in %s", out)
	}
	return rows, nil
}
