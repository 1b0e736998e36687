package limiter

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tollgate/algorithms"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// holdEnv tells the test binary, run again as a child, to take places and
// wait to be killed (TestHoldPlacesChild): "<addr kind>|<addrs>|<key>".
const holdEnv = "TOLLGATE_TEST_HOLD"

// holdTimeout is how long a place is held at most.
const holdTimeout = 2 * time.Second

// holdLimit is the places of the key, all taken by the child.
var holdLimit = algorithms.Limit{Requests: 3, Window: holdTimeout}

// TestHoldPlacesChild is the child of TestPlacesFreedAfterKill: it takes
// every place of the key, says so, and blocks until it is killed.
func TestHoldPlacesChild(t *testing.T) {
	spec := os.Getenv(holdEnv)
	if spec == "" {
		t.Skip("run by TestPlacesFreedAfterKill as a child process")
	}
	parts := strings.SplitN(spec, "|", 3)
	if len(parts) != 3 {
		t.Fatalf("%s=%q: want kind|addrs|key", holdEnv, spec)
	}
	kind, addrs, key := parts[0], parts[1], parts[2]
	var rdb redis.UniversalClient = redis.NewClient(&redis.Options{Addr: addrs})
	if kind == "cluster" {
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	}
	l := New(rdb, Options{Timeout: 5 * time.Second})
	for range holdLimit.Requests {
		res, err := l.Decide(context.Background(), []Rule{{Algorithm: algo("concurrency"), Limit: holdLimit, Key: key}})
		if err != nil || !res.Allowed {
			fmt.Println("failed:", res, err)
			os.Exit(1)
		}
	}
	fmt.Println("holding")
	select {} // until kill -9: the places are never given back
}

// heldPrefix gives the kill test's key a prefix of its own on a shared Redis.
func heldPrefix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "test:held:" + hex.EncodeToString(b) + ":"
}

// TestPlacesFreedAfterKill: a process holding every place of a key is
// killed with SIGKILL; its places are free again within the timeout, and
// not before.
func TestPlacesFreedAfterKill(t *testing.T) {
	type backend struct {
		kind, addrs string
		rdb         redis.UniversalClient
		advance     func(time.Duration) // moves Redis's clock: sleeps on a real one
	}
	backends := map[string]func(t *testing.T) backend{
		"miniredis": func(t *testing.T) backend {
			m := miniredis.RunT(t)
			now := time.Now()
			m.SetTime(now)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			return backend{"redis", m.Addr(), rdb, func(d time.Duration) { now = now.Add(d); m.SetTime(now) }}
		},
	}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) backend {
			opt, err := redis.ParseURL(url)
			if err != nil || opt.DB != 0 || opt.Password != "" {
				t.Skipf("TEST_REDIS_URL %q: the child connects by address to DB 0 only", url)
			}
			rdb := redis.NewClient(opt)
			t.Cleanup(func() { rdb.Close() })
			return backend{"redis", opt.Addr, rdb, time.Sleep}
		}
	}
	if addrs := os.Getenv("TEST_REDIS_CLUSTER_ADDRS"); addrs != "" {
		backends["cluster"] = func(t *testing.T) backend {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
			t.Cleanup(func() { rdb.Close() })
			return backend{"cluster", addrs, rdb, time.Sleep}
		}
	}
	for name, newBackend := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			key := heldPrefix() + "{held}:concurrency"
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				b.rdb.Del(ctx, key)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			child := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHoldPlacesChild$", "-test.count=1")
			child.Env = append(os.Environ(), holdEnv+"="+b.kind+"|"+b.addrs+"|"+key)
			out, err := child.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := child.Start(); err != nil {
				t.Fatalf("start the child: %v", err)
			}
			t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || strings.TrimSpace(line) != "holding" {
				t.Fatalf("child said %q (%v), want holding", line, err)
			}
			if err := child.Process.Kill(); err != nil { // SIGKILL: no deferred release runs
				t.Fatalf("kill -9 the child: %v", err)
			}
			_ = child.Wait()
			killed := time.Now()

			l := New(b.rdb, Options{Timeout: 5 * time.Second})
			decide := func() Result {
				t.Helper()
				res, err := l.Decide(ctx, []Rule{{Algorithm: algo("concurrency"), Limit: holdLimit, Key: key}})
				if err != nil {
					t.Fatalf("Decide(): %v", err)
				}
				if res.Holds() {
					t.Cleanup(func() { l.Release(context.Background(), res) })
				}
				return res
			}
			if res := decide(); res.Allowed {
				t.Fatalf("right after the kill: Decide() = %+v, want denied (the dead process's places are held)", res)
			}
			b.advance(holdTimeout - time.Since(killed) + 50*time.Millisecond)
			res := decide()
			if !res.Allowed || res.Decisions[0].Remaining != holdLimit.Requests-1 {
				t.Errorf("%v after the kill: Decide() = %+v, want allowed with %d left (every place expired)", time.Since(killed), res, holdLimit.Requests-1)
			}
		})
	}
}

