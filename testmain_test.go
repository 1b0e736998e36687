package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"golang.org/x/crypto/bcrypt"

	"tollgate/models"
)

// TestMain runs the tests with run and admin.Run hashing passwords at
// bcrypt.MinCost (TestDefaultHashCost in models checks the service's own
// cost) and removes the binary built for them.
func TestMain(m *testing.M) {
	passwordCost = bcrypt.MinCost
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	if runDB.drop != nil {
		runDB.drop()
	}
	os.Exit(code)
}

// runDB is the MySQL database of this test run (see mysqlRunDSN).
var runDB struct {
	once sync.Once
	dsn  string
	err  error
	drop func()
}

// mysqlRunDSN returns the DSN of a database of this test run's own on the
// MySQL server of TEST_MYSQL_DSN (created on first use, dropped after the
// run), or "" when TEST_MYSQL_DSN is not set. The tests' services share it
// as they shared TEST_MYSQL_DSN's database before, but its rows are this
// run's: the seeded users' hashes are made at passwordCost, not found at
// whatever cost an earlier run or another checkout left them (comparing one
// at bcrypt.DefaultCost took over a second per seeded user per start).
func mysqlRunDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("TEST_MYSQL_DSN")
	if dsn == "" {
		return ""
	}
	runDB.once.Do(func() {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			runDB.err = fmt.Errorf("TEST_MYSQL_DSN: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admin, err := models.Open(ctx, slog.New(slog.DiscardHandler), "mysql", dsn)
		if err != nil {
			runDB.err = err
			return
		}
		name := "tollgate_run_" + randomHex(4)
		if err := admin.WithContext(ctx).Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4").Error; err != nil {
			runDB.err = fmt.Errorf("create database %s: %w", name, err)
			return
		}
		runDB.drop = func() {
			admin.Exec("DROP DATABASE " + name)
			if sqlDB, err := admin.DB(); err == nil {
				sqlDB.Close()
			}
		}
		cfg.DBName = name
		runDB.dsn = cfg.FormatDSN()
	})
	if runDB.err != nil {
		t.Fatal(runDB.err)
	}
	return runDB.dsn
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
