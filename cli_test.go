package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"gorm.io/gorm"

	"tollgate/models"
)

// cli runs runCLI with env and stdin, and returns what it printed.
func cli(t *testing.T, env map[string]string, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := runCLI(ctx, args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out)
	return out.String(), err
}

// cliDatabases returns, per backend, settings naming a fresh database:
// SQLite always, and a database of its own on the MySQL server of
// TEST_MYSQL_DSN when set (dropped afterwards).
func cliDatabases(t *testing.T) map[string]func(t *testing.T) map[string]string {
	t.Helper()
	dbs := map[string]func(t *testing.T) map[string]string{
		"sqlite": func(t *testing.T) map[string]string {
			return map[string]string{"DB_DRIVER": "sqlite", "DB_DSN": filepath.Join(t.TempDir(), "cli.db")}
		},
	}
	if dsn := os.Getenv("TEST_MYSQL_DSN"); dsn != "" {
		dbs["mysql"] = func(t *testing.T) map[string]string {
			cfg, err := mysql.ParseDSN(dsn)
			if err != nil {
				t.Fatalf("TEST_MYSQL_DSN: %v", err)
			}
			admin := openStore(t, "mysql", dsn)
			name := "tollgate_cli_" + randomHex(4)
			if err := admin.Exec("CREATE DATABASE " + name).Error; err != nil {
				t.Fatalf("create database %s: %v", name, err)
			}
			t.Cleanup(func() { admin.Exec("DROP DATABASE " + name) })
			cfg.DBName = name
			return map[string]string{"DB_DRIVER": "mysql", "DB_DSN": cfg.FormatDSN()}
		}
	}
	return dbs
}

// openStore opens the database the CLI wrote, for the test to look inside.
func openStore(t *testing.T, driver, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := models.Open(ctx, slog.New(slog.DiscardHandler), driver, dsn)
	if err != nil {
		t.Fatalf("Open(%s): %v", driver, err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	})
	return db
}

var keyLine = regexp.MustCompile(`(?m)^id (\d+)\nkey (tg_[A-Za-z0-9_-]{43})$`)

// createKey runs "keys create name" and returns the key's id and the key.
func createKey(t *testing.T, env map[string]string, name string) (string, string) {
	t.Helper()
	out, err := cli(t, env, "", "keys", "create", name)
	if err != nil {
		t.Fatalf("keys create %s: %v", name, err)
	}
	m := keyLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("keys create %s printed %q, want an id line and a key line", name, out)
	}
	return m[1], m[2]
}

func TestCLIUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no command", nil},
		{"unknown command", []string{"serve"}},
		{"unknown subcommand", []string{"users", "delete", "amy"}},
		{"users add without a name", []string{"users", "add"}},
		{"users add with two names", []string{"users", "add", "amy", "bo"}},
		{"users add with a password flag", []string{"users", "add", "amy", "--password", "pw"}},
		{"users add with an empty tier", []string{"users", "add", "amy", "--tier", ""}},
		{"users add with an uppercase tier", []string{"users", "add", "amy", "--tier", "Pro"}},
		{"users add with a tier of two words", []string{"users", "add", "amy", "--tier", "a b"}},
		{"users add with a name holding ':'", []string{"users", "add", "b:ob"}},
		{"users add tier without value", []string{"users", "add", "amy", "--tier"}},
		{"keys create without a name", []string{"keys", "create"}},
		{"keys create with a flag", []string{"keys", "create", "--all"}},
		{"keys revoke without an id", []string{"keys", "revoke"}},
		{"keys revoke a word", []string{"keys", "revoke", "one"}},
		{"keys revoke zero", []string{"keys", "revoke", "0"}},
		{"keys revoke negative", []string{"keys", "revoke", "-1"}},
		{"keys revoke two ids", []string{"keys", "revoke", "1", "2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// No database settings: a usage error must come before any connection.
			env := map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "nobody@tcp(127.0.0.1:1)/x"}
			out, err := cli(t, env, "pw\n", tt.args...)
			if !errors.Is(err, errUsage) {
				t.Errorf("runCLI(%q) = %v, want an error wrapping errUsage", tt.args, err)
			}
			if out != "" {
				t.Errorf("runCLI(%q) printed %q, want nothing", tt.args, out)
			}
		})
	}
}

func TestCLIHelp(t *testing.T) {
	out, err := cli(t, nil, "", "help")
	if err != nil || !strings.Contains(out, "tollgate users add NAME") {
		t.Errorf("runCLI(help) = %q, %v; want the usage, nil", out, err)
	}
}

func TestCLIPasswordFromStdin(t *testing.T) {
	tests := []struct {
		name, stdin, want string
	}{
		{"line", "s3cret\n", "s3cret"},
		{"windows line", "s3cret\r\n", "s3cret"},
		{"no newline", "s3cret", "s3cret"},
		{"spaces kept", " s3 cret \n", " s3 cret "},
		{"only the first line", "s3cret\nmore\n", "s3cret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readPassword(strings.NewReader(tt.stdin))
			if err != nil || got != tt.want {
				t.Errorf("readPassword(%q) = %q, %v; want %q, nil", tt.stdin, got, err, tt.want)
			}
		})
	}
	for _, stdin := range []string{"", "\n", "\r\n"} {
		if _, err := readPassword(strings.NewReader(stdin)); err == nil {
			t.Errorf("readPassword(%q) = nil error, want one", stdin)
		}
	}
}

