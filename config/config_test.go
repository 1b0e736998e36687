package config

import (
	"errors"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tollgate/policy"
	"tollgate/username"
)

// rules are the checks main hands to Load, from the packages that own them.
var rules = Rules{
	UserName:      username.Valid,
	UserNameRule:  username.Rule,
	Tier:          policy.ValidTier,
	CIDR:          policy.ParseCIDR,
	DefaultPolicy: policy.CheckDefault,
}

// env turns a map into the getenv Load takes; a missing key reads as unset.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// prefixEqual lets cmp compare netip.Prefix, whose fields are unexported.
var prefixEqual = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestLoadDefaults(t *testing.T) {
	sqlite := Config{
		Port:         8080,
		DBDriver:     "sqlite",
		DBDSN:        "countries.db",
		Enabled:      true,
		Algorithm:    "fixed_window",
		Limit:        5,
		Burst:        5,
		Window:       60 * time.Second,
		FailOpen:     true,
		OnRedisError: "local",
		Timeout:      100 * time.Millisecond,
		KeyPrefix:    "ratelimit:",
		SeedUsers:    []SeedUser{{Name: "john_doe", Password: "EXAMPLE_PASSWORD"}},
		LogFormat:    "json",
		LogLevel:     slog.LevelInfo,
		DBConnect:    30 * time.Second,
		Shutdown:     10 * time.Second,

		AuthKeyCacheTTL: 10 * time.Second,
		AuthFailLimit:   10,
		AuthFailWindow:  15 * time.Minute,
		AuthTrustedTTL:  720 * time.Hour,
		AuthMaxChecks:   runtime.NumCPU(),
		PipelineBatch:   16,
		DenyCacheSize:   10_000,
		Lease:           true,
		MaxWaiting:      256,
		IPv6Prefix:      64,

		OverridesRefresh: 10 * time.Second,
	}
	mysql := sqlite
	mysql.DBDriver = "mysql"
	mysql.DBDSN = "api_user:pw@tcp(127.0.0.1:3306)/countries"
	mysql.SeedUsers = nil

	tests := []struct {
		name string
		env  map[string]string
		want Config
	}{
		{name: "empty environment", env: map[string]string{}, want: sqlite},
		{name: "blank values", env: map[string]string{"PORT": " ", "RATE_LIMIT_LIMIT": "", "DB_DRIVER": "  "}, want: sqlite},
		{name: "mysql seeds no users", env: map[string]string{"DB_DRIVER": "mysql", "DB_DSN": mysql.DBDSN}, want: mysql},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(env(tt.env), rules)
			if err != nil {
				t.Fatalf("Load() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got, prefixEqual); diff != "" {
				t.Errorf("Load() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadDefaultFields(t *testing.T) {
	got, err := Load(env(nil), rules)
	if err != nil {
		t.Fatalf("Load() error = %v, want nil", err)
	}
	if got.Port != 8080 {
		t.Errorf("Load() Port = %d, want 8080", got.Port)
	}
	if got.RedisURL != "" {
		t.Errorf("Load() RedisURL = %q, want empty", got.RedisURL)
	}
	if got.TrustedProxies != nil {
		t.Errorf("Load() TrustedProxies = %v, want nil", got.TrustedProxies)
	}
	if got.KeyPrefix != "ratelimit:" {
		t.Errorf("Load() KeyPrefix = %q, want %q", got.KeyPrefix, "ratelimit:")
	}
}

func TestLoadValues(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		get  func(Config) any
		want any
	}{
		{"port", map[string]string{"PORT": "9090"}, func(c Config) any { return c.Port }, 9090},
		{"redis url", map[string]string{"REDIS_URL": "redis://:secret@127.0.0.1:6379/0"}, func(c Config) any { return c.RedisURL }, "redis://:secret@127.0.0.1:6379/0"},
		{"rediss url", map[string]string{"REDIS_URL": "rediss://cache.example:6380"}, func(c Config) any { return c.RedisURL }, "rediss://cache.example:6380"},
		{"disabled", map[string]string{"RATE_LIMIT_ENABLED": "false"}, func(c Config) any { return c.Enabled }, false},
		{"fail closed", map[string]string{"RATE_LIMIT_FAIL_OPEN": "0"}, func(c Config) any { return c.FailOpen }, false},
		{"fail open is open", map[string]string{"RATE_LIMIT_FAIL_OPEN": "true"}, func(c Config) any { return c.OnRedisError }, "open"},
		{"fail closed is closed", map[string]string{"RATE_LIMIT_FAIL_OPEN": "false"}, func(c Config) any { return c.OnRedisError }, "closed"},
		{"on redis error closed", map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": "closed"}, func(c Config) any { return c.FailOpen }, false},
		{"on redis error local", map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": "local"}, func(c Config) any { return c.FailOpen }, true},
		{"both spellings agree", map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": "open", "RATE_LIMIT_FAIL_OPEN": "true"}, func(c Config) any { return c.OnRedisError }, "open"},
		{"instances fixed", map[string]string{"RATE_LIMIT_INSTANCES": "3"}, func(c Config) any { return c.Instances }, 3},
		{"lease off", map[string]string{"RATE_LIMIT_LEASE": "off"}, func(c Config) any { return c.Lease }, false},
		{"window in minutes", map[string]string{"RATE_LIMIT_WINDOW": "2m"}, func(c Config) any { return c.Window }, 2 * time.Minute},
		{"timeout", map[string]string{"RATE_LIMIT_TIMEOUT": "250ms"}, func(c Config) any { return c.Timeout }, 250 * time.Millisecond},
		{"limit", map[string]string{"RATE_LIMIT_LIMIT": "100"}, func(c Config) any { return c.Limit }, 100},
		{"burst follows limit", map[string]string{"RATE_LIMIT_LIMIT": "100"}, func(c Config) any { return c.Burst }, 100},
		{"burst", map[string]string{"RATE_LIMIT_LIMIT": "100", "RATE_LIMIT_BURST": "20"}, func(c Config) any { return c.Burst }, 20},
		{"key prefix", map[string]string{"REDIS_KEY_PREFIX": "rl:"}, func(c Config) any { return c.KeyPrefix }, "rl:"},
		{"sqlite dsn", map[string]string{"DB_DSN": "/data/x.db"}, func(c Config) any { return c.DBDSN }, "/data/x.db"},
		{"hyphenated sliding-log", map[string]string{"RATE_LIMIT_ALGORITHM": "sliding-log"}, func(c Config) any { return c.Algorithm }, "sliding_log"},
		{"hyphenated token-bucket", map[string]string{"RATE_LIMIT_ALGORITHM": "token-bucket"}, func(c Config) any { return c.Algorithm }, "token_bucket"},
		{"hyphenated fixed-window", map[string]string{"RATE_LIMIT_ALGORITHM": "fixed-window"}, func(c Config) any { return c.Algorithm }, "fixed_window"},
		{"underscored kept", map[string]string{"RATE_LIMIT_ALGORITHM": "sliding_window"}, func(c Config) any { return c.Algorithm }, "sliding_window"},
		{"seed users", map[string]string{"SEED_USERS": "a:pw1, b:pw:2"}, func(c Config) any { return c.SeedUsers }, []SeedUser{{"a", "pw1", ""}, {"b", "pw:2", ""}}},
		{"seed users with tiers", map[string]string{"SEED_USERS": "a:pw1:pro,b:pw2,c:pw:3:free,d:pw:Gold,e:pw:team-2"}, func(c Config) any { return c.SeedUsers },
			[]SeedUser{{"a", "pw1", "pro"}, {"b", "pw2", ""}, {"c", "pw:3", "free"}, {"d", "pw:Gold", ""}, {"e", "pw", "team-2"}}},
		{"key cache ttl", map[string]string{"AUTH_KEY_CACHE_TTL": "200ms"}, func(c Config) any { return c.AuthKeyCacheTTL }, 200 * time.Millisecond},
		{"key cache off", map[string]string{"AUTH_KEY_CACHE_TTL": "0s"}, func(c Config) any { return c.AuthKeyCacheTTL }, time.Duration(0)},
		{"auth fail limit", map[string]string{"AUTH_FAIL_LIMIT": "3"}, func(c Config) any { return c.AuthFailLimit }, 3},
		{"auth guard off", map[string]string{"AUTH_FAIL_LIMIT": "0"}, func(c Config) any { return c.AuthFailLimit }, 0},
		{"auth fail window", map[string]string{"AUTH_FAIL_WINDOW": "1h"}, func(c Config) any { return c.AuthFailWindow }, time.Hour},
		{"auth fail limit max", map[string]string{"AUTH_FAIL_LIMIT": "1000"}, func(c Config) any { return c.AuthFailLimit }, 1000},
		{"trusted ttl", map[string]string{"AUTH_TRUSTED_TTL": "24h"}, func(c Config) any { return c.AuthTrustedTTL }, 24 * time.Hour},
		{"trusted addresses off", map[string]string{"AUTH_TRUSTED_TTL": "0"}, func(c Config) any { return c.AuthTrustedTTL }, time.Duration(0)},
		{"max checks", map[string]string{"AUTH_MAX_CHECKS": "3"}, func(c Config) any { return c.AuthMaxChecks }, 3},
		{"cluster", map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1:7000, 10.0.0.2:7001"}, func(c Config) any { return c.RedisCluster }, []string{"10.0.0.1:7000", "10.0.0.2:7001"}},
		{"sentinel", map[string]string{"REDIS_SENTINEL_ADDRS": "10.0.0.1:26379, 10.0.0.2:26379", "REDIS_SENTINEL_MASTER": "mymaster", "REDIS_SENTINEL_PASSWORD": "pw"},
			func(c Config) any {
				return []any{c.RedisSentinels, c.RedisSentinelMaster, c.RedisSentinelPassword, c.RedisURL}
			},
			[]any{[]string{"10.0.0.1:26379", "10.0.0.2:26379"}, "mymaster", "pw", ""}},
		{"ipv6 prefix default", map[string]string{}, func(c Config) any { return c.IPv6Prefix }, 64},
		{"ipv6 prefix 1", map[string]string{"RATE_LIMIT_IPV6_PREFIX": "1"}, func(c Config) any { return c.IPv6Prefix }, 1},
		{"ipv6 prefix 128", map[string]string{"RATE_LIMIT_IPV6_PREFIX": "128"}, func(c Config) any { return c.IPv6Prefix }, 128},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(env(tt.env), rules)
			if err != nil {
				t.Fatalf("Load() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, tt.get(c)); diff != "" {
				t.Errorf("Load() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadTrustedProxies(t *testing.T) {
	tests := []struct {
		name  string
		value string
		want  []netip.Prefix
	}{
		{"ipv4 address becomes /32", "10.1.2.3", []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}},
		{"ipv6 address becomes /128", "::1", []netip.Prefix{netip.MustParsePrefix("::1/128")}},
		{"cidrs", "10.0.0.0/8, fd00::/8", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}},
		{"host bits masked", "192.168.1.7/24", []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}},
		{"mixed", "127.0.0.1,172.16.0.0/12", []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("172.16.0.0/12")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(env(map[string]string{"TRUSTED_PROXIES": tt.value}), rules)
			if err != nil {
				t.Fatalf("Load() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, c.TrustedProxies, prefixEqual); diff != "" {
				t.Errorf("Load() TrustedProxies mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadInvalid(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		variable string // the error must name it
	}{
		{"port not a number", map[string]string{"PORT": "abc"}, "PORT"},
		{"port too large", map[string]string{"PORT": "70000"}, "PORT"},
		{"port negative", map[string]string{"PORT": "-1"}, "PORT"},
		{"limit zero", map[string]string{"RATE_LIMIT_LIMIT": "0"}, "RATE_LIMIT_LIMIT"},
		{"limit negative", map[string]string{"RATE_LIMIT_LIMIT": "-1"}, "RATE_LIMIT_LIMIT"},
		{"limit not a number", map[string]string{"RATE_LIMIT_LIMIT": "x"}, "RATE_LIMIT_LIMIT"},
		{"window in words", map[string]string{"RATE_LIMIT_WINDOW": "1 minute"}, "RATE_LIMIT_WINDOW"},
		{"window zero", map[string]string{"RATE_LIMIT_WINDOW": "0s"}, "RATE_LIMIT_WINDOW"},
		{"window negative", map[string]string{"RATE_LIMIT_WINDOW": "-5s"}, "RATE_LIMIT_WINDOW"},
		{"timeout zero", map[string]string{"RATE_LIMIT_TIMEOUT": "0"}, "RATE_LIMIT_TIMEOUT"},
		{"timeout no unit", map[string]string{"RATE_LIMIT_TIMEOUT": "100"}, "RATE_LIMIT_TIMEOUT"},
		{"enabled maybe", map[string]string{"RATE_LIMIT_ENABLED": "maybe"}, "RATE_LIMIT_ENABLED"},
		{"fail open maybe", map[string]string{"RATE_LIMIT_FAIL_OPEN": "maybe"}, "RATE_LIMIT_FAIL_OPEN"},
		{"on redis error unknown", map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": "ignore"}, "RATE_LIMIT_ON_REDIS_ERROR"},
		{"both spellings disagree", map[string]string{"RATE_LIMIT_ON_REDIS_ERROR": "local", "RATE_LIMIT_FAIL_OPEN": "true"}, "RATE_LIMIT_ON_REDIS_ERROR=\"local\" and RATE_LIMIT_FAIL_OPEN=\"true\" disagree"},
		{"instances negative", map[string]string{"RATE_LIMIT_INSTANCES": "-1"}, "RATE_LIMIT_INSTANCES"},
		{"driver postgres", map[string]string{"DB_DRIVER": "postgres"}, "DB_DRIVER"},
		{"mysql without dsn", map[string]string{"DB_DRIVER": "mysql"}, "DB_DSN"},
		{"mysql dsn a url", map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "mysql://api_user:pw@127.0.0.1:3306/countries"}, "DB_DSN"},
		{"mysql dsn without tcp()", map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "api_user:pw@127.0.0.1:3306/countries"}, "DB_DSN"},
		{"mysql dsn without database slash", map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "api_user:pw@tcp(127.0.0.1:3306)countries"}, "DB_DSN"},
		{"redis url http", map[string]string{"REDIS_URL": "http://x"}, "REDIS_URL"},
		{"redis url no host", map[string]string{"REDIS_URL": "redis://"}, "REDIS_URL"},
		{"redis url and cluster", map[string]string{"REDIS_URL": "redis://a:6379", "REDIS_CLUSTER_ADDRS": "b:7000"}, "REDIS_CLUSTER_ADDRS"},
		{"cluster without port", map[string]string{"REDIS_CLUSTER_ADDRS": "10.0.0.1"}, "REDIS_CLUSTER_ADDRS"},
		{"redis url and sentinel", map[string]string{"REDIS_URL": "redis://a:6379", "REDIS_SENTINEL_ADDRS": "b:26379", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_ADDRS"},
		{"cluster and sentinel", map[string]string{"REDIS_CLUSTER_ADDRS": "a:7000", "REDIS_SENTINEL_ADDRS": "b:26379", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_CLUSTER_ADDRS and REDIS_SENTINEL_ADDRS"},
		{"sentinel without master", map[string]string{"REDIS_SENTINEL_ADDRS": "b:26379"}, "REDIS_SENTINEL_MASTER"},
		{"sentinel master with a space", map[string]string{"REDIS_SENTINEL_ADDRS": "b:26379", "REDIS_SENTINEL_MASTER": "my master"}, "REDIS_SENTINEL_MASTER"},
		{"sentinel without port", map[string]string{"REDIS_SENTINEL_ADDRS": "b", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_ADDRS"},
		{"sentinel master alone", map[string]string{"REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINEL_MASTER"},
		{"sentinel password alone", map[string]string{"REDIS_URL": "redis://a:6379", "REDIS_SENTINEL_PASSWORD": "pw"}, "REDIS_SENTINEL_PASSWORD"},
		{"proxies not a cidr", map[string]string{"TRUSTED_PROXIES": "not-a-cidr"}, "TRUSTED_PROXIES"},
		{"proxies one bad", map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,10.0.0.0/33"}, "TRUSTED_PROXIES"},
		{"seed users no colon", map[string]string{"SEED_USERS": "nocolon"}, "SEED_USERS"},
		{"seed users empty password", map[string]string{"SEED_USERS": "a:"}, "SEED_USERS"},
		{"seed users empty name", map[string]string{"SEED_USERS": ":pw"}, "SEED_USERS"},
		{"seed users tier only", map[string]string{"SEED_USERS": "a::pro"}, "SEED_USERS"},
		{"seed users long name", map[string]string{"SEED_USERS": strings.Repeat("a", 65) + ":pw"}, "SEED_USERS"},
		{"seed users tab in name", map[string]string{"SEED_USERS": "john\tdoe:pw"}, "SEED_USERS"},
		{"seed users newline in name", map[string]string{"SEED_USERS": "ok:pw,john\ndoe:pw"}, "SEED_USERS"},
		{"seed users NUL in name", map[string]string{"SEED_USERS": "john\x00doe:pw"}, "SEED_USERS"},
		{"seed users DEL in name", map[string]string{"SEED_USERS": "john_doe\x7f:pw"}, "SEED_USERS"},
		{"seed users C1 in name", map[string]string{"SEED_USERS": "john_doe\u0085:pw"}, "SEED_USERS"},
		{"key cache ttl negative", map[string]string{"AUTH_KEY_CACHE_TTL": "-1s"}, "AUTH_KEY_CACHE_TTL"},
		{"key cache ttl no unit", map[string]string{"AUTH_KEY_CACHE_TTL": "10"}, "AUTH_KEY_CACHE_TTL"},
		{"auth fail limit negative", map[string]string{"AUTH_FAIL_LIMIT": "-1"}, "AUTH_FAIL_LIMIT"},
		{"auth fail limit words", map[string]string{"AUTH_FAIL_LIMIT": "ten"}, "AUTH_FAIL_LIMIT"},
		{"auth fail window zero", map[string]string{"AUTH_FAIL_WINDOW": "0s"}, "AUTH_FAIL_WINDOW"},
		{"auth fail limit over 1000", map[string]string{"AUTH_FAIL_LIMIT": "1001"}, "AUTH_FAIL_LIMIT"},
		{"trusted ttl negative", map[string]string{"AUTH_TRUSTED_TTL": "-1h"}, "AUTH_TRUSTED_TTL"},
		{"trusted ttl no unit", map[string]string{"AUTH_TRUSTED_TTL": "30"}, "AUTH_TRUSTED_TTL"},
		{"max checks zero", map[string]string{"AUTH_MAX_CHECKS": "0"}, "AUTH_MAX_CHECKS"},
		{"max checks words", map[string]string{"AUTH_MAX_CHECKS": "many"}, "AUTH_MAX_CHECKS"},
		{"burst zero", map[string]string{"RATE_LIMIT_BURST": "0"}, "RATE_LIMIT_BURST"},
		{"metrics addr no port", map[string]string{"METRICS_ADDR": "localhost"}, "METRICS_ADDR"},
		{"metrics addr port not a number", map[string]string{"METRICS_ADDR": "foo:bar"}, "METRICS_ADDR"},
		{"metrics addr port too big", map[string]string{"METRICS_ADDR": ":70000"}, "METRICS_ADDR"},
		{"lease", map[string]string{"RATE_LIMIT_LEASE": "on"}, "RATE_LIMIT_LEASE"},
		{"log format", map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{"ipv6 prefix 0", map[string]string{"RATE_LIMIT_IPV6_PREFIX": "0"}, "RATE_LIMIT_IPV6_PREFIX"},
		{"ipv6 prefix 129", map[string]string{"RATE_LIMIT_IPV6_PREFIX": "129"}, "RATE_LIMIT_IPV6_PREFIX"},
		{"ipv6 prefix not a number", map[string]string{"RATE_LIMIT_IPV6_PREFIX": "x"}, "RATE_LIMIT_IPV6_PREFIX"},
		// The default policy's checks are policy's; their errors are settings' too.
		{"unknown algorithm", map[string]string{"RATE_LIMIT_ALGORITHM": "leaky"}, `RATE_LIMIT_ALGORITHM="leaky"`},
		{"concurrency without a policy file", map[string]string{"RATE_LIMIT_ALGORITHM": "concurrency"}, "RATE_LIMIT_POLICY_FILE"},
		{"sliding_log over a million", map[string]string{"RATE_LIMIT_ALGORITHM": "sliding_log", "RATE_LIMIT_LIMIT": "1000001"}, "RATE_LIMIT_LIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.env), rules)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load() error = %v, want one wrapping ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.variable) {
				t.Errorf("Load() error = %q, want it to name %s", err, tt.variable)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load(env(map[string]string{
		"PORT":                 "abc",
		"RATE_LIMIT_LIMIT":     "0",
		"RATE_LIMIT_WINDOW":    "1 minute",
		"RATE_LIMIT_TIMEOUT":   "0",
		"RATE_LIMIT_ENABLED":   "maybe",
		"DB_DRIVER":            "postgres",
		"REDIS_URL":            "http://x",
		"TRUSTED_PROXIES":      "not-a-cidr",
		"SEED_USERS":           "nocolon",
		"RATE_LIMIT_FAIL_OPEN": "perhaps",
	}), rules)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load() error = %v, want one wrapping ErrInvalid", err)
	}
	for _, v := range []string{
		`PORT="abc"`, "RATE_LIMIT_LIMIT", `RATE_LIMIT_WINDOW="1 minute"`, "RATE_LIMIT_TIMEOUT",
		"RATE_LIMIT_ENABLED", "DB_DRIVER", "REDIS_URL", "TRUSTED_PROXIES", "SEED_USERS", "RATE_LIMIT_FAIL_OPEN",
	} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("Load() error = %q, want it to mention %s", err, v)
		}
	}
}

func TestLoadErrorsHideSecrets(t *testing.T) {
	const secret = "s3cr3t-Pa55"
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"seed users bad entry", map[string]string{"SEED_USERS": "ok:" + secret + ",nocolon" + secret}},
		{"seed users password too long", map[string]string{"SEED_USERS": "a:" + secret + strings.Repeat("x", 80)}},
		{"seed users no name", map[string]string{"SEED_USERS": ":" + secret}},
		{"seed users with tier, no name", map[string]string{"SEED_USERS": ":" + secret + ":pro"}},
		{"seed users with tier, password too long", map[string]string{"SEED_USERS": "a:" + secret + strings.Repeat("x", 80) + ":pro"}},
		{"redis url wrong scheme", map[string]string{"REDIS_URL": "http://:" + secret + "@127.0.0.1:6379"}},
		{"redis url unparsable", map[string]string{"REDIS_URL": "redis://:" + secret + "@[::1"}},
		{"redis url no host", map[string]string{"REDIS_URL": "redis://:" + secret + "@"}},
		{"mysql dsn unparsable", map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "api_user:" + secret + "@127.0.0.1:3306/countries"}},
		{"mysql dsn unclosed address", map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "api_user:" + secret + "@tcp(127.0.0.1:3306/countries"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.env), rules)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load() error = %v, want one wrapping ErrInvalid", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Load() error = %q, want it without the password", err)
			}
		})
	}
}

func TestLoadNamesOnlyTheBadVariable(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		notWant string // a variable the error must not blame
	}{
		// RATE_LIMIT_BURST defaults to RATE_LIMIT_LIMIT: a bad limit must not
		// also be reported as a bad burst the user never set.
		{"limit not a number", map[string]string{"RATE_LIMIT_LIMIT": "x"}, "RATE_LIMIT_BURST"},
		{"limit zero", map[string]string{"RATE_LIMIT_LIMIT": "0"}, "RATE_LIMIT_BURST"},
		{"limit negative", map[string]string{"RATE_LIMIT_LIMIT": "-1"}, "RATE_LIMIT_BURST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(env(tt.env), rules)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load() error = %v, want one wrapping ErrInvalid", err)
			}
			if strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("Load() error = %q, want it not to blame %s", err, tt.notWant)
			}
		})
	}
}

// TestErrorsBlameOnlyWhatIsWrong: a bad variable is reported once, and
// variables whose defaults derive from it are not blamed too.
func TestErrorsBlameOnlyWhatIsWrong(t *testing.T) {
	tests := []struct {
		env       map[string]string
		want, not string
		wantTimes int
	}{
		{map[string]string{"RATE_LIMIT_LIMIT": "99999999999999999999"}, "RATE_LIMIT_LIMIT", "RATE_LIMIT_BURST", 1},
		{map[string]string{"RATE_LIMIT_LIMIT": "2000000000"}, "RATE_LIMIT_LIMIT", "RATE_LIMIT_BURST", 1},
		{map[string]string{"DB_DRIVER": "postgres"}, "DB_DRIVER", "DB_DSN", 1},
		{map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,,"}, "TRUSTED_PROXIES", "REDIS", 1},
	}
	for _, tt := range tests {
		_, err := Load(func(k string) string { return tt.env[k] }, rules)
		if err == nil {
			t.Errorf("Load(%v) = nil error, want one naming %s", tt.env, tt.want)
			continue
		}
		if n := strings.Count(err.Error(), tt.want+"="); n != tt.wantTimes || strings.Contains(err.Error(), tt.not) {
			t.Errorf("Load(%v) = %q; want %s named %d time(s) and no %s", tt.env, err, tt.want, tt.wantTimes, tt.not)
		}
	}
}
