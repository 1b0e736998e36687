package middleware

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/algorithms"
	"tollgate/auth"
	"tollgate/auth/authtest"
	"tollgate/limiter"
	"tollgate/policy"
	"tollgate/redistest"
)

// proxyAddr is the trusted proxy of addressEngine: requests from it name the
// client in X-Forwarded-For, spelled as the proxy likes.
const proxyAddr = "10.0.0.1:4321"

// addressEngine serves GET /x behind Identify (with guard, nil: none) and a
// limiter of policies deciding on g, and GET /ratelimit (Peek, shown as routes shows it), with
// 10.0.0.0/8 as trusted proxies and IPv6 clients grouped by ipv6Prefix bits.
func addressEngine(t *testing.T, g *redistest.Redis, guard *auth.Guard, policies []policy.Policy, ipv6Prefix int) *gin.Engine {
	t.Helper()
	r := gin.New()
	if err := r.SetTrustedProxies([]string{"10.0.0.0/8"}); err != nil {
		t.Fatalf("SetTrustedProxies: %v", err)
	}
	r.RemoteIPHeaders = []string{"X-Forwarded-For"}
	users := &authtest.FakeUsers{Name: "bob", Password: "pw"}
	identify := newIdentify(discard(), users, guard, time.Second, time.Minute, time.Minute, ipv6Prefix)
	lim := newLimiter(discard(), limiter.New(g.Client, limiter.Options{Timeout: time.Second}), policies, g.Prefix, false, ipv6Prefix)
	r.GET("/x", identify, lim.Handler(), func(c *gin.Context) { c.String(http.StatusOK, Identity(c).Subject()) })
	r.GET("/ratelimit", identify, func(c *gin.Context) { // routes' /ratelimit, down to what the tests read
		_, applied, res, err := lim.Peek(c)
		if err != nil {
			c.Status(http.StatusServiceUnavailable)
			return
		}
		var policies []gin.H
		for i, a := range applied {
			policies = append(policies, gin.H{"name": a.Policy.Name, "limits": []gin.H{{"remaining": max(res.Decisions[i].Remaining, 0)}}})
		}
		c.JSON(http.StatusOK, gin.H{"policies": policies})
	})
	return r
}

// from sends GET path for client: through the trusted proxy, as
// X-Forwarded-For, or straight from remoteAddr when client is a host:port.
func from(t *testing.T, r http.Handler, path, client string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if _, err := netip.ParseAddrPort(client); err == nil {
		req.RemoteAddr = client
	} else {
		req.RemoteAddr = proxyAddr
		req.Header.Set("X-Forwarded-For", client)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

// ipPolicy is one fixed-window policy of limit requests per minute keyed by
// client IP, exempting cidrs.
func ipPolicy(limit int, cidrs ...string) []policy.Policy {
	p := policy.Policy{Name: "p", Key: "ip", Cost: 1, Limits: []policy.LimitSpec{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: limit, Window: time.Minute}}}}
	for _, c := range cidrs {
		p.ExemptCIDRs = append(p.ExemptCIDRs, netip.MustParsePrefix(c))
	}
	return []policy.Policy{p}
}

// status lists the statuses of GET /x for each client, in turn.
func statuses(t *testing.T, r http.Handler, clients ...string) []int {
	t.Helper()
	var got []int
	for _, c := range clients {
		got = append(got, from(t, r, "/x", c, nil).Code)
	}
	return got
}

