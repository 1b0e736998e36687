package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestPrometheusRules runs the alerting rules' unit tests (promtool test
// rules) and checks that every series the rules read is one the service
// exports. It needs promtool (apt-get install prometheus): skipped without
// it, unless TEST_PROMTOOL is set (CI), where its absence fails.
func TestPrometheusRules(t *testing.T) {
	t.Parallel()
	const rules = "deploy/prometheus/tollgate-rules.yml"
	promtool, err := exec.LookPath("promtool")
	switch {
	case err != nil && os.Getenv("TEST_PROMTOOL") != "":
		t.Fatalf("TEST_PROMTOOL is set but promtool is not installed (apt-get install prometheus): %v", err)
	case err != nil:
		t.Skip("promtool not installed: the alerting rules' tests need it (apt-get install prometheus)")
	}
	for _, args := range [][]string{
		{"check", "rules", rules},
		{"test", "rules", "deploy/prometheus/tollgate-rules.test.yml"},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// Every tollgate_* series the rules name is registered by the service.
	b, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	var source strings.Builder
	for _, f := range []string{"main.go", "live/start.go", "middleware/metrics.go"} {
		s, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		source.Write(s)
	}
	for _, name := range regexp.MustCompile(`tollgate_[a-z_]+`).FindAllString(string(b), -1) {
		if !strings.Contains(source.String(), `Name: "`+name+`"`) {
			t.Errorf("%s reads %s, which the service does not export (no Name: %q in main.go, live/start.go, middleware/metrics.go)", rules, name, name)
		}
	}
}
