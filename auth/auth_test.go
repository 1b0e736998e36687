package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"tollgate/auth/authtest"
	"tollgate/policy"
)

func basic(name, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+password))
}

// byBasic and byKey are a credential of one Authorization or X-API-Key value.
func byBasic(authorization string) Credential {
	return Credential{Authorization: []string{authorization}}
}
func byKey(key string) Credential { return Credential{APIKey: []string{key}} }

// newAuth is an Authenticator over users without a guard, remembering
// passwords and keys for a minute, as the middleware's tests set it up.
func newAuth(users Users) *Authenticator {
	return New(users, AuthenticatorOptions{PasswordTTL: time.Minute, KeyTTL: time.Minute})
}

const addr = "192.0.2.1"

func TestAuthenticateAnonymous(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
	id, err := newAuth(users).Authenticate(t.Context(), Credential{}, "2001:db8::/64")
	if err != nil {
		t.Fatalf("Authenticate() error = %v", err)
	}
	want := Identity{Kind: IP, Addr: "2001:db8::/64", Tier: policy.AnonymousTier}
	if diff := cmp.Diff(want, id); diff != "" {
		t.Errorf("Authenticate() mismatch (-want +got):\n%s", diff)
	}
	if got := id.Subject(); got != "ip:2001:db8::/64" {
		t.Errorf("Subject() = %q, want ip:2001:db8::/64", got)
	}
	if users.Calls() != 0 {
		t.Errorf("checker called %d times, want 0", users.Calls())
	}
}

func TestAuthenticateBasic(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "s3cret:with:colons"}
	id, err := newAuth(users).Authenticate(t.Context(), byBasic(basic("alice", "s3cret:with:colons")), addr)
	if err != nil {
		t.Fatalf("Authenticate() error = %v", err)
	}
	want := Identity{Kind: User, Name: "alice", Addr: addr, Tier: "free"}
	if diff := cmp.Diff(want, id); diff != "" {
		t.Errorf("Authenticate() mismatch (-want +got):\n%s", diff)
	}
	if got := id.Subject(); got != "user:alice" {
		t.Errorf("Subject() = %q, want user:alice", got)
	}
	if users.Calls() != 1 {
		t.Errorf("CheckPassword() called %d times, want 1", users.Calls())
	}
}

func TestSubjectOfNoIdentity(t *testing.T) {
	if got := (Identity{}).Subject(); got != "" {
		t.Errorf("Identity{}.Subject() = %q, want empty", got)
	}
}

func TestAuthenticateAPIKey(t *testing.T) {
	tests := []struct {
		name      string
		cred      Credential
		wantErr   error
		wantID    Identity // when no error
		wantCalls int
	}{
		{"valid key", byKey("tg_good"), nil, Identity{Kind: User, Name: "alice", Addr: addr, Tier: "pro", ByKey: true}, 1},
		{"revoked key", byKey("tg_revoked"), ErrBadCredentials, Identity{}, 1},
		{"unknown key", byKey("tg_nope"), ErrBadCredentials, Identity{}, 1},
		{"password as key", byKey("pw"), ErrBadCredentials, Identity{}, 1},
		{"key too long", byKey(strings.Repeat("k", 129)), ErrBadCredentials, Identity{}, 0},
		{"key and basic", Credential{APIKey: []string{"tg_good"}, Authorization: []string{basic("alice", "pw")}}, ErrAmbiguous, Identity{}, 0},
		{"key and wrong basic", Credential{APIKey: []string{"tg_good"}, Authorization: []string{basic("alice", "nope")}}, ErrAmbiguous, Identity{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users := &authtest.FakeUsers{Name: "alice", Password: "pw", Tier: "pro"}
			users.SetKey("tg_good", false)
			users.SetKey("tg_revoked", true)

			id, err := newAuth(users).Authenticate(t.Context(), tt.cred, addr)

			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Authenticate() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantID, id); diff != "" {
				t.Errorf("Authenticate() mismatch (-want +got):\n%s", diff)
			}
			if users.Calls() != tt.wantCalls {
				t.Errorf("checker called %d times, want %d", users.Calls(), tt.wantCalls)
			}
		})
	}
}