func TestIdentifyCanonicalClientIP(t *testing.T) {
	tests := []struct {
		name       string
		client     string // X-Forwarded-For from the trusted proxy, or host:port
		ipv6Prefix int
		want       string
	}{
		{"ipv4", "1.2.3.4", 64, "ip:1.2.3.4"},
		{"ipv4-mapped", "::ffff:1.2.3.4", 64, "ip:1.2.3.4"},
		{"ipv4-mapped upper case", "::FFFF:1.2.3.4", 64, "ip:1.2.3.4"},
		{"ipv4-mapped in full", "0:0:0:0:0:ffff:0102:0304", 64, "ip:1.2.3.4"},
		{"ipv4-mapped peer", "[::ffff:1.2.3.4]:1234", 64, "ip:1.2.3.4"},
		{"ipv6 grouped by /64", "2001:db8::1", 64, "ip:2001:db8::/64"},
		{"ipv6 not in RFC 5952 form", "2001:0DB8:0000:0000:ffff::0001", 64, "ip:2001:db8::/64"},
		{"ipv6 peer", "[2001:db8::7:8]:443", 64, "ip:2001:db8::/64"},
		{"ipv6 /48", "2001:db8:0:5::1", 48, "ip:2001:db8::/48"},
		{"ipv6 /1", "ffff::1", 1, "ip:8000::/1"},
		{"ipv6 /128 is the address alone", "2001:0db8:0:0:1:0:0:1", 128, "ip:2001:db8::1:0:0:1"},
		{"ipv4 is never grouped", "198.51.100.7", 1, "ip:198.51.100.7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := gin.New()
			if err := r.SetTrustedProxies([]string{"10.0.0.0/8"}); err != nil {
				t.Fatalf("SetTrustedProxies: %v", err)
			}
			r.RemoteIPHeaders = []string{"X-Forwarded-For"}
			r.GET("/x", newIdentify(discard(), &authtest.FakeUsers{}, nil, time.Second, time.Minute, time.Minute, tt.ipv6Prefix), func(c *gin.Context) {
				c.String(http.StatusOK, Identity(c).Subject())
			})

			w := from(t, r, "/x", tt.client, nil)

			if got := w.Body.String(); got != tt.want {
				t.Errorf("Identity() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestIPSpellingsShareOneQuota: one IPv4 client is one quota, however the
// proxy spells its address.
func TestIPSpellingsShareOneQuota(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			r := addressEngine(t, g, nil, ipPolicy(3), 64)

			got := statuses(t, r, "1.2.3.4", "::ffff:1.2.3.4", "::FFFF:1.2.3.4", "1.2.3.4", "::ffff:1.2.3.4", "[::ffff:1.2.3.4]:1")

			want := []int{200, 200, 200, 429, 429, 429}
			if !slices.Equal(got, want) {
				t.Errorf("statuses = %v, want %v", got, want)
			}
			keys := g.Keys(t)
			if len(keys) != 1 || !strings.Contains(keys[0], "{ip:1.2.3.4}") {
				t.Errorf("keys = %q, want one with {ip:1.2.3.4}", keys)
			}
		})
	}
}

// TestIPv6PrefixSharesOneQuota: the addresses of one /64 share a quota, and
// its /ratelimit; another /64 has its own.
func TestIPv6PrefixSharesOneQuota(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			r := addressEngine(t, g, nil, ipPolicy(3), 64)

			got := statuses(t, r, "2001:db8::1", "2001:DB8::ffff:1", "[2001:db8:0:0:abcd::9]:1234", "2001:db8::42", "[2001:db8::43]:1", "2001:db8:0:1::1")

			want := []int{200, 200, 200, 429, 429, 200}
			if !slices.Equal(got, want) {
				t.Errorf("statuses = %v, want %v", got, want)
			}
			keys := strings.Join(g.Keys(t), " ")
			for _, subject := range []string{"{ip:2001:db8::/64}", "{ip:2001:db8:0:1::/64}"} {
				if !strings.Contains(keys, subject) {
					t.Errorf("keys = %q, want one with %s", keys, subject)
				}
			}
			for client, remaining := range map[string]float64{"2001:db8::77": 0, "2001:db8:0:1::5": 2} {
				w := from(t, r, "/ratelimit", client, nil)
				body := decodeJSON(t, w)
				policies, _ := body["policies"].([]any)
				if len(policies) != 1 {
					t.Fatalf("/ratelimit from %s: body %s, want one policy", client, w.Body)
				}
				limits, _ := policies[0].(map[string]any)["limits"].([]any)
				if len(limits) != 1 || limits[0].(map[string]any)["remaining"] != remaining {
					t.Errorf("/ratelimit from %s: body %s, want remaining %v", client, w.Body, remaining)
				}
			}
		})
	}
}

