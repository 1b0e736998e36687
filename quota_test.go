package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tollgate/admin"
)

// quota runs "tollgate quota args..." with env and returns what it printed
// and logged.
func quota(t *testing.T, env map[string]string, args ...string) (out, logs string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = admin.Run(ctx, append([]string{"quota"}, args...), adminEnv(func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr))
	return stdout.String(), stderr.String(), err
}

// mustQuota is quota, failing the test on an error.
func mustQuota(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, _, err := quota(t, env, args...)
	if err != nil {
		t.Fatalf("quota %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// quotaRow returns the fields POLICY, ALGORITHM, LIMIT, WINDOW, USED,
// REMAINING of the row of the named limit in a quota printout.
func quotaRow(t *testing.T, out, name string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 7 && f[0] == name {
			return f[:6]
		}
	}
	t.Fatalf("no row for %s in:\n%s", name, out)
	return nil
}

// TestQuotaAgainstService runs show, grant and reset on a running service's
// Redis (its deny cache on, as by default) and checks the printouts and the
// service's next answers.
func TestQuotaAgainstService(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  func(t *testing.T) map[string]string
	}{
		{"redis", func(t *testing.T) map[string]string { return baseEnv(t, sharedRedis(t)) }},
		{"redis cluster", clusterEnv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := tt.env(t)
			base := service(t, env)
			john := basic("john_doe", "EXAMPLE_PASSWORD")
			statusOf := func() int { return get(t, base+"/continents", john).status }
			// admitted waits for the service to admit a request: the
			// announcement of a change reaches its deny cache asynchronously
			// (through the cluster bus, a few ms). Denied requests consume
			// nothing; a stale cached denial lasts a minute, past the wait.
			admitted := func() bool {
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					if statusOf() == http.StatusOK {
						return true
					}
				}
				return false
			}

			out := mustQuota(t, env, "show", "john_doe")
			if got, want := quotaRow(t, out, "fixed_window"), []string{"fixed_window", "fixed_window", "5", "1m0s", "0", "5"}; !slices.Equal(got, want) {
				t.Errorf("show before any request: row %q, want %q\n%s", got, want, out)
			}
			if !strings.HasPrefix(out, "user:john_doe (tier free)\n") {
				t.Errorf("show printed %q, want it to start with the subject and tier", out)
			}
			for range 6 {
				statusOf()
			}
			if s := statusOf(); s != http.StatusTooManyRequests {
				t.Fatalf("after 7 requests: status %d, want 429", s)
			}
			out = mustQuota(t, env, "show", "john_doe")
			if got := quotaRow(t, out, "fixed_window")[4:]; !slices.Equal(got, []string{"5", "0"}) {
				t.Errorf("show after exhaustion: used, remaining %q, want 5 0\n%s", got, out)
			}
			if !strings.Contains(out, "(in ") {
				t.Errorf("show after exhaustion prints no reset time:\n%s", out)
			}
			// Showing consumes nothing.
			if again := mustQuota(t, env, "show", "john_doe"); quotaRow(t, again, "fixed_window")[5] != "0" {
				t.Errorf("second show:\n%s", again)
			}

			out, logs, err := quota(t, env, "grant", "john_doe", "1", "--policy", "fixed_window")
			if err != nil {
				t.Fatalf("quota grant: %v", err)
			}
			if got := quotaRow(t, out, "fixed_window")[5]; got != "1" {
				t.Errorf("grant printed remaining %s, want 1\n%s", got, out)
			}
			var line struct {
				Msg, Subject, Policy string
				Units, Limits        int
			}
			if err := json.Unmarshal([]byte(strings.TrimSpace(logs)), &line); err != nil || line.Msg != "quota granted" ||
				line.Subject != "user:john_doe" || line.Policy != "fixed_window" || line.Units != 1 || line.Limits != 1 {
				t.Errorf("grant logged %q (%v), want one JSON line: quota granted, subject, policy, units 1, limits 1", logs, err)
			}
			if !admitted() {
				t.Errorf("after a grant of 1: status 429 for 5s, want 200")
			}
			if s := statusOf(); s != http.StatusTooManyRequests {
				t.Errorf("after using the grant: status %d, want 429", s)
			}

			out, logs, err = quota(t, env, "reset", "john_doe")
			if err != nil {
				t.Fatalf("quota reset: %v", err)
			}
			if got := quotaRow(t, out, "fixed_window")[4:]; !slices.Equal(got, []string{"0", "5"}) {
				t.Errorf("reset printed used, remaining %q, want 0 5\n%s", got, out)
			}
			if !strings.Contains(logs, `"msg":"quota reset"`) || !strings.Contains(logs, `"policy":"*"`) {
				t.Errorf("reset logged %q, want quota reset of every policy", logs)
			}
			if !admitted() {
				t.Errorf("after reset: status 429 for 5s, want 200")
			}
			for i := 1; i < 5; i++ {
				if s := statusOf(); s != http.StatusOK {
					t.Errorf("request %d after reset: status %d, want 200", i+1, s)
				}
			}
			if s := statusOf(); s != http.StatusTooManyRequests {
				t.Errorf("request 6 after reset: status %d, want 429", s)
			}

			// Callers without credentials, as the service counts them: the
			// test's client is 127.0.0.1, however the operator spells it.
			get(t, base+"/continents", nil)
			get(t, base+"/continents", nil)
			for _, who := range []string{"ip:127.0.0.1", "ip:::ffff:127.0.0.1", "ip:::FFFF:127.0.0.1"} {
				out := mustQuota(t, env, "show", who)
				if got := quotaRow(t, out, "fixed_window")[4:]; !slices.Equal(got, []string{"2", "3"}) {
					t.Errorf("show %s: used, remaining %q, want 2 3\n%s", who, got, out)
				}
				if !strings.HasPrefix(out, "ip:127.0.0.1 (tier anonymous)\n") {
					t.Errorf("show %s printed %q, want it to start with ip:127.0.0.1 (tier anonymous)", who, out)
				}
			}
			mustQuota(t, env, "reset", "ip:::ffff:127.0.0.1", "--policy", "fixed_window")
			if got := quotaRow(t, mustQuota(t, env, "show", "ip:127.0.0.1"), "fixed_window")[5]; got != "5" {
				t.Errorf("after reset of ip:::ffff:127.0.0.1: remaining %s for ip:127.0.0.1, want 5", got)
			}
		})
	}
}

