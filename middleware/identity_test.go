package middleware

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"

	"tollgate/auth"
)

// fakeUsers is a auth.Users that knows one user (of tier, "free" when
// empty) and that user's API keys; it counts its calls, can fail, and can hold
// every call until release is closed.
type fakeUsers struct {
	name, password, tier string
	err                  error
	release              chan struct{} // nil: answer at once

	mu    sync.Mutex
	calls int
	keys  map[string]bool // key: revoked
}

func (f *fakeUsers) CheckPassword(ctx context.Context, name, password string) (string, string, bool, error) {
	if err := f.call(ctx); err != nil {
		return "", "", false, err
	}
	if name != f.name || password != f.password {
		return "", "", false, nil
	}
	return f.name, f.userTier(), true, nil
}

func (f *fakeUsers) CheckAPIKey(ctx context.Context, key string) (string, string, bool, error) {
	if err := f.call(ctx); err != nil {
		return "", "", false, err
	}
	f.mu.Lock()
	revoked, ok := f.keys[key]
	f.mu.Unlock()
	if !ok || revoked {
		return "", "", false, nil
	}
	return f.name, f.userTier(), true, nil
}

func (f *fakeUsers) userTier() string {
	if f.tier == "" {
		return "free"
	}
	return f.tier
}

func (f *fakeUsers) call(ctx context.Context) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.err
}

// setKey adds key for the user, or revokes it.
func (f *fakeUsers) setKey(key string, revoked bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys == nil {
		f.keys = map[string]bool{}
	}
	f.keys[key] = revoked
}

func (f *fakeUsers) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// identifyEngine serves GET /x behind Identify, answering with the identity
// and the tier in X-Tier. proxies are the engine's trusted proxies (nil:
// none), set as routes.New does.
func identifyEngine(t *testing.T, users auth.Users, proxies []string) *gin.Engine {
	t.Helper()
	return identifyEngineTTL(t, users, proxies, time.Minute)
}

// identifyEngineTTL is identifyEngine with keyTTL as the API key cache's TTL.
func identifyEngineTTL(t *testing.T, users auth.Users, proxies []string, keyTTL time.Duration) *gin.Engine {
	t.Helper()
	r := gin.New()
	if err := r.SetTrustedProxies(proxies); err != nil {
		t.Fatalf("SetTrustedProxies(%v): %v", proxies, err)
	}
	r.RemoteIPHeaders = []string{"X-Forwarded-For"}
	r.GET("/x", newIdentify(discard(), users, nil, time.Second, time.Minute, keyTTL, 64), func(c *gin.Context) {
		c.Header("X-Tier", Tier(c))
		c.String(http.StatusOK, Identity(c).Subject())
	})
	return r
}

// newIdentify is Identify over an auth.Authenticator of users and guard
// (nil: none) with these settings, warning to log as main's does.
func newIdentify(log *slog.Logger, users auth.Users, guard *auth.Guard, timeout, passwordTTL, keyTTL time.Duration, ipv6Prefix int) gin.HandlerFunc {
	a := auth.New(users, guard, auth.WithWarner(NewThrottledLog(log, 10*time.Second)),
		auth.WithTimeout(timeout), auth.WithPasswordTTL(passwordTTL), auth.WithKeyTTL(keyTTL))
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
			users := &fakeUsers{name: "alice", password: "pw"}
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
	users := &fakeUsers{name: "alice", password: "s3cret:with:colons"}
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

func TestIdentifyAPIKey(t *testing.T) {
	tests := []struct {
		name       string
		header     map[string]string
		wantStatus int
		wantBody   string // on 200
		wantTier   string // on 200
		wantCalls  int
	}{
		{"valid key", map[string]string{"X-API-Key": "tg_good"}, http.StatusOK, "user:alice", "pro", 1},
		{"revoked key", map[string]string{"X-API-Key": "tg_revoked"}, http.StatusUnauthorized, "", "", 1},
		{"unknown key", map[string]string{"X-API-Key": "tg_nope"}, http.StatusUnauthorized, "", "", 1},
		{"password as key", map[string]string{"X-API-Key": "pw"}, http.StatusUnauthorized, "", "", 1},
		{"key too long", map[string]string{"X-API-Key": strings.Repeat("k", 129)}, http.StatusUnauthorized, "", "", 0},
		{"key and basic", map[string]string{"X-API-Key": "tg_good", "Authorization": basic("alice", "pw")}, http.StatusBadRequest, "", "", 0},
		{"key and wrong basic", map[string]string{"X-API-Key": "tg_good", "Authorization": basic("alice", "nope")}, http.StatusBadRequest, "", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users := &fakeUsers{name: "alice", password: "pw", tier: "pro"}
			users.setKey("tg_good", false)
			users.setKey("tg_revoked", true)
			r := identifyEngine(t, users, nil)

			w := serve(t, r, "192.0.2.1:1234", tt.header)

			if w.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusOK {
				if got := w.Body.String(); got != tt.wantBody {
					t.Errorf("Identity() = %q, want %q", got, tt.wantBody)
				}
				if got := w.Header().Get("X-Tier"); got != tt.wantTier {
					t.Errorf("Tier() = %q, want %q", got, tt.wantTier)
				}
			} else if _, ok := decodeJSON(t, w)["error"]; !ok {
				t.Errorf("body = %s, want a JSON error", w.Body)
			}
			if users.Calls() != tt.wantCalls {
				t.Errorf("checker called %d times, want %d", users.Calls(), tt.wantCalls)
			}
		})
	}
}

