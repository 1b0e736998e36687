package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tollgate/algorithms"
)

// process is one running service binary.
type process struct {
	cmd  *exec.Cmd
	base string
	logs *syncBuffer
	done chan error
}

// startBinary starts bin with env (and only env, besides PATH and HOME) on
// PORT=0, and returns once it says where it serves and /healthz answers there.
func startBinary(t *testing.T, bin string, env map[string]string) *process {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir() // no .env file there
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "PORT=0") // later entries win
	p := &process{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // it may have exited: p.done says how
		<-p.done               //nolint:errcheck // killed: an error by design
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.base, p.logs.String())
		}
	})
	p.base = waitServing(t, p.logs, p.done).base
	if r := get(t, p.base+"/healthz", nil); r.status != http.StatusOK {
		t.Fatalf("GET /healthz once serving: status %d, want 200\n%s", r.status, p.logs.String())
	}
	return p
}

func TestThreeInstancesShareOneLimit(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	r := sharedRedis(t)
	for _, name := range algorithms.Windowed() { // the others need a policy file
		t.Run(name, func(t *testing.T) {
			env := baseEnv(t, r)
			env["RATE_LIMIT_ALGORITHM"] = name
			env["RATE_LIMIT_LIMIT"] = "50"
			env["RATE_LIMIT_WINDOW"] = "1h" // refills during the test stay far below one request
			env["RATE_LIMIT_FAIL_OPEN"] = "false"
			env["RATE_LIMIT_TIMEOUT"] = "5s"
			var instances [3]*process
			var wg sync.WaitGroup
			for i := range instances {
				wg.Go(func() { instances[i] = startBinary(t, bin, env) })
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			auth := basic("john_doe", "EXAMPLE_PASSWORD")
			for _, p := range instances {
				get(t, p.base+"/healthz", auth)
			}
			const total = 300
			var mu sync.Mutex
			counts := map[int]int{}
			start := make(chan struct{})
			for i := range total {
				wg.Go(func() {
					req, _ := http.NewRequest(http.MethodGet, instances[i%3].base+"/continents", nil)
					req.Header = auth
					<-start
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Errorf("GET: %v", err)
						return
					}
					resp.Body.Close()
					mu.Lock()
					counts[resp.StatusCode]++
					mu.Unlock()
				})
			}
			close(start)
			wg.Wait()
			if counts[200] != 50 || counts[429] != total-50 {
				t.Errorf("%d requests spread over 3 instances, limit 50: statuses %v; want 50 × 200, %d × 429", total, counts, total-50)
			}
		})
	}
}

func TestShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	own := startOwnRedis(t)
	proxy := startProxy(t, mustParseURL(t, own.url).Addr)
	env := baseEnv(t, testRedis{url: "redis://" + proxy.addr() + "/0"})
	env["RATE_LIMIT_TIMEOUT"] = "5s"
	env["RATE_LIMIT_LIMIT"] = "100"
	env["SHUTDOWN_TIMEOUT"] = "5s"
	// One Redis call per decision, each on a connection of its own: the
	// proxy's pending requests are the service's requests in flight.
	env["RATE_LIMIT_PIPELINE_BATCH"] = "0"
	p := startBinary(t, bin, env)
	get(t, p.base+"/continents", nil) // loads the script: a held decision is one call
	proxy.hold()                      // decisions now wait: requests stay in flight

	const inFlight = 10
	statuses := make(chan int, inFlight)
	for range inFlight {
		go func() {
			resp, err := http.Get(p.base + "/continents")
			if err != nil {
				t.Errorf("in-flight request: %v", err)
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	proxy.waitPending(t, inFlight)
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	p.logs.waitFor(t, p.done, `"shutting down"`, func(text string) bool { return strings.Contains(text, "shutting down") })
	proxy.release()
	for range inFlight {
		if s := <-statuses; s != http.StatusOK {
			t.Errorf("in-flight request at SIGTERM: status %d, want 200", s)
		}
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v, want status 0", err)
		}
		if took := time.Since(sent); took > 7*time.Second {
			t.Errorf("exit %v after SIGTERM, want within SHUTDOWN_TIMEOUT (5s)", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit 15s after SIGTERM")
	}
}

// TestShutdownTimeout: when SHUTDOWN_TIMEOUT runs out, a connection that
// never sent a whole request is closed and the exit is still 0; a request
// still running is cut, and the exit status says so.
func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	t.Run("slow client sending its header", func(t *testing.T) {
		env := baseEnv(t, sharedRedis(t))
		env["SHUTDOWN_TIMEOUT"] = "1s"
		p := startBinary(t, bin, env)
		// The header goes through a proxy that tells when it has passed on.
		client := startProxy(t, strings.TrimPrefix(p.base, "http://"))
		conn, err := net.Dial("tcp", client.addr())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET /continents HTTP/1.1\r\nHost: x\r\n") // and never the blank line
		client.waitPending(t, 1)
		if err := waitExit(t, p); err != nil {
			t.Errorf("exit after SIGTERM with a slow client: %v, want status 0", err)
		}
	})
	t.Run("request still running", func(t *testing.T) {
		own := startOwnRedis(t)
		proxy := startProxy(t, mustParseURL(t, own.url).Addr)
		env := baseEnv(t, testRedis{url: "redis://" + proxy.addr() + "/0"})
		env["RATE_LIMIT_TIMEOUT"] = "10s"
		env["SHUTDOWN_TIMEOUT"] = "1s"
		env["RATE_LIMIT_PIPELINE_BATCH"] = "0" // the decision is one call the proxy sees pending
		p := startBinary(t, bin, env)
		proxy.hold() // the decision outlasts the shutdown
		go func() {
			if resp, err := http.Get(p.base + "/continents"); err == nil {
				resp.Body.Close()
			}
		}()
		proxy.waitPending(t, 1)
		err := waitExit(t, p)
		if err == nil || !strings.Contains(p.logs.String(), "1 requests cut") {
			t.Errorf("exit after SIGTERM with a request running: %v, want a non-zero status and the log naming 1 request cut", err)
		}
	})
}

// waitExit sends p SIGTERM and returns how it exited, failing the test if it
// is not within 5 seconds.
func waitExit(t *testing.T, p *process) error {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no exit 5s after SIGTERM with SHUTDOWN_TIMEOUT=1s")
		return nil
	}
}

func TestHostileClients(t *testing.T) {
	t.Parallel()
	base := service(t, baseEnv(t, sharedRedis(t)))
	addr := strings.TrimPrefix(base, "http://")

	t.Run("2 MB header gets 431", func(t *testing.T) {
		h := http.Header{}
		h.Set("X-Junk", strings.Repeat("a", 2<<20))
		if r := get(t, base+"/continents", h); r.status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status %d, want 431", r.status)
		}
		if r := get(t, base+"/healthz", nil); r.status != http.StatusOK {
			t.Errorf("after a 2 MB header: /healthz status %d, want 200", r.status)
		}
	})

	t.Run("slowloris is cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer conn.Close()
		fmt.Fprint(conn, "GET /continents HTTP/1.1\r\nHost: x\r\n")
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				// A header that never ends, a few bytes at a time.
				if _, err := fmt.Fprintf(conn, "X-%d: y\r\n", i); err != nil {
					return
				}
			}
		}()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second)) // a deadline not set: ReadByte still ends with the server's close
		_, err = bufio.NewReader(conn).ReadByte()
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection still open after 20s of trickled headers, want it closed by ReadHeaderTimeout")
		}
		if r := get(t, base+"/healthz", nil); r.status != http.StatusOK {
			t.Errorf("after a slowloris client: /healthz status %d, want 200", r.status)
		}
	})
}

