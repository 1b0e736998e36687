// Package config reads the service's settings from the environment, applies
// defaults and validates them all at start-up: every bad setting comes back
// from Load as one error wrapping ErrInvalid. It imports no package of
// ours: the rules whose home is elsewhere (user names, tiers, CIDRs, the
// default policy's algorithm and limit) come in as plain functions (Rules),
// which main takes from the packages that own them.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
)

// ErrInvalid is wrapped by every error Load returns.
var ErrInvalid = errors.New("invalid configuration")

// SeedUser is one account to seed at start-up. An empty Tier keeps an existing
// user's tier (a new user gets "free").
type SeedUser struct {
	Name     string
	Password string
	Tier     string
}

// Config is every setting the service reads.
type Config struct {
	Port           int
	RedisURL       string   // empty: embedded Redis, unless RedisCluster or RedisSentinels
	RedisCluster   []string // seed nodes host:port; empty: not a cluster
	DBDriver       string   // sqlite or mysql
	DBDSN          string
	Enabled        bool
	Algorithm      string
	Limit          int
	Burst          int // token_bucket, gcra: capacity
	Window         time.Duration
	FailOpen       bool   // OnRedisError is not closed: the brute-force guard's choice
	OnRedisError   string // open, closed or local: what a decision Redis cannot make gets
	Timeout        time.Duration
	TrustedProxies []netip.Prefix
	KeyPrefix      string
	PolicyFile     string // empty: one policy from the RATE_LIMIT_* variables
	SeedUsers      []SeedUser
	MetricsAddr    string // empty: /metrics on the API's port
	LogFormat      string // json or text
	LogLevel       slog.Level
	DBConnect      time.Duration // how long start-up retries the database
	Shutdown       time.Duration // how long in-flight requests get at shutdown

	// RedisSentinels are the Sentinels (host:port) to ask for the master
	// named RedisSentinelMaster; empty: no Sentinel. RedisSentinelPassword is
	// the Sentinels' own password (their requirepass); empty: none.
	RedisSentinels        []string
	RedisSentinelMaster   string
	RedisSentinelPassword string

	AuthKeyCacheTTL time.Duration // how long a checked API key is believed
	AuthFailLimit   int           // failed credential checks per IP and per user name and window; 0: no guard
	AuthFailWindow  time.Duration
	AuthTrustedTTL  time.Duration // how long an address that passed a password check is trusted for its user; 0: never
	AuthMaxChecks   int           // password and key checks running at once per instance

	PipelineBatch  int           // script calls sent together at most; 0: no pipelining
	PipelineWindow time.Duration // how long a batch waits to fill; 0: sends what is queued
	DenyCacheSize  int           // denied identities remembered in memory; 0: no deny cache
	Lease          bool          // RATE_LIMIT_LEASE=auto: large limits under heavy traffic are leased
	MaxWaiting     int           // requests held for their slot (a limit's delay) at most per instance

	IPv6Prefix int // IPv6 clients are one identity per prefix of this many bits

	CandidateFile string // a policy file decided in shadow beside the live one; empty: none
	// Instances is how many instances share the Redis, for local decisions'
	// shares and leases; 0: counted (each instance announces itself).
	Instances        int
	OverridesRefresh time.Duration // how often the overrides are read from the database
}

// Rules are the checks of settings whose rule has its home in another
// package; main fills them from there, so each rule is written once and
// config imports nothing of ours. Load needs every one.
type Rules struct {
	UserName     func(name string) bool // a user's name (SEED_USERS)
	UserNameRule string                 // what UserName accepts, for messages
	Tier         func(tier string) bool // a user's tier (SEED_USERS)
	// CIDR reads one network (TRUSTED_PROXIES) in its canonical form.
	CIDR func(s string) (netip.Prefix, error)
	// DefaultPolicy checks the one policy RATE_LIMIT_ALGORITHM, _LIMIT,
	// _BURST and _WINDOW describe, read when no policy file is set; its
	// errors name the variables.
	DefaultPolicy func(algorithm string, limit, burst int, window time.Duration) error
}

