package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"tollgate/algorithms"
)

// The policy file's shape; unknown fields are errors (a typo must not
// silently drop a limit).
type policyFile struct {
	Policies []policyDoc `yaml:"policies"`
}

type policyDoc struct {
	Name   string                `yaml:"name"`
	Match  []string              `yaml:"match"`
	Key    string                `yaml:"key"`
	Cost   wholeNumber           `yaml:"cost"`
	Shadow bool                  `yaml:"shadow"`
	Exempt exemptDoc             `yaml:"exempt"`
	Limits []limitDoc            `yaml:"limits"`
	Tiers  map[string][]limitDoc `yaml:"tiers"`
	// RefundOn: response statuses whose requests give their units back
	// (refund.go).
	RefundOn []string `yaml:"refund_on"`
}

type exemptDoc struct {
	Users []string `yaml:"users"`
	CIDRs []string `yaml:"cidrs"`
}

type limitDoc struct {
	Algorithm string      `yaml:"algorithm"`
	Limit     wholeNumber `yaml:"limit"`
	Window    string      `yaml:"window"`
	Burst     wholeNumber `yaml:"burst"`
	Timeout   string      `yaml:"timeout"`  // held algorithms (concurrency), instead of window
	Period    string      `yaml:"period"`   // calendar, instead of window
	Timezone  string      `yaml:"timezone"` // calendar; default UTC
	Lease     string      `yaml:"lease"`    // auto (the default) or off
	Delay     string      `yaml:"delay"`    // token_bucket, gcra: shaping (delay.go)
}

// wholeNumber is an integer field of the file, kept as written: YAML
// decodes 2.5 into an int as 2 without a word, and a limit must mean what
// it says.
type wholeNumber struct {
	set   bool   // the field is in the file
	whole bool   // it is an integer that fits an int
	text  string // as written
	n     int
}

// UnmarshalYAML records the node; policy() reports a value that is not a
// whole number, naming the policy and the field.
func (w *wholeNumber) UnmarshalYAML(node *yaml.Node) error {
	*w = wholeNumber{set: true, text: node.Value}
	if node.Kind == yaml.ScalarNode && node.ShortTag() == "!!int" {
		w.whole = node.Decode(&w.n) == nil
	}
	return nil
}

// int returns the value, and an error naming field when it is set and not
// a whole number (0 when unset).
func (w wholeNumber) int(field string) (int, error) {
	if w.set && !w.whole {
		return 0, fmt.Errorf("%s: %q: want a whole number", field, w.text)
	}
	return w.n, nil
}

// maxWindow is the longest window a policy may have: a year and a day.
// Longer ones overflow the reset times sent to clients (2562047h gave
// X-RateLimit-Reset: -5673), and no quota needs them.
const maxWindow = 366 * 24 * time.Hour

// unkeyableHeaders are headers a policy must not count by: credentials
// (their values would become limiter keys, and every guess a fresh quota)
// and Host, which Go keeps out of the request's header map.
var unkeyableHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Host"}

var (
	policyName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	headerName = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	httpMethod = regexp.MustCompile(`^(\*|[A-Z]{3,7})$`)
)