func TestIdentifyRevokedKeyStopsAfterTTL(t *testing.T) {
	const ttl = 50 * time.Millisecond
	users := &fakeUsers{name: "alice", password: "pw", tier: "pro"}
	users.setKey("tg_good", false)
	r := identifyEngineTTL(t, users, nil, ttl)
	header := map[string]string{"X-API-Key": "tg_good"}

	for i := range 3 {
		if w := serve(t, r, "192.0.2.1:1234", header); w.Code != http.StatusOK || w.Header().Get("X-Tier") != "pro" {
			t.Fatalf("request %d = %d, tier %q; want 200, pro", i, w.Code, w.Header().Get("X-Tier"))
		}
	}
	if got := users.Calls(); got != 1 {
		t.Errorf("CheckAPIKey() called %d times for 3 requests, want 1 (cached)", got)
	}
	users.setKey("tg_good", true)
	time.Sleep(2 * ttl)
	if w := serve(t, r, "192.0.2.1:1234", header); w.Code != http.StatusUnauthorized {
		t.Errorf("request after revoking and the TTL = %d, want %d", w.Code, http.StatusUnauthorized)
	}
}

func TestIdentifyCacheKeepsTier(t *testing.T) {
	users := &fakeUsers{name: "alice", password: "pw", tier: "pro"}
	users.setKey("tg_good", false)
	r := identifyEngine(t, users, nil)
	for _, header := range []map[string]string{
		{"Authorization": basic("alice", "pw")}, {"Authorization": basic("alice", "pw")},
		{"X-API-Key": "tg_good"}, {"X-API-Key": "tg_good"},
	} {
		w := serve(t, r, "192.0.2.1:1234", header)
		if w.Code != http.StatusOK || w.Body.String() != "user:alice" || w.Header().Get("X-Tier") != "pro" {
			t.Errorf("%v = %d %q, tier %q; want 200 %q, tier pro", header, w.Code, w.Body, w.Header().Get("X-Tier"), "user:alice")
		}
	}
	if got := users.Calls(); got != 2 {
		t.Errorf("checker called %d times, want 2 (one per credential)", got)
	}
}

func TestIdentifyRejects(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name          string
		authorization string
		wantCalls     int // the checker runs only for decodable credentials
	}{
		{"empty header", "", 0},
		{"wrong password", basic("alice", "nope"), 1},
		{"unknown user", basic("bob", "pw"), 1},
		{"empty password", basic("alice", ""), 1},
		{"scheme only", "Basic", 0},
		{"scheme and space", "Basic ", 0},
		{"not base64", "Basic !!!", 0},
		{"base64 without colon", "Basic " + b64([]byte("alicepw")), 0},
		{"empty user name", basic("", "pw"), 0},
		{"non-utf-8 user name", "Basic " + b64([]byte("\xff\xfe:pw")), 0},
		{"user name too long", basic(strings.Repeat("a", 65), "pw"), 0},
		{"password too long", basic("alice", strings.Repeat("p", 73)), 0},
		{"8 KB of junk", "Basic " + strings.Repeat("%$#@", 2048), 0},
		{"8 KB of base64 junk", "Basic " + b64([]byte(strings.Repeat("x", 6144))), 0},
		{"8 KB of anything", strings.Repeat("junk ", 1640), 0},
		{"bearer token", "Bearer x", 0},
		{"digest", `Digest username="alice"`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users := &fakeUsers{name: "alice", password: "pw"}
			r := identifyEngine(t, users, nil)

			w := serve(t, r, "192.0.2.1:1234", map[string]string{"Authorization": tt.authorization})

			if w.Code != http.StatusUnauthorized {
				t.Errorf("status = %d, want %d", w.Code, http.StatusUnauthorized)
			}
			if got := w.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("WWW-Authenticate = %q, want a Basic challenge", got)
			}
			if diff := cmp.Diff(map[string]any{"error": "invalid credentials"}, decodeJSON(t, w)); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s", diff)
			}
			if users.Calls() != tt.wantCalls {
				t.Errorf("CheckPassword() called %d times, want %d", users.Calls(), tt.wantCalls)
			}
		})
	}
}

