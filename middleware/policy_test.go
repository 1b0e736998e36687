package middleware

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tollgate/algorithms"
)

func TestParsePoliciesExample(t *testing.T) {
	f, err := os.Open("../policies.example.yaml")
	if err != nil {
		t.Fatalf("open the example: %v", err)
	}
	defer f.Close()
	got, err := ParsePolicies(f)
	if err != nil {
		t.Fatalf("ParsePolicies(policies.example.yaml): %v", err)
	}
	names := make([]string, len(got))
	for i, p := range got {
		names[i] = p.Name
	}
	if diff := cmp.Diff([]string{"tier", "detail", "trial"}, names); diff != "" {
		t.Errorf("policy names (-want +got):\n%s", diff)
	}
	pro := got[0].Tiers["pro"]
	want := []PolicyLimit{
		{Algorithm: "token_bucket", Limit: algorithms.Limit{Requests: 600, Window: time.Minute}},
		{Algorithm: "fixed_window", Limit: algorithms.Limit{Requests: 10000, Window: 24 * time.Hour}},
	}
	if diff := cmp.Diff(want, pro); diff != "" {
		t.Errorf("tier pro limits (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Route{{Method: "GET", Path: "/continents/:id"}}, got[1].Match); diff != "" {
		t.Errorf("detail match (-want +got):\n%s", diff)
	}
	if !got[2].Shadow || got[0].Cost != 1 {
		t.Errorf("trial shadow = %v, tier cost = %d; want true, 1", got[2].Shadow, got[0].Cost)
	}
}

func TestParsePoliciesErrors(t *testing.T) {
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicies(strings.NewReader(tt.yaml))
			if err == nil {
				t.Fatalf("ParsePolicies() = nil error, want one mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("ParsePolicies() error %q does not mention %q", err, w)
				}
			}
		})
	}
}
