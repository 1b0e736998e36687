package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tollgate/config"
	"tollgate/live"
	"tollgate/routes"
)

// writeAtomically replaces the file at path with text, as an operator's
// deploy tool would: a reader sees the old file or the new one.
func writeAtomically(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s: %v", tmp, err)
	}
}

// liveService runs the service on the policy file text (and, if candidate
// is not empty, that candidate file), reloading on the returned channel and
// checking the files every poll. It returns the base URL, the files' paths
// and the channel.
func liveService(t *testing.T, env map[string]string, text, candidate string, poll time.Duration, opts ...runOption) (base, path, candidatePath string, hup chan os.Signal) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "policies.yaml")
	writeAtomically(t, path, text)
	env["RATE_LIMIT_POLICY_FILE"] = path
	if candidate != "" {
		candidatePath = filepath.Join(dir, "candidate.yaml")
		writeAtomically(t, candidatePath, candidate)
		env["RATE_LIMIT_CANDIDATE_FILE"] = candidatePath
	}
	hup = make(chan os.Signal)
	base, _ = serviceWithLogs(t, env, append(opts, withReload(hup), withPolicyPoll(poll))...)
	return base, path, candidatePath, hup
}

// versions reads the policy files' versions from /ratelimit.
func versions(t *testing.T, base string) (live, candidate string) {
	t.Helper()
	var body struct {
		Live      string `json:"policy_sha256"`
		Candidate string `json:"candidate_sha256"`
	}
	r := get(t, base+"/ratelimit", nil)
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("/ratelimit: %v: %s", err, r.body)
	}
	return body.Live, body.Candidate
}

// version is the first 12 hex digits of text's SHA-256, as the service
// names a policy file.
func version(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.yaml")
	writeAtomically(t, path, text)
	_, v, err := live.ReadFile(path, routes.Limited())
	if err != nil {
		t.Fatalf("live.ReadFile(%q): %v", text, err)
	}
	return v
}

// waitFor polls cond every 10ms for up to 20s: for what happens on another
// goroutine's schedule (a refresh), not for time to pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func metricsOf(t *testing.T, base string) string {
	t.Helper()
	return string(get(t, base+"/metrics", nil).body)
}

// TestReloadUnderLoad: while 16 clients send requests, the policy file is
// rewritten and reloaded (SIGHUP) 40 times between two versions whose limits
// keep their names, positions and algorithms. No request fails, and every
// response's rate-limit headers are exactly those of one version: none mixes
// the two.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	// p1 keeps its name, position and algorithm (its key and count); the
	// second policy is renamed, so header texts of one version with the
	// numbers of the other would show too.
	file := func(q1 int, second string, q2 int, w string) string {
		return fmt.Sprintf(`policies:
  - name: p1
    key: user_or_ip
    limits: [{algorithm: fixed_window, limit: %d, window: %s}]
  - name: %s
    key: user_or_ip
    limits: [{algorithm: sliding_window, limit: %d, window: %s}]
`, q1, w, second, q2, w)
	}
	a, b := file(100000, "p2", 200000, "1m"), file(300000, "q2", 400000, "2m")
	// RateLimit-Policy -> X-RateLimit-Limit: the limit of the version with
	// the least remaining; from a lease both report its unused units (the
	// lease's Remaining, docs/algorithms.md), so either limit of the version.
	want := map[string][]string{
		`"p1";q=100000;w=60, "p2";q=200000;w=60`:   {"100000", "200000"},
		`"p1";q=300000;w=120, "q2";q=400000;w=120`: {"300000", "400000"},
	}
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_FAIL_OPEN"] = "false" // a Redis failure must show as a failed request
	base, path, _, hup := liveService(t, env, a, "", time.Hour)

	var stop atomic.Bool
	var sent, failed atomic.Int64
	seen := map[string]*atomic.Int64{}
	for k := range want {
		seen[k] = &atomic.Int64{}
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for !stop.Load() {
				resp, err := http.Get(base + "/continents")
				if err != nil {
					t.Errorf("GET /continents: %v", err)
					failed.Add(1)
					return
				}
				resp.Body.Close()
				sent.Add(1)
				p, limit := resp.Header.Get("RateLimit-Policy"), resp.Header.Get("X-RateLimit-Limit")
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("GET /continents = %d, want 200", resp.StatusCode)
				} else if wl, ok := want[p]; !ok || !slices.Contains(wl, limit) {
					failed.Add(1)
					t.Errorf("headers RateLimit-Policy %q, X-RateLimit-Limit %q: of neither version (or mixed)", p, limit)
				} else {
					seen[p].Add(1)
				}
			}
		})
	}
	const reloads = 40
	for i := range reloads {
		text := b
		if i%2 == 1 {
			text = a
		}
		writeAtomically(t, path, text)
		hup <- syscall.SIGHUP
		time.Sleep(20 * time.Millisecond) // let requests run under each version
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d requests during %d reloads, %d failed; per version: %d, %d", sent.Load(), reloads, failed.Load(),
		seen[`"p1";q=100000;w=60, "p2";q=200000;w=60`].Load(), seen[`"p1";q=300000;w=120, "q2";q=400000;w=120`].Load())
	for p, n := range seen {
		if n.Load() == 0 {
			t.Errorf("no response under %q: the test did not see both versions", p)
		}
	}
	// The last write was a: reloads happen in order, each before the next signal is taken.
	hup <- syscall.SIGHUP // after a signal is taken, the one before it is done
	if live, _ := versions(t, base); live != version(t, a) {
		t.Errorf("/ratelimit policy_sha256 = %q, want %q", live, version(t, a))
	}
	m := metricsOf(t, base)
	if got := metricValue(m, `tollgate_policy_reloads_total{result="ok"}`); got < reloads {
		t.Errorf("reloads ok = %v, want at least %d", got, reloads)
	}
	if got := metricValue(m, fmt.Sprintf(`tollgate_policy_info{sha256=%q}`, version(t, a))); got != 1 {
		t.Errorf("tollgate_policy_info of a = %v, want 1", got)
	}
}

