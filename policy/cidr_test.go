package policy

import (
	"net/netip"
	"testing"
)

// TestParseCIDR: every spelling of one network is one prefix, in the form
// client addresses take, so exemptions and proxies match what they name.
func TestParseCIDR(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" for an error
	}{
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"10.1.2.3", "10.1.2.3/32"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"::FFFF:10.1.2.3", "10.1.2.3/32"},
		{"2001:DB8::1/64", "2001:db8::/64"},
		{"::ffff:0.0.0.0/80", ""},
		{"fe80::1%eth0", ""},
		{"10.0.0.0/33", ""},
		{"ten", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseCIDR(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseCIDR(%q) = %v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || got != netip.MustParsePrefix(tt.want) {
				t.Errorf("ParseCIDR(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
			}
		})
	}
}
