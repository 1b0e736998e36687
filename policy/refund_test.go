package policy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseRefundOn: refund_on takes exact statuses and classes, and the
// policy then refunds exactly the statuses it names.
func TestParseRefundOn(t *testing.T) {
	ps, err := Parse(strings.NewReader(`
policies:
  - name: a
    key: ip
    refund_on: [404, 5xx, "429", 404]
    limits: [{algorithm: fixed_window, limit: 5, window: 1m}, {algorithm: gcra, limit: 5, window: 1s}]
    tiers:
      pro: [{algorithm: sliding_window, limit: 5, window: 1m}, {algorithm: token_bucket, limit: 5, window: 1m}]
  - {name: b, key: ip, limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	tests := []struct {
		status int
		want   bool
	}{
		{404, true}, {500, true}, {503, true}, {599, true}, {429, true},
		{200, false}, {304, false}, {400, false}, {403, false}, {405, false}, {499, false},
	}
	for _, tt := range tests {
		if got := ps[0].Refunds(tt.status); got != tt.want {
			t.Errorf("policy a: Refunds(%d) = %v, want %v", tt.status, got, tt.want)
		}
		if ps[1].Refunds(tt.status) {
			t.Errorf("policy b (no refund_on): Refunds(%d) = true, want false", tt.status)
		}
	}
	if got := len(ps[0].RefundOn); got != 3 {
		t.Errorf("RefundOn = %v, want 3 entries (404 once)", ps[0].RefundOn)
	}
}

func TestParseRefundOnErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every one in the error
	}{
		{"unknown class", `
policies:
  - {name: s1, key: ip, refund_on: [6xx], limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`, []string{`policy "s1"`, "refund_on", `"6xx"`, "100 to 599"}},
		{"status below 100", `
policies:
  - {name: s2, key: ip, refund_on: [99], limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`, []string{`policy "s2"`, "refund_on", `"99"`}},
		{"status above 599", `
policies:
  - {name: s3, key: ip, refund_on: [600], limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`, []string{`policy "s3"`, "refund_on", `"600"`}},
		{"a word", `
policies:
  - {name: s4, key: ip, refund_on: [notfound], limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`, []string{`policy "s4"`, "refund_on", `"notfound"`}},
		{"class in capitals and leading zero", `
policies:
  - {name: s5, key: ip, refund_on: [5XX, "0404"], limits: [{algorithm: fixed_window, limit: 5, window: 1m}]}`, []string{`policy "s5"`, `"5XX"`, `"0404"`}},
		{"in-flight limit", `
policies:
  - {name: s6, key: ip, refund_on: [5xx], limits: [{algorithm: fixed_window, limit: 5, window: 1m}, {algorithm: concurrency, limit: 4, timeout: 30s}]}`, []string{`policy "s6"`, "refund_on", "limits[1]", "in-flight", "concurrency"}},
		{"in-flight limit of a tier", `
policies:
  - {name: s7, key: user, refund_on: [404], tiers: {pro: [{algorithm: concurrency, limit: 4, timeout: 30s}]}}`, []string{`policy "s7"`, "refund_on", "tiers.pro[0]", "in-flight"}},
		{"no give-back", `
policies:
  - {name: s8, key: ip, refund_on: [404], limits: [{algorithm: sliding_log, limit: 5, window: 1m}]}`, []string{`policy "s8"`, "refund_on", "sliding_log cannot give units back"}},
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

// TestParseDelay: delay reaches the rules of bucket limits; elsewhere,
// negative or beyond the window, it is refused naming the policy and field.
func TestParseDelay(t *testing.T) {
	_, err := Parse(strings.NewReader(`
policies:
  - {name: a, key: ip, limits: [{algorithm: gcra, limit: 5, window: 1s, delay: 2s}, {algorithm: token_bucket, limit: 5, window: 1m, delay: 1m}]}`))
	if err == nil {
		t.Fatalf("Parse() accepted a gcra delay of 2s on a window of 1s")
	}
	ps, err := Parse(strings.NewReader(`
policies:
  - {name: a, key: ip, limits: [{algorithm: gcra, limit: 5, window: 2s, delay: 2s}, {algorithm: token_bucket, limit: 5, window: 1m, delay: 500ms}, {algorithm: fixed_window, limit: 5, window: 1m}]}`))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	rules, _ := NewSet(ps, "p:").Rules("GET", "/x", Caller{IP: "192.0.2.1"}, nil)
	var got []time.Duration
	for _, a := range rules {
		got = append(got, a.Rule.Delay)
	}
	if want := []time.Duration{2 * time.Second, 500 * time.Millisecond, 0}; !slices.Equal(got, want) {
		t.Errorf("rules' Delay = %v, want %v", got, want)
	}
	tests := []struct {
		name, limit string
		want        []string
	}{
		{"on fixed_window", "{algorithm: fixed_window, limit: 5, window: 1m, delay: 1s}", []string{"limits[0].delay", "fixed_window has no future slots"}},
		{"on concurrency", "{algorithm: concurrency, limit: 5, timeout: 1m, delay: 1s}", []string{"limits[0].delay", "concurrency"}},
		{"negative", "{algorithm: gcra, limit: 5, window: 1s, delay: -1s}", []string{"limits[0].delay", `"-1s"`}},
		{"above the window", "{algorithm: token_bucket, limit: 5, window: 1s, delay: 2s}", []string{"limits[0].delay", `"2s"`, "to the window (1s)"}},
		{"not a duration", "{algorithm: gcra, limit: 5, window: 1s, delay: 2}", []string{"limits[0].delay", `"2"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader("policies:\n  - {name: d1, key: ip, limits: [" + tt.limit + "]}"))
			if err == nil {
				t.Fatalf("Parse() = nil error, want one mentioning %q", tt.want)
			}
			for _, w := range append(tt.want, `policy "d1"`) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error %q does not mention %q", err, w)
				}
			}
		})
	}
}