// TestBadSettingsExitTwo: settings and policy files that cannot mean what
// they say stop the binary at start-up with exit status 2 and a message
// naming what is wrong.
func TestBadSettingsExitTwo(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	policyFile := filepath.Join(t.TempDir(), "policies.yaml")
	policies := "policies: [{name: tiers, key: user, tiers: {Free: [{algorithm: fixed_window, limit: 2.5, window: 1m}]}}]\n"
	if err := os.WriteFile(policyFile, []byte(policies), 0o600); err != nil {
		t.Fatalf("write policies: %v", err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want []string // each in the output
	}{
		{"policy file", map[string]string{"RATE_LIMIT_POLICY_FILE": policyFile},
			[]string{`policy "tiers": tiers.Free[0].limit: "2.5": want a whole number`}},
		{"sliding_log over a million", map[string]string{"RATE_LIMIT_ALGORITHM": "sliding_log", "RATE_LIMIT_LIMIT": "2000000"},
			[]string{"RATE_LIMIT_LIMIT", "sliding_log", "at most 1000000"}},
		{"concurrency without a policy file", map[string]string{"RATE_LIMIT_ALGORITHM": "concurrency"},
			[]string{`RATE_LIMIT_ALGORITHM="concurrency"`, "RATE_LIMIT_POLICY_FILE"}},
		{"two ways to reach Redis", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_SENTINEL_ADDRS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "mymaster"},
			[]string{"REDIS_URL and REDIS_SENTINEL_ADDRS", "set one way to reach Redis"}},
		{"Sentinel password without Sentinels", map[string]string{"REDIS_SENTINEL_PASSWORD": "s3cr3t-Pa55"},
			[]string{"REDIS_SENTINEL_PASSWORD", "only with REDIS_SENTINEL_ADDRS"}},
		{"both spellings of what Redis errors get, disagreeing", map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": "local", "RATE_LIMIT_FAIL_OPEN": "false"},
			[]string{"RATE_LIMIT_ON_REDIS_ERROR", "RATE_LIMIT_FAIL_OPEN", "disagree"}},
		{"mysql DSN that does not parse", map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "api_user:s3cr3t-Pa55@127.0.0.1:3306/countries"},
			[]string{"DB_DSN", "want a go-sql-driver DSN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Dir = t.TempDir() // no .env file there
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "PORT=0",
				"DB_DSN=" + filepath.Join(t.TempDir(), "countries.db")}
			for k, v := range tt.env {
				cmd.Env = append(cmd.Env, k+"="+v) // later entries win
			}
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit status %d (%v), want 2", code, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output %q does not mention %q", out, w)
				}
			}
			if strings.Contains(string(out), "s3cr3t-Pa55") {
				t.Errorf("output %q repeats the DSN's password", out)
			}
		})
	}
}
