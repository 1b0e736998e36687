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
