package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"tollgate/policy"
	"tollgate/username"
)

// Users checks credentials against the stored users.
type Users interface {
	// CheckPassword reports whether password is name's, with the name as
	// stored and the user's tier.
	CheckPassword(ctx context.Context, name, password string) (storedName, tier string, ok bool, err error)
	// CheckAPIKey reports whether key is a live API key, and whose.
	CheckAPIKey(ctx context.Context, key string) (name, tier string, ok bool, err error)
}

// Warner takes the warnings of trouble Authenticate works around (a guard
// that fails open); the middleware's throttled log is one.
type Warner interface {
	Warn(msg string, args ...any)
}

// Credential is what a client sent to prove who it is: the values of its
// Authorization and X-API-Key headers, each as often as it was sent (nil:
// not sent).
type Credential struct {
	Authorization []string
	APIKey        []string
}

// maxKeyLen bounds the X-API-Key values worth looking up; real keys are 46 bytes.
const maxKeyLen = 128

// maxPasswordLen is bcrypt's limit: longer passwords cannot be right.
const maxPasswordLen = 72

// Authenticator names callers: see Authenticate.
type Authenticator struct {
	users     Users
	guard     *Guard // nil: none
	warn      Warner
	timeout   time.Duration
	passwords *credentialCache
	keys      *credentialCache
	now       func() time.Time
	group     singleflight.Group
}

// AuthenticatorOptions are an Authenticator's settings; each field says
// what its zero value means.
type AuthenticatorOptions struct {
	// Guard limits failed credential checks; nil: none.
	Guard *Guard
	// Warner receives the warnings of a guard that fails open; nil: none
	// are written.
	Warner Warner
	// Timeout bounds each credential check and each wait for a place in
	// the guard; 0: 1s.
	Timeout time.Duration
	// PasswordTTL is how long a password that passed its check is believed
	// without another; 0: never (each request checks it).
	PasswordTTL time.Duration
	// KeyTTL is how long an API key that passed its check is believed
	// without another; 0: never. It bounds how long a revoked key keeps
	// working.
	KeyTTL time.Duration
	// Clock is what the credential caches read the time from; nil:
	// time.Now. Tests move it to see a TTL run out without waiting for it.
	Clock func() time.Time
}

// cacheSize bounds each credential cache.
const cacheSize = 10_000

