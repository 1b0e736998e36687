// Command soak drives minutes of mixed traffic through a built tollgate binary
// on a Redis of its own (restarted once half-way) and the MySQL/MariaDB of
// -mysql-dsn, and reports statuses, RSS and goroutines over time. It is a
// benchmark-style run, not a test:
//
//	go build -o /tmp/tollgate . && go run ./cmd/soak -bin /tmp/tollgate -duration 3m
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	bin := flag.String("bin", "", "path of the built tollgate binary (required)")
	duration := flag.Duration("duration", 3*time.Minute, "how long to drive traffic")
	sample := flag.Duration("sample", 15*time.Second, "reporting interval")
	workers := flag.Int("workers", 16, "concurrent clients")
	dsn := flag.String("mysql-dsn", "root@tcp(127.0.0.1:3306)/test?parseTime=true", "MySQL/MariaDB DSN")
	failOpen := flag.Bool("fail-open", true, "RATE_LIMIT_FAIL_OPEN of the service")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "soak: -bin is required (go build -o /tmp/tollgate .)")
		os.Exit(2)
	}
	if err := soak(*bin, *duration, *sample, *workers, *dsn, *failOpen); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// redisServer is the soak's own Redis, so restarting it disturbs nobody.
type redisServer struct {
	port int
	dir  string
	cmd  *exec.Cmd
}

func (r *redisServer) start() error {
	r.cmd = exec.Command("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir)
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	for range 100 {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.port)); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("redis-server did not listen")
}

func (r *redisServer) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
	}
}

func soak(bin string, duration, sample time.Duration, workers int, dsn string, failOpen bool) error {
	dir, err := os.MkdirTemp("", "tollgate-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	redisPort, err := freePort()
	if err != nil {
		return err
	}
	rs := &redisServer{port: redisPort, dir: dir}
	if err := rs.start(); err != nil {
		return err
	}
	defer rs.stop()

	port, err := freePort()
	if err != nil {
		return err
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	logFile, err := os.Create(filepath.Join(dir, "service.log"))
	if err != nil {
		return err
	}
	svc := exec.Command(bin)
	svc.Dir = dir
	svc.Env = append(os.Environ(),
		"PORT="+strconv.Itoa(port),
		fmt.Sprintf("REDIS_URL=redis://127.0.0.1:%d/0", redisPort),
		"DB_DRIVER=mysql", "DB_DSN="+dsn,
		"SEED_USERS=soak1:pw1,soak2:pw2,soak3:pw3,soak4:pw4",
		"RATE_LIMIT_LIMIT=50", "RATE_LIMIT_WINDOW=10s",
		"RATE_LIMIT_FAIL_OPEN="+strconv.FormatBool(failOpen),
		"REDIS_KEY_PREFIX=soak:", "LOG_LEVEL=warn",
	)
	svc.Stdout, svc.Stderr = logFile, logFile
	if err := svc.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	defer func() {
		_ = svc.Process.Signal(os.Interrupt)
		_ = svc.Wait()
	}()
	if err := waitHealthy(base); err != nil {
		return err
	}

	var (
		mu     sync.Mutex
		counts = map[int]int{}
		errs   atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	users := []string{"soak1:pw1", "soak2:pw2", "soak3:pw3", "soak4:pw4"}
	for range workers {
		wg.Go(func() {
			for !stop.Load() {
				req, _ := http.NewRequest(http.MethodGet, base+"/continents", nil)
				switch n := rand.IntN(10); {
				case n < 6: // a known user: admitted until its quota is used, then denied
					req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(users[rand.IntN(len(users))])))
				case n < 8: // anonymous: one shared quota for 127.0.0.1, mostly denied
				default: // bad credentials
					req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("soak1:wrong")))
				}
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body) // drained for reuse; the status is what counts
				resp.Body.Close()
				mu.Lock()
				counts[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}

	fmt.Printf("soak: %v of traffic from %d clients; Redis restarted at %v\n", duration, workers, duration/2)
	fmt.Printf("%8s %9s %7s %7s %7s %7s %7s %6s %9s %10s\n", "elapsed", "requests", "200", "401", "429", "5xx", "errors", "gorout", "rss_MiB", "event")
	start := time.Now()
	restarted := false
	next := sample
	var lastTotal int
	for time.Since(start) < duration {
		time.Sleep(time.Second)
		event := ""
		if !restarted && time.Since(start) >= duration/2 {
			rs.stop()
			time.Sleep(2 * time.Second)
			if err := rs.start(); err != nil {
				stop.Store(true)
				wg.Wait()
				return err
			}
			restarted, event = true, "redis restarted"
		}
		if time.Since(start) < next && event == "" {
			continue
		}
		next += sample
		mu.Lock()
		c := make(map[int]int, len(counts))
		total := 0
		for k, v := range counts {
			c[k] = v
			total += v
		}
		mu.Unlock()
		fivexx := 0
		for k, v := range c {
			if k >= 500 {
				fivexx += v
			}
		}
		goroutines := metric(client, base, "go_goroutines")
		rss := metric(client, base, "process_resident_memory_bytes") / (1 << 20)
		fmt.Printf("%8s %9d %7d %7d %7d %7d %7d %6.0f %9.1f %10s\n", time.Since(start).Truncate(time.Second),
			total-lastTotal, c[200], c[401], c[429], fivexx, errs.Load(), goroutines, rss, event)
		lastTotal = total
	}
	stop.Store(true)
	wg.Wait()
	fmt.Printf("totals: %v, transport errors %d\n", counts, errs.Load())
	return nil
}

func waitHealthy(base string) error {
	for range 300 {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("service did not become healthy in 30s")
}

// metric reads one unlabelled sample from /metrics; -1 when unavailable.
func metric(client *http.Client, base, name string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	resp, err := client.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