// Load reads the configuration through getenv, checking each setting, with
// rules for those whose rule lives elsewhere. Every problem is reported at
// once, each naming the variable, its value and what is wanted, in one error
// wrapping ErrInvalid.
func Load(getenv func(string) string, rules Rules) (Config, error) {
	if rules.UserName == nil || rules.Tier == nil || rules.CIDR == nil || rules.DefaultPolicy == nil {
		return Config{}, errors.New("config.Load: every one of Rules is needed")
	}
	p := parser{getenv: getenv, rules: rules, bad: map[string]bool{}}
	c := Config{
		Port:       p.int("PORT", "8080", 0, 65535),
		RedisURL:   p.redisURL("REDIS_URL"),
		DBDriver:   p.oneOf("DB_DRIVER", "sqlite", "sqlite", "mysql"),
		Enabled:    p.bool("RATE_LIMIT_ENABLED", "true"),
		Algorithm:  strings.ReplaceAll(p.str("RATE_LIMIT_ALGORITHM", "fixed_window"), "-", "_"),
		Limit:      p.int("RATE_LIMIT_LIMIT", "5", 1, 1_000_000_000),
		Window:     p.duration("RATE_LIMIT_WINDOW", "60s", time.Millisecond, 366*24*time.Hour),
		Timeout:    p.duration("RATE_LIMIT_TIMEOUT", "100ms", time.Millisecond, time.Minute),
		KeyPrefix:  p.str("REDIS_KEY_PREFIX", "ratelimit:"),
		PolicyFile: p.str("RATE_LIMIT_POLICY_FILE", ""),
		DBConnect:  p.duration("DB_CONNECT_TIMEOUT", "30s", time.Second, time.Hour),
		Shutdown:   p.duration("SHUTDOWN_TIMEOUT", "10s", 0, time.Hour),
	}
	c.OnRedisError = p.onRedisError()
	c.FailOpen = c.OnRedisError != OnErrorClosed
	c.Instances = p.int("RATE_LIMIT_INSTANCES", "0", 0, 10_000)
	c.LogFormat = p.oneOf("LOG_FORMAT", "json", "json", "text")
	if err := c.LogLevel.UnmarshalText([]byte(p.oneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"))); err != nil {
		c.LogLevel = slog.LevelInfo // already reported by oneOf
	}
	if c.MetricsAddr = p.str("METRICS_ADDR", ""); c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil || !isPort(port) {
			p.fail("METRICS_ADDR", c.MetricsAddr, "want host:port such as 127.0.0.1:9090 (or :9090)")
		}
	}
	// max: a bad RATE_LIMIT_LIMIT is already reported; do not blame the burst too.
	c.Burst = p.int("RATE_LIMIT_BURST", strconv.Itoa(max(c.Limit, 1)), 1, 1_000_000_000)
	c.RedisCluster = p.addrs("REDIS_CLUSTER_ADDRS")
	c.RedisSentinels = p.addrs("REDIS_SENTINEL_ADDRS")
	c.RedisSentinelMaster = p.str("REDIS_SENTINEL_MASTER", "")
	c.RedisSentinelPassword = p.str("REDIS_SENTINEL_PASSWORD", "")
	p.oneRedis(c)
	c.TrustedProxies = p.prefixes("TRUSTED_PROXIES")
	dsnDefault := ""
	usersDefault := ""
	if c.DBDriver == "sqlite" {
		dsnDefault = "countries.db"
		usersDefault = "john_doe:EXAMPLE_PASSWORD"
	}
	c.DBDSN = p.str("DB_DSN", dsnDefault)
	if c.DBDSN == "" && c.DBDriver == "mysql" { // another driver is already reported
		p.fail("DB_DSN", "", "want a DSN such as api_user:EXAMPLE_PASSWORD@tcp(127.0.0.1:3306)/countries when DB_DRIVER=mysql")
	} else if c.DBDriver == "mysql" {
		if _, err := mysql.ParseDSN(c.DBDSN); err != nil {
			// Never echo the value: it may hold a password.
			p.errs = append(p.errs, fmt.Errorf("DB_DSN: %v: want a go-sql-driver DSN such as api_user:EXAMPLE_PASSWORD@tcp(127.0.0.1:3306)/countries", err))
		}
	}
	c.SeedUsers = p.users("SEED_USERS", usersDefault)
	c.AuthKeyCacheTTL = p.duration("AUTH_KEY_CACHE_TTL", "10s", 0, time.Hour)
	c.AuthFailLimit = p.int("AUTH_FAIL_LIMIT", "10", 0, 1000)
	c.AuthFailWindow = p.duration("AUTH_FAIL_WINDOW", "15m", time.Second, 7*24*time.Hour)
	c.AuthTrustedTTL = p.duration("AUTH_TRUSTED_TTL", "720h", 0, 366*24*time.Hour)
	c.AuthMaxChecks = p.int("AUTH_MAX_CHECKS", strconv.Itoa(runtime.NumCPU()), 1, 10_000)
	c.PipelineBatch = p.int("RATE_LIMIT_PIPELINE_BATCH", "16", 0, 1024)
	c.PipelineWindow = p.duration("RATE_LIMIT_PIPELINE_WINDOW", "0s", 0, time.Millisecond)
	c.DenyCacheSize = p.int("RATE_LIMIT_DENY_CACHE_SIZE", "10000", 0, 10_000_000)
	c.Lease = p.oneOf("RATE_LIMIT_LEASE", "auto", "auto", "off") == "auto"
	c.MaxWaiting = p.int("RATE_LIMIT_MAX_WAITING", "256", 0, 100_000)
	c.IPv6Prefix = p.int("RATE_LIMIT_IPV6_PREFIX", "64", 1, 128)
	c.CandidateFile = p.str("RATE_LIMIT_CANDIDATE_FILE", "")
	c.OverridesRefresh = p.duration("RATE_LIMIT_OVERRIDES_REFRESH", "10s", 100*time.Millisecond, time.Hour)
	// The RATE_LIMIT_* variables make the one policy only without a policy
	// file; a number already reported is not blamed again.
	if c.Enabled && c.PolicyFile == "" && !p.bad["RATE_LIMIT_LIMIT"] && !p.bad["RATE_LIMIT_BURST"] && !p.bad["RATE_LIMIT_WINDOW"] {
		if err := rules.DefaultPolicy(c.Algorithm, c.Limit, c.Burst, c.Window); err != nil {
			p.errs = append(p.errs, err)
		}
	}
	if len(p.errs) > 0 {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(p.errs...))
	}
	return c, nil
}