func TestCLI(t *testing.T) {
	for backend, newDB := range cliDatabases(t) {
		t.Run(backend, func(t *testing.T) {
			env := newDB(t)
			const secret = "Amy-S3cret pw"

			out, err := cli(t, env, secret+"\n", "users", "add", "amy", "--tier", "pro")
			if err != nil {
				t.Fatalf("users add amy: %v", err)
			}
			if strings.Contains(out, secret) {
				t.Errorf("users add printed the password: %q", out)
			}
			if _, err := cli(t, env, "bo-pw\n", "users", "add", "--tier=gold", "bo"); err != nil {
				t.Fatalf("users add --tier=gold bo: %v", err)
			}
			if _, err := cli(t, env, "cy-pw\n", "users", "add", "cy"); err != nil {
				t.Fatalf("users add cy: %v", err)
			}
			if _, err := cli(t, env, "other\n", "users", "add", "amy"); !errors.Is(err, models.ErrUserExists) {
				t.Errorf("users add amy again = %v, want an error wrapping ErrUserExists", err)
			}
			if _, err := cli(t, env, "", "users", "add", "dee"); err == nil {
				t.Errorf("users add dee with an empty stdin = nil error, want one")
			}

			id, key := createKey(t, env, "amy")
			_, otherKey := createKey(t, env, "amy")
			if key == otherKey {
				t.Errorf("two keys are both %q", key)
			}
			if _, err := cli(t, env, "", "keys", "create", "nobody"); !errors.Is(err, models.ErrNotFound) {
				t.Errorf("keys create nobody = %v, want an error wrapping ErrNotFound", err)
			}

			store := models.NewStore(openStore(t, env["DB_DRIVER"], env["DB_DSN"]))
			ctx := t.Context()
			users := []struct{ name, password, tier string }{{"amy", secret, "pro"}, {"bo", "bo-pw", "gold"}, {"cy", "cy-pw", "free"}}
			for _, u := range users {
				_, tier, ok, err := store.CheckPassword(ctx, u.name, u.password)
				if err != nil || !ok || tier != u.tier {
					t.Errorf("CheckPassword(%s) = %q, %v, %v; want %q, true, nil", u.name, tier, ok, err, u.tier)
				}
			}
			if name, tier, ok, err := store.CheckAPIKey(ctx, key); err != nil || !ok || name != "amy" || tier != "pro" {
				t.Errorf("CheckAPIKey(new key) = %q, %q, %v, %v; want amy, pro, true, nil", name, tier, ok, err)
			}

			out, err = cli(t, env, "", "keys", "revoke", id)
			if err != nil || !strings.Contains(out, "revoked key "+id) {
				t.Fatalf("keys revoke %s = %q, %v; want it revoked", id, out, err)
			}
			if _, _, ok, err := store.CheckAPIKey(ctx, key); err != nil || ok {
				t.Errorf("CheckAPIKey(revoked key) = %v, %v; want false, nil", ok, err)
			}
			if _, _, ok, err := store.CheckAPIKey(ctx, otherKey); err != nil || !ok {
				t.Errorf("CheckAPIKey(other key) = %v, %v; want true, nil", ok, err)
			}
			if _, err := cli(t, env, "", "keys", "revoke", "999999"); !errors.Is(err, models.ErrNotFound) {
				t.Errorf("keys revoke 999999 = %v, want an error wrapping ErrNotFound", err)
			}
		})
	}
}

func TestCLIDatabaseUnreachable(t *testing.T) {
	env := map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "nobody@tcp(127.0.0.1:1)/x?timeout=1s"}
	start := time.Now()
	_, err := cli(t, env, "", "keys", "create", "amy")
	if err == nil || errors.Is(err, errUsage) {
		t.Errorf("keys create on an unreachable database = %v, want a database error", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("keys create on an unreachable database took %v, want it bounded", took)
	}
}

// TestCLIKeyAgainstService creates a user and a key with the CLI on a
// running service's database, uses the key, revokes it, and sees it refused
// once the key cache's TTL has passed.
func TestCLIKeyAgainstService(t *testing.T) {
	env := baseEnv(t, sharedRedis(t))
	const ttl = 200 * time.Millisecond
	env["AUTH_KEY_CACHE_TTL"] = ttl.String()
	base := service(t, env)
	name := "cli_" + randomHex(4) // the MySQL database is shared with other tests

	if _, err := cli(t, env, "pw-"+name+"\n", "users", "add", name, "--tier", "pro"); err != nil {
		t.Fatalf("users add: %v", err)
	}
	id, key := createKey(t, env, name)
	header := http.Header{}
	header.Set("X-API-Key", key)

	r := get(t, base+"/continents", header)
	if r.status != http.StatusOK {
		t.Fatalf("GET /continents with the new key: status %d, want 200; body %s", r.status, r.body)
	}
	if got := r.header.Get("X-RateLimit-Remaining"); got == "" {
		t.Errorf("X-RateLimit-Remaining missing: the key's user was not limited")
	}
	if _, err := cli(t, env, "", "keys", "revoke", id); err != nil {
		t.Fatalf("keys revoke %s: %v", id, err)
	}
	time.Sleep(2 * ttl)
	r = get(t, base+"/continents", header)
	if r.status != http.StatusUnauthorized {
		t.Errorf("GET /continents with the revoked key after %v: status %d, want 401", 2*ttl, r.status)
	}
}
