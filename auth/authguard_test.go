package auth

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"tollgate/auth/authtest"
	"tollgate/redistest"
)

// Outcomes of Authenticate, as the tests count them (the middleware's
// Fail turns each into one status: 200, 401, 429, 503, 503).
const (
	admitted    = "admitted"    // an identity
	rejected    = "rejected"    // ErrBadCredentials
	refused     = "refused"     // *RefusedError
	busy        = "busy"        // ErrBusy
	unavailable = "unavailable" // ErrUnavailable, ErrGuardUnavailable
)

func outcome(err error) string {
	var r *RefusedError
	switch {
	case err == nil:
		return admitted
	case errors.Is(err, ErrBadCredentials):
		return rejected
	case errors.As(err, &r):
		return refused
	case errors.Is(err, ErrBusy):
		return busy
	case errors.Is(err, ErrUnavailable):
		return unavailable
	}
	return "unexpected error: " + err.Error()
}

// attempt authenticates cred from addr and names the outcome.
func attempt(t *testing.T, a *Authenticator, addr string, cred Credential) string {
	t.Helper()
	_, err := a.Authenticate(t.Context(), cred, addr)
	return outcome(err)
}

// guarded is an Authenticator over users with a guard of limit failures per
// 15 minutes on rdb (addresses trusted for 720h), keys remembered for a
// minute; passwords are not remembered when passwordTTL is 0.
func guarded(t *testing.T, users Users, rdb redis.Scripter, prefix string, limit int, failOpen bool, passwordTTL time.Duration) *Authenticator {
	t.Helper()
	return guardedTimeout(t, users, rdb, prefix, limit, failOpen, passwordTTL, time.Second)
}

// guardedTimeout is guarded with timeout for the wait for a place, for
// each check and for each of the guard's Redis calls.
func guardedTimeout(t *testing.T, users Users, rdb redis.Scripter, prefix string, limit int, failOpen bool, passwordTTL, timeout time.Duration) *Authenticator {
	t.Helper()
	guard, err := NewGuard(rdb, GuardOptions{Prefix: prefix, Failures: limit, Window: 15 * time.Minute, TrustedTTL: 720 * time.Hour, Timeout: timeout, FailOpen: failOpen})
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	return New(users, AuthenticatorOptions{Guard: guard, Timeout: timeout, PasswordTTL: passwordTTL, KeyTTL: time.Minute})
}

func TestGuardBlocksAfterFailures(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &authtest.FakeUsers{Name: "bob", Password: "pw"}
			users.SetKey("tg_good", false)
			a := guarded(t, users, g.Client, g.Prefix, 10, true, time.Minute)
			const attacker, other, fresh = "192.0.2.1", "198.51.100.2", "203.0.113.3"
			wrong := byBasic(basic("alice", "guess"))

			// bob logs in from the attacker's address first: his
			// credentials are remembered, known good.
			if got := attempt(t, a, attacker, byBasic(basic("bob", "pw"))); got != admitted {
				t.Fatalf("bob before the attack: %s, want admitted", got)
			}
			for i := range 10 {
				if got := attempt(t, a, attacker, wrong); got != rejected {
					t.Fatalf("failure %d: %s, want rejected", i+1, got)
				}
			}
			calls := users.Calls()
			if calls != 11 {
				t.Fatalf("checker called %d times, want 11", calls)
			}

			steps := []struct {
				name      string
				addr      string
				cred      Credential
				want      string
				wantCheck bool // the checker runs
			}{
				{"11th attempt from the same IP", attacker, wrong, refused, false},
				{"the same IP, another name", attacker, byBasic(basic("carol", "x")), refused, false},
				{"the same IP, an API key", attacker, byKey("tg_good"), refused, false},
				{"another IP, the same name", other, wrong, refused, false},
				{"remembered credentials from the blocked IP", attacker, byBasic(basic("bob", "pw")), admitted, false},
				{"another user from a fresh IP", fresh, byBasic(basic("bob", "pw2")), rejected, true},
				{"the right password from a fresh IP", other, byBasic(basic("bob", "pw")), admitted, false},
				{"a key from a fresh IP", fresh, byKey("tg_good"), admitted, true},
			}
			for _, s := range steps {
				before := users.Calls()
				_, err := a.Authenticate(t.Context(), s.cred, s.addr)
				if got := outcome(err); got != s.want {
					t.Errorf("%s: %s, want %s", s.name, got, s.want)
				}
				if checked := users.Calls() > before; checked != s.wantCheck {
					t.Errorf("%s: checker ran = %v, want %v", s.name, checked, s.wantCheck)
				}
				var r *RefusedError
				if errors.As(err, &r) && (r.RetryAfter <= 0 || r.RetryAfter > 15*time.Minute) {
					t.Errorf("%s: RetryAfter = %v, want up to 15m", s.name, r.RetryAfter)
				}
			}

			// Keys name the IP and a hash of the user name, never what was sent as one.
			for _, k := range g.Keys(t) {
				rest, ok := strings.CutPrefix(k, g.Prefix+"authfail:")
				if !ok || strings.Contains(k, "alice") || strings.Contains(k, "guess") {
					t.Errorf("Redis key %q, want %sauthfail:ip:ADDR or ...:user:HASH", k, g.Prefix)
				}
				if h, ok := strings.CutPrefix(rest, "user:"); ok {
					if _, err := hex.DecodeString(h); err != nil || len(h) != 16 {
						t.Errorf("Redis key %q: want 16 hex digits after user:", k)
					}
				}
			}
		})
	}
}

