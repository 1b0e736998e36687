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
