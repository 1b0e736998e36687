package middleware

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"tollgate/algorithms"
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
	Limits      []PolicyLimit            // for tiers without limits of their own
	Tiers       map[string][]PolicyLimit // by tier: "anonymous", "free", "pro", ...
}

// A Route is an HTTP method ("*" for any) and a gin route pattern.
type Route struct {
	Method string
	Path   string
}

// A PolicyLimit is one limit of a policy.
type PolicyLimit struct {
	Algorithm string
	Limit     algorithms.Limit
}

// DefaultPolicies is the single policy the RATE_LIMIT_* variables describe:
// every limited route, per user or else per client IP, named after the
// algorithm.
func DefaultPolicies(algorithm string, l algorithms.Limit) []Policy {
	return []Policy{{
		Name:   algorithm,
		Key:    "user_or_ip",
		Cost:   1,
		Limits: []PolicyLimit{{Algorithm: algorithm, Limit: l}},
	}}
}

// The policy file's shape; unknown fields are errors (a typo must not
// silently drop a limit).
type policyFile struct {
	Policies []policyDoc `yaml:"policies"`
}

type policyDoc struct {
	Name   string                `yaml:"name"`
	Match  []string              `yaml:"match"`
	Key    string                `yaml:"key"`
	Cost   *int                  `yaml:"cost"`
	Shadow bool                  `yaml:"shadow"`
	Exempt exemptDoc             `yaml:"exempt"`
	Limits []limitDoc            `yaml:"limits"`
	Tiers  map[string][]limitDoc `yaml:"tiers"`
}

type exemptDoc struct {
	Users []string `yaml:"users"`
	CIDRs []string `yaml:"cidrs"`
}

type limitDoc struct {
	Algorithm string `yaml:"algorithm"`
	Limit     int    `yaml:"limit"`
	Window    string `yaml:"window"`
	Burst     int    `yaml:"burst"`
}

var (
	policyName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	headerName = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	httpMethod = regexp.MustCompile(`^(\*|[A-Z]{3,7})$`)
)

// ParsePolicies reads a policy file (YAML, see policies.example.yaml) and
// validates all of it: every error names the policy and the field.
func ParsePolicies(r io.Reader) ([]Policy, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var f policyFile
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse policies: %w", err)
	}
	if len(f.Policies) == 0 {
		return nil, errors.New("parse policies: no policies: want a list under policies:")
	}
	var errs []error
	var out []Policy
	seen := map[string]bool{}
	for i, doc := range f.Policies {
		p, perrs := doc.policy()
		name := doc.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i+1)
		}
		if seen[doc.Name] && doc.Name != "" {
			perrs = append(perrs, errors.New("name: used by an earlier policy"))
		}
		seen[doc.Name] = true
		for _, e := range perrs {
			errs = append(errs, fmt.Errorf("policy %q: %w", name, e))
		}
		out = append(out, p)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// CheckRoutes reports every match of policies that names no route of
// limited (the routes the limiter guards; GET routes answer HEAD too): such
// a policy would never apply, which is most likely a typo.
func CheckRoutes(policies []Policy, limited []Route) error {
	var errs []error
	for _, p := range policies {
		for _, m := range p.Match {
			found := false
			for _, r := range limited {
				if r.Path == m.Path && (m.Method == "*" || m.Method == r.Method ||
					m.Method == http.MethodHead && r.Method == http.MethodGet) {
					found = true
					break
				}
			}
			if !found {
				names := make([]string, len(limited))
				for i, r := range limited {
					names[i] = r.Method + " " + r.Path
				}
				errs = append(errs, fmt.Errorf("policy %q: match %q: no such limited route; want one of %s (method may be *)",
					p.Name, m.Method+" "+m.Path, strings.Join(names, ", ")))
			}
		}
	}
	return errors.Join(errs...)
}