// lateScripter runs the next late script call only after its caller gave
// up (its ctx is done), as Redis does with a command written before a stall:
// right then, before the caller's error is returned (the reply is lost), or,
// with after set, once after is closed (in the background; ran is closed
// when it has run). Other calls pass straight through.
type lateScripter struct {
	redis.Scripter
	late  atomic.Int32 // calls still to delay
	after chan struct{}
	ran   chan struct{}
}

func (s *lateScripter) delay(ctx context.Context, run func(context.Context) *redis.Cmd) *redis.Cmd {
	if s.late.Add(-1) < 0 {
		s.late.Add(1)
		return run(ctx)
	}
	<-ctx.Done()
	cmd := redis.NewCmd(ctx)
	cmd.SetErr(ctx.Err())
	if s.after == nil {
		run(context.Background())
		close(s.ran)
		return cmd
	}
	go func() {
		<-s.after
		run(context.Background())
		close(s.ran)
	}()
	return cmd
}

func (s *lateScripter) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return s.delay(ctx, func(ctx context.Context) *redis.Cmd { return s.Scripter.EvalSha(ctx, sha, keys, args...) })
}

func (s *lateScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return s.delay(ctx, func(ctx context.Context) *redis.Cmd { return s.Scripter.Eval(ctx, script, keys, args...) })
}

// TestReleaseAfterTimeout: a decision that times out while Redis still runs
// its script (after the caller gave up, before or after the caller's
// Release) holds no place once Release returned and the script ran.
func TestReleaseAfterTimeout(t *testing.T) {
	backends := map[string]func(t *testing.T) redis.UniversalClient{
		"miniredis": func(t *testing.T) redis.UniversalClient {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			return rdb
		},
	}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) redis.UniversalClient {
			opt, err := redis.ParseURL(url)
			if err != nil {
				t.Fatalf("TEST_REDIS_URL: %v", err)
			}
			rdb := redis.NewClient(opt)
			t.Cleanup(func() { rdb.Close() })
			return rdb
		}
	}
	limit := algorithms.Limit{Requests: 2, Window: 10 * time.Minute}
	tests := []struct {
		name        string
		others      []Rule // decided with the concurrency rule
		afterCommit bool   // the late script runs after Release
	}{
		{name: "one rule, script before release"},
		{name: "one rule, script after release", afterCommit: true},
		{name: "two rules, script before release", others: []Rule{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 100, Window: time.Minute}, Key: "fw"}}},
		{name: "two rules, script after release", others: []Rule{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 100, Window: time.Minute}, Key: "fw"}}, afterCommit: true},
	}
	for name, newBackend := range backends {
		for _, tt := range tests {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rdb := newBackend(t)
				prefix := heldPrefix() + "{late}:"
				key := prefix + "concurrency"
				rules := []Rule{{Algorithm: algo("concurrency"), Limit: limit, Key: key}}
				for _, r := range tt.others {
					r.Key = prefix + r.Key
					rules = append(rules, r)
				}
				t.Cleanup(func() {
					for _, r := range rules {
						rdb.Del(context.Background(), r.Key)
					}
				})
				s := &lateScripter{Scripter: rdb, ran: make(chan struct{})}
				if tt.afterCommit {
					s.after = make(chan struct{})
				}
				l := New(s, Options{Timeout: 50 * time.Millisecond})
				ctx := context.Background()
				// The scripts are loaded: the late call is the decision.
				warm, err := l.Decide(ctx, rules)
				if err != nil || !warm.Allowed {
					t.Fatalf("first Decide() = %+v, %v; want allowed", warm, err)
				}
				if err := l.Release(ctx, warm); err != nil {
					t.Fatalf("first Release(): %v", err)
				}

				s.late.Store(1)
				res, err := l.Decide(ctx, rules)
				if err == nil {
					t.Fatalf("late Decide() error = nil, want a timeout")
				}
				if err := l.Release(ctx, res); err != nil {
					t.Errorf("Release() of the timed-out decision: %v", err)
				}
				if s.after != nil {
					close(s.after)
				}
				<-s.ran
				if n := rdb.ZCard(ctx, key).Val(); n != 0 {
					t.Errorf("after the timed-out decision's Release: %d places held, want 0", n)
				}
				for i := range limit.Requests {
					res, err := l.Decide(ctx, rules)
					if err != nil || !res.Allowed {
						t.Fatalf("Decide() %d after the release = %+v, %v; want allowed", i+1, res, err)
					}
					t.Cleanup(func() { l.Release(context.Background(), res) })
				}
			})
		}
	}
}

