package policy

import (
	"errors"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tollgate/algorithms"
)

// algo is the spec of the algorithm called name, as Parse and Default
// resolve it; the zero Spec for no algorithm.
func algo(name string) algorithms.Spec {
	s, _ := algorithms.Lookup(name)
	return s
}

// specByName compares specs by name: a Spec holds functions, which cmp
// cannot compare.
var specByName = cmp.Comparer(func(a, b algorithms.Spec) bool { return a.Name == b.Name })

// perMinute is one fixed-window limit of n a minute.
func perMinute(n int) []LimitSpec {
	return []LimitSpec{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: n, Window: time.Minute}}}
}

// applied is what a test compares of an Applied: the names the headers
// show, the shadow flag and the rule.
type applied struct {
	Name      string
	Algorithm string
	Shadow    bool
	Key       string
	Requests  int
	Cost      int
}

func summary(as []Applied) []applied {
	var out []applied
	for _, a := range as {
		out = append(out, applied{Name: a.Limit.Name, Algorithm: a.Rule.Algorithm.Name, Shadow: a.Policy.Shadow,
			Key: a.Rule.Key, Requests: a.Rule.Limit.Requests, Cost: a.Rule.Cost})
	}
	return out
}

var (
	amy  = Caller{User: "amy", Tier: "free", IP: "192.0.2.1"}
	anon = Caller{Tier: AnonymousTier, IP: "192.0.2.1"}
)

