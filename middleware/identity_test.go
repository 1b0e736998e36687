package middleware

import (
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
	"tollgate/auth/authtest"
)

// identifyEngine serves GET /x behind Identify, answering with the identity
// and the tier in X-Tier. proxies are the engine's trusted proxies (nil:
// none), set as routes.New does.
func identifyEngine(t *testing.T, users auth.Users, proxies []string) *gin.Engine {
	t.Helper()
	r := gin.New()
	if err := r.SetTrustedProxies(proxies); err != nil {
		t.Fatalf("SetTrustedProxies(%v): %v", proxies, err)
	}
	r.RemoteIPHeaders = []string{"X-Forwarded-For"}
	r.GET("/x", newIdentify(discard(), users, nil, time.Second, time.Minute, time.Minute, 64), func(c *gin.Context) {
		c.Header("X-Tier", Tier(c))
		c.String(http.StatusOK, Identity(c).Subject())
	})
	return r
}

// newIdentify is Identify over an auth.Authenticator of users and guard
// (nil: none) with these settings, warning to log as main's does.
func newIdentify(log *slog.Logger, users auth.Users, guard *auth.Guard, timeout, passwordTTL, keyTTL time.Duration, ipv6Prefix int) gin.HandlerFunc {
	a := auth.New(users, auth.AuthenticatorOptions{Guard: guard, Warner: NewThrottledLog(log, 10*time.Second),
		Timeout: timeout, PasswordTTL: passwordTTL, KeyTTL: keyTTL})
	return Identify(log, a, ipv6Prefix)
}

func basic(name, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+password))
}

// serve sends GET /x from remoteAddr with header to r.
func serve(t *testing.T, r http.Handler, remoteAddr string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.RemoteAddr = remoteAddr
	for k, v := range header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

func TestIdentifyClientIP(t *testing.T) {
	tests := []struct {
		name       string
		proxies    []string
		remoteAddr string
		header     map[string]string
		want       string
	}{
		{
			name:       "no header",
			remoteAddr: "192.0.2.1:1234",
			want:       "ip:192.0.2.1",
		},
		{
			name:       "ipv6 peer, grouped by its /64",
			remoteAddr: "[2001:db8::1]:443",
			want:       "ip:2001:db8::/64",
		},
		{
			name:       "forwarded for ignored without trusted proxies",
			remoteAddr: "192.0.2.1:1234",
			header:     map[string]string{"X-Forwarded-For": "203.0.113.9"},
			want:       "ip:192.0.2.1",
		},
		{
			name:       "forwarded for ignored from an untrusted peer",
			proxies:    []string{"10.0.0.0/8"},
			remoteAddr: "192.0.2.1:1234",
			header:     map[string]string{"X-Forwarded-For": "203.0.113.9"},
			want:       "ip:192.0.2.1",
		},
		{
			name:       "forwarded for honoured from a trusted peer",
			proxies:    []string{"192.0.2.0/24"},
			remoteAddr: "192.0.2.1:1234",
			header:     map[string]string{"X-Forwarded-For": "203.0.113.9"},
			want:       "ip:203.0.113.9",
		},
		{
			name:       "trusted hops in the chain are skipped",
			proxies:    []string{"192.0.2.0/24"},
			remoteAddr: "192.0.2.1:1234",
			header:     map[string]string{"X-Forwarded-For": "198.51.100.7, 192.0.2.5"},
			want:       "ip:198.51.100.7",
		},
		{
			name:       "a spoofed hop before an untrusted one is not believed",
			proxies:    []string{"192.0.2.0/24"},
			remoteAddr: "192.0.2.1:1234",
			header:     map[string]string{"X-Forwarded-For": "1.1.1.1, 198.51.100.7"},
			want:       "ip:198.51.100.7",
		},
		{
			name:       "x-real-ip is not read",
			proxies:    []string{"192.0.2.0/24"},
			remoteAddr: "192.0.2.1:1234",
			header:     map[string]string{"X-Real-IP": "203.0.113.9"},
			want:       "ip:192.0.2.1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
			r := identifyEngine(t, users, tt.proxies)

			w := serve(t, r, tt.remoteAddr, tt.header)

			if w.Code != http.StatusOK {
				t.Fatalf("status = %d, want %d", w.Code, http.StatusOK)
			}
			if got := w.Body.String(); got != tt.want {
				t.Errorf("Identity() = %q, want %q", got, tt.want)
			}
			if got := w.Header().Get("X-Tier"); got != "anonymous" {
				t.Errorf("Tier() = %q, want %q", got, "anonymous")
			}
			if users.Calls() != 0 {
				t.Errorf("CheckPassword() called %d times, want 0", users.Calls())
			}
		})
	}
}

