package middleware

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"tollgate/auth"
)

// trustEngine is guardEngine with trustedTTL as the guard's trusted TTL and
// a guard limit of 10 failures per 15 minutes.
func trustEngine(t *testing.T, users auth.Users, rdb redis.Scripter, prefix string, trustedTTL, passwordTTL time.Duration) *gin.Engine {
	t.Helper()
	guard, err := auth.NewGuard(rdb, prefix, 10, 15*time.Minute, trustedTTL, time.Second, false)
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	r := gin.New()
	r.GET("/x", newIdentify(discard(), users, guard, time.Second, passwordTTL, time.Minute, 64), func(c *gin.Context) {
		c.String(http.StatusOK, Identity(c).Subject())
	})
	return r
}

// TestGuardTrustedAddressNotLockedOut: john_doe logs in from A; then 20
// wrong passwords for john_doe come from 20 other addresses and lock the
// name. From A, where he already works, his password still passes (checked
// anew or remembered, on this instance or another one sharing Redis); from
// an address he never used it is refused (429), remembered or not, and no
// password check runs.
func TestGuardTrustedAddressNotLockedOut(t *testing.T) {
	tests := []struct {
		name        string
		passwordTTL time.Duration // 0: every password is checked
	}{
		{"checked every time", 0},
		{"remembered", time.Minute},
	}
	for backend, newRedis := range guardBackends(t) {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				g := newRedis(t)
				users := &fakeUsers{name: "john_doe", password: "pw"}
				r := trustEngine(t, users, g.rdb, g.prefix, 720*time.Hour, tt.passwordTTL)
				other := trustEngine(t, users, g.rdb, g.prefix, 720*time.Hour, tt.passwordTTL) // another instance
				const a, fresh = "192.0.2.1:1234", "203.0.113.9:1234"
				right := map[string]string{"Authorization": basic("john_doe", "pw")}

				if w := serve(t, r, a, right); w.Code != http.StatusOK {
					t.Fatalf("login from A: status %d, want 200", w.Code)
				}
				// Both instances remember the password, where the test asks for that.
				if w := serve(t, other, a, right); w.Code != http.StatusOK {
					t.Fatalf("login from A on the other instance: status %d, want 200", w.Code)
				}
				got := map[int]int{}
				for i := range 20 {
					addr := fmt.Sprintf("198.51.100.%d:1234", i+1)
					got[serve(t, r, addr, map[string]string{"Authorization": basic("john_doe", "guess"+strconv.Itoa(i))}).Code]++
				}
				if got[http.StatusUnauthorized] != 10 || got[http.StatusTooManyRequests] != 10 {
					t.Fatalf("20 wrong passwords from 20 addresses: statuses %v, want 10 × 401, 10 × 429", got)
				}

				steps := []struct {
					name       string
					engine     *gin.Engine
					remoteAddr string
					wantStatus int
				}{
					{"right password from A", r, a, http.StatusOK},
					{"right password from A, other instance", other, a, http.StatusOK},
					{"right password from a new address", r, fresh, http.StatusTooManyRequests},
					{"right password from a new address, other instance", other, fresh, http.StatusTooManyRequests},
					{"right password from A again", r, a, http.StatusOK},
				}
				for _, s := range steps {
					before := users.Calls()
					w := serve(t, s.engine, s.remoteAddr, right)
					if w.Code != s.wantStatus {
						t.Errorf("%s: status %d, want %d", s.name, w.Code, s.wantStatus)
					}
					if w.Code == http.StatusTooManyRequests && users.Calls() != before {
						t.Errorf("%s: refused after a password check, want none", s.name)
					}
				}
			})
		}
	}
}