func TestRulesKeys(t *testing.T) {
	tests := []struct {
		name   string
		key    string
		caller Caller
		want   string // the rule's key; "" means no rule
	}{
		{"ip, anonymous", "ip", anon, "p:{ip:192.0.2.1}:k:0:fixed_window"},
		{"ip, a user is counted by address too", "ip", amy, "p:{ip:192.0.2.1}:k:0:fixed_window"},
		{"ip, an IPv6 group", "ip", Caller{Tier: AnonymousTier, IP: "2001:db8::/64"}, "p:{ip:2001:db8::/64}:k:0:fixed_window"},
		{"user", "user", amy, "p:{user:amy}:k:0:fixed_window"},
		{"user, anonymous: the policy does not apply", "user", anon, ""},
		{"user_or_ip, a user", "user_or_ip", amy, "p:{user:amy}:k:0:fixed_window"},
		{"user_or_ip, anonymous", "user_or_ip", anon, "p:{ip:192.0.2.1}:k:0:fixed_window"},
		{"header, hashed", "header:X-Tenant", Caller{Tier: AnonymousTier, Header: http.Header{"X-Tenant": {"acme"}}},
			"p:{h:5a9e479c43680011244ce189e9e8d2b3}:k:0:fixed_window"},
		{"header, looked up in any spelling, hashed as the file writes it", "header:x-tenant", Caller{Tier: AnonymousTier, Header: http.Header{"X-Tenant": {"acme"}}},
			"p:{h:77e3aeb37f80dca7a4b9a02ac5e681e2}:k:0:fixed_window"},
		{"header missing: the policy does not apply", "header:X-Tenant", anon, ""},
		{"header empty: the policy does not apply", "header:X-Tenant", Caller{Tier: AnonymousTier, Header: http.Header{"X-Tenant": {""}}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSet([]Policy{{Name: "k", Key: tt.key, Cost: 1, Limits: perMinute(5)}}, "p:")
			got, _ := s.Rules(http.MethodGet, "/continents", tt.caller, nil)
			var keys []string
			for _, a := range got {
				keys = append(keys, a.Rule.Key)
			}
			var want []string
			if tt.want != "" {
				want = []string{tt.want}
			}
			if diff := cmp.Diff(want, keys); diff != "" {
				t.Errorf("Rules() keys (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRulesTiers(t *testing.T) {
	tiered := Policy{Name: "tier", Key: "user_or_ip", Cost: 1, Limits: perMinute(1),
		Tiers: map[string][]LimitSpec{AnonymousTier: perMinute(2), "pro": perMinute(100)}}
	onlyTiers := Policy{Name: "only", Key: "user", Cost: 1, Tiers: map[string][]LimitSpec{"pro": perMinute(100)}}
	tests := []struct {
		name         string
		policy       Policy
		caller       Caller
		wantRequests []int
		wantUnlisted string
	}{
		{"the tier's own limits", tiered, Caller{User: "amy", Tier: "pro"}, []int{100}, ""},
		{"anonymous is a tier", tiered, anon, []int{2}, ""},
		{"a tier not listed: the default limits", tiered, Caller{User: "amy", Tier: "free"}, []int{1}, ""},
		{"listed, without default limits", onlyTiers, Caller{User: "amy", Tier: "pro"}, []int{100}, ""},
		{"not listed, without default limits: unlimited, and said", onlyTiers, Caller{User: "gina", Tier: "gold"}, nil, "only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, unlisted := NewSet([]Policy{tt.policy}, "p:").Rules(http.MethodGet, "/continents", tt.caller, nil)
			var requests []int
			for _, a := range got {
				requests = append(requests, a.Rule.Limit.Requests)
			}
			if diff := cmp.Diff(tt.wantRequests, requests); diff != "" {
				t.Errorf("Rules() limits (-want +got):\n%s", diff)
			}
			if unlisted != tt.wantUnlisted {
				t.Errorf("Rules() unlisted = %q, want %q", unlisted, tt.wantUnlisted)
			}
		})
	}
}

// TestRulesAnonymousUnlistedIsQuiet: a policy keyed by user_or_ip with tiers
// but neither default limits nor an anonymous tier leaves anonymous callers
// unlimited without a word: that is how a file says "users only".
func TestRulesAnonymousUnlistedIsQuiet(t *testing.T) {
	s := NewSet([]Policy{{Name: "users", Key: "user_or_ip", Cost: 1, Tiers: map[string][]LimitSpec{"free": perMinute(3)}}}, "p:")
	got, unlisted := s.Rules(http.MethodGet, "/continents", anon, nil)
	if len(got) != 0 || unlisted != "" {
		t.Errorf("Rules(anonymous) = %d rules, unlisted %q; want none, \"\"", len(got), unlisted)
	}
}

func TestRulesExemptions(t *testing.T) {
	p := Policy{Name: "p", Key: "ip", Cost: 1, Limits: perMinute(1), ExemptUsers: []string{"ops"},
		ExemptCIDRs: []netip.Prefix{netip.MustParsePrefix("2001:db8::5/128"), netip.MustParsePrefix("1.2.3.0/24")}}
	tests := []struct {
		name   string
		caller Caller
		exempt bool
	}{
		{"an exempt user", Caller{User: "ops", Tier: "free", IP: "192.0.2.1"}, true},
		{"another user", Caller{User: "amy", Tier: "free", IP: "192.0.2.1"}, false},
		{"an anonymous caller is no user", Caller{Tier: AnonymousTier, IP: "192.0.2.1"}, false},
		{"an exempt IPv4 network", Caller{Tier: AnonymousTier, IP: "1.2.3.4", Addr: netip.MustParseAddr("1.2.3.4")}, true},
		// The exemption names addresses, not the group they are counted in:
		// 2001:db8::5/128 does not hold the group's 2001:db8::.
		{"an exempt IPv6 address in its /64 group", Caller{Tier: AnonymousTier, IP: "2001:db8::/64", Addr: netip.MustParseAddr("2001:db8::5")}, true},
		{"its neighbour", Caller{Tier: AnonymousTier, IP: "2001:db8::/64", Addr: netip.MustParseAddr("2001:db8::6")}, false},
		{"a user from an exempt network", Caller{User: "amy", Tier: "free", IP: "1.2.3.9", Addr: netip.MustParseAddr("1.2.3.9")}, true},
		{"no address", Caller{Tier: AnonymousTier, IP: "unknown"}, false},
	}
	s := NewSet([]Policy{p}, "p:")
	if !s.ExemptsCIDRs() {
		t.Error("ExemptsCIDRs() = false, want true")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := s.Rules(http.MethodGet, "/continents", tt.caller, nil)
			if exempt := len(got) == 0; exempt != tt.exempt {
				t.Errorf("Rules() = %d rules: exempt %v, want %v", len(got), exempt, tt.exempt)
			}
		})
	}
}

// TestRulesShadowAndNames: every policy that applies gives its limits, in
// the file's order; a policy of several limits names them policy-N, keys
// them by index and algorithm; shadow policies are marked, cost carried.
func TestRulesShadowAndNames(t *testing.T) {
	two := append(perMinute(5), LimitSpec{Algorithm: algo("token_bucket"), Limit: algorithms.Limit{Requests: 10, Window: time.Second, Burst: 20}})
	s := NewSet([]Policy{
		{Name: "burst", Key: "user_or_ip", Cost: 2, Limits: two},
		{Name: "trial", Key: "user_or_ip", Cost: 1, Shadow: true, Limits: perMinute(1)},
	}, "tg:")
	got, _ := s.Rules(http.MethodGet, "/continents", amy, nil)
	want := []applied{
		{Name: "burst-1", Algorithm: "fixed_window", Key: "tg:{user:amy}:burst:0:fixed_window", Requests: 5, Cost: 2},
		{Name: "burst-2", Algorithm: "token_bucket", Key: "tg:{user:amy}:burst:1:token_bucket", Requests: 10, Cost: 2},
		{Name: "trial", Algorithm: "fixed_window", Shadow: true, Key: "tg:{user:amy}:trial:0:fixed_window", Requests: 1, Cost: 1},
	}
	if diff := cmp.Diff(want, summary(got)); diff != "" {
		t.Errorf("Rules() (-want +got):\n%s", diff)
	}
	if !s.AnyShadow() {
		t.Error("AnyShadow() = false, want true")
	}
	if n := len(s.Limits()); n != 3 {
		t.Errorf("len(Limits()) = %d, want 3", n)
	}
	for i, nl := range s.Limits() {
		if nl.ID != i {
			t.Errorf("Limits()[%d].ID = %d, want %d", i, nl.ID, i)
		}
	}
}

func TestRulesMatch(t *testing.T) {
	s := NewSet([]Policy{
		{Name: "all", Key: "ip", Cost: 1, Limits: perMinute(5)},
		{Name: "detail", Key: "ip", Cost: 1, Limits: perMinute(1), Match: []Route{{Method: http.MethodGet, Path: "/continents/:id"}}},
	}, "p:")
	tests := []struct {
		method, route string
		want          []string
	}{
		{http.MethodGet, "/continents", []string{"all"}},
		{http.MethodGet, "/continents/:id", []string{"all", "detail"}},
		{http.MethodHead, "/continents/:id", []string{"all", "detail"}},
		{http.MethodPost, "/continents/:id", []string{"all"}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.route, func(t *testing.T) {
			got, _ := s.Rules(tt.method, tt.route, anon, nil)
			var names []string
			for _, a := range got {
				names = append(names, a.Limit.Name)
			}
			if diff := cmp.Diff(tt.want, names); diff != "" {
				t.Errorf("Rules() policies (-want +got):\n%s", diff)
			}
		})
	}
	all, _ := s.AllRules(anon, nil)
	if len(all) != 2 {
		t.Errorf("AllRules() = %d rules, want 2: every policy, whatever its routes", len(all))
	}
}

func TestPolicyMatchesHeadAsGet(t *testing.T) {
	p := Policy{Match: []Route{{Method: http.MethodGet, Path: "/continents/:id"}}}
	for _, tt := range []struct {
		method, route string
		want          bool
	}{
		{http.MethodGet, "/continents/:id", true},
		{http.MethodHead, "/continents/:id", true},
		{http.MethodPost, "/continents/:id", false},
		{http.MethodHead, "/continents", false},
	} {
		if got := p.matches(tt.method, tt.route); got != tt.want {
			t.Errorf("GET /continents/:id matches %s %s = %v, want %v", tt.method, tt.route, got, tt.want)
		}
	}
}

func TestDefault(t *testing.T) {
	got, err := Default("token_bucket", algorithms.Limit{Requests: 10, Window: time.Second, Burst: 20})
	if err != nil {
		t.Fatalf("Default() = %v", err)
	}
	want := []Policy{{Name: "token_bucket", Key: "user_or_ip", Cost: 1,
		Limits: []LimitSpec{{Algorithm: algo("token_bucket"), Limit: algorithms.Limit{Requests: 10, Window: time.Second, Burst: 20}}}}}
	if diff := cmp.Diff(want, got, specByName); diff != "" {
		t.Errorf("Default() (-want +got):\n%s", diff)
	}
}

func TestDescribe(t *testing.T) {
	policies, err := Parse(strings.NewReader(`
policies:
  - name: heavy
    key: ip
    limits:
      - {algorithm: concurrency, limit: 4, timeout: 30s}
      - {algorithm: calendar, limit: 10000, period: month, timezone: Europe/Berlin}
      - {algorithm: fixed_window, limit: 5, window: 1m}
  - name: daily
    key: user
    tiers:
      free: [{algorithm: calendar, limit: 100, period: day}]
      pro: [{algorithm: calendar, limit: 100, period: day}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"heavy: at most 4 requests at once (a place expires after 30s)", "heavy: 10000 per month in Europe/Berlin", "daily: 100 per day in UTC"}
	if diff := cmp.Diff(want, Describe(policies)); diff != "" {
		t.Errorf("Describe() (-want +got):\n%s", diff)
	}
}

func TestDefaultErrors(t *testing.T) {
	tests := []struct {
		name      string
		algorithm string
		limit     algorithms.Limit
		wantErr   error
		wantText  string
	}{
		{"unknown algorithm", "leaky", algorithms.Limit{Requests: 5, Window: time.Minute}, algorithms.ErrUnknown, `RATE_LIMIT_ALGORITHM="leaky"`},
		{"sliding_log over a million", "sliding_log", algorithms.Limit{Requests: 1_000_001, Window: time.Minute}, algorithms.ErrInvalidLimit, "RATE_LIMIT_LIMIT, RATE_LIMIT_BURST, RATE_LIMIT_WINDOW"},
		{"concurrency", "concurrency", algorithms.Limit{Requests: 5, Window: time.Minute}, algorithms.ErrInvalidLimit, "RATE_LIMIT_POLICY_FILE"},
		{"calendar", "calendar", algorithms.Limit{Requests: 5, Window: time.Minute}, algorithms.ErrInvalidLimit, "RATE_LIMIT_POLICY_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Default(tt.algorithm, tt.limit)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Default() = %v, want %v naming %s", err, tt.wantErr, tt.wantText)
			}
		})
	}
}

// TestDocsKeyFormat keeps the key format the docs give true: the example
// in docs/algorithms.md is the key of the RATE_LIMIT_* default for a user.
func TestDocsKeyFormat(t *testing.T) {
	doc, err := os.ReadFile("../docs/algorithms.md")
	if err != nil {
		t.Fatalf("read the docs: %v", err)
	}
	policies, err := Default("fixed_window", algorithms.Limit{Requests: 5, Window: time.Minute})
	if err != nil {
		t.Fatalf("Default() = %v", err)
	}
	got, _ := NewSet(policies, "ratelimit:").Rules(http.MethodGet, "/continents", Caller{User: "john_doe", Tier: "free"}, nil)
	if len(got) != 1 {
		t.Fatalf("Rules() = %d rules, want 1", len(got))
	}
	for _, want := range []string{"`<REDIS_KEY_PREFIX>{<identity>}:<policy>:<n>:<algorithm>`", "`" + got[0].Rule.Key + "`"} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/algorithms.md does not give %s", want)
		}
	}
}