// Parse reads a policy file (YAML, see policies.example.yaml) and
// validates all of it: every error names the policy and the field.
func Parse(r io.Reader) ([]Policy, error) {
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
	// Only one document is read: a second one (after ---) would be ignored.
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse policies: more than one YAML document (---): want one document with every policy under the key policies")
	}
	if len(f.Policies) == 0 {
		return nil, errors.New("parse policies: no policies: want a list under the key policies")
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

// CheckTiers reports every tier of policies that ValidTier (the rule for the
// tiers users can have, as in SEED_USERS) refuses: no user could ever get
// its limits, most likely a typo such as Free for free. "anonymous" is the
// tier of requests without credentials.
func CheckTiers(policies []Policy) error {
	var errs []error
	for _, p := range policies {
		for _, tier := range slices.Sorted(maps.Keys(p.Tiers)) {
			if tier != AnonymousTier && !ValidTier(tier) {
				errs = append(errs, fmt.Errorf("policy %q: tiers.%s: no user can have this tier: want a lowercase letter, then up to 31 lowercase letters, digits, _ or - (as tiers in SEED_USERS)", p.Name, tier))
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
	case strings.HasPrefix(doc.Key, "header:") && slices.Contains(unkeyableHeaders, http.CanonicalHeaderKey(strings.TrimPrefix(doc.Key, "header:"))):
		fail("key: %q: want a header that is neither a credential nor Host (not %s)", doc.Key, strings.Join(unkeyableHeaders, ", "))
	case strings.HasPrefix(doc.Key, "header:") && headerName.MatchString(strings.TrimPrefix(doc.Key, "header:")):
	default:
		fail("key: %q: want ip, user, user_or_ip or header:NAME", doc.Key)
	}
	if doc.Cost.set {
		cost, err := doc.Cost.int("cost")
		switch {
		case err != nil:
			errs = append(errs, err)
		case cost < 1:
			fail("cost: %d: want 1 or more", cost)
		default:
			p.Cost = cost
		}
	}
	for _, c := range doc.Exempt.CIDRs {
		prefix, err := ParseCIDR(c)
		if err != nil {
			fail("exempt.cidrs: %q: want a CIDR such as 10.0.0.0/8", c)
			continue
		}
		p.ExemptCIDRs = append(p.ExemptCIDRs, prefix)
	}
	var rerrs []error
	p.RefundOn, rerrs = refundOn(doc)
	errs = append(errs, rerrs...)
	if len(doc.Limits) == 0 && len(doc.Tiers) == 0 {
		fail("limits: none: want limits, tiers, or both")
	}
	var lerrs []error
	p.Limits, lerrs = limits("limits", doc.Limits, p.Cost)
	errs = append(errs, lerrs...)
	if len(doc.Tiers) > 0 {
		p.Tiers = map[string][]LimitSpec{}
		for _, tier := range slices.Sorted(maps.Keys(doc.Tiers)) {
			field := "tiers." + tier
			if len(doc.Tiers[tier]) == 0 {
				fail("%s: no limits", field)
			}
			p.Tiers[tier], lerrs = limits(field, doc.Tiers[tier], p.Cost)
			errs = append(errs, lerrs...)
		}
	}
	return p, errs
}

func limits(field string, docs []limitDoc, cost int) ([]LimitSpec, []error) {
	var errs []error
	var out []LimitSpec
	for i, d := range docs {
		f := fmt.Sprintf("%s[%d]", field, i)
		ok := true
		spec, err := algorithms.Lookup(d.Algorithm) // the zero Spec when unknown
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.algorithm: %q: want one of %s", f, d.Algorithm, strings.Join(algorithms.Names(), ", ")))
			ok = false
		}
		limit, err := d.Limit.int(f + ".limit")
		if err != nil {
			errs = append(errs, err)
			ok = false
		} else if limit < 1 {
			errs = append(errs, fmt.Errorf("%s.limit: %d: want 1 or more", f, limit))
			ok = false
		}
		burst, err := d.Burst.int(f + ".burst")
		switch {
		case err != nil:
			errs = append(errs, err)
			ok = false
		case d.Burst.set && spec.Name != "" && !spec.Bucket:
			errs = append(errs, fmt.Errorf("%s.burst: %s has no burst: want no burst (the limit is all a window admits), or token_bucket or gcra", f, d.Algorithm))
			ok = false
		case burst < 0:
			errs = append(errs, fmt.Errorf("%s.burst: %d: want 0 (the limit) or more", f, burst))
			ok = false
		}
		if d.Lease != "" && d.Lease != "auto" && d.Lease != "off" {
			errs = append(errs, fmt.Errorf("%s.lease: %q: want auto (leased when large and busy, RATE_LIMIT_LEASE permitting) or off", f, d.Lease))
			ok = false
		}
		l, lerrs := window(f, spec, d)
		errs = append(errs, lerrs...)
		if !ok || len(lerrs) > 0 {
			continue
		}
		l.Requests, l.Burst = limit, burst
		if err := spec.Validate(l); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		if err := spec.CheckCost(l, cost); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		delay, err := delayOf(f, spec, d.Delay, l.Window)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, LimitSpec{Algorithm: spec, Limit: l, NoLease: d.Lease == "off", Delay: delay})
	}
	return out, errs
}

// window reads what bounds a limit in time, by its algorithm's kind: a
// window, a held request's timeout (concurrency) or a calendar period in a
// time zone; each kind refuses the others' fields.
func window(f string, spec algorithms.Spec, d limitDoc) (algorithms.Limit, []error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(f+"."+format, args...)) }
	refuse := func(field, value, instead string) {
		if value != "" {
			fail("%s: %s has no %s: want %s", field, spec.Name, field, instead)
		}
	}
	switch {
	case spec.Calendar:
		refuse("window", d.Window, "period (day, week or month) and timezone")
		refuse("timeout", d.Timeout, "period (day, week or month) and timezone")
		loc := time.UTC
		if d.Timezone != "" {
			var err error
			// "Local" would be the host's zone, which differs between instances.
			if loc, err = time.LoadLocation(d.Timezone); err != nil || d.Timezone == "Local" {
				fail("timezone: %q: want an IANA time zone such as Europe/Berlin (default UTC)", d.Timezone)
			}
		}
		l, err := algorithms.CalendarLimit(0, algorithms.Period(d.Period), loc)
		if err != nil {
			fail("period: %q: want day, week (ISO, from Monday) or month", d.Period)
		}
		return l, errs
	case spec.Held:
		refuse("window", d.Window, "timeout, how long a request holds its place at most (such as 30s)")
		refuse("period", d.Period, "timeout")
		refuse("timezone", d.Timezone, "timeout")
		t, err := time.ParseDuration(d.Timeout)
		if err != nil || t < time.Millisecond {
			fail("timeout: %q: want a positive Go duration such as 30s: how long a request holds its place if its instance dies", d.Timeout)
		}
		return algorithms.Limit{Window: t}, errs
	}
	refuse("timeout", d.Timeout, "window (timeout is for concurrency)")
	refuse("period", d.Period, "window (period is for calendar)")
	refuse("timezone", d.Timezone, "window (timezone is for calendar)")
	w, err := time.ParseDuration(d.Window)
	if err != nil || w < time.Millisecond || w > maxWindow {
		fail("window: %q: want a positive Go duration such as 60s, at most 366 days (%v)", d.Window, maxWindow)
	}
	return algorithms.Limit{Window: w}, errs
}