// What a decision gets when Redis cannot make it (RATE_LIMIT_ON_REDIS_ERROR).
const (
	OnErrorOpen   = "open"   // served unchecked
	OnErrorClosed = "closed" // 503
	OnErrorLocal  = "local"  // decided in this process at its share of every limit
)

// onRedisError reads RATE_LIMIT_ON_REDIS_ERROR and its old spelling,
// RATE_LIMIT_FAIL_OPEN (true: open, false: closed); both set must agree.
func (p *parser) onRedisError() string {
	mode := p.oneOf("RATE_LIMIT_ON_REDIS_ERROR", OnErrorLocal, OnErrorOpen, OnErrorClosed, OnErrorLocal)
	old := p.str("RATE_LIMIT_FAIL_OPEN", "")
	if old == "" {
		return mode
	}
	failOpen, err := strconv.ParseBool(old)
	if err != nil {
		p.fail("RATE_LIMIT_FAIL_OPEN", old, "want true or false (or set RATE_LIMIT_ON_REDIS_ERROR instead)")
		return mode
	}
	oldMode := OnErrorClosed
	if failOpen {
		oldMode = OnErrorOpen
	}
	if set := p.str("RATE_LIMIT_ON_REDIS_ERROR", ""); set != "" && set != oldMode {
		p.errs = append(p.errs, fmt.Errorf("RATE_LIMIT_ON_REDIS_ERROR=%q and RATE_LIMIT_FAIL_OPEN=%q disagree: set RATE_LIMIT_ON_REDIS_ERROR only (RATE_LIMIT_FAIL_OPEN=true is open, false is closed)", set, old))
	}
	return oldMode
}

// parser collects the errors of every variable it reads.
type parser struct {
	getenv func(string) string
	rules  Rules
	errs   []error
	bad    map[string]bool // variables reported by fail
}

func (p *parser) str(name, def string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

func (p *parser) fail(name, value, want string) {
	p.bad[name] = true
	p.errs = append(p.errs, fmt.Errorf("%s=%q: %s", name, value, want))
}

func (p *parser) int(name, def string, lo, hi int) int {
	v := p.str(name, def)
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, v, fmt.Sprintf("want an integer from %d to %d", lo, hi))
		return 0 // reported: values derived from it must not be blamed too
	}
	return n
}

func (p *parser) bool(name, def string) bool {
	v := p.str(name, def)
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "want true or false")
	}
	return b
}

func (p *parser) duration(name, def string, lo, hi time.Duration) time.Duration {
	v := p.str(name, def)
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		p.fail(name, v, fmt.Sprintf("want a Go duration such as 60s, from %v to %v", lo, hi))
	}
	return d
}

func (p *parser) oneOf(name, def string, valid ...string) string {
	v := p.str(name, def)
	for _, ok := range valid {
		if v == ok {
			return v
		}
	}
	p.fail(name, v, "want one of "+strings.Join(valid, ", "))
	return v
}

