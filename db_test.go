package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"tollgate/models"
)

// mysqlDSN returns the DSN of this run's database on TEST_MYSQL_DSN's
// server parsed (mysqlRunDSN), or skips the test.
func mysqlDSN(t *testing.T) *mysql.Config {
	t.Helper()
	dsn := mysqlRunDSN(t)
	if dsn == "" {
		t.Skip("TEST_MYSQL_DSN not set")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("TEST_MYSQL_DSN: %v", err)
	}
	return cfg
}

// TestMySQLDSNWithoutParseTime: an operator's DSN without parseTime=true
// serves Basic requests (they were all 503: created_at did not scan).
func TestMySQLDSNWithoutParseTime(t *testing.T) {
	cfg := mysqlDSN(t)
	cfg.ParseTime = false
	env := baseEnv(t, sharedRedis(t))
	env["DB_DSN"] = cfg.FormatDSN()
	base := service(t, env)
	if r := get(t, base+"/continents", basic("john_doe", "EXAMPLE_PASSWORD")); r.status != http.StatusOK {
		t.Errorf("Basic request with DB_DSN %q: status %d, body %s; want 200", env["DB_DSN"], r.status, r.body)
	}
}

// TestMySQLMissingDatabase: a DSN naming a database the server does not
// have stops start-up at once, saying so and how to create it.
func TestMySQLMissingDatabase(t *testing.T) {
	cfg := mysqlDSN(t)
	cfg.DBName = "tollgate_missing_" + randomHex(4)
	env := baseEnv(t, sharedRedis(t))
	env["DB_DSN"] = cfg.FormatDSN()
	env["DB_CONNECT_TIMEOUT"] = "1h" // a retry would show as a timeout below
	env["PORT"] = "0"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	err := run(ctx, func(k string) string { return env[k] }, &syncBuffer{})
	if !errors.Is(err, models.ErrNoDatabase) {
		t.Fatalf("run() = %v, want an error wrapping models.ErrNoDatabase", err)
	}
	for _, want := range []string{cfg.DBName, "does not exist", "CREATE DATABASE", "CREATE USER", "GRANT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("run() = %q, want it to mention %q", err, want)
		}
	}
}
