package middleware

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// foldingUsers is a user store that matches names as MySQL's default
// collation did, ignoring case and trailing spaces, and answers with the
// name as stored.
type foldingUsers struct {
	calls atomic.Int64
}

func (f *foldingUsers) CheckPassword(ctx context.Context, name, password string) (string, string, bool, error) {
	f.calls.Add(1)
	if !strings.EqualFold(strings.TrimRight(name, " "), "john_doe") || password != "pw" {
		return "", "", false, nil
	}
	return "john_doe", "pro", true, nil
}

func (f *foldingUsers) CheckAPIKey(ctx context.Context, key string) (string, string, bool, error) {
	f.calls.Add(1)
	return "", "", false, nil
}

// TestIdentifyUsesStoredName: the identity (and so the quota key, the
// exemptions and the log) is the user's name as the store has it, not as
// typed, so however a store matches names a user is one identity.
func TestIdentifyUsesStoredName(t *testing.T) {
	for _, typed := range []string{"john_doe", "JOHN_DOE", "John_Doe", "john_doe "} {
		t.Run(typed, func(t *testing.T) {
			r := identifyEngine(t, &foldingUsers{}, nil)
			w := serve(t, r, "192.0.2.1:1234", map[string]string{"Authorization": basic(typed, "pw")})
			if w.Code != http.StatusOK {
				t.Fatalf("status = %d, want %d", w.Code, http.StatusOK)
			}
			if got, want := w.Body.String(), "user:john_doe"; got != want {
				t.Errorf("Identity() for %q = %q, want %q", typed, got, want)
			}
		})
	}
}

// TestIdentifyRefusesControlCharacters: a Basic name with a control
// character is no user's name: 401 without asking the store.
func TestIdentifyRefusesControlCharacters(t *testing.T) {
	for _, name := range []string{"john\tdoe", "john_doe\n", "john\x00doe", "john\x7fdoe", "john\u0085doe", "john\u009bdoe"} {
		t.Run(strings.ToValidUTF8(name, "?"), func(t *testing.T) {
			users := &foldingUsers{}
			r := identifyEngine(t, users, nil)
			w := serve(t, r, "192.0.2.1:1234", map[string]string{"Authorization": basic(name, "pw")})
			if w.Code != http.StatusUnauthorized {
				t.Errorf("status for %q = %d, want %d", name, w.Code, http.StatusUnauthorized)
			}
			if n := users.calls.Load(); n != 0 {
				t.Errorf("store called %d times for %q, want 0", n, name)
			}
		})
	}
}
