package main

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDocumentedKeyFormat: the Redis key format docs/api.md and
// docs/algorithms.md give, and the example key docs/algorithms.md spells
// out, are the keys the service writes.
func TestDocumentedKeyFormat(t *testing.T) {
	t.Parallel()
	read := func(name string) string {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	algorithms := read("docs/algorithms.md")
	for _, doc := range []struct{ file, text, format string }{
		{"docs/api.md", read("docs/api.md"), "`<REDIS_KEY_PREFIX>{user:<name>}:<policy>:<n>:<algorithm>`"},
		{"docs/algorithms.md", algorithms, "`<REDIS_KEY_PREFIX>{<identity>}:<policy>:<n>:<algorithm>`"},
	} {
		if !strings.Contains(doc.text, doc.format) {
			t.Errorf("%s does not give the key format %s", doc.file, doc.format)
		}
	}
	m := regexp.MustCompile("`ratelimit:(\\{user:john_doe\\}:[^`]+)`").FindStringSubmatch(algorithms)
	if m == nil {
		t.Fatal("docs/algorithms.md gives no example key ratelimit:{user:john_doe}:...")
	}

	r := sharedRedis(t)
	env := baseEnv(t, r) // the RATE_LIMIT_* default, which the example is of
	base := service(t, env)
	if got := get(t, base+"/continents", basic("john_doe", "EXAMPLE_PASSWORD")).status; got != 200 {
		t.Fatalf("status %d, want 200", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// fixed_window counts the current window at the rule's key plus
	// ":<window number>" (docs/algorithms.md, fixed_window).
	key := env["REDIS_KEY_PREFIX"] + m[1]
	if got, err := r.rdb.Keys(ctx, key+":[0-9]*").Result(); err != nil || len(got) != 1 {
		keys, _ := r.rdb.Keys(ctx, env["REDIS_KEY_PREFIX"]+"{*").Result()
		t.Errorf("KEYS %s:<n> = %v, %v; want one window of the documented example; the service wrote %v", key, got, err, keys)
	} else {
		t.Cleanup(func() { r.rdb.Del(context.Background(), got[0]) })
	}
}