// clock is a time a test moves by hand (AuthenticatorOptions.Clock).
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestAuthenticateRevokedKeyStopsAfterTTL(t *testing.T) {
	const ttl = 10 * time.Second
	users := &authtest.FakeUsers{Name: "alice", Password: "pw", Tier: "pro"}
	users.SetKey("tg_good", false)
	c := newClock()
	a := New(users, AuthenticatorOptions{PasswordTTL: 5 * time.Minute, KeyTTL: ttl, Clock: c.Now})

	for i := range 3 {
		if id, err := a.Authenticate(t.Context(), byKey("tg_good"), addr); err != nil || id.Tier != "pro" {
			t.Fatalf("request %d = %+v, %v; want tier pro", i, id, err)
		}
	}
	if got := users.Calls(); got != 1 {
		t.Errorf("CheckAPIKey() called %d times for 3 requests, want 1 (cached)", got)
	}
	users.SetKey("tg_good", true)
	c.advance(ttl - time.Millisecond)
	if id, err := a.Authenticate(t.Context(), byKey("tg_good"), addr); err != nil || id.Tier != "pro" {
		t.Errorf("request after revoking, just within the TTL = %+v, %v; want tier pro (remembered)", id, err)
	}
	c.advance(time.Millisecond)
	if _, err := a.Authenticate(t.Context(), byKey("tg_good"), addr); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("request after revoking and the TTL: error %v, want ErrBadCredentials", err)
	}
}

// TestAuthenticatePasswordCheckedAgainAfterTTL: a password that passed is
// believed for the password TTL, then checked again.
func TestAuthenticatePasswordCheckedAgainAfterTTL(t *testing.T) {
	const ttl = 5 * time.Minute
	users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
	c := newClock()
	a := New(users, AuthenticatorOptions{PasswordTTL: ttl, KeyTTL: 10 * time.Second, Clock: c.Now})
	check := func() {
		t.Helper()
		if _, err := a.Authenticate(t.Context(), byBasic(basic("alice", "pw")), addr); err != nil {
			t.Fatalf("Authenticate() error %v, want none", err)
		}
	}
	check()
	c.advance(ttl - time.Millisecond)
	check()
	if got := users.Calls(); got != 1 {
		t.Errorf("CheckPassword() called %d times within the TTL, want 1 (cached)", got)
	}
	c.advance(time.Millisecond)
	check()
	if got := users.Calls(); got != 2 {
		t.Errorf("CheckPassword() called %d times once the TTL ran out, want 2", got)
	}
}

func TestAuthenticateCacheKeepsTier(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "pw", Tier: "pro"}
	users.SetKey("tg_good", false)
	a := newAuth(users)
	for _, cred := range []Credential{
		byBasic(basic("alice", "pw")), byBasic(basic("alice", "pw")), byKey("tg_good"), byKey("tg_good"),
	} {
		id, err := a.Authenticate(t.Context(), cred, addr)
		if err != nil || id.Subject() != "user:alice" || id.Tier != "pro" {
			t.Errorf("%v = %+v, %v; want user:alice, tier pro", cred, id, err)
		}
	}
	if got := users.Calls(); got != 2 {
		t.Errorf("checker called %d times, want 2 (one per credential)", got)
	}
}

func TestAuthenticateRejects(t *testing.T) {
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
			users := &authtest.FakeUsers{Name: "alice", Password: "pw"}

			_, err := newAuth(users).Authenticate(t.Context(), byBasic(tt.authorization), addr)

			if !errors.Is(err, ErrBadCredentials) {
				t.Errorf("Authenticate() error = %v, want ErrBadCredentials", err)
			}
			if users.Calls() != tt.wantCalls {
				t.Errorf("CheckPassword() called %d times, want %d", users.Calls(), tt.wantCalls)
			}
		})
	}
}

