package live

import (
	"sync/atomic"
	"testing"
	"time"

	"tollgate/algorithms"
	"tollgate/policy"
)

// algo is the spec of the algorithm called name, as the policy package
// resolves it; the zero Spec for no algorithm.
func algo(name string) algorithms.Spec {
	s, _ := algorithms.Lookup(name)
	return s
}

func onePolicy(name string, limit int) []policy.Policy {
	return []policy.Policy{{Name: name, Key: "user_or_ip", Cost: 1,
		Limits: []policy.LimitSpec{{Algorithm: algo("fixed_window"), Limit: algorithms.Limit{Requests: limit, Window: time.Minute}}}}}
}

// endings counts EndLeases calls.
type endings struct{ ended atomic.Int32 }

func (e *endings) EndLeases() { e.ended.Add(1) }

// TestNewPoliciesEndLeases: a reload (SetPolicies) and new overrides end
// the engine's leases, so their unused units return to Redis at once; a new
// candidate does not.
func TestNewPoliciesEndLeases(t *testing.T) {
	e := &endings{}
	p := New(onePolicy("a", 5), "", "p:", e)
	p.SetCandidate(onePolicy("a", 5), "c1")
	if got := e.ended.Load(); got != 0 {
		t.Errorf("after SetCandidate: EndLeases called %d times, want 0", got)
	}
	if err := p.SetPolicies(onePolicy("a", 5), "v2"); err != nil {
		t.Fatal(err)
	}
	if got := e.ended.Load(); got != 1 {
		t.Errorf("after SetPolicies: EndLeases called %d times, want 1", got)
	}
	if err := p.SetOverrides(nil); err != nil {
		t.Fatal(err)
	}
	if got := e.ended.Load(); got != 2 {
		t.Errorf("after SetOverrides: EndLeases called %d times, want 2", got)
	}
}
