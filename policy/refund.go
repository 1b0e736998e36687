package policy

import (
	"fmt"
	"maps"
	"slices"
	"strconv"

	"tollgate/algorithms"
)

// Refunds reports whether a request admitted under p whose response has
// status gives its units back (refund_on). RefundOn holds exact statuses
// (100..599) and classes as their first digit (5 for 5xx).
func (p *Policy) Refunds(status int) bool {
	for _, s := range p.RefundOn {
		if s == status || s < 10 && status/100 == s {
			return true
		}
	}
	return false
}

// refundOn reads a policy's refund_on: exact statuses 100..599 and classes
// 1xx..5xx. A policy with an in-flight limit (a held algorithm: its place
// goes back when the request ends anyway) or a limit whose algorithm cannot
// give units back (no m.refund: sliding_log, calendar) takes none.
func refundOn(doc policyDoc) ([]int, []error) {
	if len(doc.RefundOn) == 0 {
		return nil, nil
	}
	var errs []error
	var out []int
	for _, s := range doc.RefundOn {
		n, err := strconv.Atoi(s)
		switch {
		case len(s) == 3 && s[1:] == "xx" && s[0] >= '1' && s[0] <= '5':
			n = int(s[0] - '0')
		case err != nil || len(s) != 3 || n < 100 || n > 599:
			errs = append(errs, fmt.Errorf("refund_on: %q: want a status from 100 to 599 or a class 1xx to 5xx", s))
			continue
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	check := func(field string, limits []limitDoc) {
		for i, l := range limits {
			s, err := algorithms.Lookup(l.Algorithm)
			switch {
			case err != nil: // reported by limits()
			case s.Held:
				errs = append(errs, fmt.Errorf("refund_on: %s[%d] is an in-flight limit (%s): nothing to refund, its place is released when the request ends; want refund_on on a policy without one", field, i, s.Name))
			case s.LeaseFor == nil: // no m.refund (limiter/lua/prelude.lua)
				errs = append(errs, fmt.Errorf("refund_on: %s[%d]: %s cannot give units back; want fixed_window, sliding_window, token_bucket or gcra", field, i, s.Name))
			}
		}
	}
	check("limits", doc.Limits)
	for _, tier := range slices.Sorted(maps.Keys(doc.Tiers)) {
		check("tiers."+tier, doc.Tiers[tier])
	}
	return out, errs
}

// RefundOnText is RefundOn as a policy file writes it: 404, 5xx.
func (p *Policy) RefundOnText() []string {
	out := make([]string, len(p.RefundOn))
	for i, s := range p.RefundOn {
		out[i] = strconv.Itoa(s)
		if s < 10 {
			out[i] += "xx"
		}
	}
	return out
}