func TestIdentifyConcurrentSameCredentials(t *testing.T) {
	const n = 50
	users := &fakeUsers{name: "alice", password: "pw", release: make(chan struct{})}
	r := identifyEngine(t, users, nil)
	header := map[string]string{"Authorization": basic("alice", "pw")}

	var wg sync.WaitGroup
	codes := make([]int, n)
	bodies := make([]string, n)
	for i := range n {
		wg.Go(func() {
			w := serve(t, r, "192.0.2.1:1234", header)
			codes[i], bodies[i] = w.Code, w.Body.String()
		})
	}
	close(users.release)
	wg.Wait()

	for i := range n {
		if codes[i] != http.StatusOK || bodies[i] != "user:alice" {
			t.Errorf("request %d = %d %q, want 200 %q", i, codes[i], bodies[i], "user:alice")
		}
	}
	if got := users.Calls(); got != 1 {
		t.Errorf("CheckPassword() called %d times for %d concurrent requests, want 1", got, n)
	}

	w := serve(t, r, "192.0.2.1:1234", header)
	if w.Code != http.StatusOK {
		t.Errorf("later request status = %d, want %d", w.Code, http.StatusOK)
	}
	if got := users.Calls(); got != 1 {
		t.Errorf("CheckPassword() called %d times after a later request, want 1 (cached)", got)
	}
}

func TestIdentifyDoesNotCacheFailures(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantBody   map[string]any
	}{
		{"wrong password", nil, http.StatusUnauthorized, map[string]any{"error": "invalid credentials"}},
		{"checker error", errors.New("database is locked"), http.StatusServiceUnavailable, map[string]any{"error": "authentication unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users := &fakeUsers{name: "alice", password: "right", err: tt.err}
			r := identifyEngine(t, users, nil)
			header := map[string]string{"Authorization": basic("alice", "wrong")}

			for i := 1; i <= 2; i++ {
				w := serve(t, r, "192.0.2.1:1234", header)
				if w.Code != tt.wantStatus {
					t.Errorf("request %d status = %d, want %d", i, w.Code, tt.wantStatus)
				}
				if diff := cmp.Diff(tt.wantBody, decodeJSON(t, w)); diff != "" {
					t.Errorf("request %d body mismatch (-want +got):\n%s", i, diff)
				}
				if got := users.Calls(); got != i {
					t.Errorf("after request %d CheckPassword() called %d times, want %d", i, got, i)
				}
			}
		})
	}
}

func TestIdentifyCacheIsPerCredential(t *testing.T) {
	users := &fakeUsers{name: "alice", password: "pw"}
	r := identifyEngine(t, users, nil)

	steps := []struct {
		auth       string
		wantStatus int
		wantCalls  int
	}{
		{basic("alice", "pw"), http.StatusOK, 1},
		{basic("alice", "pw"), http.StatusOK, 1},
		{basic("alice", "pw2"), http.StatusUnauthorized, 2}, // a cached name does not admit another password
		{basic("alice", "pw"), http.StatusOK, 2},
	}
	for i, s := range steps {
		w := serve(t, r, "192.0.2.1:1234", map[string]string{"Authorization": s.auth})
		if w.Code != s.wantStatus {
			t.Errorf("step %d status = %d, want %d", i, w.Code, s.wantStatus)
		}
		if got := users.Calls(); got != s.wantCalls {
			t.Errorf("step %d CheckPassword() called %d times, want %d", i, got, s.wantCalls)
		}
	}
}

// TestRequestLogIdentityKind: the access log names how the caller was
// identified: user (password), key (API key) or ip, never the credential.
func TestRequestLogIdentityKind(t *testing.T) {
	users := &fakeUsers{name: "bob", password: "pw"}
	users.setKey("tg_good", false)
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
	users := &fakeUsers{name: "alice", password: "pw"}
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
	users := &fakeUsers{name: "alice", password: "pw"}
	users.setKey("tg_good", false)
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
