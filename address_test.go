package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestClientAddressIsOneIdentity runs the service with
// RATE_LIMIT_IPV6_PREFIX=48 behind a trusted proxy: the spellings of one
// IPv4 address share a quota, and so do the addresses of one IPv6 /48.
func TestClientAddressIsOneIdentity(t *testing.T) {
	t.Parallel()
	r := sharedRedis(t)
	env := baseEnv(t, r)
	env["RATE_LIMIT_LIMIT"] = "2"
	env["TRUSTED_PROXIES"] = "127.0.0.1/32"
	env["RATE_LIMIT_IPV6_PREFIX"] = "48"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if keys, err := r.rdb.Keys(ctx, env["REDIS_KEY_PREFIX"]+"*").Result(); err == nil && len(keys) > 0 {
			r.rdb.Del(ctx, keys...)
		}
	})
	base := service(t, env)
	tests := []struct {
		name    string
		clients []string // X-Forwarded-For, one request each
		want    []int
		subject string
	}{
		{"ipv4 spellings", []string{"::ffff:203.0.113.9", "203.0.113.9", "::FFFF:203.0.113.9"}, []int{200, 200, 429}, "{ip:203.0.113.9}"},
		{"one ipv6 /48", []string{"2001:db8:0:1::1", "2001:DB8:0:2::1", "2001:db8::ffff:1"}, []int{200, 200, 429}, "{ip:2001:db8::/48}"},
		{"another ipv6 /48", []string{"2001:db8:1::1"}, []int{200}, "{ip:2001:db8:1::/48}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			for _, c := range tt.clients {
				h := http.Header{}
				h.Set("X-Forwarded-For", c)
				got = append(got, get(t, base+"/continents", h).status)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("statuses for %q = %v, want %v", tt.clients, got, tt.want)
			}
			keys, err := r.rdb.Keys(t.Context(), env["REDIS_KEY_PREFIX"]+"*").Result()
			if err != nil {
				t.Fatalf("KEYS: %v", err)
			}
			if !strings.Contains(strings.Join(keys, " "), tt.subject) {
				t.Errorf("keys = %q, want one with %s", keys, tt.subject)
			}
		})
	}
}