func TestAuthenticateConcurrentSameCredentials(t *testing.T) {
	const n = 50
	users := &authtest.FakeUsers{Name: "alice", Password: "pw", Release: make(chan struct{})}
	a := newAuth(users)
	cred := byBasic(basic("alice", "pw"))

	var wg sync.WaitGroup
	ids := make([]Identity, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ids[i], errs[i] = a.Authenticate(t.Context(), cred, addr)
		})
	}
	close(users.Release)
	wg.Wait()

	for i := range n {
		if errs[i] != nil || ids[i].Subject() != "user:alice" {
			t.Errorf("request %d = %+v, %v; want user:alice", i, ids[i], errs[i])
		}
	}
	if got := users.Calls(); got != 1 {
		t.Errorf("CheckPassword() called %d times for %d concurrent requests, want 1", got, n)
	}

	if _, err := a.Authenticate(t.Context(), cred, addr); err != nil {
		t.Errorf("later request: error %v, want none", err)
	}
	if got := users.Calls(); got != 1 {
		t.Errorf("CheckPassword() called %d times after a later request, want 1 (cached)", got)
	}
}

func TestAuthenticateDoesNotCacheFailures(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantErr error
	}{
		{"wrong password", nil, ErrBadCredentials},
		{"checker error", errors.New("database is locked"), ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			users := &authtest.FakeUsers{Name: "alice", Password: "right", Err: tt.err}
			a := newAuth(users)
			cred := byBasic(basic("alice", "wrong"))

			for i := 1; i <= 2; i++ {
				if _, err := a.Authenticate(t.Context(), cred, addr); !errors.Is(err, tt.wantErr) {
					t.Errorf("request %d: error %v, want %v", i, err, tt.wantErr)
				}
				if got := users.Calls(); got != i {
					t.Errorf("after request %d CheckPassword() called %d times, want %d", i, got, i)
				}
			}
		})
	}
}

func TestAuthenticateCacheIsPerCredential(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
	a := newAuth(users)

	steps := []struct {
		auth      string
		wantErr   error
		wantCalls int
	}{
		{basic("alice", "pw"), nil, 1},
		{basic("alice", "pw"), nil, 1},
		{basic("alice", "pw2"), ErrBadCredentials, 2}, // a cached name does not admit another password
		{basic("alice", "pw"), nil, 2},
	}
	for i, s := range steps {
		if _, err := a.Authenticate(t.Context(), byBasic(s.auth), addr); !errors.Is(err, s.wantErr) {
			t.Errorf("step %d: error %v, want %v", i, err, s.wantErr)
		}
		if got := users.Calls(); got != s.wantCalls {
			t.Errorf("step %d CheckPassword() called %d times, want %d", i, got, s.wantCalls)
		}
	}
}

// TestAuthenticateEmptyKey: an X-API-Key header sent empty is a wrong key,
// not anonymous, and costs no lookup.
func TestAuthenticateEmptyKey(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
	a := newAuth(users)
	if _, err := a.Authenticate(t.Context(), byKey(""), addr); !errors.Is(err, ErrBadCredentials) || users.Calls() != 0 {
		t.Errorf("empty X-API-Key: error %v, %d lookups; want ErrBadCredentials and none", err, users.Calls())
	}
	cred := Credential{APIKey: []string{""}, Authorization: []string{basic("alice", "pw")}}
	if _, err := a.Authenticate(t.Context(), cred, addr); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("empty X-API-Key with Basic credentials: error %v, want ErrAmbiguous (two credentials)", err)
	}
}

