package policy

import (
	"errors"
	"net/netip"
)

// ParseCIDR is the one reading of a CIDR in settings, policy files and
// overrides: a CIDR or a single address (a /32 or /128), with the address
// bits after the prefix cleared, and in the form client addresses take
// (IPv4-mapped IPv6 unmapped to IPv4), so that ::ffff:10.0.0.0/104 matches
// the client 10.1.2.3 as 10.0.0.0/8 does. A zone, or an IPv4-mapped prefix
// shorter than /96 (it would cover IPv6 addresses too), is refused.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, errors.New("an address with a zone")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, errors.New("an IPv4-mapped prefix shorter than /96")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
