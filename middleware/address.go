package middleware

import (
	"net/netip"
	"strings"

	"github.com/gin-gonic/gin"
)

// clientAddr is the client's address (gin's ClientIP, which honours
// X-Forwarded-For only from trusted proxies) in canonical form: an
// IPv4-mapped IPv6 address is the IPv4 address, and any zone is dropped. The
// same client must be one address however a proxy spells it (::FFFF:1.2.3.4,
// ::ffff:1.2.3.4 and 1.2.3.4 are one). false when there is no address.
func clientAddr(c *gin.Context) (netip.Addr, bool) {
	return canonicalAddr(c.ClientIP())
}

// canonicalAddr is ip parsed as clientAddr describes.
func canonicalAddr(ip string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// ipSubject is the client's address as an identity subject, without the
// "ip:" kind: the canonical IPv4 address, or the IPv6 prefix of v6Prefix bits
// holding the address, in RFC 5952 form (2001:db8::/64). An IPv6 client
// usually holds a whole /64 and can send from any address in it: counted one
// by one, each would get a quota and a guard budget of its own. With a
// v6Prefix of 128 the subject is the address itself, written like an IPv4
// one, without /128. "unknown" when there is no address.
func ipSubject(c *gin.Context, v6Prefix int) string {
	ip := c.ClientIP()
	a, ok := canonicalAddr(ip)
	switch {
	case !ok:
		return "unknown"
	case a.Is4() && !strings.Contains(ip, ":"):
		// Already canonical: ParseAddr takes dotted quads without leading
		// zeros only. Reused rather than printed again, on every request.
		return ip
	case a.Is4() || v6Prefix >= 128:
		return a.String()
	}
	p, err := a.Prefix(v6Prefix)
	if err != nil { // a prefix length out of range, refused at start-up
		return a.String()
	}
	return p.String()
}