func TestGuardCountsOnlyFailures(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &authtest.FakeUsers{Name: "bob", Password: "pw"}
			users.SetKey("tg_good", false)
			a := guarded(t, users, g.Client, g.Prefix, 3, true, 0) // every password is checked
			const ip = "192.0.2.1"
			steps := []struct {
				cred Credential
				want string
			}{
				{byBasic(basic("bob", "pw")), admitted},
				{byBasic(basic("bob", "pw")), admitted},
				{byBasic(basic("bob", "pw")), admitted},
				{byBasic(basic("bob", "pw")), admitted},
				{byKey("tg_bad"), rejected},
				{byBasic(basic("bob", "nope")), rejected},
				{byBasic(basic("bob", "pw")), admitted},
				{byBasic(basic("bob", "nope")), rejected},
				{byBasic(basic("bob", "pw")), refused},
				{byKey("tg_good"), refused},
				{Credential{}, admitted}, // anonymous: nothing to check
				{byBasic("Basic !!!"), rejected},
			}
			for i, s := range steps {
				if got := attempt(t, a, ip, s.cred); got != s.want {
					t.Errorf("step %d %v: %s, want %s", i, s.cred, got, s.want)
				}
			}
		})
	}
}

// TestGuardExactUnderConcurrency: an attacker who sends its guesses all at
// once gets no more rejections than one who sends them in turn, whether the
// guesses differ (each its own check) or are all the same (one check shared
// by the requests in flight). Checks are held until the guard has let
// through all it will, so every request reaches the guard while the first
// checks are still running.
func TestGuardExactUnderConcurrency(t *testing.T) {
	const limit, n = 10, 200
	tests := []struct {
		name       string
		password   func(i int) string
		heldChecks int // checks running while they are held
	}{
		{"distinct guesses", func(i int) string { return "guess" + strconv.Itoa(i) }, limit},
		{"one guess", func(int) string { return "guess" }, 1},
	}
	for backend, newRedis := range redistest.Backends() {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				g := newRedis(t)
				release := make(chan struct{})
				users := &authtest.FakeUsers{Name: "bob", Password: "pw", Release: release}
				// Checks are held until the test has seen them all start,
				// which on a loaded machine can take longer than a second,
				// and 200 requests reach miniredis at once (no HTTP layer
				// spreads them): a timeout that cut a check or a guard call
				// would be unavailable, not the count.
				a := guardedTimeout(t, users, g.Client, g.Prefix, limit, false, 0, 10*time.Second)

				outcomes := make(chan string, n)
				for i := range n {
					go func() {
						outcomes <- attempt(t, a, "192.0.2.1", byBasic(basic("bob", tt.password(i))))
					}()
				}
				waitCalls(t, users, tt.heldChecks)
				close(release)
				got := map[string]int{}
				for range n {
					got[<-outcomes]++
				}
				if got[rejected] != limit || got[refused] != n-limit || users.Calls() > limit {
					t.Errorf("outcomes %v, checker called %d times; want %d rejected, %d refused and at most %d checks",
						got, users.Calls(), limit, n-limit, limit)
				}
				// The failures stay counted: the next guess is refused.
				if got := attempt(t, a, "192.0.2.1", byBasic(basic("bob", "again"))); got != refused {
					t.Errorf("after the flood: %s, want refused", got)
				}
			})
		}
	}
}

