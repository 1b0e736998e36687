package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestUnknown(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{"a typo", []string{"RATE_LIMIT_ALGORITM=gcra"},
			[]string{"RATE_LIMIT_ALGORITM: unknown setting; did you mean RATE_LIMIT_ALGORITHM?"}},
		{"real settings and other variables", []string{"RATE_LIMIT_ALGORITHM=gcra", "PATH=/bin", "HOME=/root", "PORT=1", "TEST_REDIS_URL=x", "GOFLAGS="}, nil},
		{"each prefix", []string{"REDIS_URI=x", "DB_DRIVR=mysql", "AUTH_FAIL_LIMITS=3", "LOG_LEVELS=debug", "SEED_USER=a:b"}, []string{
			"AUTH_FAIL_LIMITS: unknown setting; did you mean AUTH_FAIL_LIMIT?",
			"DB_DRIVR: unknown setting; did you mean DB_DRIVER?",
			"LOG_LEVELS: unknown setting; did you mean LOG_LEVEL?",
			"REDIS_URI: unknown setting; did you mean REDIS_URL?",
			"SEED_USER: unknown setting; did you mean SEED_USERS?",
		}},
		{"named once", []string{"RATE_LIMIT_WINDOWS=1s", "RATE_LIMIT_WINDOWS=2s"},
			[]string{"RATE_LIMIT_WINDOWS: unknown setting; did you mean RATE_LIMIT_WINDOW?"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Unknown(tt.environ)); diff != "" {
				t.Errorf("Unknown(%q) (-want +got):\n%s", tt.environ, diff)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"RATE_LIMIT_ALGORITM", "RATE_LIMIT_ALGORITHM", 1},
		{"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