// TestIPv6PrefixSetting: with 128 each IPv6 address is counted alone, with
// 48 a whole /48 is one.
func TestIPv6PrefixSetting(t *testing.T) {
	tests := []struct {
		name       string
		ipv6Prefix int
		want       []int
		subject    string
	}{
		{"128", 128, []int{200, 200, 200, 200}, "{ip:2001:db8::1}"},
		{"48", 48, []int{200, 200, 429, 429}, "{ip:2001:db8::/48}"},
	}
	for backend, newRedis := range redistest.Backends() {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				g := newRedis(t)
				r := addressEngine(t, g, nil, ipPolicy(2), tt.ipv6Prefix)

				got := statuses(t, r, "2001:db8::1", "2001:db8::2", "2001:db8:0:1::1", "2001:db8:0:2::1")

				if !slices.Equal(got, tt.want) {
					t.Errorf("statuses = %v, want %v", got, tt.want)
				}
				if keys := strings.Join(g.Keys(t), " "); !strings.Contains(keys, tt.subject) {
					t.Errorf("keys = %q, want one with %s", keys, tt.subject)
				}
			})
		}
	}
}

// TestExemptCIDRMatchesTheRealAddress: an exemption names addresses, not the
// group they are counted in: 2001:db8::5/128 does not hold the group's
// representative 2001:db8::, and still exempts 2001:db8::5.
func TestExemptCIDRMatchesTheRealAddress(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			r := addressEngine(t, g, nil, ipPolicy(1, "2001:db8::5/128", "1.2.3.0/24"), 64)

			tests := []struct {
				client string
				want   []int
			}{
				{"2001:db8::5", []int{200, 200, 200}},
				{"[2001:db8::5]:1", []int{200, 200, 200}},
				{"::FFFF:1.2.3.4", []int{200, 200, 200}},
				{"2001:db8::6", []int{200, 429, 429}},
			}
			for _, tt := range tests {
				if got := statuses(t, r, tt.client, tt.client, tt.client); !slices.Equal(got, tt.want) {
					t.Errorf("%s: statuses = %v, want %v", tt.client, got, tt.want)
				}
			}
		})
	}
}

// TestGuardBudgetPerCanonicalAddress: the guard's per-address budget is one
// per client however its address is spelled, and one per IPv6 /64.
func TestGuardBudgetPerCanonicalAddress(t *testing.T) {
	tests := []struct {
		name     string
		failures []string // clients that each send a wrong password, for names of their own
		same     string   // a client that must then be refused
		other    string   // a client with a budget of its own
		key      string   // the per-address log
	}{
		{"ipv4 spellings", []string{"1.2.3.4", "::ffff:1.2.3.4", "::FFFF:1.2.3.4"}, "[::ffff:1.2.3.4]:1", "1.2.3.5", "authfail:ip:1.2.3.4"},
		{"ipv6 /64", []string{"2001:db8::1", "2001:db8::2:3", "[2001:db8::ff]:1"}, "2001:DB8::abc", "2001:db8:1::1", "authfail:ip:2001:db8::/64"},
	}
	for backend, newRedis := range redistest.Backends() {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				g := newRedis(t)
				guard, err := auth.NewGuard(g.Client, auth.GuardOptions{Prefix: g.Prefix, Failures: len(tt.failures), Window: 15 * time.Minute, Timeout: time.Second, FailOpen: true})
				if err != nil {
					t.Fatalf("NewGuard: %v", err)
				}
				r := addressEngine(t, g, guard, ipPolicy(100), 64)
				for i, c := range tt.failures {
					wrong := map[string]string{"Authorization": basic("user"+strconv.Itoa(i), "guess")}
					if w := from(t, r, "/x", c, wrong); w.Code != http.StatusUnauthorized {
						t.Fatalf("failure %d from %s: status %d, want 401", i+1, c, w.Code)
					}
				}
				next := map[string]string{"Authorization": basic("someone", "guess")}

				if w := from(t, r, "/x", tt.same, next); w.Code != http.StatusTooManyRequests {
					t.Errorf("%s after %d failures from %q: status %d, want 429", tt.same, len(tt.failures), tt.failures, w.Code)
				}
				if w := from(t, r, "/x", tt.other, next); w.Code != http.StatusUnauthorized {
					t.Errorf("%s: status %d, want 401 (a budget of its own)", tt.other, w.Code)
				}
				if keys := g.Keys(t); !slices.Contains(keys, g.Prefix+tt.key) {
					t.Errorf("keys = %q, want %s", keys, g.Prefix+tt.key)
				}
			})
		}
	}
}
