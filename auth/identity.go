// Package auth names the caller of a request: a user, by HTTP Basic
// credentials or an API key, or else the client's address. It keeps the
// credential cache and the brute-force guard (its Lua beside it) and knows
// no HTTP framework: the middleware reads the headers and maps its errors
// to statuses.
//
// Constructors follow the module's one style: what the value cannot work
// without as parameters, its settings in one options struct named after the
// type (New takes AuthenticatorOptions, NewGuard GuardOptions), each field
// saying what its zero value means.
package auth

import (
	"errors"
	"fmt"
	"time"
)

// Kind is what an Identity names: a user or a client address.
type Kind string

// The kinds of Identity.
const (
	User Kind = "user"
	IP   Kind = "ip"
)

// Identity is who a request comes from. The zero Identity is no identity:
// the request was not authenticated.
type Identity struct {
	Kind Kind
	// Name is the user's name as stored (one spelling per user, whatever
	// the client sent); empty for IP.
	Name string
	// Addr is the client's address subject, as the caller gave it to
	// Authenticate: an IPv4 address or an IPv6 prefix.
	Addr string
	// Tier picks the user's limits; policy.AnonymousTier for IP.
	Tier string
	// ByKey is true for a user who sent an API key, not a password.
	ByKey bool
}

// Subject is what quotas and exemptions count the identity as: "user:NAME"
// or "ip:ADDR"; "" for the zero Identity. A user is one subject whichever
// credential they send, so their limits are the same with either.
func (id Identity) Subject() string {
	switch id.Kind {
	case User:
		return "user:" + id.Name
	case IP:
		return "ip:" + id.Addr
	}
	return ""
}

// Errors of Authenticate. Each means one answer to the client; the
// middleware maps them to statuses.
var (
	// ErrBadCredentials is a wrong, malformed or revoked credential, or an
	// empty one (a client that meant to send one should hear about it).
	ErrBadCredentials = errors.New("invalid credentials")
	// ErrAmbiguous is both kinds of credential at once, or one sent twice:
	// which one is the caller?
	ErrAmbiguous = errors.New("send one credential: Authorization or X-API-Key, not both, and each once")
	// ErrUnavailable is a credential that could not be checked: the user
	// store failed. Errors that wrap it carry the cause.
	ErrUnavailable = errors.New("authentication unavailable")
	// ErrGuardUnavailable is the guard's Redis failing while the guard
	// fails closed. It wraps ErrUnavailable.
	ErrGuardUnavailable = fmt.Errorf("auth guard: %w", ErrUnavailable)
	// ErrBusy is a check that found no free slot in time (BoundChecks): the
	// instance is busy and the credential was not checked; not a failure.
	ErrBusy = errors.New("authentication busy")
)

// RefusedError is a check the guard has no place for: too many failures
// from the client's address or for the user name. No check ran.
type RefusedError struct {
	// RetryAfter is when a failure leaves the guard's log.
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string {
	return "too many failed authentication attempts"
}
