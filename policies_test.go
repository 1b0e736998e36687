package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tollgate/config"
)

// servicePolicies runs the service with the policy file text.
func servicePolicies(t *testing.T, text string, opts ...runOption) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatalf("write policies: %v", err)
	}
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_POLICY_FILE"] = path
	env["RATE_LIMIT_FAIL_OPEN"] = "false"
	base, _ := serviceWithLogs(t, env, opts...)
	return base
}

// statusesOf sends n requests one after another and lists the statuses.
func statusesOf(t *testing.T, url string, n int, h http.Header) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		out[i] = get(t, url, h).status
	}
	return out
}

func countOf(statuses []int, status int) int {
	n := 0
	for _, s := range statuses {
		if s == status {
			n++
		}
	}
	return n
}

type peekBody struct {
	Identity string `json:"identity"`
	Policies []struct {
		Name   string `json:"name"`
		Limits []struct {
			Name      string `json:"name"`
			Limit     int    `json:"limit"`
			Remaining int    `json:"remaining"`
		} `json:"limits"`
	} `json:"policies"`
}

func peek(t *testing.T, base string, h http.Header) map[string]int {
	t.Helper()
	r := get(t, base+"/ratelimit", h)
	if r.status != http.StatusOK {
		t.Fatalf("GET /ratelimit: status %d, body %s", r.status, r.body)
	}
	var b peekBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("GET /ratelimit body %s: %v", r.body, err)
	}
	remaining := map[string]int{}
	for _, p := range b.Policies {
		for _, l := range p.Limits {
			remaining[l.Name] = l.Remaining
		}
	}
	return remaining
}

func TestSeveralLimitsAtOnce(t *testing.T) {
	t.Parallel()
	base := servicePolicies(t, `
policies:
  - name: both
    key: user_or_ip
    limits:
      - {algorithm: fixed_window, limit: 10, window: 1h}
      - {algorithm: sliding_log, limit: 3, window: 1h}
`)
	auth := basic("john_doe", "EXAMPLE_PASSWORD")
	if got := peek(t, base, auth); got["both-1"] != 10 || got["both-2"] != 3 {
		t.Fatalf("peek before any request = %v, want both-1 10, both-2 3", got)
	}
	got := statusesOf(t, base+"/continents", 5, auth)
	if countOf(got, 200) != 3 || countOf(got, 429) != 2 {
		t.Errorf("5 requests under 10/h and 3/h: statuses %v, want 3 × 200 then 429s", got)
	}
	// The two denied requests failed the second limit and consumed none of the first.
	if got := peek(t, base, auth); got["both-1"] != 7 || got["both-2"] != 0 {
		t.Errorf("peek after 3 admitted, 2 denied = %v, want both-1 7, both-2 0", got)
	}
	// Peeking consumed nothing either.
	if got := peek(t, base, auth); got["both-1"] != 7 {
		t.Errorf("second peek = %v, want both-1 still 7", got)
	}
	r := get(t, base+"/continents", auth)
	if p := r.header.Get("RateLimit-Policy"); p != `"both-1";q=10;w=3600, "both-2";q=3;w=3600` {
		t.Errorf("RateLimit-Policy = %q, want both limits listed", p)
	}
	if got := r.header.Get("RateLimit"); !strings.HasPrefix(got, `"both-2";r=0;`) {
		t.Errorf("RateLimit = %q, want the exhausted limit both-2", got)
	}
}

func TestTiersRoutesShadowAndExemptions(t *testing.T) {
	t.Parallel()
	base := servicePolicies(t, `
policies:
  - name: tier
    key: user_or_ip
    exempt: {users: [jane]}
    tiers:
      anonymous: [{algorithm: fixed_window, limit: 2, window: 1h}]
      free: [{algorithm: token_bucket, limit: 4, window: 1h}]
  - name: detail
    match: ["GET /continents/:id"]
    key: ip
    limits: [{algorithm: gcra, limit: 1, window: 1h}]
  - name: trial
    key: user_or_ip
    shadow: true
    limits: [{algorithm: sliding_window, limit: 1, window: 1h}]
`, withAsideSlow(time.Minute)) // no shadow decision dropped after a slow one on a loaded machine
	john := basic("john_doe", "EXAMPLE_PASSWORD")
	t.Run("anonymous tier", func(t *testing.T) {
		if got := statusesOf(t, base+"/continents", 3, nil); countOf(got, 200) != 2 || got[2] != 429 {
			t.Errorf("anonymous: statuses %v, want 200, 200, 429", got)
		}
	})
	t.Run("free tier, with a shadow limit that never rejects", func(t *testing.T) {
		got := statusesOf(t, base+"/continents", 5, john)
		if countOf(got, 200) != 4 || got[4] != 429 {
			t.Errorf("free user: statuses %v, want four 200s then 429 (the shadow limit of 1 must not reject)", got)
		}
	})
	t.Run("exempt user", func(t *testing.T) {
		got := statusesOf(t, base+"/continents", 6, basic("jane", "JANE_PASSWORD"))
		if countOf(got, 200) != 6 {
			t.Errorf("exempt user: statuses %v, want all 200", got)
		}
	})
	t.Run("per-route limit", func(t *testing.T) {
		// detail: 1 per hour per IP on /continents/:id, on top of the tier.
		got := statusesOf(t, base+"/continents/1", 2, basic("jane", "JANE_PASSWORD"))
		if got[0] != 200 || got[1] != 429 {
			t.Errorf("/continents/1 twice: statuses %v, want 200, 429", got)
		}
	})
	t.Run("shadow limits are counted", func(t *testing.T) {
		r := get(t, base+"/metrics", nil)
		if !strings.Contains(string(r.body), `result="shadow_limited"`) {
			t.Errorf("/metrics has no shadow_limited decisions")
		}
	})
}

