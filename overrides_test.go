package main

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// peekOverride reads from /ratelimit the limit of policy name for the caller
// of h, and the override that replaced it (0: none).
func peekOverride(t *testing.T, base, name string, h http.Header) (limit int, override int64) {
	t.Helper()
	var body struct {
		Policies []struct {
			Name     string `json:"name"`
			Override *struct {
				ID      int64   `json:"id"`
				Expires *string `json:"expires"`
			} `json:"override"`
			Limits []struct {
				Limit int `json:"limit"`
			} `json:"limits"`
		} `json:"policies"`
	}
	r := get(t, base+"/ratelimit", h)
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("/ratelimit: %v: %s", err, r.body)
	}
	for _, p := range body.Policies {
		if p.Name == name && len(p.Limits) == 1 {
			if p.Override != nil {
				if p.Override.Expires == nil {
					t.Errorf("/ratelimit override %d without expires, want one", p.Override.ID)
				}
				return p.Limits[0].Limit, p.Override.ID
			}
			return p.Limits[0].Limit, 0
		}
	}
	t.Fatalf("/ratelimit: no policy %s with one limit: %s", name, r.body)
	return 0, 0
}

// TestOverridesAcrossInstances: an override set with the CLI reaches two
// instances on one database and Redis within the refresh; both count it
// under one key (exactly its limit admitted across them), /ratelimit shows
// it, and when it expires it stops applying on both at once (checked at
// each decision, not at the next refresh), the caller's own count there as
// before.
func TestOverridesAcrossInstances(t *testing.T) {
	t.Parallel()
	env := baseEnv(t, sharedRedis(t))
	env["RATE_LIMIT_LIMIT"] = "2"
	env["RATE_LIMIT_WINDOW"] = "1h"
	env["RATE_LIMIT_OVERRIDES_REFRESH"] = "100ms"
	env["RATE_LIMIT_DENY_CACHE_SIZE"] = "10000"
	var skew atomic.Int64 // how far the instances' clock is ahead
	clock := withClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	a, _ := serviceWithLogs(t, maps.Clone(env), clock)
	b, _ := serviceWithLogs(t, maps.Clone(env), clock)
	jane := basic("jane", "JANE_PASSWORD")

	if limit, id := peekOverride(t, a, "fixed_window", jane); limit != 2 || id != 0 {
		t.Fatalf("before the override: limit %d, override %d; want 2, none", limit, id)
	}
	get(t, a+"/continents", jane) // jane's own count: 1 of 2
	out, err := cli(t, env, "", "overrides", "set", "jane", "--policy", "fixed_window", "--limit", "4", "--expires", "1h")
	if err != nil {
		t.Fatalf("overrides set: %v\n%s", err, out)
	}
	var id int64
	for _, base := range []string{a, b} {
		waitFor(t, "override on "+base, func() bool { _, id = peekOverride(t, base, "fixed_window", jane); return id != 0 })
	}
	if list, err := cli(t, env, "", "overrides", "list"); err != nil || !strings.Contains(list, "user:jane") {
		t.Errorf("overrides list = %v\n%s; want user:jane", err, list)
	}

	// Exactly 4 across the two instances: one key for the override.
	var codes []int
	for i := range 6 {
		codes = append(codes, get(t, []string{a, b}[i%2]+"/continents", jane).status)
	}
	if countOf(codes, http.StatusOK) != 4 || countOf(codes, http.StatusTooManyRequests) != 2 {
		t.Errorf("under the override of 4: statuses %v, want 4 200s, then 429s", codes)
	}
	if r := get(t, b+"/continents", jane); r.header.Get("X-RateLimit-Limit") != "4" {
		t.Errorf("under the override: X-RateLimit-Limit %q, want 4", r.header.Get("X-RateLimit-Limit"))
	}

	// Two hours on: expired on both at the next request. jane's own count
	// is 1 of 2, untouched by what the override counted.
	skew.Store(int64(2 * time.Hour))
	for _, base := range []string{a, b} {
		if limit, got := peekOverride(t, base, "fixed_window", jane); limit != 2 || got != 0 {
			t.Errorf("%s after the expiry: limit %d, override %d; want 2, none", base, limit, got)
		}
	}
	codes = codes[:0]
	for i := range 3 {
		codes = append(codes, get(t, []string{b, a}[i%2]+"/continents", jane).status)
	}
	if want := []int{200, 429, 429}; !slices.Equal(codes, want) {
		t.Errorf("after the expiry: statuses %v, want %v (1 left of jane's own 2)", codes, want)
	}

	skew.Store(0)
	if _, err := cli(t, env, "", "overrides", "delete", strconv.FormatInt(id, 10)); err != nil {
		t.Errorf("overrides delete %d: %v", id, err)
	}
	for _, base := range []string{a, b} {
		waitFor(t, "deletion on "+base, func() bool { _, got := peekOverride(t, base, "fixed_window", jane); return got == 0 })
	}
}
