package algorithms

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestTable: every entry is complete, its name unique, and its module
// registers itself under that name, as the scripts look it up.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Specs() {
		t.Run(s.Name, func(t *testing.T) {
			if seen[s.Name] {
				t.Errorf("name %q used twice", s.Name)
			}
			seen[s.Name] = true
			if s.Doc == "" || s.Args == nil || s.Horizon == nil {
				t.Errorf("spec %q lacks a Doc, Args or Horizon", s.Name)
			}
			if !strings.Contains(s.Lua, "algorithms."+s.Name+" = ") {
				t.Errorf("module of %q does not register itself as algorithms.%s", s.Name, s.Name)
			}
			if has := strings.Contains(s.Lua, "function m.grant("); has != s.Grants {
				t.Errorf("spec %q: Grants = %v, but its module defines m.grant: %v", s.Name, s.Grants, has)
			}
		})
	}
}

func TestKnown(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"fixed_window", true},
		{"sliding-log", true},
		{"gcra", true},
		{"leaky", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Known(tt.name); got != tt.want {
				t.Errorf("Known(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestLookupUnknown(t *testing.T) {
	_, err := Lookup("leaky")
	if !errors.Is(err, ErrUnknown) {
		t.Errorf("Lookup(leaky) error = %v, want ErrUnknown", err)
	}
	for _, name := range Names() {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Lookup(leaky) error = %v, want it to list %q", err, name)
		}
	}
}

func TestValidateInvalidLimit(t *testing.T) {
	tests := []struct {
		name string
		l    Limit
	}{
		{"no requests", Limit{Requests: 0, Window: time.Second}},
		{"negative burst", Limit{Requests: 1, Burst: -1, Window: time.Second}},
		{"sub-millisecond window", Limit{Requests: 1, Window: time.Microsecond}},
		{"beyond exact arithmetic", Limit{Requests: 1_000_000_000, Window: 24 * time.Hour}},
		{"burst beyond exact arithmetic", Limit{Requests: 1, Burst: 1_000_000_000, Window: 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.l.ValidateFor("token_bucket"); !errors.Is(err, ErrInvalidLimit) {
				t.Errorf("ValidateFor(token_bucket, %+v) = %v, want ErrInvalidLimit", tt.l, err)
			}
		})
	}
}

// TestCalendarBound: a calendar's counts are only added and compared, never
// multiplied by its period in ms, so its bound is 2^53 units, not 2^53 ms
// divided by the period (3,358,359 a month before).
func TestCalendarBound(t *testing.T) {
	tests := []struct {
		name string
		l    Limit
		want error
	}{
		{"5,000,000 a month", calendarLimit(t, 5_000_000, Month), nil},
		{"2^53 a day", calendarLimit(t, 1<<53, Day), nil},
		{"beyond 2^53 a day", calendarLimit(t, 1<<53+1, Day), ErrInvalidLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.l.ValidateFor("calendar"); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("ValidateFor(calendar, %d a %s) = %v, want %v", tt.l.Requests, tt.l.Period, err, tt.want)
			}
		})
	}
	// The window algorithms keep theirs: 5,000,000 per 31 days is beyond it.
	if err := (Limit{Requests: 5_000_000, Window: 31 * 24 * time.Hour}).ValidateFor("fixed_window"); !errors.Is(err, ErrInvalidLimit) {
		t.Errorf("ValidateFor(fixed_window, 5,000,000 per 31 days) = %v, want ErrInvalidLimit", err)
	}
}

// calendarLimit is CalendarLimit in UTC, or the test's end.
func calendarLimit(t *testing.T, requests int, p Period) Limit {
	t.Helper()
	l, err := CalendarLimit(requests, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestGCRABurstBeyondItsMicroseconds(t *testing.T) {
	// 10⁸ requests of burst at one per hour is within Validate (10⁸ × 3.6·10⁶
	// ms) but not within gcra's µs arithmetic (10⁸ × 3.6·10⁹ µs).
	l := Limit{Requests: 1, Burst: 100_000_000, Window: time.Hour}
	if err := l.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil: the case must be gcra's own", err)
	}
	if err := l.ValidateFor("token_bucket"); err != nil {
		t.Errorf("ValidateFor(token_bucket) = %v, want nil", err)
	}
	if err := l.ValidateFor("gcra"); !errors.Is(err, ErrInvalidLimit) {
		t.Errorf("ValidateFor(gcra) = %v, want ErrInvalidLimit", err)
	}
	if err := (Limit{Requests: 10, Burst: 1000, Window: time.Hour}).ValidateFor("gcra"); err != nil {
		t.Errorf("ValidateFor(gcra) of an ordinary limit = %v, want nil", err)
	}
}

func TestCheckGrant(t *testing.T) {
	window := Limit{Requests: 5, Window: time.Minute}
	bucket := Limit{Requests: 5, Window: time.Minute, Burst: 8}
	tests := []struct {
		name      string
		algorithm string
		limit     Limit
		n         int
		want      error
	}{
		{"one", "fixed_window", window, 1, nil},
		{"a whole quota", "sliding_window", window, 5, nil},
		{"a whole bucket", "token_bucket", bucket, 8, nil},
		{"more than the quota", "fixed_window", window, 6, ErrInvalidLimit},
		{"more than the bucket", "gcra", bucket, 9, ErrInvalidLimit},
		{"zero", "sliding_log", window, 0, ErrInvalidLimit},
		{"more than sliding_log writes at once", "sliding_log", Limit{Requests: 50_000, Window: time.Hour}, 10_001, ErrInvalidLimit},
		{"beyond exact arithmetic", "fixed_window", Limit{Requests: 1 << 30, Window: 366 * 24 * time.Hour / 100}, 1, ErrInvalidLimit},
		// A calendar's counts are never multiplied by its period in ms.
		{"a calendar's monthly millions", "calendar", calendarLimit(t, 5_000_000, Month), 5_000_000, nil},
		{"beyond a calendar's exact counts", "calendar", calendarLimit(t, 1<<52+1, Month), 1, ErrInvalidLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Lookup(tt.algorithm)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.CheckGrant(tt.limit, tt.n); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("CheckGrant(%+v, %d) = %v, want %v", tt.limit, tt.n, err, tt.want)
			}
		})
	}
	t.Run("an algorithm without a grant", func(t *testing.T) {
		s := Spec{Name: "in_flight"}
		if err := s.CheckGrant(window, 1); !errors.Is(err, ErrNoGrant) || !strings.Contains(err.Error(), "in_flight") {
			t.Errorf("CheckGrant without m.grant = %v, want ErrNoGrant naming the algorithm", err)
		}
	})
}