// TestGuardTrustedAddressKeepsItsOwnCounter: a trusted address is spared its
// user's counter, not its own: failures from it still lock it.
func TestGuardTrustedAddressKeepsItsOwnCounter(t *testing.T) {
	for backend, newRedis := range guardBackends(t) {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &fakeUsers{name: "john_doe", password: "pw"}
			r := trustEngine(t, users, g.rdb, g.prefix, 720*time.Hour, 0)
			const a = "192.0.2.1:1234"
			if w := serve(t, r, a, map[string]string{"Authorization": basic("john_doe", "pw")}); w.Code != http.StatusOK {
				t.Fatalf("login from A: status %d, want 200", w.Code)
			}
			for i := range 10 {
				if w := serve(t, r, a, map[string]string{"Authorization": basic("john_doe", "guess")}); w.Code != http.StatusUnauthorized {
					t.Fatalf("wrong password %d from A: status %d, want 401", i+1, w.Code)
				}
			}
			if w := serve(t, r, a, map[string]string{"Authorization": basic("john_doe", "pw")}); w.Code != http.StatusTooManyRequests {
				t.Errorf("right password from A after its own 10 failures: status %d, want 429", w.Code)
			}
		})
	}
}

// TestGuardTrustedTTLZero: AUTH_TRUSTED_TTL=0 trusts no address: a locked
// name is locked everywhere, and nothing is written for trust.
func TestGuardTrustedTTLZero(t *testing.T) {
	for backend, newRedis := range guardBackends(t) {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &fakeUsers{name: "john_doe", password: "pw"}
			r := trustEngine(t, users, g.rdb, g.prefix, 0, time.Minute)
			const a = "192.0.2.1:1234"
			right := map[string]string{"Authorization": basic("john_doe", "pw")}
			if w := serve(t, r, a, right); w.Code != http.StatusOK {
				t.Fatalf("login from A: status %d, want 200", w.Code)
			}
			for i := range 10 {
				serve(t, r, fmt.Sprintf("198.51.100.%d:1234", i+1), map[string]string{"Authorization": basic("john_doe", "guess")})
			}
			if w := serve(t, r, a, right); w.Code != http.StatusTooManyRequests {
				t.Errorf("remembered password from A, name locked, no trust: status %d, want 429", w.Code)
			}
			for _, k := range g.keys(t) {
				if n := len(g.prefix + "authfail:trusted:"); len(k) > n && k[:n] == g.prefix+"authfail:trusted:" {
					t.Errorf("Redis key %q written with trust off", k)
				}
			}
		})
	}
}

// TestIdentifyMaxChecks: with one check allowed at once, a second check
// waits for it, then gets 503 with Retry-After: 1; it was not a guess, so
// the guard gives its place back: the address still has all its failures to
// spend.
func TestIdentifyMaxChecks(t *testing.T) {
	for backend, newRedis := range guardBackends(t) {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			release := make(chan struct{})
			users := &fakeUsers{name: "bob", password: "pw", release: release}
			r := guardEngine(t, auth.BoundChecks(users, 1, 50*time.Millisecond), g.rdb, g.prefix, 3, false, 0)
			const ip = "192.0.2.1:1234"

			var wg sync.WaitGroup
			wg.Add(1)
			var first int
			go func() {
				defer wg.Done()
				first = serve(t, r, ip, map[string]string{"Authorization": basic("bob", "held")}).Code
			}()
			waitCalls(t, users, 1)
			w := serve(t, r, ip, map[string]string{"Authorization": basic("bob", "second")})
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
				t.Errorf("second check while one runs: status %d, Retry-After %q; want 503, 1", w.Code, w.Header().Get("Retry-After"))
			}
			if body := decodeJSON(t, w); body["error"] != "authentication busy" {
				t.Errorf("body %v, want error authentication busy", body)
			}
			close(release)
			wg.Wait()
			if first != http.StatusUnauthorized {
				t.Errorf("held wrong password: status %d, want 401", first)
			}
			// One failure so far: two more are checked, then 429.
			for i, want := range []int{http.StatusUnauthorized, http.StatusUnauthorized, http.StatusTooManyRequests} {
				if w := serve(t, r, ip, map[string]string{"Authorization": basic("bob", "again")}); w.Code != want {
					t.Errorf("guess %d after the busy one: status %d, want %d", i+2, w.Code, want)
				}
			}
			if users.Calls() != 3 {
				t.Errorf("checker called %d times, want 3 (the busy check never ran)", users.Calls())
			}
		})
	}
}