// New returns an Authenticator checking credentials against users, with
// the settings of o.
func New(users Users, o AuthenticatorOptions) *Authenticator {
	a := &Authenticator{
		users: users, guard: o.Guard, warn: o.Warner, timeout: o.Timeout,
		passwords: newCredentialCache(o.PasswordTTL, cacheSize),
		keys:      newCredentialCache(o.KeyTTL, cacheSize),
		now:       o.Clock,
	}
	if a.warn == nil {
		a.warn = noWarner{}
	}
	if a.timeout <= 0 {
		a.timeout = time.Second
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.passwords.now, a.keys.now = a.now, a.now
	return a
}

type noWarner struct{}

func (noWarner) Warn(string, ...any) {}

// Authenticate names the caller of a request from addr (the client's
// address subject) that sent cred: a user for valid HTTP Basic credentials
// or a valid API key, else addr, of policy.AnonymousTier. Both credential kinds
// name the same user, so a user's limits are the same whichever is sent.
// Wrong, malformed, empty or revoked credentials are ErrBadCredentials;
// both kinds at once, or one sent twice, ErrAmbiguous.
//
// Successful checks are remembered under a keyed hash of the credential, so
// bcrypt runs once per credential and password TTL, not once per request;
// API keys are remembered for the key TTL only.
//
// A credential not in the cache is checked only if the guard has a place
// for another check from addr and for the user name; past its limit the
// answer is a *RefusedError, before any bcrypt work or key lookup. Failed
// checks keep their places. A password that passes its check makes addr
// trusted for the user (see Guard). Remembered credentials take no place,
// being known good, but a remembered password from an address not trusted
// for its user is accepted only while the user's log is not full of
// failures: an attack on a name locks it everywhere but where the user
// already works. A check that finds users busy (see BoundChecks) is
// ErrBusy, not a failure; a guard down that fails closed is
// ErrGuardUnavailable; a user store that fails, ErrUnavailable.
func (a *Authenticator) Authenticate(ctx context.Context, cred Credential, addr string) (Identity, error) {
	sentAuth, sentKey := cred.Authorization != nil, cred.APIKey != nil
	var (
		r   result
		err error
	)
	switch {
	case !sentAuth && !sentKey:
		return Identity{Kind: IP, Addr: addr, Tier: policy.AnonymousTier}, nil
	case sentAuth && sentKey, len(cred.Authorization) > 1, len(cred.APIKey) > 1:
		return Identity{}, ErrAmbiguous
	case sentKey:
		apiKey := first(cred.APIKey)
		if apiKey == "" || len(apiKey) > maxKeyLen {
			return Identity{}, ErrBadCredentials
		}
		k := a.keys.key(apiKey, "")
		if r.who, r.ok = a.keys.get(k); !r.ok {
			r, err = a.check(ctx, a.keys, k, addr, "", func(ctx context.Context) (cached, bool, error) {
				name, tier, ok, err := a.users.CheckAPIKey(ctx, apiKey)
				return cached{name: name, tier: tier}, ok, err
			})
		}
	default:
		name, password, basicOK := parseBasic(first(cred.Authorization))
		// A name no user can have (a control character, say) is refused
		// without a lookup.
		if !basicOK || !username.Valid(name) || len(password) > maxPasswordLen {
			return Identity{}, ErrBadCredentials
		}
		k := a.passwords.key(name, password)
		if r.who, r.ok = a.passwords.get(k); !r.ok {
			r, err = a.check(ctx, a.passwords, k, addr, name, func(ctx context.Context) (cached, bool, error) {
				// The identity is the name as stored, so quota keys,
				// exemptions and logs see one spelling per user.
				stored, tier, ok, err := a.users.CheckPassword(ctx, name, password)
				return cached{name: stored, tier: tier}, ok, err
			})
		} else {
			r = a.admit(context.WithoutCancel(ctx), addr, name, r)
		}
	}
	switch {
	case r.refusal != nil:
		return Identity{}, r.refusal
	case err != nil:
		return Identity{}, err
	case !r.ok:
		return Identity{}, ErrBadCredentials
	}
	return Identity{Kind: User, Name: r.who.name, Addr: addr, Tier: r.who.tier, ByKey: sentKey}, nil
}

// first is the first of values, or "".
func first(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

// parseBasic parses an Authorization header value of the Basic scheme as
// net/http does.
func parseBasic(authorization string) (name, password string, ok bool) {
	r := http.Request{Header: http.Header{"Authorization": {authorization}}}
	return r.BasicAuth()
}

// take asks the guard (if any) for a place for a check from addr for name.
// When there is none, or the guard is down and fails closed, refusal is the
// error to answer with; a guard down that fails open takes no place.
func (a *Authenticator) take(base context.Context, addr, name string) (taken Places, refusal error) {
	if a.guard == nil {
		return Places{}, nil
	}
	// Waiting for a place has its own timeout: a check's starts once it
	// has one.
	ctx, cancel := context.WithTimeout(base, a.timeout)
	defer cancel()
	taken, allowed, retryAfter, err := a.guard.Take(ctx, addr, name)
	switch {
	case err != nil && !a.guard.failOpen:
		return Places{}, fmt.Errorf("%w: %w", ErrGuardUnavailable, err)
	case err != nil:
		a.warn.Warn("auth guard unavailable", "err", err, "fail_open", true)
	case !allowed:
		return Places{}, &RefusedError{RetryAfter: retryAfter}
	}
	return taken, nil
}

// admit asks the guard (if any) whether remembered credentials of name are
// accepted from addr: a name under attack is not used from an address it
// was never used from, remembered or not. An API key (name empty) has no
// name's log to ask. It returns r, or r refused.
func (a *Authenticator) admit(base context.Context, addr, name string, r result) result {
	if a.guard == nil || name == "" {
		return r
	}
	allowed, retryAfter, err := a.guard.Admit(base, addr, name)
	switch {
	case err != nil && !a.guard.failOpen:
		return result{refusal: fmt.Errorf("%w: %w", ErrGuardUnavailable, err)}
	case err != nil:
		a.warn.Warn("auth guard unavailable", "err", err, "fail_open", true)
	case !allowed:
		return result{refusal: &RefusedError{RetryAfter: retryAfter}}
	}
	return r
}

// trust records that addr passed a password check as name.
func (a *Authenticator) trust(base context.Context, addr, name string) {
	if a.guard == nil || name == "" {
		return
	}
	if err := a.guard.Trust(base, addr, name); err != nil {
		a.warn.Warn("auth guard unavailable", "err", err, "fail_open", a.guard.failOpen)
	}
}

// end ends a check that held taken: a failed one keeps its places.
func (a *Authenticator) end(base context.Context, taken Places, failed bool) {
	if a.guard == nil {
		return
	}
	release := a.guard.Give
	if failed {
		release = a.guard.Fail
	}
	if err := release(base, taken); err != nil {
		a.warn.Warn("auth guard unavailable", "err", err, "fail_open", a.guard.failOpen)
	}
}

// check runs fn once for concurrent requests from one address with the
// same cache key. The cache is read again and filled inside the flight: a
// request that missed the cache just as a flight ended must not start a
// second check. The flight takes one place in the guard for its check; each
// other request that shares a failed check then takes and keeps a place of
// its own, or is refused, so every wrong credential counts once per
// request, whether sent in turn, at once, or all the same.
func (a *Authenticator) check(ctx context.Context, cache *credentialCache, k [sha256.Size]byte, addr, name string, fn func(ctx context.Context) (cached, bool, error)) (result, error) {
	base := context.WithoutCancel(ctx)
	leader := false // this request ran the flight
	v, err, _ := a.group.Do(cache.kind+string(k[:])+addr, func() (any, error) {
		leader = true
		if who, ok := cache.get(k); ok {
			return a.admit(base, addr, name, result{who: who, ok: true}), nil
		}
		taken, refusal := a.take(base, addr, name)
		if refusal != nil {
			return result{refusal: refusal}, nil
		}
		ctx, cancel := context.WithTimeout(base, a.timeout)
		defer cancel()
		who, ok, err := fn(ctx)
		if err == nil && ok {
			cache.add(k, who)
		}
		a.end(base, taken, err == nil && !ok)
		if err == nil && ok {
			a.trust(base, addr, name)
		}
		return result{who: who, ok: ok}, err
	})
	if err != nil {
		if errors.Is(err, ErrBusy) {
			return result{}, err
		}
		return result{}, fmt.Errorf("%w: check credentials: %w", ErrUnavailable, err)
	}
	r := v.(result)
	if !leader && !r.ok && r.refusal == nil {
		taken, refusal := a.take(base, addr, name)
		if refusal != nil {
			return result{refusal: refusal}, nil
		}
		a.end(base, taken, true)
	}
	return r, nil
}

// cached is who a credential that passed its check belongs to.
type cached struct {
	name, tier string
}

// result is what a credential check flight shares with its waiters.
type result struct {
	who     cached
	ok      bool  // the credential is right
	refusal error // the guard refused (*RefusedError) or is down and fails closed
}

// credentialCache remembers credentials that passed their check, and whose
// they are. Entries are HMACs under a key made at start-up, so even the
// process memory holds no password, API key or reusable unsalted hash of one.
type credentialCache struct {
	kind    string // names the cache in singleflight keys
	secret  []byte
	ttl     time.Duration
	max     int
	now     func() time.Time // set by New
	mu      sync.Mutex
	entries map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	who     cached
	expires time.Time
}

func newCredentialCache(ttl time.Duration, size int) *credentialCache {
	secret := make([]byte, 32)
	rand.Read(secret)
	return &credentialCache{kind: hex.EncodeToString(secret[:4]), secret: secret, ttl: ttl, max: size, entries: make(map[[sha256.Size]byte]cacheEntry)}
}

func (cc *credentialCache) key(name, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, cc.secret)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k [sha256.Size]byte
	copy(k[:], m.Sum(nil))
	return k
}

func (cc *credentialCache) get(k [sha256.Size]byte) (cached, bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	e, ok := cc.entries[k]
	if !ok || !cc.now().Before(e.expires) {
		return cached{}, false
	}
	return e.who, true
}

func (cc *credentialCache) add(k [sha256.Size]byte, who cached) {
	if cc.ttl <= 0 {
		return
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(cc.entries) >= cc.max {
		clear(cc.entries) // rare; the next requests pay their checks once more
	}
	cc.entries[k] = cacheEntry{who: who, expires: cc.now().Add(cc.ttl)}
}
