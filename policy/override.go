package policy

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// An Override replaces one policy's limits for one identity (a user, or the
// client addresses of a prefix) until it expires: an operator's answer to
// one customer's needs without editing the policy file.
//
// It applies where the policy counts that identity: a user override to
// policies counting the caller as a user (key user, user_or_ip with
// credentials), an address override to policies counting the caller by
// address (key ip, user_or_ip without credentials), matched against the
// client's own address, as exemptions are. The policy's key still decides
// what is counted: with ip:10.0.0.0/8 each address keeps a count of its own.
//
// Its limit takes the algorithm (and, without a Window, the window, or a
// concurrency limit's timeout; a calendar's period and zone) of the first
// limit it replaces, for the caller's tier, and its own Redis key
// <prefix>{<subject>}:<policy>:o<ID>:<algorithm>: it starts with a fresh
// count, and the caller's normal count is there, untouched, when it ends.
type Override struct {
	ID      int64
	User    string       // the user it applies to; "" for an address override
	Prefix  netip.Prefix // the client addresses it applies to, canonical
	Policy  string
	Limit   int           // requests per window (capacity, with a burst)
	Window  time.Duration // 0: the window of the limit it replaces
	Expires time.Time     // zero: never
}

// Subject is how the override names its identity: "user:NAME" or
// "ip:CIDR" (the form ParseOverrideSubject reads).
func (o Override) Subject() string {
	if o.User != "" {
		return "user:" + o.User
	}
	return "ip:" + o.Prefix.String()
}

// ActiveAt reports whether the override applies at now.
func (o Override) ActiveAt(now time.Time) bool {
	return o.Expires.IsZero() || now.Before(o.Expires)
}

// ErrOverride is wrapped by the errors of ParseOverrideSubject and
// CheckOverride.
var ErrOverride = errors.New("invalid override")

// ParseOverrideSubject reads "ip:CIDR" (or "ip:ADDRESS", a prefix of one
// address) into a canonical prefix, the one form client addresses are
// compared in: an IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) is the IPv4
// prefix (10.0.0.0/8), IPv6 is written as RFC 5952 says, and a prefix with
// bits set after its length is refused rather than guessed at. Anything else
// is a user name, returned as it is, for the caller to check.
func ParseOverrideSubject(s string) (user string, prefix netip.Prefix, err error) {
	text, ok := strings.CutPrefix(s, "ip:")
	if !ok {
		return s, netip.Prefix{}, nil
	}
	p, err := ParseCIDR(text)
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("%w: %q: want ip: and a CIDR such as 10.0.0.0/8 or an address: %v", ErrOverride, s, err)
	}
	// An override names what it covers exactly: host bits set are a typo,
	// not something to clear silently.
	if raw, err := netip.ParsePrefix(text); err == nil && raw != raw.Masked() {
		return "", netip.Prefix{}, fmt.Errorf("%w: %q: address bits set after /%d: want ip:%s", ErrOverride, s, raw.Bits(), raw.Masked())
	}
	return "", p, nil
}