func TestIdentifyBasic(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "s3cret:with:colons"}
	r := identifyEngine(t, users, []string{"192.0.2.0/24"})

	w := serve(t, r, "192.0.2.1:1234", map[string]string{
		"Authorization":   basic("alice", "s3cret:with:colons"),
		"X-Forwarded-For": "203.0.113.9",
	})

	if w.Code != http.StatusOK {
		t.Fatalf("status = %d, want %d", w.Code, http.StatusOK)
	}
	if got, want := w.Body.String(), "user:alice"; got != want {
		t.Errorf("Identity() = %q, want %q", got, want)
	}
	if got, want := w.Header().Get("X-Tier"), "free"; got != want {
		t.Errorf("Tier() = %q, want %q", got, want)
	}
	if users.Calls() != 1 {
		t.Errorf("CheckPassword() called %d times, want 1", users.Calls())
	}
}

// TestRequestLogIdentityKind: the access log names how the caller was
// identified: user (password), key (API key) or ip, never the credential.
func TestRequestLogIdentityKind(t *testing.T) {
	users := &authtest.FakeUsers{Name: "bob", Password: "pw"}
	users.SetKey("tg_good", false)
	var logs strings.Builder
	r := gin.New()
	r.Use(RequestLog(slog.New(slog.NewJSONHandler(&logs, nil)), nil))
	r.GET("/x", newIdentify(discard(), users, nil, time.Second, time.Minute, time.Minute, 64), func(c *gin.Context) {
		c.String(http.StatusOK, Identity(c).Subject())
	})
	for _, tt := range []struct {
		header map[string]string
		want   string
	}{
		{map[string]string{"Authorization": basic("bob", "pw")}, `"identity":"user"`},
		{map[string]string{"X-API-Key": "tg_good"}, `"identity":"key"`},
		{map[string]string{}, `"identity":"ip"`},
	} {
		logs.Reset()
		if w := serve(t, r, "192.0.2.1:1234", tt.header); w.Code != http.StatusOK {
			t.Fatalf("%v: status %d, want 200", tt.header, w.Code)
		}
		if line := logs.String(); !strings.Contains(line, tt.want) || strings.Contains(line, "tg_good") || strings.Contains(line, "bob") {
			t.Errorf("%v: log %q, want %s and no credential", tt.header, line, tt.want)
		}
	}
}

// TestIdentifyEmptyKey: an X-API-Key header sent empty is a wrong key (401),
// not anonymous, and costs no lookup.
func TestIdentifyEmptyKey(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
	r := identifyEngine(t, users, nil)
	w := serve(t, r, "192.0.2.1:1234", map[string]string{"X-API-Key": ""})
	if w.Code != http.StatusUnauthorized || users.Calls() != 0 {
		t.Errorf("empty X-API-Key: status %d, %d lookups; want 401 and none", w.Code, users.Calls())
	}
	w = serve(t, r, "192.0.2.1:1234", map[string]string{"X-API-Key": "", "Authorization": basic("alice", "pw")})
	if w.Code != http.StatusBadRequest {
		t.Errorf("empty X-API-Key with Basic credentials: status %d, want 400 (two credentials)", w.Code)
	}
}

// TestIdentifyRepeatedCredential: a credential header sent twice is
// ambiguous (which one is the caller?): 400, and nothing is checked.
func TestIdentifyRepeatedCredential(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
	users.SetKey("tg_good", false)
	r := identifyEngine(t, users, nil)
	for _, h := range []http.Header{
		{"Authorization": {basic("alice", "pw"), basic("bob", "x")}},
		{"X-Api-Key": {"tg_good", "tg_other"}},
	} {
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		req.Header = h
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != http.StatusBadRequest || users.Calls() != 0 {
			t.Errorf("%v: status %d, %d checks; want 400 and none", h, w.Code, users.Calls())
		}
	}
}
