package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"tollgate/admin"
)

// cli runs admin.Run with env and stdin, and returns what it printed.
func cli(t *testing.T, env map[string]string, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := admin.Run(ctx, args, adminEnv(func(k string) string { return env[k] }, strings.NewReader(stdin), &out, io.Discard))
	return out.String(), err
}

var keyLine = regexp.MustCompile(`(?m)^id (\d+)\nkey (tg_[A-Za-z0-9_-]{43})$`)

// createKey runs "keys create name" and returns the key's id and the key.
func createKey(t *testing.T, env map[string]string, name string) (string, string) {
	t.Helper()
	out, err := cli(t, env, "", "keys", "create", name)
	if err != nil {
		t.Fatalf("keys create %s: %v", name, err)
	}
	m := keyLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keys create %s printed %q, want an id line and a key line", name, out)
	}
	return m[1], m[2]
}

// TestCLIKeyAgainstService creates a user and a key with the CLI on a
// running service's database, uses the key, revokes it, and sees it still
// remembered until the key cache's TTL has passed, then refused.
func TestCLIKeyAgainstService(t *testing.T) {
	t.Parallel()
	env := baseEnv(t, sharedRedis(t))
	const ttl = 200 * time.Millisecond
	env["AUTH_KEY_CACHE_TTL"] = ttl.String()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	advance := func(d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(d)
	}
	base, _ := serviceWithLogs(t, env, withClock(clock))
	name := "cli_" + randomHex(4) // the MySQL database is shared with other tests

	if _, err := cli(t, env, "pw-"+name+"\n", "users", "add", name, "--tier", "pro"); err != nil {
		t.Fatalf("users add: %v", err)
	}
	id, key := createKey(t, env, name)
	header := http.Header{}
	header.Set("X-API-Key", key)

	r := get(t, base+"/continents", header)
	if r.status != http.StatusOK {
		t.Fatalf("GET /continents with the new key: status %d, want 200; body %s", r.status, r.body)
	}
	if got := r.header.Get("X-RateLimit-Remaining"); got == "" {
		t.Errorf("X-RateLimit-Remaining missing: the key's user was not limited")
	}
	if _, err := cli(t, env, "", "keys", "revoke", id); err != nil {
		t.Fatalf("keys revoke %s: %v", id, err)
	}
	advance(ttl - time.Millisecond)
	if r := get(t, base+"/continents", header); r.status != http.StatusOK {
		t.Errorf("GET /continents with the revoked key within the TTL: status %d, want 200 (remembered)", r.status)
	}
	advance(time.Millisecond)
	r = get(t, base+"/continents", header)
	if r.status != http.StatusUnauthorized {
		t.Errorf("GET /continents with the revoked key after the TTL (%v): status %d, want 401", ttl, r.status)
	}
}