// CheckOverride checks what an override can be checked for without the
// policy file: a policy name as the file allows, a limit of 1 or more, a
// window (when set) the file would take, and the subject.
func CheckOverride(o Override) error {
	var errs []error
	if !policyName.MatchString(o.Policy) {
		errs = append(errs, fmt.Errorf("policy %q: want 1 to 64 letters, digits, '_', '-' or '.'", o.Policy))
	}
	if o.Limit < 1 {
		errs = append(errs, fmt.Errorf("limit %d: want 1 or more", o.Limit))
	}
	if o.Window != 0 && (o.Window < time.Millisecond || o.Window > maxWindow) {
		errs = append(errs, fmt.Errorf("window %v: want a Go duration from 1ms to %v", o.Window, maxWindow))
	}
	if (o.User == "") == !o.Prefix.IsValid() {
		errs = append(errs, errors.New("want a user or an address prefix"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrOverride, o.Subject(), err)
	}
	return nil
}

// override is an Override ready for requests: its limit named and keyed
// per tier of the policy it replaces.
type override struct {
	Override
	policy int                    // index in Set.policies
	named  map[string]*NamedLimit // by tier, as Set.named
}

// WithOverrides returns a Set like s whose limits are replaced, for the
// overrides' identities, by the overrides (s itself is not changed). An
// override that names no policy of s, or whose limit its policy cannot use
// (a cost above it, a window its algorithm refuses), is left out, and the
// error says why. The new limits get IDs after s's (Set.Limits).
func (s *Set) WithOverrides(overrides []Override) (*Set, error) {
	out := *s
	out.all = slices.Clone(s.all)
	out.byUser, out.byPrefix = nil, nil
	var errs []error
	for _, o := range overrides {
		ov, err := s.prepare(o)
		if err != nil {
			errs = append(errs, fmt.Errorf("override %d (%s): %w", o.ID, o.Subject(), err))
			continue
		}
		for _, tier := range slices.Sorted(maps.Keys(ov.named)) {
			ov.named[tier].ID = len(out.all)
			out.all = append(out.all, ov.named[tier])
		}
		if o.User != "" {
			if out.byUser == nil {
				out.byUser = map[string][]*override{}
			}
			out.byUser[o.User] = append(out.byUser[o.User], ov)
		} else {
			out.byPrefix = append(out.byPrefix, ov)
			out.anyCIDR = true
		}
	}
	// The most specific prefix wins.
	slices.SortStableFunc(out.byPrefix, func(a, b *override) int { return b.Prefix.Bits() - a.Prefix.Bits() })
	return &out, errors.Join(errs...)
}

// OverrideError says why WithOverrides would leave o out of s (an error
// wrapping ErrOverride), or is nil when s can use it: the check of an
// override against a policy file, before it is stored.
func (s *Set) OverrideError(o Override) error {
	if _, err := s.prepare(o); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrOverride, o.Subject(), err)
	}
	return nil
}

// prepare makes o ready for requests of s: its limit per tier of the policy
// it replaces, or why s cannot use it.
func (s *Set) prepare(o Override) (*override, error) {
	i := slices.IndexFunc(s.policies, func(p Policy) bool { return p.Name == o.Policy })
	if i < 0 {
		return nil, fmt.Errorf("no policy %q", o.Policy)
	}
	p := &s.policies[i]
	ov := &override{Override: o, policy: i, named: map[string]*NamedLimit{}}
	for tier, limits := range s.named[i] {
		if len(limits) == 0 {
			continue
		}
		base := limits[0]
		// The base's kind stays (a calendar's period and zone); its burst
		// does not: the override's limit is the capacity too.
		l := base.Limit
		l.Requests, l.Burst, l.Window = o.Limit, 0, cmp.Or(o.Window, l.Window)
		err := base.Algorithm.Validate(l)
		if err == nil {
			err = base.Algorithm.CheckCost(l, p.Cost)
		}
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		ov.named[tier] = &NamedLimit{LimitSpec: LimitSpec{Algorithm: base.Algorithm, Limit: l}, Name: p.Name,
			keySuffix: ":" + p.Name + ":o" + strconv.FormatInt(o.ID, 10) + ":" + base.Algorithm.Name}
	}
	return ov, nil
}

// HasOverrides reports whether the set has overrides: only then does Rules
// read Caller.Now.
func (s *Set) HasOverrides() bool { return len(s.byUser) > 0 || len(s.byPrefix) > 0 }

// overrideFor returns the override of policy i that applies to c, counted
// as subject, at c.Now, or nil.
func (s *Set) overrideFor(i int, subject string, c Caller) *override {
	switch {
	case strings.HasPrefix(subject, "user:"):
		for _, o := range s.byUser[c.User] {
			if o.policy == i && o.ActiveAt(c.Now) {
				return o
			}
		}
	case strings.HasPrefix(subject, "ip:") && c.Addr.IsValid():
		for _, o := range s.byPrefix {
			if o.policy == i && o.Prefix.Contains(c.Addr) && o.ActiveAt(c.Now) {
				return o
			}
		}
	}
	return nil
}
