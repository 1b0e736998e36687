// Package policy is the rate-limit policy language: the policy file (Parse)
// and the one policy the RATE_LIMIT_* variables describe (Default), all
// their checks, and the pure function from a request (method, route, caller)
// to the rules the engine decides (Set.Rules). It knows no HTTP framework
// and no configuration: the adapter in middleware fills a Caller and
// decides the rules.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"tollgate/algorithms"
	"tollgate/limiter"
)

// A Policy is a named set of limits on matching routes, chosen per tier.
type Policy struct {
	Name        string
	Match       []Route // empty: every limited route
	Key         string  // "ip", "user", "user_or_ip" or "header:NAME"
	Cost        int     // units one request takes
	Shadow      bool    // decide, log and count, never reject
	ExemptUsers []string
	ExemptCIDRs []netip.Prefix
	Limits      []LimitSpec            // for tiers without limits of their own
	Tiers       map[string][]LimitSpec // by tier: "anonymous", "free", "pro", ...
	// RefundOn: a request admitted under the policy whose response has one
	// of these statuses gives its units back (Refunds).
	RefundOn []int
}

// A Route is an HTTP method ("*" for any) and a gin route pattern.
type Route struct {
	Method string
	Path   string
}

// A LimitSpec is one limit of a policy: its algorithm, resolved when the
// policy is loaded (Parse, Default), and its quota.
type LimitSpec struct {
	Algorithm algorithms.Spec
	Limit     algorithms.Limit
	NoLease   bool // lease: off: decided by Redis on every request
	// Delay: a request this limit would admit within it waits for its
	// slot instead of a 429 (token_bucket, gcra; limiter.Rule.Delay).
	Delay time.Duration
}

// AnonymousTier is the tier of callers without credentials, counted by
// their address: "anonymous" in a policy's tiers.
const AnonymousTier = "anonymous"

