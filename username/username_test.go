package username

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"plain", "john_doe", true},
		{"accents", "jöhn_doe", true},
		{"inner and trailing space", "john doe ", true},
		{"64 bytes", strings.Repeat("a", 64), true},
		{"empty", "", false},
		{"65 bytes", strings.Repeat("a", 65), false},
		{"colon", "a:b", false},
		{"invalid UTF-8", "a\xffb", false},
		{"NUL", "a\x00b", false},
		{"tab", "a\tb", false},
		{"newline", "john_doe\n", false},
		{"carriage return", "a\rb", false},
		{"escape", "a\x1b[31mb", false},
		{"DEL", "a\x7fb", false},
		{"C1 NEL", "a\u0085b", false},
		{"C1 CSI", "a\u009bb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Valid(tt.in); got != tt.want {
				t.Errorf("Valid(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
