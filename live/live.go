// Package live keeps the rate-limit policies in force: the policy file read
// at start-up and on reload (SIGHUP, or a change on disk), the overrides
// refreshed from the database, and the candidate file. Requests see them as
// one immutable Snapshot, loaded once per request.
package live

import (
	"sync"
	"sync/atomic"

	"tollgate/policy"
)

// Snapshot is everything per policy that a request uses: the live set (with
// the overrides) and the candidate set. It is never changed once stored: a
// reload stores a new one, so a request decided under one snapshot finishes
// under it, and none sees half of two.
type Snapshot struct {
	Live    *policy.Set
	Version string // the policy file's SHA-256 prefix; "" without a file
	// Candidate is the candidate file's set (nil: no candidate file), its
	// keys apart from the live ones (CandidateKeys).
	Candidate        *policy.Set
	CandidateVersion string // the candidate file's SHA-256 prefix
	// KeysByIP, ExemptsCIDRs and HasOverrides are the union of the live
	// and candidate sets' needs (policy.Caller).
	KeysByIP, ExemptsCIDRs, HasOverrides bool

	// What the snapshot was made of, to make the next one when one of
	// them changes.
	policies, candidatePolicies []policy.Policy
	overrides                   []policy.Override
}

// CandidateKeys is what a candidate file's keys start with after the
// prefix: a live key has "{" there, so the two never meet.
const CandidateKeys = "candidate:"

// Policies holds the policies in force and hands out their Snapshot. Its
// policies, candidate policies and overrides can be replaced while the
// service serves (SetPolicies, SetCandidate, SetOverrides).
type Policies struct {
	prefix string
	leases interface{ EndLeases() } // nil: no leases to end

	mu   sync.Mutex // serialises the making of snapshots
	snap atomic.Pointer[Snapshot]
}

// New returns Policies in force with policies, version naming them (the
// policy file's SHA-256 prefix; "" without a file), keeping their keys under
// prefix. leases (the engine, limiter.Limiter; nil: none) has its leases
// ended whenever new policies or overrides come into force.
func New(policies []policy.Policy, version, prefix string, leases interface{ EndLeases() }) *Policies {
	p := &Policies{prefix: prefix, leases: leases}
	_ = p.store(policies, version, nil, "", nil) // no overrides: no error
	return p
}

// Snapshot returns the snapshot in force: a request loads it once.
func (p *Policies) Snapshot() *Snapshot { return p.snap.Load() }

// store builds the snapshot of policies, candidate and overrides, and makes
// it the one requests use. It returns why overrides were left out. Callers
// hold p.mu (or own p).
func (p *Policies) store(policies []policy.Policy, version string, candidate []policy.Policy, candidateVersion string, overrides []policy.Override) error {
	s := &Snapshot{Version: version, CandidateVersion: candidateVersion, policies: policies, candidatePolicies: candidate, overrides: overrides}
	set, err := policy.NewSet(policies, p.prefix).WithOverrides(overrides)
	s.Live = set
	s.KeysByIP, s.ExemptsCIDRs, s.HasOverrides = set.KeysByIP(), set.ExemptsCIDRs(), set.HasOverrides()
	if candidate != nil {
		// Overrides apply to the candidate too: it shows what the live
		// service would do with that file. Those naming a policy only the
		// live file has are not its errors.
		s.Candidate, _ = policy.NewSet(candidate, p.prefix+CandidateKeys).WithOverrides(overrides)
		s.KeysByIP = s.KeysByIP || s.Candidate.KeysByIP()
		s.ExemptsCIDRs = s.ExemptsCIDRs || s.Candidate.ExemptsCIDRs()
		s.HasOverrides = s.HasOverrides || s.Candidate.HasOverrides()
	}
	p.snap.Store(s)
	return err
}

// SetPolicies makes policies the live ones, version naming them (the
// policy file's SHA-256 prefix), from the next request on; requests under
// way finish under the policies they started with. A limit that keeps its
// policy's name, its position and its algorithm keeps its Redis key, so its
// count. The error says which overrides no longer apply (they name a policy
// gone, or a limit the policy cannot use); the policies are set either way.
func (p *Policies) SetPolicies(policies []policy.Policy, version string) error {
	p.mu.Lock()
	s := p.snap.Load()
	err := p.store(policies, version, s.candidatePolicies, s.CandidateVersion, s.overrides)
	p.mu.Unlock()
	p.endLeases()
	return err
}

// endLeases ends the engine's leases once a new snapshot is in force:
// leases belong to the rules that took them, so none would admit under the
// new ones anyway; ended now, their unused units are back in Redis at once
// rather than at the next sweep.
func (p *Policies) endLeases() {
	if p.leases != nil {
		p.leases.EndLeases()
	}
}

// SetCandidate makes policies the candidate ones (nil: none), decided in
// shadow beside the live ones under keys of their own: counted, never
// rejecting, no headers.
func (p *Policies) SetCandidate(policies []policy.Policy, version string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.snap.Load()
	_ = p.store(s.policies, s.Version, policies, version, s.overrides) // the live set's overrides are unchanged
}

// SetOverrides replaces the overrides, from the next request on. The error
// says which were left out (see policy.Set.WithOverrides); the others apply.
func (p *Policies) SetOverrides(overrides []policy.Override) error {
	p.mu.Lock()
	s := p.snap.Load()
	err := p.store(s.policies, s.Version, s.candidatePolicies, s.CandidateVersion, overrides)
	p.mu.Unlock()
	p.endLeases()
	return err
}

// Versions returns the SHA-256 prefixes of the live and candidate policy
// files in use ("" for none) and the live policies' names.
func (p *Policies) Versions() (live, candidate string, names []string) {
	s := p.snap.Load()
	for _, pol := range s.policies {
		names = append(names, pol.Name)
	}
	return s.Version, s.CandidateVersion, names
}