// ValidTier reports whether s is a tier name: a lowercase letter, then up to 31
// lowercase letters, digits, _ or -. It is the one rule for tiers: of users
// (SEED_USERS, the CLI) and of policies.
func ValidTier(s string) bool {
	if s == "" || len(s) > 32 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

// Default is the single policy the RATE_LIMIT_* variables describe: every
// limited route, per user or else per client IP, named after the algorithm.
// Its errors name the variables.
func Default(algorithm string, l algorithms.Limit) ([]Policy, error) {
	s, err := algorithms.Lookup(algorithm)
	if err != nil {
		return nil, fmt.Errorf("RATE_LIMIT_ALGORITHM=%q: %w: want one of %s",
			algorithm, algorithms.ErrUnknown, strings.Join(algorithms.Names(), ", "))
	}
	if s.Held || s.Calendar {
		return nil, fmt.Errorf("RATE_LIMIT_ALGORITHM=%q: %w: %s needs fields of a policy file (a timeout, or a period and time zone): set RATE_LIMIT_POLICY_FILE, or want one of %s",
			algorithm, algorithms.ErrInvalidLimit, s.Name, strings.Join(algorithms.Windowed(), ", "))
	}
	if err := s.Validate(l); err != nil {
		return nil, fmt.Errorf("RATE_LIMIT_LIMIT, RATE_LIMIT_BURST, RATE_LIMIT_WINDOW: %w", err)
	}
	return []Policy{{
		Name:   algorithm,
		Key:    "user_or_ip",
		Cost:   1,
		Limits: []LimitSpec{{Algorithm: s, Limit: l}},
	}}, nil
}

// CheckDefault reports why Default would refuse algorithm with limit, burst
// and window (RATE_LIMIT_ALGORITHM, _LIMIT, _BURST, _WINDOW), or nil: the
// check main hands to config.Load, which imports no package of ours.
func CheckDefault(algorithm string, limit, burst int, window time.Duration) error {
	_, err := Default(algorithm, algorithms.Limit{Requests: limit, Window: window, Burst: burst})
	return err
}

// Describe says, for people, what the limits of policies that are not per
// window do: in-flight limits and calendar quotas, each once.
func Describe(policies []Policy) []string {
	var out []string
	add := func(p Policy, limits []LimitSpec) {
		for _, l := range limits {
			s := l.Algorithm
			var d string
			switch {
			case s.Held:
				d = fmt.Sprintf("%s: at most %d requests at once (a place expires after %v)", p.Name, l.Limit.Requests, l.Limit.Window)
			case s.Calendar:
				d = fmt.Sprintf("%s: %d per %s in %s", p.Name, l.Limit.Requests, l.Limit.Period, l.Limit.Location)
			default:
				continue
			}
			if !slices.Contains(out, d) {
				out = append(out, d)
			}
		}
	}
	for _, p := range policies {
		add(p, p.Limits)
		for _, tier := range slices.Sorted(maps.Keys(p.Tiers)) {
			add(p, p.Tiers[tier])
		}
	}
	return out
}

// Caller is what policies know of a request's sender. The adapter fills it
// from the identity; only the fields the set's policies use need be set
// (IP of a user only when Set.KeysByIP, Addr only when Set.ExemptsCIDRs).
type Caller struct {
	User string // the user's name; "" for a caller without credentials
	Tier string // the user's tier, or AnonymousTier
	// IP is the client's address as it is counted: an IPv4 address or the
	// IPv6 prefix holding it ("unknown" when there is none).
	IP string
	// Addr is the client's own address, for exemptions by CIDR: an
	// exemption names addresses, not the group they are counted in.
	Addr   netip.Addr
	Header http.Header // the request's headers, for keys header:NAME
	// Now is the time overrides are checked against (only when
	// Set.HasOverrides): an expired one stops applying at once, not at the
	// next refresh of the overrides.
	Now time.Time
}

// NamedLimit is a policy's limit as requests see it, named and keyed once,
// at start-up, rather than on every request.
type NamedLimit struct {
	LimitSpec
	// ID numbers the set's limits from 0 (Set.Limits): the adapter keeps
	// its own per-limit data (header texts) by it.
	ID int
	// Name is the limit's item in RateLimit-Policy: the policy's name, or
	// policy-N for its Nth limit when it has several.
	Name      string
	keySuffix string // after the subject: ":<policy>:<n>:<algorithm>"
}

// Applied is one limit of a policy that applies to a request, with the
// rule that decides it.
type Applied struct {
	Policy   *Policy
	Limit    *NamedLimit
	Rule     limiter.Rule
	Override *Override // the override that replaced the policy's limits, or nil
}

// Set is a list of policies ready to match requests. It is read-only after
// NewSet, so safe for concurrent use.
type Set struct {
	policies []Policy
	prefix   string
	// named holds, per policy (same index as policies) and tier ("" for the
	// policy's own limits), its named limits.
	named []map[string][]NamedLimit
	all   []*NamedLimit // by ID
	// anyShadow, anyCIDR and anyIP say whether a policy is in shadow mode,
	// exempts addresses or counts users by IP: requests skip that work when
	// none does.
	anyShadow, anyCIDR, anyIP bool
	// byUser and byPrefix are the overrides (WithOverrides), by user name
	// and by prefix, longest first.
	byUser   map[string][]*override
	byPrefix []*override
}

// NewSet returns the Set of policies, their keys under prefix.
func NewSet(policies []Policy, prefix string) *Set {
	s := &Set{policies: policies, prefix: prefix, named: make([]map[string][]NamedLimit, len(policies))}
	for i, p := range policies {
		s.named[i] = map[string][]NamedLimit{"": s.nameLimits(p, p.Limits)}
		for tier, limits := range p.Tiers {
			s.named[i][tier] = s.nameLimits(p, limits)
		}
		s.anyShadow = s.anyShadow || p.Shadow
		s.anyCIDR = s.anyCIDR || len(p.ExemptCIDRs) > 0
		s.anyIP = s.anyIP || p.Key == "ip"
	}
	return s
}

func (s *Set) nameLimits(p Policy, limits []LimitSpec) []NamedLimit {
	out := make([]NamedLimit, len(limits))
	for j, l := range limits {
		name := p.Name
		if len(limits) > 1 {
			name = p.Name + "-" + strconv.Itoa(j+1)
		}
		out[j] = NamedLimit{LimitSpec: l, ID: len(s.all), Name: name, keySuffix: ":" + p.Name + ":" + strconv.Itoa(j) + ":" + l.Algorithm.Name}
		s.all = append(s.all, &out[j])
	}
	return out
}

// Limits lists the set's named limits, by ID.
func (s *Set) Limits() []*NamedLimit { return s.all }

// AnyShadow reports whether a policy of the set is in shadow mode.
func (s *Set) AnyShadow() bool { return s.anyShadow }

// ExemptsCIDRs reports whether a policy exempts addresses, or an override
// names some: only then does Rules read Caller.Addr.
func (s *Set) ExemptsCIDRs() bool { return s.anyCIDR }

// KeysByIP reports whether a policy counts users by IP too (key ip): only
// then does Rules read the IP of a Caller with a User (user_or_ip counts
// by IP only callers without one).
func (s *Set) KeysByIP() bool { return s.anyIP }

// Rules appends to out the limits that apply to a request for method on
// route (a gin route pattern) from c: of the policies matching the route,
// for c's tier, minus exemptions; the rules' keys are
// <prefix>{<subject>}:<policy>:<n>:<algorithm>. unlisted names a policy
// that applies but has no limits for c's tier and no default ones, so does
// not limit c: most likely a typo in a user's tier or in the file ("" when
// none).
func (s *Set) Rules(method, route string, c Caller, out []Applied) (rules []Applied, unlisted string) {
	return s.rules(false, method, route, c, out)
}

// AllRules is Rules for every policy, whatever its routes: what applies
// to c anywhere.
func (s *Set) AllRules(c Caller, out []Applied) (rules []Applied, unlisted string) {
	return s.rules(true, "", "", c, out)
}

func (s *Set) rules(anyRoute bool, method, route string, c Caller, out []Applied) ([]Applied, string) {
	unlisted := ""
	for i := range s.policies {
		p := &s.policies[i]
		if !anyRoute && !p.matches(method, route) || p.exempt(c) {
			continue
		}
		kind, who, ok := p.subject(c)
		if !ok {
			continue
		}
		tier := c.Tier
		limits, ok := s.named[i][tier]
		if !ok {
			tier, limits = "", s.named[i][""]
			if len(limits) == 0 && c.Tier != AnonymousTier && unlisted == "" {
				unlisted = p.Name
			}
		}
		if s.HasOverrides() && len(limits) > 0 {
			if o := s.overrideFor(i, kind, c); o != nil { // it reads the kind only
				out = append(out, s.applied(p, o.named[tier], kind, who, &o.Override))
				continue
			}
		}
		for j := range limits {
			out = append(out, s.applied(p, &limits[j], kind, who, nil))
		}
	}
	return out, unlisted
}

// applied is nl of p applied to the subject kind+who (kind "ip:", "user:"
// or "h:"). The subject is the hash tag: on
// a cluster, every limit of one subject lives in one slot and is decided in
// one script.
func (s *Set) applied(p *Policy, nl *NamedLimit, kind, who string, o *Override) Applied {
	return Applied{Policy: p, Limit: nl, Override: o, Rule: limiter.Rule{
		Algorithm: nl.Algorithm, Limit: nl.Limit, Cost: p.Cost, Key: s.prefix + "{" + kind + who + "}" + nl.keySuffix,
		NoLease: nl.NoLease, Delay: nl.Delay,
	}}
}

func (p *Policy) matches(method, route string) bool {
	if len(p.Match) == 0 {
		return true
	}
	// HEAD is GET without the body: "GET /path" matches it too.
	for _, m := range p.Match {
		if (m.Method == "*" || m.Method == method || method == http.MethodHead && m.Method == http.MethodGet) && m.Path == route {
			return true
		}
	}
	return false
}

func (p *Policy) exempt(c Caller) bool {
	if c.User != "" && slices.Contains(p.ExemptUsers, c.User) {
		return true
	}
	for _, cidr := range p.ExemptCIDRs {
		if c.Addr.IsValid() && cidr.Contains(c.Addr) {
			return true
		}
	}
	return false
}

// subject is what the policy counts for c, or false when its key does not
// apply (key user for an anonymous caller, a missing header). Header values
// are hashed: they may be secrets.
func (p *Policy) subject(c Caller) (kind, value string, ok bool) {
	// Kind and value apart: the caller joins them into the key in one
	// concatenation, one allocation per limit and request rather than two.
	switch p.Key {
	case "ip":
		return "ip:", c.IP, true
	case "user":
		return "user:", c.User, c.User != ""
	case "user_or_ip":
		if c.User == "" {
			return "ip:", c.IP, true
		}
		return "user:", c.User, true
	default:
		name := strings.TrimPrefix(p.Key, "header:")
		v := c.Header.Get(name)
		if v == "" {
			return "", "", false
		}
		sum := sha256.Sum256([]byte(name + ":" + v))
		return "h:", hex.EncodeToString(sum[:16]), true
	}
}