func TestExemptCIDRNeverLimited(t *testing.T) {
	t.Parallel()
	base := servicePolicies(t, `
policies:
  - name: strict
    key: ip
    exempt: {cidrs: [127.0.0.0/8, "::1/128"]}
    limits: [{algorithm: fixed_window, limit: 1, window: 1h}]
`)
	if got := statusesOf(t, base+"/continents", 10, nil); countOf(got, 200) != 10 {
		t.Errorf("exempt CIDR: statuses %v, want all 200", got)
	}
}

func TestBadPolicyFileStopsStartup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown algorithm", "policies: [{name: a, key: ip, limits: [{algorithm: leaky, limit: 1, window: 1s}]}]", "leaky"},
		{"negative limit", "policies: [{name: b, key: ip, limits: [{algorithm: gcra, limit: -1, window: 1s}]}]", "limit"},
		{"zero window", "policies: [{name: c, key: ip, limits: [{algorithm: gcra, limit: 1, window: 0s}]}]", "window"},
		{"typo'd field", "policies: [{name: d, kee: ip, limits: [{algorithm: gcra, limit: 1, window: 1s}]}]", "kee"},
		{"no such route", `policies: [{name: e, match: ["GET /nope"], key: ip, limits: [{algorithm: gcra, limit: 1, window: 1s}]}]`, `"GET /nope": no such limited route`},
		{"typo'd method", `policies: [{name: f, match: ["GETT /continents"], key: ip, limits: [{algorithm: gcra, limit: 1, window: 1s}]}]`, `"GETT /continents"`},
		{"route never limited", `policies: [{name: g, match: ["GET /healthz"], key: ip, limits: [{algorithm: gcra, limit: 1, window: 1s}]}]`, `"GET /healthz"`},
		{"fractional limit", "policies: [{name: h, key: ip, limits: [{algorithm: fixed_window, limit: 2.5, window: 1m}]}]", `policy "h": limits[0].limit: "2.5": want a whole number`},
		{"burst without one", "policies: [{name: i, key: ip, limits: [{algorithm: sliding_window, limit: 5, burst: 9, window: 1m}]}]", `policy "i": limits[0].burst: sliding_window has no burst`},
		{"cost above the burst", "policies: [{name: j, key: ip, cost: 4, limits: [{algorithm: token_bucket, limit: 10, burst: 3, window: 1m}]}]", `policy "j": limits[0]`},
		{"two documents", "policies: [{name: k, key: ip, limits: [{algorithm: gcra, limit: 1, window: 1s}]}]\n---\npolicies: []\n", "more than one YAML document"},
		{"tier no user can have", "policies: [{name: l, key: user, tiers: {Free: [{algorithm: gcra, limit: 1, window: 1s}]}}]", `policy "l": tiers.Free: no user can have this tier`},
		{"window over 366 days", "policies: [{name: m, key: ip, limits: [{algorithm: fixed_window, limit: 1, window: 2562047h}]}]", `policy "m": limits[0].window: "2562047h"`},
		{"key by a credential", "policies: [{name: n, key: 'header:authorization', limits: [{algorithm: gcra, limit: 1, window: 1s}]}]", `policy "n": key: "header:authorization"`},
		{"sliding_log cost", "policies: [{name: o, key: ip, cost: 200000, limits: [{algorithm: sliding_log, limit: 1000000, window: 1h}]}]", `policy "o": limits[0]`},
		{"calendar in no such zone", "policies: [{name: p, key: ip, limits: [{algorithm: calendar, limit: 1, period: month, timezone: Europe/Berlinn}]}]", `policy "p": limits[0].timezone: "Europe/Berlinn": want an IANA time zone`},
		{"calendar per year", "policies: [{name: q, key: ip, limits: [{algorithm: calendar, limit: 1, period: year}]}]", `policy "q": limits[0].period: "year"`},
		{"concurrency without a timeout", "policies: [{name: r, key: ip, limits: [{algorithm: concurrency, limit: 4, window: 1s}]}]", `policy "r": limits[0].window: concurrency has no window`},
		{"refund on an in-flight limit", "policies: [{name: s, key: ip, refund_on: [5xx], limits: [{algorithm: concurrency, limit: 4, timeout: 30s}]}]", `policy "s": refund_on: limits[0] is an in-flight limit`},
		{"delay on a window algorithm", "policies: [{name: u, key: ip, limits: [{algorithm: fixed_window, limit: 1, window: 1s, delay: 1s}]}]", `policy "u": limits[0].delay: fixed_window has no future slots`},
		{"delay above the window", "policies: [{name: v, key: ip, limits: [{algorithm: gcra, limit: 1, window: 1s, delay: 3s}]}]", `policy "v": limits[0].delay: "3s"`},
		{"refund on no status", "policies: [{name: t, key: ip, refund_on: [6xx], limits: [{algorithm: gcra, limit: 1, window: 1s}]}]", `policy "t": refund_on: "6xx"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policies.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			env := baseEnv(t, sharedRedis(t))
			env["RATE_LIMIT_POLICY_FILE"] = path
			env["PORT"] = "0"
			err := run(t.Context(), func(k string) string { return env[k] }, &syncBuffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "RATE_LIMIT_POLICY_FILE") {
				t.Errorf("run() = %v, want an error naming RATE_LIMIT_POLICY_FILE and %q", err, tt.want)
			}
			if !errors.Is(err, config.ErrInvalid) { // main exits 2
				t.Errorf("run() = %v, want it to wrap config.ErrInvalid (exit status 2)", err)
			}
		})
	}
}

// berlinMonth is the length of the current calendar month in Berlin, in
// seconds: the example's calendar quota's w.
func berlinMonth(t *testing.T) string {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().In(loc)
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, loc)
	return strconv.Itoa(int(start.AddDate(0, 1, 0).Sub(start).Seconds()))
}

func TestExamplePolicies(t *testing.T) {
	t.Parallel()
	text, err := os.ReadFile("policies.example.yaml")
	if err != nil {
		t.Fatalf("read the example: %v", err)
	}
	path := filepath.Join(t.TempDir(), "policies.yaml")
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatalf("write policies: %v", err)
	}
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_POLICY_FILE"] = path
	env["SEED_USERS"] = "john_doe:EXAMPLE_PASSWORD,paula:PRO_PASSWORD:pro"
	base := service(t, env)

	t.Run("anonymous: 5 per minute per IP", func(t *testing.T) {
		got := statusesOf(t, base+"/continents", 6, nil)
		if countOf(got, 200) != 5 || got[5] != 429 {
			t.Errorf("anonymous: statuses %v, want five 200s then 429", got)
		}
	})
	t.Run("free: 60 per minute", func(t *testing.T) {
		r := get(t, base+"/continents", basic("john_doe", "EXAMPLE_PASSWORD"))
		// heavy's limits apply to the list too; its 4 places are the closest to exhaustion.
		want := `"tier";q=60;w=60, "heavy-1";q=4;qu="concurrent-requests", "heavy-2";q=10000;w=` + berlinMonth(t)
		if p := r.header.Get("RateLimit-Policy"); p != want || r.header.Get("X-RateLimit-Remaining") != "3" {
			t.Errorf("free user: RateLimit-Policy %q, remaining %q; want %s and 3", p, r.header.Get("X-RateLimit-Remaining"), want)
		}
	})
	t.Run("pro: 600 per minute and 10,000 per day", func(t *testing.T) {
		r := get(t, base+"/continents", basic("paula", "PRO_PASSWORD"))
		if p := r.header.Get("RateLimit-Policy"); p != `"tier-1";q=600;w=60, "tier-2";q=10000;w=86400, "heavy-1";q=4;qu="concurrent-requests", "heavy-2";q=10000;w=`+berlinMonth(t) {
			t.Errorf("pro user: RateLimit-Policy %q, want both pro limits", p)
		}
		if r.status != 200 {
			t.Errorf("pro user: status %d, want 200", r.status)
		}
	})
	t.Run("home page names the file's policies", func(t *testing.T) {
		r := get(t, base+"/", nil)
		for _, want := range []string{"<code>tier</code>, <code>detail</code>, <code>trial</code>, <code>heavy</code>", "at most 4 requests at once", "10000 per month in Europe/Berlin", `href="/ratelimit"`} {
			if !strings.Contains(string(r.body), want) {
				t.Errorf("GET / lacks %q", want)
			}
		}
	})
	t.Run("per-route: 2 per second per IP on /continents/:id", func(t *testing.T) {
		// gcra refills one request every 500ms: the answer is only certain
		// when the three requests take less than that, so a slow try (a
		// loaded machine) is repeated after the bucket has refilled.
		for try := 1; ; try++ {
			start := time.Now()
			got := statusesOf(t, base+"/continents/1", 3, basic("paula", "PRO_PASSWORD"))
			if took := time.Since(start); took >= 400*time.Millisecond {
				if try == 3 {
					t.Fatalf("three requests took %v on each of %d tries, want under 400ms to check a 2/s limit", took, try)
				}
				time.Sleep(time.Second)
				continue
			}
			if got[0] != 200 || got[1] != 200 || got[2] != 429 {
				t.Errorf("/continents/1 three times at once: statuses %v, want 200, 200, 429", got)
			}
			break
		}
	})
}