// TestGuardRightCredentialsWait: checks in flight hold places, but a right
// credential behind them waits for them instead of being refused, and its
// place is given back.
func TestGuardRightCredentialsWait(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			release := make(chan struct{})
			users := &authtest.FakeUsers{Name: "bob", Password: "pw", Release: release}
			const limit, n = 2, 5
			for i := range n {
				users.SetKey("tg_good"+strconv.Itoa(i), false)
			}
			a := guarded(t, users, g.Client, g.Prefix, limit, false, 0)

			outcomes := make(chan string, n)
			for i := range n {
				go func() {
					outcomes <- attempt(t, a, "192.0.2.1", byKey("tg_good"+strconv.Itoa(i)))
				}()
			}
			waitCalls(t, users, limit)
			close(release)
			for range n {
				if got := <-outcomes; got != admitted {
					t.Errorf("%s, want admitted", got)
				}
			}
			if users.Calls() != n {
				t.Errorf("checker called %d times, want %d", users.Calls(), n)
			}
			if keys := g.Keys(t); len(keys) != 0 {
				n, _ := g.Client.ZCard(t.Context(), keys[0]).Result()
				if n != 0 {
					t.Errorf("%d places still taken after right credentials, want 0", n)
				}
			}
		})
	}
}

// waitCalls waits until the checker has been called want times, then a
// little longer, so that calls beyond want would show up too.
func waitCalls(t *testing.T, users *authtest.FakeUsers, want int) {
	t.Helper()
	users.WaitCalls(t, want)
	// Extra calls could only come later: nothing signals their absence.
	time.Sleep(50 * time.Millisecond)
	if got := users.Calls(); got != want {
		t.Errorf("checker called %d times while checks were held, want %d", got, want)
	}
}

// TestGuardUncheckedKeepsNoPlace: a check that could not run (the user store
// is down) gives its place back; it is not a failed guess.
func TestGuardUncheckedKeepsNoPlace(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &authtest.FakeUsers{Name: "bob", Password: "pw", Err: errors.New("store down")}
			a := guarded(t, users, g.Client, g.Prefix, 2, false, 0)
			wrong := byBasic(basic("bob", "guess"))
			for i := range 5 {
				if got := attempt(t, a, "192.0.2.1", wrong); got != unavailable {
					t.Fatalf("store down, attempt %d: %s, want unavailable", i+1, got)
				}
			}
			users.SetErr(nil)
			for i, want := range []string{rejected, rejected, refused} {
				if got := attempt(t, a, "192.0.2.1", wrong); got != want {
					t.Errorf("store back, attempt %d: %s, want %s", i+1, got, want)
				}
			}
		})
	}
}

