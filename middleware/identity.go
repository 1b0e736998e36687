package middleware

import (
	"context"
	"log/slog"
	"time"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
	"tollgate/policy"
)

// identityKey is where Identify leaves the caller's auth.Identity in the gin
// context.
const identityKey = "tollgate.identity"

// Identity returns the caller's identity Identify set; the zero Identity
// when no Identify ran.
func Identity(c *gin.Context) auth.Identity {
	id, _ := c.Get(identityKey)
	who, _ := id.(auth.Identity)
	return who
}

// Tier returns the tier of the user Identify found, or policy.AnonymousTier
// for a caller identified by address, or not identified.
func Tier(c *gin.Context) string {
	if t := Identity(c).Tier; t != "" {
		return t
	}
	return policy.AnonymousTier
}

// authenticator names callers; *auth.Authenticator is the one.
type authenticator interface {
	Authenticate(ctx context.Context, cred auth.Credential, addr string) (auth.Identity, error)
}

// Identify names the caller through a (see auth.Authenticator.Authenticate)
// from its Authorization and X-API-Key headers and its address: gin's
// ClientIP, which honours X-Forwarded-For only from trusted proxies, in
// canonical form, IPv6 clients grouped by their first ipv6Prefix bits
// (ipSubject). A request that cannot be named is answered here (Fail).
func Identify(log *slog.Logger, a authenticator, ipv6Prefix int) gin.HandlerFunc {
	warn := NewThrottledLog(log, 10*time.Second)
	return func(c *gin.Context) {
		h := c.Request.Header
		cred := auth.Credential{Authorization: h["Authorization"], APIKey: h["X-Api-Key"]}
		id, err := a.Authenticate(c.Request.Context(), cred, ipSubject(c, ipv6Prefix))
		if err != nil {
			Fail(c, warn, err)
			return
		}
		c.Set(identityKey, id)
	}
}
