package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestMain runs the tests with run and runCLI hashing passwords at
// bcrypt.MinCost (TestDefaultHashCost in models checks the service's own
// cost) and removes the binary built for them.
func TestMain(m *testing.M) {
	passwordCost = bcrypt.MinCost
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	binErr    error
)

// buildBinary builds the service as users run it, once per test run: the
// tests that start it share the binary.
func buildBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "tollgate-test-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "tollgate")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