func TestGuardRedisDown(t *testing.T) {
	tests := []struct {
		name      string
		failOpen  bool
		cred      Credential
		want      string
		wantGuard bool // the error is ErrGuardUnavailable (503 with Retry-After: 1)
		wantCalls int
	}{
		{"open: right password", true, byBasic(basic("bob", "pw")), admitted, false, 1},
		{"open: wrong password", true, byBasic(basic("bob", "nope")), rejected, false, 1},
		{"open: key", true, byKey("tg_good"), admitted, false, 1},
		{"closed: right password", false, byBasic(basic("bob", "pw")), unavailable, true, 0},
		{"closed: key", false, byKey("tg_good"), unavailable, true, 0},
		{"closed: anonymous", false, Credential{}, admitted, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
			t.Cleanup(func() { rdb.Close() })
			m.Close()
			users := &authtest.FakeUsers{Name: "bob", Password: "pw"}
			users.SetKey("tg_good", false)
			a := guarded(t, users, rdb, "test:", 10, tt.failOpen, time.Minute)

			_, err := a.Authenticate(t.Context(), tt.cred, "192.0.2.1")

			if got := outcome(err); got != tt.want {
				t.Errorf("%s, want %s", got, tt.want)
			}
			if got := errors.Is(err, ErrGuardUnavailable); got != tt.wantGuard {
				t.Errorf("error %v is ErrGuardUnavailable = %v, want %v", err, got, tt.wantGuard)
			}
			if got := users.Calls(); got != tt.wantCalls {
				t.Errorf("checker called %d times, want %d", got, tt.wantCalls)
			}
		})
	}
}

// trusting is an Authenticator over users with a guard of 10 failures per
// 15 minutes on rdb and trustedTTL as its trusted TTL.
func trusting(t *testing.T, users Users, rdb redis.Scripter, prefix string, trustedTTL, passwordTTL time.Duration) *Authenticator {
	t.Helper()
	guard, err := NewGuard(rdb, GuardOptions{Prefix: prefix, Failures: 10, Window: 15 * time.Minute, TrustedTTL: trustedTTL, Timeout: time.Second})
	if err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	return New(users, AuthenticatorOptions{Guard: guard, PasswordTTL: passwordTTL, KeyTTL: time.Minute})
}

