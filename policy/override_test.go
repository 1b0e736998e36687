package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestOverrides: an override replaces its policy's limits where the policy
// counts its identity, under a key of its own, until it expires (at the
// Caller's Now); the longest prefix wins; a user override does not reach a
// caller counted by address, nor an address override a user.
func TestOverrides(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	policies := []Policy{
		{Name: "tier", Key: "user_or_ip", Cost: 1, Limits: perMinute(5), Tiers: map[string][]LimitSpec{"pro": perMinute(50)}},
		{Name: "byip", Key: "ip", Cost: 1, Limits: perMinute(7)},
	}
	set, err := NewSet(policies, "p:").WithOverrides([]Override{
		{ID: 1, User: "amy", Policy: "tier", Limit: 100, Expires: now.Add(time.Hour)},
		{ID: 2, Prefix: netip.MustParsePrefix("10.0.0.0/8"), Policy: "tier", Limit: 20},
		{ID: 3, Prefix: netip.MustParsePrefix("10.1.0.0/16"), Policy: "tier", Limit: 30, Window: time.Hour},
		{ID: 4, User: "amy", Policy: "byip", Limit: 70},
	})
	if err != nil {
		t.Fatalf("WithOverrides() = %v", err)
	}
	amy := Caller{User: "amy", Tier: "pro", IP: "10.1.2.3", Addr: netip.MustParseAddr("10.1.2.3"), Now: now}
	anon := func(addr string) Caller {
		return Caller{Tier: AnonymousTier, IP: addr, Addr: netip.MustParseAddr(addr), Now: now}
	}
	expired := amy
	expired.Now = now.Add(time.Hour)
	tests := []struct {
		name string
		c    Caller
		want []applied
	}{
		{"a user's override", amy, []applied{
			{Name: "tier", Algorithm: "fixed_window", Key: "p:{user:amy}:tier:o1:fixed_window", Requests: 100, Cost: 1},
			{Name: "byip", Algorithm: "fixed_window", Key: "p:{ip:10.1.2.3}:byip:0:fixed_window", Requests: 7, Cost: 1},
		}},
		{"expired at Now", expired, []applied{
			{Name: "tier", Algorithm: "fixed_window", Key: "p:{user:amy}:tier:0:fixed_window", Requests: 50, Cost: 1},
			{Name: "byip", Algorithm: "fixed_window", Key: "p:{ip:10.1.2.3}:byip:0:fixed_window", Requests: 7, Cost: 1},
		}},
		{"the longest prefix", anon("10.1.2.3"), []applied{
			{Name: "tier", Algorithm: "fixed_window", Key: "p:{ip:10.1.2.3}:tier:o3:fixed_window", Requests: 30, Cost: 1},
			{Name: "byip", Algorithm: "fixed_window", Key: "p:{ip:10.1.2.3}:byip:0:fixed_window", Requests: 7, Cost: 1},
		}},
		{"a shorter prefix", anon("10.2.0.1"), []applied{
			{Name: "tier", Algorithm: "fixed_window", Key: "p:{ip:10.2.0.1}:tier:o2:fixed_window", Requests: 20, Cost: 1},
			{Name: "byip", Algorithm: "fixed_window", Key: "p:{ip:10.2.0.1}:byip:0:fixed_window", Requests: 7, Cost: 1},
		}},
		{"no prefix", anon("192.0.2.1"), []applied{
			{Name: "tier", Algorithm: "fixed_window", Key: "p:{ip:192.0.2.1}:tier:0:fixed_window", Requests: 5, Cost: 1},
			{Name: "byip", Algorithm: "fixed_window", Key: "p:{ip:192.0.2.1}:byip:0:fixed_window", Requests: 7, Cost: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := set.AllRules(tt.c, nil)
			if diff := cmp.Diff(tt.want, summary(got)); diff != "" {
				t.Errorf("AllRules() (-want +got):\n%s", diff)
			}
		})
	}
	got, _ := set.AllRules(anon("10.1.2.3"), nil)
	if o := got[0].Override; o == nil || o.ID != 3 || got[0].Rule.Limit.Window != time.Hour {
		t.Errorf("AllRules()[0] override %v, window %v; want override 3, 1h", o, got[0].Rule.Limit.Window)
	}
	if !set.ExemptsCIDRs() || !set.HasOverrides() || NewSet(policies, "p:").HasOverrides() {
		t.Errorf("ExemptsCIDRs, HasOverrides = %v, %v; want true, true (and false without overrides)", set.ExemptsCIDRs(), set.HasOverrides())
	}
}

// TestOverridesLeftOut: an override naming no policy, or a limit its
// policy's cost cannot fit, is left out with an error; the others apply.
func TestOverridesLeftOut(t *testing.T) {
	policies := []Policy{{Name: "tier", Key: "user", Cost: 5, Limits: perMinute(10)}}
	set, err := NewSet(policies, "p:").WithOverrides([]Override{
		{ID: 1, User: "amy", Policy: "nope", Limit: 10},
		{ID: 2, User: "amy", Policy: "tier", Limit: 2},
		{ID: 3, User: "bo", Policy: "tier", Limit: 50},
	})
	if err == nil {
		t.Errorf("WithOverrides() = nil, want errors for overrides 1 and 2")
	}
	got, _ := set.AllRules(Caller{User: "amy", Tier: "free"}, nil)
	if len(got) != 1 || got[0].Override != nil {
		t.Errorf("amy: %+v, want the policy's own limit", summary(got))
	}
	got, _ = set.AllRules(Caller{User: "bo", Tier: "free"}, nil)
	if len(got) != 1 || got[0].Override == nil || got[0].Rule.Limit.Requests != 50 {
		t.Errorf("bo: %+v, want override 3's 50", summary(got))
	}
}

// TestOverridesOfNewKinds: an override of a calendar quota keeps its
// period and zone; one of an in-flight limit its timeout, or takes its own.
func TestOverridesOfNewKinds(t *testing.T) {
	policies, err := Parse(strings.NewReader(`
policies:
  - {name: monthly, key: user, limits: [{algorithm: calendar, limit: 100, period: month, timezone: Europe/Berlin}]}
  - {name: heavy, key: user, limits: [{algorithm: concurrency, limit: 2, timeout: 30s}]}`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := NewSet(policies, "p:").WithOverrides([]Override{
		{ID: 1, User: "amy", Policy: "monthly", Limit: 1000},
		{ID: 2, User: "amy", Policy: "heavy", Limit: 8, Window: time.Minute},
	})
	if err != nil {
		t.Fatalf("WithOverrides() = %v", err)
	}
	got, _ := set.AllRules(Caller{User: "amy", Tier: "free"}, nil)
	if len(got) != 2 {
		t.Fatalf("AllRules() = %+v, want two rules", summary(got))
	}
	if l := got[0].Rule.Limit; l.Requests != 1000 || l.Period != "month" || l.Location.String() != "Europe/Berlin" {
		t.Errorf("calendar override: %+v, want 1000 per month in Europe/Berlin", l)
	}
	if l := got[1].Rule.Limit; l.Requests != 8 || l.Window != time.Minute {
		t.Errorf("concurrency override: %+v, want 8 places, a timeout of 1m", l)
	}
}

// TestParseOverrideSubject: address overrides are canonical, the form
// client addresses are compared in.
func TestParseOverrideSubject(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ip:10.0.0.0/8", "10.0.0.0/8"},
		{"ip:10.0.0.1", "10.0.0.1/32"},
		{"ip:::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"ip:::FFFF:10.0.0.1", "10.0.0.1/32"},
		{"ip:2001:0DB8::/32", "2001:db8::/32"},
	}
	for _, tt := range tests {
		_, p, err := ParseOverrideSubject(tt.in)
		if err != nil || p.String() != tt.want {
			t.Errorf("ParseOverrideSubject(%q) = %v, %v; want %s", tt.in, p, err, tt.want)
		}
	}
	for _, bad := range []string{"ip:10.0.0.1/8", "ip:fe80::1%eth0", "ip:::ffff:0:0/95", "ip:nope", "ip:"} {
		if _, _, err := ParseOverrideSubject(bad); !errors.Is(err, ErrOverride) {
			t.Errorf("ParseOverrideSubject(%q) = %v, want ErrOverride", bad, err)
		}
	}
	if user, _, err := ParseOverrideSubject("amy"); user != "amy" || err != nil {
		t.Errorf(`ParseOverrideSubject("amy") = %q, %v; want "amy", nil`, user, err)
	}
}
