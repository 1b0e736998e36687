package policy

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tollgate/algorithms"
)

func TestParseExample(t *testing.T) {
	f, err := os.Open("../policies.example.yaml")
	if err != nil {
		t.Fatalf("open the example: %v", err)
	}
	defer f.Close()
	got, err := Parse(f)
	if err != nil {
		t.Fatalf("Parse(policies.example.yaml): %v", err)
	}
	names := make([]string, len(got))
	for i, p := range got {
		names[i] = p.Name
	}
	if diff := cmp.Diff([]string{"tier", "detail", "trial", "heavy"}, names); diff != "" {
		t.Errorf("policy names (-want +got):\n%s", diff)
	}
	pro := got[0].Tiers["pro"]
	want := []LimitSpec{
		{Algorithm: algo("token_bucket"), Limit: algorithms.Limit{Requests: 600, Window: time.Minute}},
		{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: 10000, Window: 24 * time.Hour}},
	}
	if diff := cmp.Diff(want, pro, specByName); diff != "" {
		t.Errorf("tier pro limits (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Route{{Method: "GET", Path: "/continents/:id"}}, got[1].Match); diff != "" {
		t.Errorf("detail match (-want +got):\n%s", diff)
	}
	if !got[2].Shadow || got[0].Cost != 1 {
		t.Errorf("trial shadow = %v, tier cost = %d; want true, 1", got[2].Shadow, got[0].Cost)
	}
}

