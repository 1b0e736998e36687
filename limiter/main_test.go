package limiter

import (
	"flag"
	"os"
	"testing"

	"tollgate/algorithms"
)

// TestMain lets more of this package's tests run at once (four) than go test's
// default of one per CPU (unless -parallel is given): most of them wait,
// on real Redis's clock for windows to pass or on goroutines parked in a
// flood, and on a 2-core machine one per CPU left the package the slowest
// of the run by minutes.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", "4")
	}
	os.Exit(m.Run())
}

// algo is the spec of the algorithm called name, as a policy resolves it
// when it is loaded; the zero Spec (refused as unknown) for no algorithm.
func algo(name string) algorithms.Spec {
	s, _ := algorithms.Lookup(name)
	return s
}