// TestReloadRefusesInvalidFile: a file that fails start-up's checks is
// refused, counted and logged; the policies in use keep serving. Changes on
// disk are found without a signal, and a limit that keeps its name,
// position and algorithm keeps its count.
func TestReloadRefusesInvalidFile(t *testing.T) {
	t.Parallel()
	file := func(limit int) string {
		return fmt.Sprintf("policies:\n  - name: p\n    key: user_or_ip\n    limits: [{algorithm: fixed_window, limit: %d, window: 1h}]\n", limit)
	}
	env := baseEnv(t, sharedRedis(t))
	base, path, _, _ := liveService(t, env, file(5), "", 20*time.Millisecond)
	for range 2 {
		if r := get(t, base+"/continents", nil); r.header.Get("X-RateLimit-Remaining") == "" {
			t.Fatalf("no X-RateLimit-Remaining: %v", r.header)
		}
	}

	bad := "policies:\n  - name: p\n    limits: [{algorithm: leaky_bucket, limit: 5, window: 1h}]\n"
	writeAtomically(t, path, bad)
	waitFor(t, "refusal of an invalid file", func() bool {
		return metricValue(metricsOf(t, base), `tollgate_policy_reloads_total{result="invalid"}`) == 1
	})
	m := metricsOf(t, base)
	if got := metricValue(m, fmt.Sprintf(`tollgate_policy_info{sha256=%q}`, version(t, file(5)))); got != 1 {
		t.Errorf("tollgate_policy_info of the first file = %v, want 1 (still in use)", got)
	}
	if live, _ := versions(t, base); live != version(t, file(5)) {
		t.Errorf("after an invalid file: policy_sha256 %q, want the first file's %q", live, version(t, file(5)))
	}
	r := get(t, base+"/continents", nil)
	if r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != "5" || r.header.Get("X-RateLimit-Remaining") != "2" {
		t.Errorf("after an invalid file: %d, limit %q, remaining %q; want 200, 5, 2 (the first file still serving)",
			r.status, r.header.Get("X-RateLimit-Limit"), r.header.Get("X-RateLimit-Remaining"))
	}

	// No signal: the watcher sees the change. p keeps its name, position
	// and algorithm: its key, so the 3 requests counted so far.
	writeAtomically(t, path, file(10))
	waitFor(t, "reload of a changed file", func() bool { live, _ := versions(t, base); return live == version(t, file(10)) })
	if got := metricValue(metricsOf(t, base), `tollgate_policy_reloads_total{result="invalid"}`); got != 1 {
		t.Errorf(`tollgate_policy_reloads_total{result="invalid"} = %v, want 1 (an unchanged file is read, not counted, at each check)`, got)
	}
	r = get(t, base+"/continents", nil)
	if r.header.Get("X-RateLimit-Limit") != "10" || r.header.Get("X-RateLimit-Remaining") != "6" {
		t.Errorf("after raising the limit to 10: limit %q, remaining %q; want 10, 6 (the count kept)",
			r.header.Get("X-RateLimit-Limit"), r.header.Get("X-RateLimit-Remaining"))
	}
	if page := string(get(t, base+"/", nil).body); !strings.Contains(page, version(t, file(10))) {
		t.Errorf("home page does not show the version in use %s", version(t, file(10)))
	}
}

