package middleware

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/singleflight"

	"tollgate/models"
)

// Where Identify leaves the caller's identity and tier in the gin context.
const (
	identityKey = "tollgate.identity"
	tierKey     = "tollgate.tier"
	byKeyKey    = "tollgate.by_key" // the user sent an API key, not a password
)

// AnonymousTier is the tier of callers identified by their IP address.
const AnonymousTier = "anonymous"

// Identity returns the caller identity Identify set: "user:NAME" or
// "ip:ADDR", ADDR an IPv4 address or an IPv6 prefix (see ipSubject).
func Identity(c *gin.Context) string {
	return c.GetString(identityKey)
}

// Tier returns the tier of the user Identify found, or AnonymousTier for a
// caller identified by IP address.
func Tier(c *gin.Context) string {
	if t := c.GetString(tierKey); t != "" {
		return t
	}
	return AnonymousTier
}

type userChecker interface {
	CheckPassword(ctx context.Context, name, password string) (storedName, tier string, ok bool, err error)
	CheckAPIKey(ctx context.Context, key string) (name, tier string, ok bool, err error)
}

// maxKeyLen bounds the X-API-Key values worth looking up; real keys are 46 bytes.
const maxKeyLen = 128

// Identify names the caller: a user for valid HTTP Basic credentials or a
// valid X-API-Key, else the client IP (gin's ClientIP, which honours
// X-Forwarded-For only from trusted proxies). Both credentials kinds name the
// same identity, "user:NAME", so a user's limits are the same whichever is
// sent. Wrong, malformed or revoked credentials get 401; both kinds at once
// get 400.
//
// Successful checks are remembered under a keyed hash of the credential, so
// bcrypt runs once per credential and passwordTTL, not once per request; API
// keys are remembered for keyTTL only, which bounds how long a revoked key
// keeps working.
//
// A credential not in the cache is checked only if guard (nil: none) has a
// place for another check from the client IP and for the user name; past its
// limit the answer is 429, before any bcrypt work or key lookup. Failed
// checks keep their places. A password that passes its check makes the
// client IP trusted for the user (see Guard). Remembered credentials take no
// place, being known good, but a remembered password from an address not
// trusted for its user is accepted only while the user's log is not full of
// failures: an attack on a name locks it everywhere but where the user
// already works. A check that finds users busy (see LimitChecks) is 503
// with Retry-After: 1, not a failure.
//
// The client IP, as an identity and in the guard, is canonical and groups
// IPv6 clients by their first ipv6Prefix bits (ipSubject).
func Identify(log *slog.Logger, users userChecker, guard *Guard, timeout, passwordTTL, keyTTL time.Duration, ipv6Prefix int) gin.HandlerFunc {
	warn := NewThrottledLog(log, 10*time.Second)
	passwords := newCredentialCache(passwordTTL, 10_000)
	keys := newCredentialCache(keyTTL, 10_000)
	var group singleflight.Group
	// take asks the guard (if any) for a place for a check from ip for name.
	// When there is none, or the guard is down and fails closed, refusal is
	// the answer to send; a guard down that fails open takes no place.
	take := func(base context.Context, ip, name string) (taken Places, refusal *result) {
		if guard == nil {
			return Places{}, nil
		}
		// Waiting for a place has its own timeout: a check's starts once
		// it has one.
		ctx, cancel := context.WithTimeout(base, timeout)
		defer cancel()
		taken, allowed, retryAfter, err := guard.Take(ctx, ip, name)
		switch {
		case err != nil && !guard.failOpen:
			warn.Warn("auth guard unavailable", "err", err, "fail_open", false)
			return Places{}, &result{guardDown: true}
		case err != nil:
			warn.Warn("auth guard unavailable", "err", err, "fail_open", true)
		case !allowed:
			return Places{}, &result{refused: true, retryAfter: retryAfter}
		}
		return taken, nil
	}
	// admit asks the guard (if any) whether remembered credentials of name
	// are accepted from ip: a name under attack is not used from an address
	// it was never used from, remembered or not. An API key (name empty)
	// has no name's log to ask.
	admit := func(base context.Context, ip, name string) (refusal *result) {
		if guard == nil || name == "" {
			return nil
		}
		allowed, retryAfter, err := guard.Admit(base, ip, name)
		switch {
		case err != nil && !guard.failOpen:
			warn.Warn("auth guard unavailable", "err", err, "fail_open", false)
			return &result{guardDown: true}
		case err != nil:
			warn.Warn("auth guard unavailable", "err", err, "fail_open", true)
		case !allowed:
			return &result{refused: true, retryAfter: retryAfter}
		}
		return nil
	}
	// trust records that ip passed a password check as name.
	trust := func(base context.Context, ip, name string) {
		if guard == nil || name == "" {
			return
		}
		if err := guard.Trust(base, ip, name); err != nil {
			warn.Warn("auth guard unavailable", "err", err, "fail_open", guard.failOpen)
		}
	}
	// end ends a check that held taken: a failed one keeps its places.
	end := func(base context.Context, taken Places, failed bool) {
		if guard == nil {
			return
		}
		release := guard.Give
		if failed {
			release = guard.Fail
		}
		if err := release(base, taken); err != nil {
			warn.Warn("auth guard unavailable", "err", err, "fail_open", guard.failOpen)
		}
	}
	// check runs fn once for concurrent requests from one client IP with the
	// same cache key. The cache is read again and filled inside the flight:
	// a request that missed the cache just as a flight ended must not start a
	// second check. The flight takes one place in the guard for its check;
	// each other request that shares a failed check then takes and keeps a
	// place of its own, or is refused, so every wrong credential counts once
	// per request, whether sent in turn, at once, or all the same.
	check := func(c *gin.Context, cache *credentialCache, k [sha256.Size]byte, name string, fn func(ctx context.Context) (cached, bool, error)) (result, error) {
		ip := ipSubject(c, ipv6Prefix)
		base := context.WithoutCancel(c.Request.Context())
		leader := false // this request ran the flight
		v, err, _ := group.Do(cache.kind+string(k[:])+ip, func() (any, error) {
			leader = true
			if who, ok := cache.get(k); ok {
				if refusal := admit(base, ip, name); refusal != nil {
					return *refusal, nil
				}
				return result{who: who, ok: true}, nil
			}
			taken, refusal := take(base, ip, name)
			if refusal != nil {
				return *refusal, nil
			}
			ctx, cancel := context.WithTimeout(base, timeout)
			defer cancel()
			who, ok, err := fn(ctx)
			if err == nil && ok {
				cache.add(k, who)
			}
			end(base, taken, err == nil && !ok)
			if err == nil && ok {
				trust(base, ip, name)
			}
			return result{who: who, ok: ok}, err
		})
		if err != nil {
			return result{}, err
		}
		r := v.(result)
		if !leader && !r.ok && !r.refused && !r.guardDown {
			taken, refusal := take(base, ip, name)
			if refusal != nil {
				return *refusal, nil
			}
			end(base, taken, true)
		}
		return r, nil
	}
	return func(c *gin.Context) {
		// A credential header sent empty is a wrong credential (401), not
		// none: a client that meant to send one should hear about it.
		h := c.Request.Header
		auths, keyValues := h["Authorization"], h["X-Api-Key"]
		sentAuth, sentKey := auths != nil, keyValues != nil
		apiKey := h.Get("X-Api-Key")
		var (
			r   result
			err error
		)
		switch {
		case !sentAuth && !sentKey:
			c.Set(identityKey, "ip:"+ipSubject(c, ipv6Prefix))
			return
		case sentAuth && sentKey, len(auths) > 1, len(keyValues) > 1:
			Abort(c, http.StatusBadRequest, "send one credential: Authorization or X-API-Key, not both, and each once", nil)
			return
		case sentKey:
			if apiKey == "" || len(apiKey) > maxKeyLen {
				unauthorized(c)
				return
			}
			k := keys.key(apiKey, "")
			if r.who, r.ok = keys.get(k); !r.ok {
				r, err = check(c, keys, k, "", func(ctx context.Context) (cached, bool, error) {
					name, tier, ok, err := users.CheckAPIKey(ctx, apiKey)
					return cached{name: name, tier: tier}, ok, err
				})
			}
		default:
			name, password, basicOK := c.Request.BasicAuth()
			// A name no user can have (a control character, say) is
			// refused without a lookup.
			if !basicOK || !models.ValidUserName(name) || len(password) > 72 {
				unauthorized(c)
				return
			}
			k := passwords.key(name, password)
			if r.who, r.ok = passwords.get(k); !r.ok {
				r, err = check(c, passwords, k, name, func(ctx context.Context) (cached, bool, error) {
					// The identity is the name as stored, so quota keys,
					// exemptions and logs see one spelling per user.
					stored, tier, ok, err := users.CheckPassword(ctx, name, password)
					return cached{name: stored, tier: tier}, ok, err
				})
			} else if refusal := admit(context.WithoutCancel(c.Request.Context()), ipSubject(c, ipv6Prefix), name); refusal != nil {
				r = *refusal
			}
		}
		switch {
		case r.guardDown:
			c.Header("Retry-After", "1")
			Abort(c, http.StatusServiceUnavailable, "authentication unavailable", nil)
			return
		case r.refused:
			secs := max(ceilSeconds(r.retryAfter), 1)
			c.Header("Retry-After", strconv.FormatInt(secs, 10))
			Abort(c, http.StatusTooManyRequests, "too many failed authentication attempts", gin.H{"retry_after": secs})
			return
		}
		if errors.Is(err, ErrChecksBusy) {
			warn.Warn("credential checks busy", "err", err)
			c.Header("Retry-After", "1")
			Abort(c, http.StatusServiceUnavailable, "authentication busy", nil)
			return
		}
		if err != nil {
			warn.Warn("check credentials", "err", err)
			Abort(c, http.StatusServiceUnavailable, "authentication unavailable", nil)
			return
		}
		if !r.ok {
			unauthorized(c)
			return
		}
		c.Set(identityKey, "user:"+r.who.name)
		if apiKey != "" {
			c.Set(byKeyKey, true)
		}
		c.Set(tierKey, r.who.tier)
	}
}

// unauthorized answers 401. The Basic challenge is sent for rejected API keys
// too: it is the one scheme a browser can answer, and clients that send keys
// ignore it.
func unauthorized(c *gin.Context) {
	c.Header("WWW-Authenticate", `Basic realm="tollgate", charset="UTF-8"`)
	Abort(c, http.StatusUnauthorized, "invalid credentials", nil)
}

// cached is who a credential that passed its check belongs to.
type cached struct {
	name, tier string
}

// result is what a credential check flight shares with its waiters.
type result struct {
	who        cached
	ok         bool          // the credential is right
	refused    bool          // the guard had no place for the check: 429
	retryAfter time.Duration // when refused, until the guard has a place
	guardDown  bool          // the guard failed and fails closed: 503
}

// credentialCache remembers credentials that passed their check, and whose
// they are. Entries are HMACs under a key made at start-up, so even the
// process memory holds no password, API key or reusable unsalted hash of one.
type credentialCache struct {
	kind    string // names the cache in singleflight keys
	secret  []byte
	ttl     time.Duration
	max     int
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
	if !ok || !time.Now().Before(e.expires) {
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
	cc.entries[k] = cacheEntry{who: who, expires: time.Now().Add(cc.ttl)}
}
