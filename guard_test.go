package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// TestGuardSparesTrustedAddress runs the scenario through the whole
// service (real Redis and MySQL when their variables are set): john_doe
// logs in from A; 20 wrong passwords for john_doe arrive from 20 other
// addresses; his right password still works from A and is refused from an
// address he never used.
func TestGuardSparesTrustedAddress(t *testing.T) {
	t.Parallel()
	r := sharedRedis(t)
	env := baseEnv(t, r)
	env["TRUSTED_PROXIES"] = "127.0.0.1/32"
	env["RATE_LIMIT_LIMIT"] = "1000"
	base := service(t, env)
	from := func(ip, password string) http.Header {
		h := basic("john_doe", password)
		h.Set("X-Forwarded-For", ip)
		return h
	}
	if got := get(t, base+"/continents", from("192.0.2.1", "EXAMPLE_PASSWORD")).status; got != http.StatusOK {
		t.Fatalf("login from A: status %d, want 200", got)
	}
	got := map[int]int{}
	for i := range 20 {
		got[get(t, base+"/continents", from("198.51.100."+strconv.Itoa(i+1), "guess"+strconv.Itoa(i))).status]++
	}
	if got[http.StatusUnauthorized] != 10 || got[http.StatusTooManyRequests] != 10 {
		t.Fatalf("20 wrong passwords from 20 addresses: statuses %v, want 10 × 401, 10 × 429", got)
	}
	tests := []struct {
		name string
		ip   string
		want int
	}{
		{"from A", "192.0.2.1", http.StatusOK},
		{"from a new address", "203.0.113.9", http.StatusTooManyRequests},
	}
	for _, tt := range tests {
		if got := get(t, base+"/continents", from(tt.ip, "EXAMPLE_PASSWORD")).status; got != tt.want {
			t.Errorf("right password %s: status %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestTrustedProxiesEverythingWarns: a TRUSTED_PROXIES that covers every
// address lets any client choose its address; start-up says so.
func TestTrustedProxiesEverythingWarns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		proxies  string
		wantWarn bool
	}{
		{"0.0.0.0/0", true},
		{"10.0.0.0/8,::/0", true},
		{"10.0.0.0/8", false},
	}
	for _, tt := range tests {
		t.Run(tt.proxies, func(t *testing.T) {
			env := baseEnv(t, sharedRedis(t))
			env["TRUSTED_PROXIES"] = tt.proxies
			_, logs := serviceWithLogs(t, env)
			if got := strings.Contains(logs.String(), "TRUSTED_PROXIES trusts every address"); got != tt.wantWarn {
				t.Errorf("warning logged = %v, want %v\n%s", got, tt.wantWarn, logs.String())
			}
		})
	}
}
