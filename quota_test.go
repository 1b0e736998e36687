package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"tollgate/config"
)

// quota runs "tollgate quota args..." with env and returns what it printed
// and logged.
func quota(t *testing.T, env map[string]string, args ...string) (out, logs string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = runCLI(ctx, append([]string{"quota"}, args...), func(k string) string { return env[k] }, strings.NewReader(""), &stdout, &stderr)
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

func TestQuotaUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"show without WHO", []string{"show"}},
		{"show with two", []string{"show", "amy", "bo"}},
		{"show with a policy", []string{"show", "amy", "--policy", "p"}},
		{"show a bad address", []string{"show", "ip:1.2.3"}},
		{"show an address with a prefix", []string{"show", "ip:2001:db8::/64"}},
		{"show an empty address", []string{"show", "ip:"}},
		{"show a flag", []string{"show", "--all"}},
		{"reset without WHO", []string{"reset", "--policy", "p"}},
		{"reset with an unknown flag", []string{"reset", "amy", "--all"}},
		{"grant without a policy", []string{"grant", "amy", "1"}},
		{"grant without N", []string{"grant", "amy", "--policy", "p"}},
		{"grant zero", []string{"grant", "amy", "0", "--policy", "p"}},
		{"grant a negative", []string{"grant", "amy", "-1", "--policy", "p"}},
		{"grant a fraction", []string{"grant", "amy", "1.5", "--policy", "p"}},
		{"grant a word", []string{"grant", "amy", "one", "--policy", "p"}},
		{"grant to a name with a control character", []string{"grant", "amy\n", "1", "--policy", "p"}},
		{"quota alone", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := quota(t, map[string]string{}, tt.args...)
			if !errors.Is(err, errUsage) {
				t.Errorf("quota %q = %v, want an error wrapping errUsage", tt.args, err)
			}
			if out != "" {
				t.Errorf("quota %q printed %q, want nothing", tt.args, out)
			}
		})
	}
}

// TestQuotaSettings: settings and names the command cannot work with.
func TestQuotaSettings(t *testing.T) {
	t.Parallel()
	env := baseEnv(t, sharedRedis(t))
	if _, _, err := quota(t, env, "show", "nobody"); err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), `no user "nobody"`) {
		t.Errorf("quota show nobody = %v, want a failure naming the unknown user", err)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "1", "--policy", "nope"); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "fixed_window") {
		t.Errorf("quota grant --policy nope = %v, want a usage error listing the policies", err)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "6", "--policy", "fixed_window"); !errors.Is(err, errUsage) {
		t.Errorf("quota grant of 6 under a limit of 5 = %v, want a usage error", err)
	}
	embedded := map[string]string{"DB_DSN": env["DB_DSN"]}
	if _, _, err := quota(t, embedded, "show", "ip:1.2.3.4"); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Errorf("quota show without REDIS_URL = %v, want a settings error naming REDIS_URL", err)
	}
	env["RATE_LIMIT_ENABLED"] = "false"
	if _, _, err := quota(t, env, "show", "ip:1.2.3.4"); err == nil || !strings.Contains(err.Error(), "RATE_LIMIT_ENABLED") {
		t.Errorf("quota show with rate limiting off = %v, want an error saying so", err)
	}
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
	if _, _, err := quota(t, env, "grant", "jane", "5", "--policy", "bucket"); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "want 1 to 4") {
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

// TestQuotaSeesOverrides: an override in force replaces the policy's limit
// for its user, in show and in a grant, as on the servers.
func TestQuotaSeesOverrides(t *testing.T) {
	t.Parallel()
	env := baseEnv(t, sharedRedis(t))
	// A database of its own: the run's MySQL database is shared by the
	// services of other tests, whose john_doe must keep the policy's limit.
	env["DB_DRIVER"], env["DB_DSN"] = "sqlite", filepath.Join(t.TempDir(), "overrides.db")
	if out, err := cli(t, env, "", "overrides", "set", "john_doe", "--policy", "fixed_window", "--limit", "2"); err != nil {
		t.Fatalf("overrides set: %v\n%s", err, out)
	}
	out := mustQuota(t, env, "grant", "john_doe", "2", "--policy", "fixed_window")
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "fixed_window (override ") {
			row = strings.Fields(line)
		}
	}
	// fixed_window (override N) ALGORITHM LIMIT WINDOW USED REMAINING RESET
	if len(row) < 8 || row[4] != "2" || row[7] != "4" {
		t.Errorf("grant of 2 under an override of 2: row %q, want limit 2 and remaining 4\n%s", row, out)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "3", "--policy", "fixed_window"); !errors.Is(err, errUsage) {
		t.Errorf("grant of 3 under an override of 2 = %v, want a usage error (at most one quota)", err)
	}
	if got := quotaRow(t, mustQuota(t, env, "show", "jane"), "fixed_window")[2]; got != "5" {
		t.Errorf("show jane: limit %s, want the policy's 5 (the override is john_doe's)", got)
	}
}

// TestQuotaGrantSkipsHeldLimits: a grant under a policy mixing a
// concurrency limit (places held while requests run: nothing to grant) and
// a calendar quota, as the example file's heavy, grants the calendar quota
// and says it skipped the other; a policy of held limits alone is refused.
func TestQuotaGrantSkipsHeldLimits(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomically(t, path, `policies:
  - name: heavy
    key: user_or_ip
    limits:
      - {algorithm: concurrency, limit: 4, timeout: 30s}
      - {algorithm: calendar, limit: 100, period: month, timezone: Europe/Berlin}
  - name: places
    key: user_or_ip
    limits:
      - {algorithm: concurrency, limit: 4, timeout: 30s}
`)
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_POLICY_FILE"] = path
	env["DB_DRIVER"], env["DB_DSN"] = "sqlite", filepath.Join(t.TempDir(), "quota.db")
	out, _, err := quota(t, env, "grant", "john_doe", "5", "--policy", "heavy")
	if err != nil {
		t.Fatalf("grant 5 under heavy = %v, want the calendar quota granted\n%s", err, out)
	}
	if got := quotaRow(t, out, "heavy-2"); got[1] != "calendar" || got[5] != "105" {
		t.Errorf("grant 5 under heavy: calendar row %q, want remaining 105\n%s", got, out)
	}
	if !strings.Contains(out, "note: heavy-1 (concurrency) not granted") {
		t.Errorf("grant under heavy does not say it skipped the concurrency limit:\n%s", out)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "5", "--policy", "places"); !errors.Is(err, errUsage) {
		t.Errorf("grant under a policy of concurrency limits alone = %v, want a usage error", err)
	}
	for _, n := range []string{"-5", "0", "1.5"} {
		_, _, err := quota(t, env, "grant", "john_doe", n, "--policy", "heavy")
		if !errors.Is(err, errUsage) || !strings.Contains(fmt.Sprint(err), "N must be a positive integer") {
			t.Errorf("grant %s = %v, want a usage error saying N must be a positive integer", n, err)
		}
	}
}