// TestAuthenticateRepeatedCredential: a credential sent twice is ambiguous
// (which one is the caller?), and nothing is checked.
func TestAuthenticateRepeatedCredential(t *testing.T) {
	users := &authtest.FakeUsers{Name: "alice", Password: "pw"}
	users.SetKey("tg_good", false)
	a := newAuth(users)
	for _, cred := range []Credential{
		{Authorization: []string{basic("alice", "pw"), basic("bob", "x")}},
		{APIKey: []string{"tg_good", "tg_other"}},
	} {
		if _, err := a.Authenticate(t.Context(), cred, addr); !errors.Is(err, ErrAmbiguous) || users.Calls() != 0 {
			t.Errorf("%v: error %v, %d checks; want ErrAmbiguous and none", cred, err, users.Calls())
		}
	}
}

// TestAuthenticateBusy: a check that finds no free slot is ErrBusy, not a
// failure of the store.
func TestAuthenticateBusy(t *testing.T) {
	release := make(chan struct{})
	users := &authtest.FakeUsers{Name: "alice", Password: "pw", Release: release}
	a := newAuth(BoundChecks(users, 1, 10*time.Millisecond))
	done := make(chan error)
	go func() {
		_, err := a.Authenticate(context.Background(), byBasic(basic("alice", "pw")), addr)
		done <- err
	}()
	users.WaitCalls(t, 1)
	_, err := a.Authenticate(t.Context(), byBasic(basic("alice", "other")), addr)
	if !errors.Is(err, ErrBusy) || errors.Is(err, ErrUnavailable) {
		t.Errorf("a second check while one runs: error %v, want ErrBusy", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the held check: error %v, want none", err)
	}
}

// foldingUsers is a user store that matches names as MySQL's default
// collation did, ignoring case and trailing spaces, and answers with the
// name as stored.
type foldingUsers struct {
	calls atomic.Int64
}

func (f *foldingUsers) CheckPassword(ctx context.Context, name, password string) (string, string, bool, error) {
	f.calls.Add(1)
	if !strings.EqualFold(strings.TrimRight(name, " "), "john_doe") || password != "pw" {
		return "", "", false, nil
	}
	return "john_doe", "pro", true, nil
}

func (f *foldingUsers) CheckAPIKey(ctx context.Context, key string) (string, string, bool, error) {
	f.calls.Add(1)
	return "", "", false, nil
}

// TestAuthenticateUsesStoredName: the identity (and so the quota key, the
// exemptions and the log) is the user's name as the store has it, not as
// typed, so however a store matches names a user is one identity.
func TestAuthenticateUsesStoredName(t *testing.T) {
	for _, typed := range []string{"john_doe", "JOHN_DOE", "John_Doe", "john_doe "} {
		t.Run(typed, func(t *testing.T) {
			id, err := newAuth(&foldingUsers{}).Authenticate(t.Context(), byBasic(basic(typed, "pw")), addr)
			if err != nil {
				t.Fatalf("Authenticate() error = %v", err)
			}
			if got, want := id.Subject(), "user:john_doe"; got != want {
				t.Errorf("Subject() for %q = %q, want %q", typed, got, want)
			}
		})
	}
}

// TestAuthenticateRefusesControlCharacters: a Basic name with a control
// character is no user's name: refused without asking the store.
func TestAuthenticateRefusesControlCharacters(t *testing.T) {
	for _, name := range []string{"john\tdoe", "john_doe\n", "john\x00doe", "john\x7fdoe", "john\u0085doe", "john\u009bdoe"} {
		t.Run(strings.ToValidUTF8(name, "?"), func(t *testing.T) {
			users := &foldingUsers{}
			_, err := newAuth(users).Authenticate(t.Context(), byBasic(basic(name, "pw")), addr)
			if !errors.Is(err, ErrBadCredentials) {
				t.Errorf("error for %q = %v, want ErrBadCredentials", name, err)
			}
			if n := users.calls.Load(); n != 0 {
				t.Errorf("store called %d times for %q, want 0", n, name)
			}
		})
	}
}
