package middleware

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"golang.org/x/sync/singleflight"
)

// identityKey is where Identify leaves the caller's identity in the gin context.
const identityKey = "tollgate.identity"

// Identity returns the caller identity Identify set: "user:NAME" or "ip:ADDR".
func Identity(c *gin.Context) string {
	return c.GetString(identityKey)
}

type userChecker interface {
	CheckPassword(ctx context.Context, name, password string) (bool, error)
}

// Identify names the caller: a user for valid HTTP Basic credentials, else the
// client IP (gin's ClientIP, which honours X-Forwarded-For only from trusted
// proxies). Wrong or malformed credentials get 401. Successful checks are
// remembered for cacheTTL under a keyed hash of the credentials, so bcrypt runs
// once per credential and period, not once per request.
func Identify(log *slog.Logger, users userChecker, timeout, cacheTTL time.Duration) gin.HandlerFunc {
	cache := newCredentialCache(cacheTTL, 10_000)
	var group singleflight.Group
	return func(c *gin.Context) {
		if c.GetHeader("Authorization") == "" {
			ip := c.ClientIP()
			if ip == "" {
				ip = "unknown"
			}
			c.Set(identityKey, "ip:"+ip)
			return
		}
		name, password, ok := c.Request.BasicAuth()
		if !ok || name == "" || len(name) > 64 || len(password) > 72 || !utf8.ValidString(name) {
			unauthorized(c)
			return
		}
		key := cache.key(name, password)
		if !cache.has(key) {
			// Concurrent requests with the same credentials share one check.
			// The cache is read again and filled inside the flight: a request
			// that missed the cache just as a flight ended must not start a
			// second check.
			v, err, _ := group.Do(string(key[:]), func() (any, error) {
				if cache.has(key) {
					return true, nil
				}
				ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), timeout)
				defer cancel()
				ok, err := users.CheckPassword(ctx, name, password)
				if err == nil && ok {
					cache.add(key)
				}
				return ok, err
			})
			if err != nil {
				log.Warn("check credentials", "err", err)
				Abort(c, http.StatusServiceUnavailable, "authentication unavailable", nil)
				return
			}
			if !v.(bool) {
				unauthorized(c)
				return
			}
		}
		c.Set(identityKey, "user:"+name)
	}
}

func unauthorized(c *gin.Context) {
	c.Header("WWW-Authenticate", `Basic realm="tollgate", charset="UTF-8"`)
	Abort(c, http.StatusUnauthorized, "invalid credentials", nil)
}

// credentialCache remembers credentials that passed the password check.
// Entries are HMACs under a key made at start-up, so even the process memory
// holds no password or reusable unsalted hash of one.
type credentialCache struct {
	secret  []byte
	ttl     time.Duration
	max     int
	mu      sync.Mutex
	expires map[[sha256.Size]byte]time.Time
}

func newCredentialCache(ttl time.Duration, size int) *credentialCache {
	secret := make([]byte, 32)
	rand.Read(secret)
	return &credentialCache{secret: secret, ttl: ttl, max: size, expires: make(map[[sha256.Size]byte]time.Time)}
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

func (cc *credentialCache) has(k [sha256.Size]byte) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	exp, ok := cc.expires[k]
	return ok && time.Now().Before(exp)
}

func (cc *credentialCache) add(k [sha256.Size]byte) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if len(cc.expires) >= cc.max {
		clear(cc.expires) // rare; the next requests pay bcrypt once more
	}
	cc.expires[k] = time.Now().Add(cc.ttl)
}