// failingScripter fails every script call while down is set, as a Redis
// that does not answer.
type failingScripter struct {
	redis.Scripter
	down atomic.Bool
}

func (s *failingScripter) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	if s.down.Load() {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errors.New("dial tcp: connection refused"))
		return cmd
	}
	return s.Scripter.EvalSha(ctx, sha, keys, args...)
}

func (s *failingScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	if s.down.Load() {
		cmd := redis.NewCmd(ctx)
		cmd.SetErr(errors.New("dial tcp: connection refused"))
		return cmd
	}
	return s.Scripter.Eval(ctx, script, keys, args...)
}

// TestFailedReleaseRetried: places whose Release failed (Redis away, or the
// circuit open) are given back once Redis answers again, long before their
// timeout.
func TestFailedReleaseRetried(t *testing.T) {
	tests := []struct {
		name string
		open bool // the circuit is open at the Release
	}{
		{name: "release fails"},
		{name: "circuit open", open: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			s := &failingScripter{Scripter: rdb}
			l := New(s, Options{Timeout: 50 * time.Millisecond, BreakerFailures: 1, BreakerCooldown: time.Hour})
			t.Cleanup(l.Close)
			rules := []Rule{{Algorithm: algo("concurrency"), Limit: algorithms.Limit{Requests: 2, Window: 10 * time.Minute}, Key: "{r}:concurrency"}}
			ctx := context.Background()
			res, err := l.Decide(ctx, rules)
			if err != nil || !res.Allowed {
				t.Fatalf("Decide() = %+v, %v; want allowed", res, err)
			}
			s.down.Store(true)
			if tt.open {
				l.Decide(ctx, rules) // fails: the circuit opens
				if !l.CircuitOpen() {
					t.Fatal("after a failure with BreakerFailures 1: CircuitOpen() = false")
				}
			}
			if err := l.Release(ctx, res); err == nil {
				t.Fatal("Release() with Redis away = nil, want an error")
			}
			s.down.Store(false)
			deadline := time.Now().Add(5 * time.Second)
			for rdb.ZCard(ctx, "{r}:concurrency").Val() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("5s after Redis answers again: %d places held, want 0 (the failed release retried)", rdb.ZCard(ctx, "{r}:concurrency").Val())
				}
				time.Sleep(10 * time.Millisecond)
			}
			for deadline := time.Now().Add(time.Second); l.unreleased.size() != 0 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if n := l.unreleased.size(); n != 0 {
				t.Errorf("failed releases still pending: %d, want 0", n)
			}
		})
	}
}
