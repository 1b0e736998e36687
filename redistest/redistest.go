// Package redistest gives a test a Redis, as net/http/httptest gives it a
// server: an embedded miniredis of its own, or the real server of
// TEST_REDIS_URL (or the Redis Cluster of TEST_REDIS_CLUSTER_ADDRS) under a
// key prefix of its own, whose keys are deleted when the test ends. A real
// server that is set must answer: the test fails, it does not skip.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Redis is one test's Redis and the key prefix the test owns in it.
type Redis struct {
	// Client talks to the server: a *redis.Client, or a
	// *redis.ClusterClient for a cluster.
	Client redis.UniversalClient
	// Prefix starts every key the test makes (the tests' services and
	// engines take it as their key prefix).
	Prefix string
	// URL is the server's redis:// URL, as REDIS_URL takes it; empty for a
	// cluster.
	URL string
	// Mini is the embedded server, whose clock a test may steer; nil on a
	// real one.
	Mini *miniredis.Miniredis
}

// New returns the real Redis of TEST_REDIS_URL when it is set, else an
// embedded one.
func New(t *testing.T) *Redis {
	t.Helper()
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		return Real(t, url)
	}
	return Embedded(t)
}

// Embedded starts a miniredis for t alone, stopped when t ends.
func Embedded(t *testing.T) *Redis {
	t.Helper()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return &Redis{Client: rdb, Prefix: prefix(), URL: "redis://" + m.Addr() + "/0", Mini: m}
}

// Real connects to the Redis at url (it must answer) under a fresh prefix.
func Real(t *testing.T, url string) *Redis {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("redis URL %q: %v", url, err)
	}
	return shared(t, redis.NewClient(opt), url, "TEST_REDIS_URL="+url)
}

// Cluster returns the Redis Cluster of TEST_REDIS_CLUSTER_ADDRS (it must
// answer) under a fresh prefix, or false when the variable is not set.
func Cluster(t *testing.T) (*Redis, bool) {
	t.Helper()
	addrs := os.Getenv("TEST_REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		return nil, false
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	return shared(t, rdb, "", "TEST_REDIS_CLUSTER_ADDRS="+addrs), true
}

// ClusterAddrs is TEST_REDIS_CLUSTER_ADDRS: the cluster's seed nodes as
// REDIS_CLUSTER_ADDRS takes them, "" when not set.
func ClusterAddrs() string { return os.Getenv("TEST_REDIS_CLUSTER_ADDRS") }

// Backends returns, per name, a maker of a Redis for each server the tests
// run on: "miniredis" always, "redis" when TEST_REDIS_URL is set.
func Backends() map[string]func(t *testing.T) *Redis {
	backends := map[string]func(t *testing.T) *Redis{"miniredis": Embedded}
	if url := os.Getenv("TEST_REDIS_URL"); url != "" {
		backends["redis"] = func(t *testing.T) *Redis { return Real(t, url) }
	}
	return backends
}

// shared pings rdb, a shared server named by setting, and deletes the keys
// under the test's prefix when the test ends.
func shared(t *testing.T, rdb redis.UniversalClient, url, setting string) *Redis {
	t.Helper()
	r := &Redis{Client: rdb, Prefix: prefix(), URL: url}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("%s is set but Redis does not answer: %v", setting, err)
	}
	t.Cleanup(func() {
		r.deleteKeys(t)
		rdb.Close()
	})
	return r
}

// Keys lists the keys under the test's prefix, on every master of a cluster.
func (r *Redis) Keys(t *testing.T) []string {
	t.Helper()
	keys, err := r.keys()
	if err != nil {
		t.Fatalf("KEYS %s*: %v", r.Prefix, err)
	}
	return keys
}

func (r *Redis) keys() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cc, ok := r.Client.(*redis.ClusterClient)
	if !ok {
		return r.Client.Keys(ctx, r.Prefix+"*").Result()
	}
	var mu sync.Mutex
	var keys []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		ks, err := c.Keys(ctx, r.Prefix+"*").Result()
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, ks...)
		return err
	})
	return keys, err
}

// deleteKeys removes the test's keys from a shared server.
func (r *Redis) deleteKeys(t *testing.T) {
	keys, err := r.keys()
	if err != nil {
		t.Errorf("clean up: KEYS %s*: %v", r.Prefix, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, k := range keys { // one by one: a cluster's keys live in different slots
		if err := r.Client.Del(ctx, k).Err(); err != nil {
			t.Errorf("clean up: DEL %s: %v", k, err)
		}
	}
}

// prefix is a key prefix no other test, run or checkout uses.
func prefix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "test:" + hex.EncodeToString(b) + ":"
}