// TestParseAccepts shows the edges the checks above leave open.
func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		yaml string
	}{
		{"one document with its marker", `---
policies:
  - {name: a, key: ip, limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`},
		{"burst on token_bucket and gcra", `
policies:
  - {name: b, key: ip, cost: 3, limits: [{algorithm: token_bucket, limit: 1, burst: 3, window: 1s}, {algorithm: gcra, limit: 1, burst: 3, window: 1s}]}`},
		{"a window of 366 days", `
policies:
  - {name: c, key: ip, limits: [{algorithm: fixed_window, limit: 5, window: 8784h}]}`},
		{"a header that is no credential", `
policies:
  - {name: d, key: "header:X-Tenant", limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`},
		{"concurrency and calendar", `
policies:
  - {name: f, key: ip, cost: 2, limits: [{algorithm: concurrency, limit: 4, timeout: 30s}, {algorithm: calendar, limit: 10000, period: month, timezone: Europe/Berlin}, {algorithm: calendar, limit: 5, period: week}]}`},
		{"sliding_log at its caps", `
policies:
  - {name: e, key: ip, cost: 10000, limits: [{algorithm: sliding_log, limit: 1000000, window: 1h}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(strings.NewReader(tt.yaml)); err != nil {
				t.Errorf("Parse() = %v, want no error", err)
			}
		})
	}
}

func TestCheckTiers(t *testing.T) {
	policies, err := Parse(strings.NewReader(`
policies:
  - name: tier
    key: user_or_ip
    tiers:
      anonymous: [{algorithm: fixed_window, limit: 2, window: 1h}]
      free: [{algorithm: fixed_window, limit: 4, window: 1h}]
      Free: [{algorithm: fixed_window, limit: 8, window: 1h}]
      pro.plus: [{algorithm: fixed_window, limit: 8, window: 1h}]`))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	err = CheckTiers(policies)
	if err == nil {
		t.Fatal("CheckTiers() = nil, want the tiers Free and pro.plus refused")
	}
	for _, want := range []string{`policy "tier": tiers.Free: no user can have this tier`, "tiers.pro.plus", "lowercase", "SEED_USERS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckTiers() = %q, want it to mention %q", err, want)
		}
	}
	for _, ok := range []string{"tiers.free:", "tiers.anonymous"} {
		if strings.Contains(err.Error(), ok) {
			t.Errorf("CheckTiers() = %q, want %q accepted", err, ok)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every one in the error
	}{
		{"unknown algorithm", `
policies:
  - name: p1
    key: ip
    limits: [{algorithm: leaky_bucket, limit: 5, window: 1m}]`, []string{`policy "p1"`, "limits[0].algorithm", "leaky_bucket"}},
		{"negative limit", `
policies:
  - name: p2
    key: ip
    limits: [{algorithm: gcra, limit: -3, window: 1m}]`, []string{`policy "p2"`, "limits[0].limit", "-3"}},
		{"zero window", `
policies:
  - name: p3
    key: ip
    limits: [{algorithm: fixed_window, limit: 5, window: 0s}]`, []string{`policy "p3"`, "limits[0].window"}},
		{"typo'd field", `
policies:
  - name: p4
    key: ip
    limit: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{"limit", "not found"}},
		{"typo'd limit field", `
policies:
  - name: p5
    key: ip
    limits: [{algoritm: fixed_window, limit: 5, window: 1m}]`, []string{"algoritm"}},
		{"bad key", `
policies:
  - name: p6
    key: cookie
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "p6"`, "key", "cookie"}},
		{"bad match", `
policies:
  - name: p7
    match: ["/continents"]
    key: ip
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "p7"`, "match"}},
		{"no limits", `
policies:
  - name: p8
    key: ip`, []string{`policy "p8"`, "limits"}},
		{"duplicate names", `
policies:
  - {name: p9, key: ip, limits: [{algorithm: gcra, limit: 1, window: 1s}]}
  - {name: p9, key: ip, limits: [{algorithm: gcra, limit: 1, window: 1s}]}`, []string{`policy "p9"`, "earlier"}},
		{"cost above the limit", `
policies:
  - name: p10
    key: ip
    cost: 10
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "p10"`, "cost 10"}},
		{"gcra burst beyond its µs arithmetic", `
policies:
  - name: p12
    key: ip
    limits: [{algorithm: gcra, limit: 1, burst: 100000000, window: 1h}]`, []string{`policy "p12"`, "limits[0]", "gcra", "burst"}},
		{"bad exempt cidr", `
policies:
  - name: p11
    key: ip
    exempt: {cidrs: [nonsense]}
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "p11"`, "exempt.cidrs"}},
		{"tier without limits", `
policies:
  - name: p12
    key: user
    tiers: {pro: []}`, []string{`policy "p12"`, "tiers.pro"}},
		{"empty file", ``, []string{"no policies"}},
		{"lease neither auto nor off", `
policies:
  - name: q9
    key: ip
    limits: [{algorithm: fixed_window, limit: 5000, window: 1m, lease: sometimes}]`, []string{`policy "q9"`, "limits[0].lease", `"sometimes"`, "auto", "off"}},
		{"fractional limit", `
policies:
  - name: q1
    key: ip
    limits: [{algorithm: fixed_window, limit: 2.5, window: 1m}]`, []string{`policy "q1"`, "limits[0].limit", `"2.5"`, "whole number"}},
		{"fractional cost", `
policies:
  - name: q2
    key: ip
    cost: 1.5
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "q2"`, "cost", `"1.5"`, "whole number"}},
		{"fractional burst", `
policies:
  - name: q3
    key: ip
    limits: [{algorithm: token_bucket, limit: 5, burst: 7.9, window: 1m}]`, []string{`policy "q3"`, "limits[0].burst", `"7.9"`, "whole number"}},
		{"burst on fixed_window", `
policies:
  - name: q4
    key: ip
    limits: [{algorithm: fixed_window, limit: 5, burst: 10, window: 1m}]`, []string{`policy "q4"`, "limits[0].burst", "fixed_window has no burst"}},
		{"burst on sliding_log", `
policies:
  - name: q5
    key: ip
    limits: [{algorithm: sliding_log, limit: 5, burst: 5, window: 1m}]`, []string{`policy "q5"`, "limits[0].burst", "sliding_log has no burst"}},
		{"burst on sliding_window", `
policies:
  - name: q6
    key: ip
    limits: [{algorithm: sliding-window, limit: 5, burst: 10, window: 1m}]`, []string{`policy "q6"`, "limits[0].burst", "no burst"}},
		{"cost above a token bucket's burst", `
policies:
  - name: q7
    key: ip
    cost: 5
    limits: [{algorithm: token_bucket, limit: 10, burst: 3, window: 1m}]`, []string{`policy "q7"`, "limits[0]", "cost 5 exceeds the burst 3", "at most 3"}},
		{"cost above a gcra burst", `
policies:
  - name: q8
    key: ip
    cost: 4
    limits: [{algorithm: gcra, limit: 10, burst: 2, window: 1m}]`, []string{`policy "q8"`, "limits[0]", "cost 4", "at most 2"}},
		{"two documents", `
policies:
  - name: q9
    key: ip
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]
---
policies:
  - name: q10
    key: ip
    limits: [{algorithm: fixed_window, limit: 1, window: 1m}]`, []string{"more than one YAML document"}},
		{"window over 366 days", `
policies:
  - name: q11
    key: ip
    limits: [{algorithm: fixed_window, limit: 5, window: 2562047h}]`, []string{`policy "q11"`, "limits[0].window", "2562047h", "366 days"}},
		{"window a day over", `
policies:
  - name: q12
    key: ip
    limits: [{algorithm: token_bucket, limit: 5, window: 8808h}]`, []string{`policy "q12"`, "limits[0].window", "366 days"}},
		{"key by Authorization", `
policies:
  - name: q13
    key: header:Authorization
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "q13"`, "key", "header:Authorization", "credential"}},
		{"key by proxy-authorization", `
policies:
  - name: q14
    key: header:proxy-authorization
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "q14"`, "key", "credential"}},
		{"key by COOKIE", `
policies:
  - name: q15
    key: header:COOKIE
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "q15"`, "key", "Host"}},
		{"key by host", `
policies:
  - name: q16
    key: header:host
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}]`, []string{`policy "q16"`, "key", "header:host"}},
		{"sliding_log limit over a million", `
policies:
  - name: q17
    key: ip
    limits: [{algorithm: sliding_log, limit: 1000001, window: 1h}]`, []string{`policy "q17"`, "limits[0]", "sliding_log", "limit 1000001", "at most 1000000"}},
		{"sliding_log cost over ten thousand", `
policies:
  - name: q18
    key: ip
    cost: 200000
    limits: [{algorithm: sliding_log, limit: 1000000, window: 1h}]`, []string{`policy "q18"`, "limits[0]", "cost 200000", "at most 10000"}},
		{"concurrency with a window", `
policies:
  - {name: r1, key: ip, limits: [{algorithm: concurrency, limit: 4, window: 30s}]}`, []string{`policy "r1"`, "limits[0].window", "concurrency has no window", "timeout"}},
		{"concurrency without a timeout", `
policies:
  - {name: r2, key: ip, limits: [{algorithm: concurrency, limit: 4}]}`, []string{`policy "r2"`, "limits[0].timeout", `""`}},
		{"concurrency timeout over a day", `
policies:
  - {name: r3, key: ip, limits: [{algorithm: concurrency, limit: 4, timeout: 25h}]}`, []string{`policy "r3"`, "limits[0]", "at most 24h"}},
		{"timeout on fixed_window", `
policies:
  - {name: r4, key: ip, limits: [{algorithm: fixed_window, limit: 4, window: 1m, timeout: 1s}]}`, []string{`policy "r4"`, "limits[0].timeout", "fixed_window has no timeout"}},
		{"calendar with a bad zone", `
policies:
  - {name: r5, key: ip, limits: [{algorithm: calendar, limit: 4, period: day, timezone: Mars/Olympus}]}`, []string{`policy "r5"`, "limits[0].timezone", "Mars/Olympus", "IANA"}},
		{"calendar with the host's zone", `
policies:
  - {name: r6, key: ip, limits: [{algorithm: calendar, limit: 4, period: day, timezone: Local}]}`, []string{`policy "r6"`, "limits[0].timezone", "Local"}},
		{"calendar with a year", `
policies:
  - {name: r7, key: ip, limits: [{algorithm: calendar, limit: 4, period: year}]}`, []string{`policy "r7"`, "limits[0].period", "year", "day, week"}},
		{"calendar with a window", `
policies:
  - {name: r8, key: ip, limits: [{algorithm: calendar, limit: 4, period: day, window: 24h}]}`, []string{`policy "r8"`, "limits[0].window", "calendar has no window"}},
		{"burst on concurrency", `
policies:
  - {name: r9, key: ip, limits: [{algorithm: concurrency, limit: 4, burst: 8, timeout: 1s}]}`, []string{`policy "r9"`, "limits[0].burst", "concurrency has no burst"}},
		{"period on gcra", `
policies:
  - {name: r10, key: ip, limits: [{algorithm: gcra, limit: 4, window: 1s, period: day, timezone: UTC}]}`, []string{`policy "r10"`, "limits[0].period", "limits[0].timezone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.yaml))
			if err == nil {
				t.Fatalf("Parse() = nil error, want one mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestParseLease: lease: off reaches the rules, so the engine decides them
// on Redis every time; auto (or nothing) leaves them to RATE_LIMIT_LEASE.
func TestParseLease(t *testing.T) {
	ps, err := Parse(strings.NewReader(`
policies:
  - {name: a, key: ip, limits: [{algorithm: fixed_window, limit: 5000, window: 1m, lease: off}, {algorithm: gcra, limit: 5000, window: 1m, lease: auto}, {algorithm: gcra, limit: 9000, window: 1h}]}`))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	rules, _ := NewSet(ps, "p:").Rules("GET", "/x", Caller{IP: "192.0.2.1"}, nil)
	var got []bool
	for _, a := range rules {
		got = append(got, a.Rule.NoLease)
	}
	if want := []bool{true, false, false}; !slices.Equal(got, want) {
		t.Errorf("rules' NoLease = %v, want %v", got, want)
	}
}