func (doc policyDoc) policy() (Policy, []error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	p := Policy{Name: doc.Name, Key: doc.Key, Cost: 1, Shadow: doc.Shadow, ExemptUsers: doc.Exempt.Users}
	if !policyName.MatchString(doc.Name) {
		fail("name: %q: want 1 to 64 letters, digits, '_', '-' or '.'", doc.Name)
	}
	for _, m := range doc.Match {
		method, path, ok := strings.Cut(strings.TrimSpace(m), " ")
		path = strings.TrimSpace(path)
		if !ok || !httpMethod.MatchString(method) || !strings.HasPrefix(path, "/") {
			fail("match: %q: want a method (or *) and a route pattern, e.g. \"GET /continents/:id\"", m)
			continue
		}
		p.Match = append(p.Match, Route{Method: method, Path: path})
	}
	switch {
	case doc.Key == "ip", doc.Key == "user", doc.Key == "user_or_ip":
	case strings.HasPrefix(doc.Key, "header:") && headerName.MatchString(strings.TrimPrefix(doc.Key, "header:")):
	default:
		fail("key: %q: want ip, user, user_or_ip or header:NAME", doc.Key)
	}
	if doc.Cost != nil {
		p.Cost = *doc.Cost
		if p.Cost < 1 {
			fail("cost: %d: want 1 or more", p.Cost)
		}
	}
	for _, c := range doc.Exempt.CIDRs {
		prefix, err := netip.ParsePrefix(c)
		if err != nil {
			addr, aerr := netip.ParseAddr(c)
			if aerr != nil {
				fail("exempt.cidrs: %q: want a CIDR such as 10.0.0.0/8", c)
				continue
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		p.ExemptCIDRs = append(p.ExemptCIDRs, prefix.Masked())
	}
	if len(doc.Limits) == 0 && len(doc.Tiers) == 0 {
		fail("limits: none: want limits, tiers, or both")
	}
	var lerrs []error
	p.Limits, lerrs = limits("limits", doc.Limits, p.Cost)
	errs = append(errs, lerrs...)
	if len(doc.Tiers) > 0 {
		p.Tiers = map[string][]PolicyLimit{}
		for _, tier := range slices.Sorted(maps.Keys(doc.Tiers)) {
			field := "tiers." + tier
			if !policyName.MatchString(tier) {
				fail("%s: want a tier name of letters, digits, '_', '-' or '.'", field)
			}
			if len(doc.Tiers[tier]) == 0 {
				fail("%s: no limits", field)
			}
			p.Tiers[tier], lerrs = limits(field, doc.Tiers[tier], p.Cost)
			errs = append(errs, lerrs...)
		}
	}
	return p, errs
}

func limits(field string, docs []limitDoc, cost int) ([]PolicyLimit, []error) {
	var errs []error
	var out []PolicyLimit
	for i, d := range docs {
		f := fmt.Sprintf("%s[%d]", field, i)
		ok := true
		if !algorithms.Known(d.Algorithm) {
			errs = append(errs, fmt.Errorf("%s.algorithm: %q: want one of %s", f, d.Algorithm, strings.Join(algorithms.Names(), ", ")))
			ok = false
		}
		if d.Limit < 1 {
			errs = append(errs, fmt.Errorf("%s.limit: %d: want 1 or more", f, d.Limit))
			ok = false
		}
		if d.Burst < 0 {
			errs = append(errs, fmt.Errorf("%s.burst: %d: want 0 (the limit) or more", f, d.Burst))
			ok = false
		}
		w, err := time.ParseDuration(d.Window)
		if err != nil || w < time.Millisecond {
			errs = append(errs, fmt.Errorf("%s.window: %q: want a positive Go duration such as 60s", f, d.Window))
			ok = false
		}
		if !ok {
			continue
		}
		l := algorithms.Limit{Requests: d.Limit, Window: w, Burst: d.Burst}
		if err := l.ValidateFor(d.Algorithm); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if capacity := max(l.Burst, l.Requests); cost > capacity {
			errs = append(errs, fmt.Errorf("%s: cost %d exceeds the limit %d: no request could ever pass", f, cost, capacity))
			continue
		}
		out = append(out, PolicyLimit{Algorithm: strings.ReplaceAll(d.Algorithm, "-", "_"), Limit: l})
	}
	return out, errs
}
