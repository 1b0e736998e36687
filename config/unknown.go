package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Names returns the name of every setting Load reads, sorted.
func Names() []string {
	read := map[string]bool{}
	yes := func(string) bool { return true }
	anything := Rules{UserName: yes, Tier: yes, CIDR: netip.ParsePrefix,
		DefaultPolicy: func(string, int, int, time.Duration) error { return nil }}
	_, _ = Load(func(k string) string { read[k] = true; return "" }, anything) // the defaults: errors do not matter here
	names := make([]string, 0, len(read))
	for k := range read {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// Unknown returns a warning for each variable of environ ("NAME=value", as
// os.Environ gives them, .env's included once loaded) that starts as a
// setting does (RATE_LIMIT_, REDIS_, AUTH_, DB_, ...: the first word of a
// setting's name) but is no setting: a mistyped setting is otherwise
// silently its default. Each names the nearest setting.
func Unknown(environ []string) []string {
	names := Names()
	prefixes := map[string]bool{}
	for _, n := range names {
		if i := strings.IndexByte(n, '_'); i > 0 {
			prefixes[n[:i+1]] = true
		}
	}
	var warnings []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		i := strings.IndexByte(name, '_')
		if i <= 0 || !prefixes[name[:i+1]] || slices.Contains(names, name) || slices.Contains(warnings, name) {
			continue
		}
		warnings = append(warnings, name)
	}
	slices.Sort(warnings)
	for i, name := range warnings {
		warnings[i] = fmt.Sprintf("%s: unknown setting; did you mean %s?", name, nearest(name, names))
	}
	return warnings
}

// nearest is the name among names fewest single-character edits away from
// name (the first of those in order).
func nearest(name string, names []string) string {
	best, bestD := "", -1
	for _, n := range names {
		if d := editDistance(name, n); bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes (setting
// names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
