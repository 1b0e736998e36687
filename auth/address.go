package auth

import "net/netip"

// CanonicalAddr parses s as a client's address in canonical form: an
// IPv4-mapped IPv6 address is the IPv4 address, and any zone is dropped. The
// same client must be one address however a proxy (or an operator) spells it:
// ::FFFF:1.2.3.4, ::ffff:1.2.3.4 and 1.2.3.4 are one. false when s is not an
// address.
func CanonicalAddr(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// AddrSubject is the canonical address a as an identity counts it (the
// Addr of an IP Identity): the IPv4 address, or the IPv6 prefix of v6Prefix
// bits holding it, in RFC 5952 form (2001:db8::/64). An IPv6 client usually
// holds a whole /64 and can send from any address in it: counted one by
// one, each would get a quota and a guard budget of its own. With a
// v6Prefix of 128 it is the address itself, written like an IPv4 one,
// without /128.
func AddrSubject(a netip.Addr, v6Prefix int) string {
	if a.Is4() || v6Prefix >= 128 {
		return a.String()
	}
	p, err := a.Prefix(v6Prefix)
	if err != nil { // a prefix length out of range, refused at start-up
		return a.String()
	}
	return p.String()
}