// TestCandidatePolicies: a candidate file is decided beside the live one,
// under keys of its own, never rejecting and adding no headers; its
// decisions are counted per limit and result, and it reloads like the live
// file.
func TestCandidatePolicies(t *testing.T) {
	t.Parallel()
	live := "policies:\n  - name: p\n    key: user_or_ip\n    limits: [{algorithm: fixed_window, limit: 100, window: 1h}]\n"
	candidate := func(limit int) string {
		return fmt.Sprintf("policies:\n  - name: p\n    key: user_or_ip\n    limits: [{algorithm: fixed_window, limit: %d, window: 1h}]\n", limit)
	}
	r := sharedRedis(t)
	env := baseEnv(t, r)
	// Every candidate decision is counted: none dropped after a slow one
	// (a loaded machine's), which the budget would otherwise do.
	base, _, candidatePath, hup := liveService(t, env, live, candidate(2), time.Hour, withAsideSlow(time.Minute))
	for i := range 5 {
		resp := get(t, base+"/continents", nil)
		if resp.status != http.StatusOK || resp.header.Get("RateLimit-Policy") != `"p";q=100;w=3600` || resp.header.Get("X-RateLimit-Remaining") != fmt.Sprint(99-i) {
			t.Errorf("request %d: %d, RateLimit-Policy %q, remaining %q; want 200 and the live file's headers alone",
				i, resp.status, resp.header.Get("RateLimit-Policy"), resp.header.Get("X-RateLimit-Remaining"))
		}
	}
	// Candidate decisions run beside the request, not before its answer:
	// the counters are read once the five are in.
	var m string
	counted := func() bool {
		m = metricsOf(t, base)
		return metricValue(m, `tollgate_ratelimit_candidate_decisions_total{policy="p",result="allowed"}`)+
			metricValue(m, `tollgate_ratelimit_candidate_decisions_total{policy="p",result="limited"}`) >= 5
	}
	for deadline := time.Now().Add(5 * time.Second); !counted() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	for series, want := range map[string]float64{
		`tollgate_ratelimit_candidate_decisions_total{policy="p",result="allowed"}`: 2,
		`tollgate_ratelimit_candidate_decisions_total{policy="p",result="limited"}`: 3,
	} {
		if got := metricValue(m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	// The counters' keys, each with its {subject} (not the instances').
	keys, err := r.rdb.Keys(t.Context(), env["REDIS_KEY_PREFIX"]+"*{*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	for i, k := range keys {
		keys[i] = windowless(k)
	}
	slices.Sort(keys)
	want := []string{env["REDIS_KEY_PREFIX"] + "candidate:{ip:127.0.0.1}:p:0:fixed_window", env["REDIS_KEY_PREFIX"] + "{ip:127.0.0.1}:p:0:fixed_window"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q: the candidate's apart from the live one's", keys, want)
	}

	writeAtomically(t, candidatePath, candidate(10))
	hup <- syscall.SIGHUP
	hup <- syscall.SIGHUP // taken once the first one's reload is done
	if _, got := versions(t, base); got != version(t, candidate(10)) {
		t.Errorf("/ratelimit candidate_sha256 = %q, want %q", got, version(t, candidate(10)))
	}
	get(t, base+"/continents", nil) // the candidate's 3rd of 10 (its count kept)
	allowed3 := func() bool {
		m = metricsOf(t, base)
		return metricValue(m, `tollgate_ratelimit_candidate_decisions_total{policy="p",result="allowed"}`) >= 3
	}
	for deadline := time.Now().Add(5 * time.Second); !allowed3() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := metricValue(m, `tollgate_ratelimit_candidate_decisions_total{policy="p",result="allowed"}`); got != 3 {
		t.Errorf("candidate allowed after its reload = %v, want 3", got)
	}
	if got := metricValue(m, fmt.Sprintf(`tollgate_candidate_policy_info{sha256=%q}`, version(t, candidate(10)))); got != 1 {
		t.Errorf("tollgate_candidate_policy_info = %v, want 1", got)
	}
}

// TestBinaryReloadsOnSIGHUP: the built service reloads its policy file on
// SIGHUP (main wires the signal; the log says what triggered a reload), and
// keeps serving.
func TestBinaryReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	file := func(limit int) string {
		return fmt.Sprintf("policies:\n  - name: p\n    key: user_or_ip\n    limits: [{algorithm: fixed_window, limit: %d, window: 1h}]\n", limit)
	}
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomically(t, path, file(5))
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_POLICY_FILE"] = path
	p := startBinary(t, bin, env)
	if live, _ := versions(t, p.base); live != version(t, file(5)) {
		t.Fatalf("policy_sha256 = %q, want %q", live, version(t, file(5)))
	}
	writeAtomically(t, path, file(7))
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	waitFor(t, "reload on SIGHUP", func() bool { return strings.Contains(p.logs.String(), `"trigger":"signal"`) })
	if live, _ := versions(t, p.base); live != version(t, file(7)) {
		t.Errorf("after SIGHUP: policy_sha256 = %q, want %q", live, version(t, file(7)))
	}
	if r := get(t, p.base+"/continents", nil); r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != "7" {
		t.Errorf("after SIGHUP: %d, X-RateLimit-Limit %q; want 200, 7", r.status, r.header.Get("X-RateLimit-Limit"))
	}
}

// TestReloadWaitsForStableFile: a file rewritten in place, in two writes
// with a pause between them whose first part is a valid file on its own
// (`limit: 10` of `limit: 1000`), is loaded only once whole: the watcher
// loads a change once the file stayed the same for the settle time.
func TestReloadWaitsForStableFile(t *testing.T) {
	t.Parallel()
	file := func(limit int) string {
		return fmt.Sprintf("policies:\n  - name: p\n    key: user_or_ip\n    limits:\n      - algorithm: fixed_window\n        window: 1h\n        limit: %d\n", limit)
	}
	env := baseEnv(t, sharedRedis(t))
	base, path, _, _ := liveService(t, env, file(5), "", 20*time.Millisecond, withPolicySettle(time.Second))

	whole := file(1000)
	half := strings.TrimSuffix(whole, "00\n")
	if version(t, half) == "" { // a valid file on its own
		t.Fatal("the first part is not a valid file")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	if _, err := f.WriteString(half); err != nil {
		t.Fatalf("write: %v", err)
	}
	time.Sleep(300 * time.Millisecond) // 15 polls see the first part
	if _, err := f.WriteString(whole[len(half):]); err != nil {
		t.Fatalf("write: %v", err)
	}
	waitFor(t, "reload of the whole file", func() bool { live, _ := versions(t, base); return live == version(t, whole) })
	m := metricsOf(t, base)
	if got := metricValue(m, `tollgate_policy_reloads_total{result="ok"}`); got != 1 {
		t.Errorf(`tollgate_policy_reloads_total{result="ok"} = %v, want 1 (the whole file only, not its first part)`, got)
	}
	if got := metricValue(m, `tollgate_policy_reloads_total{result="invalid"}`); got > 0 {
		t.Errorf(`tollgate_policy_reloads_total{result="invalid"} = %v, want none`, got)
	}
}

// TestPolicyFileTooBig: a policy file over 1 MiB is refused unread: at
// start-up (a setting's error: exit 2), and at a reload (the running
// policies keep serving).
func TestPolicyFileTooBig(t *testing.T) {
	t.Parallel()
	small := "policies:\n  - name: p\n    key: user_or_ip\n    limits: [{algorithm: fixed_window, limit: 5, window: 1h}]\n"
	big := small + strings.Repeat("#", live.MaxFile)
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_POLICY_FILE"] = filepath.Join(t.TempDir(), "big.yaml")
	env["PORT"] = "0"
	writeAtomically(t, env["RATE_LIMIT_POLICY_FILE"], big)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := run(ctx, func(k string) string { return env[k] }, &syncBuffer{})
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "1 MiB") {
		t.Errorf("run() with a file of %d bytes = %v, want a config.ErrInvalid naming the 1 MiB limit", len(big), err)
	}

	env = baseEnv(t, sharedRedis(t))
	base, path, _, hup := liveService(t, env, small, "", time.Hour)
	writeAtomically(t, path, big)
	hup <- syscall.SIGHUP
	hup <- syscall.SIGHUP // taken once the first one's reload is done
	m := metricsOf(t, base)
	if got := metricValue(m, `tollgate_policy_reloads_total{result="invalid"}`); got != 2 {
		t.Errorf(`tollgate_policy_reloads_total{result="invalid"} = %v, want 2`, got)
	}
	if live, _ := versions(t, base); live != version(t, small) {
		t.Errorf("after a too big file: policy_sha256 %q, want the first file's %q", live, version(t, small))
	}
}

// windowless is key without the window number fixed_window counts a
// window under (<rule key>:<n>): the rule's key.
func windowless(key string) string {
	if i := strings.LastIndexByte(key, ':'); i >= 0 {
		if _, err := strconv.ParseInt(key[i+1:], 10, 64); err == nil {
			return key[:i]
		}
	}
	return key
}