// TestGuardTrustedAddressNotLockedOut: john_doe logs in from A; then 20
// wrong passwords for john_doe come from 20 other addresses and lock the
// name. From A, where he already works, his password still passes (checked
// anew or remembered, on this instance or another one sharing Redis); from
// an address he never used it is refused, remembered or not, and no
// password check runs.
func TestGuardTrustedAddressNotLockedOut(t *testing.T) {
	tests := []struct {
		name        string
		passwordTTL time.Duration // 0: every password is checked
	}{
		{"checked every time", 0},
		{"remembered", time.Minute},
	}
	for backend, newRedis := range redistest.Backends() {
		for _, tt := range tests {
			t.Run(backend+"/"+tt.name, func(t *testing.T) {
				g := newRedis(t)
				users := &authtest.FakeUsers{Name: "john_doe", Password: "pw"}
				a := trusting(t, users, g.Client, g.Prefix, 720*time.Hour, tt.passwordTTL)
				other := trusting(t, users, g.Client, g.Prefix, 720*time.Hour, tt.passwordTTL) // another instance
				const home, fresh = "192.0.2.1", "203.0.113.9"
				right := byBasic(basic("john_doe", "pw"))

				if got := attempt(t, a, home, right); got != admitted {
					t.Fatalf("login from A: %s, want admitted", got)
				}
				// Both instances remember the password, where the test asks for that.
				if got := attempt(t, other, home, right); got != admitted {
					t.Fatalf("login from A on the other instance: %s, want admitted", got)
				}
				got := map[string]int{}
				for i := range 20 {
					got[attempt(t, a, fmt.Sprintf("198.51.100.%d", i+1), byBasic(basic("john_doe", "guess"+strconv.Itoa(i))))]++
				}
				if got[rejected] != 10 || got[refused] != 10 {
					t.Fatalf("20 wrong passwords from 20 addresses: outcomes %v, want 10 rejected, 10 refused", got)
				}

				steps := []struct {
					name string
					a    *Authenticator
					addr string
					want string
				}{
					{"right password from A", a, home, admitted},
					{"right password from A, other instance", other, home, admitted},
					{"right password from a new address", a, fresh, refused},
					{"right password from a new address, other instance", other, fresh, refused},
					{"right password from A again", a, home, admitted},
				}
				for _, s := range steps {
					before := users.Calls()
					got := attempt(t, s.a, s.addr, right)
					if got != s.want {
						t.Errorf("%s: %s, want %s", s.name, got, s.want)
					}
					if got == refused && users.Calls() != before {
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
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &authtest.FakeUsers{Name: "john_doe", Password: "pw"}
			a := trusting(t, users, g.Client, g.Prefix, 720*time.Hour, 0)
			const home = "192.0.2.1"
			if got := attempt(t, a, home, byBasic(basic("john_doe", "pw"))); got != admitted {
				t.Fatalf("login from A: %s, want admitted", got)
			}
			for i := range 10 {
				if got := attempt(t, a, home, byBasic(basic("john_doe", "guess"))); got != rejected {
					t.Fatalf("wrong password %d from A: %s, want rejected", i+1, got)
				}
			}
			if got := attempt(t, a, home, byBasic(basic("john_doe", "pw"))); got != refused {
				t.Errorf("right password from A after its own 10 failures: %s, want refused", got)
			}
		})
	}
}

// TestGuardTrustedTTLZero: AUTH_TRUSTED_TTL=0 trusts no address: a locked
// name is locked everywhere, and nothing is written for trust.
func TestGuardTrustedTTLZero(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			users := &authtest.FakeUsers{Name: "john_doe", Password: "pw"}
			a := trusting(t, users, g.Client, g.Prefix, 0, time.Minute)
			const home = "192.0.2.1"
			right := byBasic(basic("john_doe", "pw"))
			if got := attempt(t, a, home, right); got != admitted {
				t.Fatalf("login from A: %s, want admitted", got)
			}
			for i := range 10 {
				attempt(t, a, fmt.Sprintf("198.51.100.%d", i+1), byBasic(basic("john_doe", "guess")))
			}
			if got := attempt(t, a, home, right); got != refused {
				t.Errorf("remembered password from A, name locked, no trust: %s, want refused", got)
			}
			for _, k := range g.Keys(t) {
				if strings.HasPrefix(k, g.Prefix+"authfail:trusted:") {
					t.Errorf("Redis key %q written with trust off", k)
				}
			}
		})
	}
}

// TestGuardMaxChecks: with one check allowed at once, a second check waits
// for it, then is busy; it was not a guess, so the guard gives its place
// back: the address still has all its failures to spend.
func TestGuardMaxChecks(t *testing.T) {
	for backend, newRedis := range redistest.Backends() {
		t.Run(backend, func(t *testing.T) {
			g := newRedis(t)
			release := make(chan struct{})
			users := &authtest.FakeUsers{Name: "bob", Password: "pw", Release: release}
			a := guarded(t, BoundChecks(users, 1, 50*time.Millisecond), g.Client, g.Prefix, 3, false, 0)
			const ip = "192.0.2.1"

			var wg sync.WaitGroup
			var first string
			wg.Go(func() { first = attempt(t, a, ip, byBasic(basic("bob", "held"))) })
			waitCalls(t, users, 1)
			if got := attempt(t, a, ip, byBasic(basic("bob", "second"))); got != busy {
				t.Errorf("second check while one runs: %s, want busy", got)
			}
			close(release)
			wg.Wait()
			if first != rejected {
				t.Errorf("held wrong password: %s, want rejected", first)
			}
			// One failure so far: two more are checked, then refused.
			for i, want := range []string{rejected, rejected, refused} {
				if got := attempt(t, a, ip, byBasic(basic("bob", "again"))); got != want {
					t.Errorf("guess %d after the busy one: %s, want %s", i+2, got, want)
				}
			}
			if users.Calls() != 3 {
				t.Errorf("checker called %d times, want 3 (the busy check never ran)", users.Calls())
			}
		})
	}
}
