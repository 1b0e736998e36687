package config

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestEverySettingIsDocumented: the settings Load reads are exactly the rows
// of docs/configuration.md's settings table and the variables of .env.example, so a
// new setting cannot land undocumented and a removed one cannot linger in
// the docs.
func TestEverySettingIsDocumented(t *testing.T) {
	want := Names()

	tests := []struct {
		file    string
		pattern string // the first group is a setting's name
	}{
		{"../docs/configuration.md", "(?m)^\\| `([A-Z][A-Z0-9_]+)` \\|"},
		{"../.env.example", `(?m)^#? ?([A-Z][A-Z0-9_]+)=`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			named := map[string]bool{}
			for _, m := range regexp.MustCompile(tt.pattern).FindAllStringSubmatch(string(b), -1) {
				named[m[1]] = true
			}
			if diff := cmp.Diff(want, sortedKeys(named)); diff != "" {
				t.Errorf("settings Load reads (-) vs settings %s names (+):\n%s", tt.file, diff)
			}
		})
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestDocumentedDefaults: where docs/configuration.md's table gives a
// setting's default as one value (`60s`) and where .env.example sets one
// (NAME=value, uncommented), setting the variable to it changes nothing:
// the documented default is the real one.
func TestDocumentedDefaults(t *testing.T) {
	base, err := Load(func(string) string { return "" }, rules)
	if err != nil {
		t.Fatalf("Load() with no settings: %v", err)
	}
	tests := []struct {
		file    string
		pattern string // groups: the name, its default
	}{
		{"../docs/configuration.md", "(?m)^\\| `([A-Z][A-Z0-9_]+)` \\| `([^`|]*)` \\|"},
		{"../.env.example", `(?m)^([A-Z][A-Z0-9_]+)=(.*)$`},
	}
	for _, tt := range tests {
		b, err := os.ReadFile(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range regexp.MustCompile(tt.pattern).FindAllStringSubmatch(string(b), -1) {
			name, value := m[1], m[2]
			if regexp.MustCompile(`^[A-Z][A-Z0-9_]+$`).MatchString(value) {
				continue // another setting's value (RATE_LIMIT_BURST: RATE_LIMIT_LIMIT)
			}
			got, err := Load(func(k string) string {
				if k == name {
					return value
				}
				return ""
			}, rules)
			if err != nil {
				t.Errorf("%s: %s=%q: %v", tt.file, name, value, err)
				continue
			}
			if diff := cmp.Diff(base, got); diff != "" {
				t.Errorf("%s gives %s=%q as the default, but it is not (-default +with it):\n%s", tt.file, name, value, diff)
			}
			n++
		}
		if n < 10 {
			t.Errorf("%s: %d defaults found, want the table's (the pattern is stale?)", tt.file, n)
		}
	}
}
