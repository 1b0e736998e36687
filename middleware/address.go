package middleware

import (
	"net/netip"
	"strings"

	"github.com/gin-gonic/gin"

	"tollgate/auth"
)

// clientAddr is the client's address (gin's ClientIP, which honours
// X-Forwarded-For only from trusted proxies) in canonical form
// (auth.CanonicalAddr). false when there is no address.
func clientAddr(c *gin.Context) (netip.Addr, bool) {
	return auth.CanonicalAddr(c.ClientIP())
}

// ipSubject is the client's address as an identity subject, without the
// "ip:" kind (auth.AddrSubject: IPv6 clients grouped by their first
// v6Prefix bits); "unknown" when there is no address.
func ipSubject(c *gin.Context, v6Prefix int) string {
	ip := c.ClientIP()
	a, ok := auth.CanonicalAddr(ip)
	switch {
	case !ok:
		return "unknown"
	case a.Is4() && !strings.Contains(ip, ":"):
		// Already canonical: ParseAddr takes dotted quads without leading
		// zeros only. Reused rather than printed again, on every request.
		return ip
	}
	return auth.AddrSubject(a, v6Prefix)
}
