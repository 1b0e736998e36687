package auth

import "testing"

func TestAddrSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		v6Prefix int
		want     string
	}{
		{"1.2.3.4", 64, "1.2.3.4"},
		{"::ffff:1.2.3.4", 64, "1.2.3.4"},
		{"::FFFF:1.2.3.4", 64, "1.2.3.4"},
		{"2001:db8::1", 64, "2001:db8::/64"},
		{"2001:DB8:0:0:ffff::2", 64, "2001:db8::/64"},
		{"fe80::1%eth0", 128, "fe80::1"},
		{"2001:db8::1", 128, "2001:db8::1"},
		{"2001:db8:aaaa:bbbb::1", 48, "2001:db8:aaaa::/48"},
	}
	for _, tt := range tests {
		a, ok := CanonicalAddr(tt.in)
		if !ok {
			t.Errorf("CanonicalAddr(%q) = false, want an address", tt.in)
			continue
		}
		if got := AddrSubject(a, tt.v6Prefix); got != tt.want {
			t.Errorf("AddrSubject(%q, %d) = %q, want %q", tt.in, tt.v6Prefix, got, tt.want)
		}
	}
	for _, bad := range []string{"", "unknown", "1.2.3.4/32", "1.2.3"} {
		if _, ok := CanonicalAddr(bad); ok {
			t.Errorf("CanonicalAddr(%q) = true, want false", bad)
		}
	}
}