func (p *parser) redisURL(name string) string {
	v := p.str(name, "")
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		// The value may hold a password: name the variable, not the value.
		p.errs = append(p.errs, fmt.Errorf("%s: want a URL such as redis://127.0.0.1:6379/0", name))
	}
	return v
}

func (p *parser) addrs(name string) []string {
	v := p.str(name, "")
	if v == "" {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			p.fail(name, v, fmt.Sprintf("%q: want a comma list of host:port such as 10.0.0.1:7000,10.0.0.2:7000", s))
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			p.fail(name, v, fmt.Sprintf("%q: want a port from 1 to 65535", s))
			continue
		}
		out = append(out, s)
	}
	return out
}

// oneRedis checks that c names one way to reach Redis at most (none: the
// embedded one), and that the Sentinel settings come together.
func (p *parser) oneRedis(c Config) {
	var set []string
	if c.RedisURL != "" {
		set = append(set, "REDIS_URL")
	}
	if p.str("REDIS_CLUSTER_ADDRS", "") != "" {
		set = append(set, "REDIS_CLUSTER_ADDRS")
	}
	sentinel := p.str("REDIS_SENTINEL_ADDRS", "") != ""
	if sentinel {
		set = append(set, "REDIS_SENTINEL_ADDRS")
	}
	if len(set) > 1 {
		p.errs = append(p.errs, fmt.Errorf("%s: set one way to reach Redis (REDIS_URL, REDIS_CLUSTER_ADDRS or REDIS_SENTINEL_ADDRS), not %d", strings.Join(set, " and "), len(set)))
	}
	switch {
	case sentinel && c.RedisSentinelMaster == "":
		p.fail("REDIS_SENTINEL_MASTER", "", "want the name the Sentinels monitor the master under (sentinel monitor NAME ...) when REDIS_SENTINEL_ADDRS is set")
	case sentinel && strings.ContainsFunc(c.RedisSentinelMaster, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		p.fail("REDIS_SENTINEL_MASTER", c.RedisSentinelMaster, "want a master name without spaces or control characters")
	case !sentinel && c.RedisSentinelMaster != "":
		p.fail("REDIS_SENTINEL_MASTER", c.RedisSentinelMaster, "set it only with REDIS_SENTINEL_ADDRS")
	}
	if !sentinel && c.RedisSentinelPassword != "" {
		// Never echo the value: it is a password.
		p.errs = append(p.errs, errors.New("REDIS_SENTINEL_PASSWORD: set it only with REDIS_SENTINEL_ADDRS"))
	}
}

func (p *parser) prefixes(name string) []netip.Prefix {
	v := p.str(name, "")
	if v == "" {
		return nil
	}
	var out []netip.Prefix
	var bad []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		pf, err := p.rules.CIDR(s)
		if err != nil {
			if !slices.Contains(bad, s) { // each bad entry once
				bad = append(bad, s)
				p.fail(name, v, fmt.Sprintf("%q: want a comma list of CIDRs such as 10.0.0.0/8,::1/128", s))
			}
			continue
		}
		out = append(out, pf)
	}
	return out
}

// users reads a comma list of user:password or user:password:tier. The part
// after the last colon is a tier when it looks like one (a lowercase letter,
// then lowercase letters, digits, _ or -); so a password that contains a
// colon followed by such a word needs its tier written out: user:pa:ss:free.
func (p *parser) users(name, def string) []SeedUser {
	v := p.str(name, def)
	if v == "" {
		return nil
	}
	var out []SeedUser
	for i, s := range strings.Split(v, ",") {
		user, pass, ok := strings.Cut(strings.TrimSpace(s), ":")
		var tier string
		if i := strings.LastIndexByte(pass, ':'); i >= 0 && p.rules.Tier(pass[i+1:]) {
			pass, tier = pass[:i], pass[i+1:]
		}
		if !ok || !p.rules.UserName(user) || pass == "" || len(pass) > 72 {
			// Never echo the value: it holds passwords.
			p.errs = append(p.errs, fmt.Errorf("%s: entry %d: want user:password or user:password:tier (name %s, password 1 to 72 bytes)", name, i+1, p.rules.UserNameRule))
			continue
		}
		out = append(out, SeedUser{Name: user, Password: pass, Tier: tier})
	}
	return out
}

// isPort reports whether s is a TCP port number, 0 to 65535.
func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535 && s == strconv.Itoa(n)
}