// TestQuotaPolicies: a policy file with several policies and tiers; reset
// and grant touch only the policy named, and a grant goes beyond a full
// bucket. The buckets refill a token an hour: nothing refills during the
// test, however slow.
func TestQuotaPolicies(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	text := `policies:
  - name: minute
    key: user_or_ip
    limits:
      - {algorithm: sliding_log, limit: 3, window: 1m}
    tiers:
      pro:
        - {algorithm: sliding_log, limit: 10, window: 1m}
  - name: bucket
    key: user
    limits:
      - {algorithm: token_bucket, limit: 1, window: 1h, burst: 4}
      - {algorithm: gcra, limit: 24, window: 24h, burst: 20}
  - name: by-address
    key: ip
    limits:
      - {algorithm: fixed_window, limit: 100, window: 1m}
`
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_POLICY_FILE"] = path
	env["SEED_USERS"] += ",paul:PAUL_PASSWORD:pro"
	base := service(t, env)
	jane := basic("jane", "JANE_PASSWORD")
	for range 3 {
		if r := get(t, base+"/continents", jane); r.status != http.StatusOK {
			t.Fatalf("status %d, want 200: %s", r.status, r.body)
		}
	}
	out := mustQuota(t, env, "show", "jane")
	for name, want := range map[string][]string{
		"minute":   {"minute", "sliding_log", "3", "1m0s", "3", "0"},
		"bucket-1": {"bucket-1", "token_bucket", "4", "1h0m0s", "3", "1"},
		"bucket-2": {"bucket-2", "gcra", "20", "24h0m0s", "3", "17"},
	} {
		if got := quotaRow(t, out, name); !slices.Equal(got, want) {
			t.Errorf("show jane: row %q, want %q\n%s", got, want, out)
		}
	}
	if !strings.Contains(out, "note: policy by-address counts users by their address") {
		t.Errorf("show jane does not say by-address counts by address:\n%s", out)
	}
	if got := quotaRow(t, mustQuota(t, env, "show", "paul"), "minute")[2]; got != "10" {
		t.Errorf("show paul (pro): minute limit %s, want the tier's 10", got)
	}

	out = mustQuota(t, env, "reset", "jane", "--policy", "minute")
	if strings.Contains(out, "bucket") {
		t.Errorf("reset --policy minute printed other policies:\n%s", out)
	}
	out = mustQuota(t, env, "show", "jane")
	if got := quotaRow(t, out, "minute")[5]; got != "3" {
		t.Errorf("after reset of minute: remaining %s, want 3", got)
	}
	if got := quotaRow(t, out, "bucket-1")[5]; got != "1" { // refills a token an hour
		t.Errorf("after reset of minute: bucket-1 remaining %s, want it untouched, 1", got)
	}

	// Both limits of the policy at once; the gcra bucket is nearly full, so
	// its grant goes beyond the burst.
	out = mustQuota(t, env, "grant", "jane", "4", "--policy", "bucket")
	if got := quotaRow(t, out, "bucket-2")[5]; got != "21" {
		t.Errorf("grant of 4 to gcra 17/20: remaining %s, want 21\n%s", got, out)
	}
	if _, _, err := quota(t, env, "grant", "jane", "5", "--policy", "bucket"); !errors.Is(err, admin.ErrUsage) || !strings.Contains(err.Error(), "want 1 to 4") {
		t.Errorf("grant of 5 under a burst of 4 = %v, want a usage error", err)
	}
	if _, _, err := quota(t, env, "reset", "jane", "--policy", "by-address"); err == nil || !strings.Contains(err.Error(), "sets no limit for user:jane") {
		t.Errorf("reset of a policy that counts jane by address = %v, want a failure saying it sets no limit for her", err)
	}
}

// TestQuotaExitCodes runs the built binary: usage and settings errors exit
// 2, an unknown user 1, a done command 0.
func TestQuotaExitCodes(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	r := sharedRedis(t)
	env := baseEnv(t, r)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"show an address", []string{"show", "ip:::ffff:10.1.2.3"}, nil, 0},
		{"grant without --policy", []string{"grant", "john_doe", "1"}, nil, 2},
		{"grant under an unknown policy", []string{"grant", "john_doe", "1", "--policy", "nope"}, nil, 2},
		{"show an unknown user", []string{"show", "nobody"}, nil, 1},
		{"show without a Redis of its own", []string{"show", "ip:10.1.2.3"}, map[string]string{"REDIS_URL": ""}, 2},
		{"show on a Redis that does not answer", []string{"show", "ip:10.1.2.3"}, map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, append([]string{"quota"}, tt.args...)...)
			cmd.Dir = t.TempDir() // no .env file there
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
			for k, v := range env {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			for k, v := range tt.env {
				cmd.Env = append(cmd.Env, k+"="+v) // later entries win
			}
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tt.want {
				t.Errorf("quota %q: exit status %d (%v), want %d\n%s", tt.args, code, err, tt.want, out)
			}
		})
	}
}
