package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"tollgate/config"
	"tollgate/models"
	"tollgate/policy"
	"tollgate/redistest"
	"tollgate/username"
)

// testEnv returns settings for the admin commands: the test's Redis (a key
// prefix of its own), a SQLite database of its own and two seeded users.
func testEnv(t *testing.T) map[string]string {
	t.Helper()
	r := redistest.New(t)
	return map[string]string{
		"REDIS_URL":        r.URL,
		"REDIS_KEY_PREFIX": r.Prefix,
		"SEED_USERS":       "john_doe:EXAMPLE_PASSWORD,jane:JANE_PASSWORD",
		"DB_DSN":           filepath.Join(t.TempDir(), "countries.db"),
	}
}

// testRoutes are the routes a policy may name (routes.Limited).
var testRoutes = []policy.Route{{Method: http.MethodGet, Path: "/continents"}, {Method: http.MethodGet, Path: "/continents/:id"}}

// env is the Env of the settings vars and the streams, with an opener of
// REDIS_URL's Redis and hashes at bcrypt.MinCost.
func env(vars map[string]string, stdin io.Reader, stdout, stderr io.Writer) Env {
	return Env{
		Getenv: func(k string) string { return vars[k] },
		Stdin:  stdin, Stdout: stdout, Stderr: stderr,
		OpenRedis: func(ctx context.Context, _ *slog.Logger, cfg config.Config, timeout time.Duration) (redis.UniversalClient, func(), error) {
			opt, err := redis.ParseURL(cfg.RedisURL)
			if err != nil {
				return nil, nil, err
			}
			opt.ReadTimeout, opt.WriteTimeout = timeout, timeout
			rdb := redis.NewClient(opt)
			return rdb, func() { rdb.Close() }, nil
		},
		NewLogger: func(w io.Writer, _ string, level slog.Level) *slog.Logger {
			return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
		},
		Routes:   testRoutes,
		HashCost: bcrypt.MinCost,
		Rules: config.Rules{UserName: username.Valid, UserNameRule: username.Rule, Tier: policy.ValidTier,
			CIDR: policy.ParseCIDR, DefaultPolicy: policy.CheckDefault},
	}
}

// cli runs Run with vars and stdin, and returns what it printed.
func cli(t *testing.T, vars map[string]string, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, args, env(vars, strings.NewReader(stdin), &out, io.Discard))
	return out.String(), err
}

// quota runs "tollgate quota args..." with vars and returns what it
// printed and logged.
func quota(t *testing.T, vars map[string]string, args ...string) (out, logs string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = Run(ctx, append([]string{"quota"}, args...), env(vars, strings.NewReader(""), &stdout, &stderr))
	return stdout.String(), stderr.String(), err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// writeAtomically replaces the file at path with text.
func writeAtomically(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatalf("write %s: %v", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("rename %s: %v", tmp, err)
	}
}

var keyLine = regexp.MustCompile(`(?m)^id (\d+)\nkey (tg_[A-Za-z0-9_-]{43})$`)

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

// cliStore is a Store on the database of env, hashing at bcrypt.MinCost as
// Run does in tests.
func cliStore(t *testing.T, env map[string]string) *models.Store {
	t.Helper()
	store, err := models.NewStore(openStore(t, env["DB_DRIVER"], env["DB_DSN"]), models.StoreOptions{HashCost: bcrypt.MinCost})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return store
}

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
		{"unknown subcommand", []string{"users", "remove", "amy"}},
		{"users add with a tab in the name", []string{"users", "add", "a\tb"}},
		{"users add with a newline in the name", []string{"users", "add", "amy\n"}},
		{"users list with a name", []string{"users", "list", "amy"}},
		{"users set-tier without a tier", []string{"users", "set-tier", "amy"}},
		{"users set-tier with an uppercase tier", []string{"users", "set-tier", "amy", "Pro"}},
		{"users set-tier with a control character", []string{"users", "set-tier", "amy\x7f", "pro"}},
		{"users passwd without a name", []string{"users", "passwd"}},
		{"users passwd with two names", []string{"users", "passwd", "amy", "bo"}},
		{"users delete without a name", []string{"users", "delete"}},
		{"users delete a flag", []string{"users", "delete", "--all"}},
		{"users delete with a C1 character", []string{"users", "delete", "amy\u0085"}},
		{"keys list with two names", []string{"keys", "list", "amy", "bo"}},
		{"keys list with a flag", []string{"keys", "list", "--all"}},
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
		{"healthcheck with an argument", []string{"healthcheck", "now"}},
		{"overrides set without a subject", []string{"overrides", "set", "--policy", "tier", "--limit", "5"}},
		{"overrides set without a policy", []string{"overrides", "set", "amy", "--limit", "5"}},
		{"overrides set without a limit", []string{"overrides", "set", "amy", "--policy", "tier"}},
		{"overrides set with limit 0", []string{"overrides", "set", "amy", "--policy", "tier", "--limit", "0"}},
		{"overrides set with a bad policy name", []string{"overrides", "set", "amy", "--policy", "a b", "--limit", "5"}},
		{"overrides set with a window of words", []string{"overrides", "set", "amy", "--policy", "tier", "--limit", "5", "--window", "1 minute"}},
		{"overrides set with a window over 366 days", []string{"overrides", "set", "amy", "--policy", "tier", "--limit", "5", "--window", "9000h"}},
		{"overrides set with a negative expiry", []string{"overrides", "set", "amy", "--policy", "tier", "--limit", "5", "--expires", "-1h"}},
		{"overrides set with two subjects", []string{"overrides", "set", "amy", "bo", "--policy", "tier", "--limit", "5"}},
		{"overrides set with host bits", []string{"overrides", "set", "ip:10.1.2.3/8", "--policy", "tier", "--limit", "5"}},
		{"overrides set with a zone", []string{"overrides", "set", "ip:fe80::1%eth0", "--policy", "tier", "--limit", "5"}},
		{"overrides set with a bad address", []string{"overrides", "set", "ip:10.0.0", "--policy", "tier", "--limit", "5"}},
		{"overrides set with a short mapped prefix", []string{"overrides", "set", "ip:::ffff:0:0/80", "--policy", "tier", "--limit", "5"}},
		{"overrides set with a control character", []string{"overrides", "set", "am\ty", "--policy", "tier", "--limit", "5"}},
		{"overrides list with an argument", []string{"overrides", "list", "amy"}},
		{"overrides delete a word", []string{"overrides", "delete", "one"}},
		{"overrides delete zero", []string{"overrides", "delete", "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// No database settings: a usage error must come before any connection.
			env := map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "nobody@tcp(127.0.0.1:1)/x"}
			out, err := cli(t, env, "pw\n", tt.args...)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("Run(%q) = %v, want an error wrapping ErrUsage", tt.args, err)
			}
			if out != "" {
				t.Errorf("Run(%q) printed %q, want nothing", tt.args, out)
			}
		})
	}
}

// TestCLIBadPasswordIsUsage: an empty password or one over bcrypt's 72
// bytes is a usage error (exit code 2), found before any connection.
func TestCLIBadPasswordIsUsage(t *testing.T) {
	tests := []struct {
		name, stdin string
		args        []string
	}{
		{"users add, empty", "", []string{"users", "add", "amy"}},
		{"users add, empty line", "\n", []string{"users", "add", "amy"}},
		{"users add, 73 bytes", strings.Repeat("p", 73) + "\n", []string{"users", "add", "amy"}},
		{"users passwd, empty", "", []string{"users", "passwd", "amy"}},
		{"users passwd, 73 bytes", strings.Repeat("p", 73), []string{"users", "passwd", "amy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "nobody@tcp(127.0.0.1:1)/x"}
			out, err := cli(t, env, tt.stdin, tt.args...)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("Run(%q) = %v, want an error wrapping ErrUsage", tt.args, err)
			}
			if out != "" {
				t.Errorf("Run(%q) printed %q, want nothing", tt.args, out)
			}
		})
	}
}

func TestCLIHelp(t *testing.T) {
	out, err := cli(t, nil, "", "help")
	if err != nil || !strings.Contains(out, "tollgate users add NAME") || !strings.Contains(out, "tollgate keys list [NAME]") {
		t.Errorf("Run(help) = %q, %v; want the usage, nil", out, err)
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
	t.Parallel()
	for backend, newDB := range cliDatabases(t) {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
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

			store := cliStore(t, env)
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

// TestCLISeesSeededUsers: on a fresh database the CLI seeds SEED_USERS as
// the server does, so a seeded user can get a key before any server ran.
func TestCLISeesSeededUsers(t *testing.T) {
	t.Parallel()
	for backend, newDB := range cliDatabases(t) {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			env := newDB(t)
			env["SEED_USERS"] = "john_doe:EXAMPLE_PASSWORD:pro"
			_, key := createKey(t, env, "john_doe")
			store := cliStore(t, env)
			if name, tier, ok, err := store.CheckAPIKey(t.Context(), key); err != nil || !ok || name != "john_doe" || tier != "pro" {
				t.Errorf("CheckAPIKey(john_doe's new key) = %q, %q, %v, %v; want john_doe, pro, true, nil", name, tier, ok, err)
			}
		})
	}
}

// TestCLIManagesUsersAndKeys runs the commands an operator needs to run the
// service without SQL: list, set-tier, passwd and delete users; list keys.
func TestCLIManagesUsersAndKeys(t *testing.T) {
	t.Parallel()
	for backend, newDB := range cliDatabases(t) {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			env := newDB(t)
			env["SEED_USERS"] = "john_doe:EXAMPLE_PASSWORD"
			store := cliStore(t, env)
			ctx := t.Context()
			run := func(stdin string, args ...string) string {
				t.Helper()
				out, err := cli(t, env, stdin, args...)
				if err != nil {
					t.Fatalf("%s: %v", strings.Join(args, " "), err)
				}
				return out
			}
			run("amy-pw\n", "users", "add", "amy")
			run("bo-pw\n", "users", "add", "bo", "--tier", "pro")

			out := run("", "users", "list")
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAME") {
				t.Fatalf("users list printed %q, want a header and 3 users", out)
			}
			for i, want := range [][]string{{"amy", "free"}, {"bo", "pro"}, {"john_doe", "free"}} {
				if f := strings.Fields(lines[i+1]); len(f) != 3 || f[0] != want[0] || f[1] != want[1] {
					t.Errorf("users list line %d = %q, want %s %s and a date", i+1, lines[i+1], want[0], want[1])
				}
			}

			run("", "users", "set-tier", "amy", "gold")
			if _, tier, ok, err := store.CheckPassword(ctx, "amy", "amy-pw"); err != nil || !ok || tier != "gold" {
				t.Errorf("after set-tier, CheckPassword(amy) = %q, %v, %v; want gold, true, nil", tier, ok, err)
			}
			run("amy-new-pw\n", "users", "passwd", "amy")
			if _, _, ok, err := store.CheckPassword(ctx, "amy", "amy-new-pw"); err != nil || !ok {
				t.Errorf("after passwd, CheckPassword(amy, new) = %v, %v; want true, nil", ok, err)
			}
			if _, _, ok, err := store.CheckPassword(ctx, "amy", "amy-pw"); err != nil || ok {
				t.Errorf("after passwd, CheckPassword(amy, old) = %v, %v; want false, nil", ok, err)
			}

			amyID, amyKey := createKey(t, env, "amy")
			_, amyKey2 := createKey(t, env, "amy")
			boID, boKey := createKey(t, env, "bo")
			run("", "keys", "revoke", boID)

			out = run("", "keys", "list", "amy")
			lines = strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") {
				t.Fatalf("keys list amy printed %q, want a header and 2 keys", out)
			}
			if f := strings.Fields(lines[1]); len(f) != 5 || f[0] != amyID || f[1] != "amy" || !strings.HasPrefix(amyKey, f[2]) || f[4] != "-" {
				t.Errorf("keys list amy line 1 = %q, want %s amy <start of the key> <created> -", lines[1], amyID)
			}
			out = run("", "keys", "list")
			if lines = strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 {
				t.Fatalf("keys list printed %q, want a header and 3 keys", out)
			}
			if f := strings.Fields(lines[3]); len(f) != 5 || f[0] != boID || f[1] != "bo" || f[4] == "-" {
				t.Errorf("keys list line 3 = %q, want bo's key %s revoked at a time", lines[3], boID)
			}

			out = run("", "users", "delete", "amy")
			if !strings.Contains(out, "deleted user amy") {
				t.Errorf("users delete amy printed %q", out)
			}
			for _, key := range []string{amyKey, amyKey2} {
				if _, _, ok, err := store.CheckAPIKey(ctx, key); err != nil || ok {
					t.Errorf("CheckAPIKey(deleted user's key) = %v, %v; want false, nil", ok, err)
				}
			}
			if _, _, ok, _ := store.CheckPassword(ctx, "amy", "amy-new-pw"); ok {
				t.Error("CheckPassword(deleted amy) = ok, want not")
			}
			if _, _, ok, err := store.CheckAPIKey(ctx, boKey); err != nil || ok {
				t.Errorf("CheckAPIKey(bo's revoked key) = %v, %v; want false, nil", ok, err)
			}
			out = run("", "keys", "list")
			for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:3] {
				if f := strings.Fields(line); len(f) != 5 || f[4] == "-" {
					t.Errorf("keys list after deleting amy: %q, want the key revoked", line)
				}
			}
			if out := run("", "users", "list"); strings.Contains(out, "amy") {
				t.Errorf("users list after deleting amy printed %q", out)
			}
			out = run("", "users", "delete", "john_doe")
			if !strings.Contains(out, "SEED_USERS") {
				t.Errorf("users delete john_doe printed %q, want a note that SEED_USERS seeds it again", out)
			}

			for _, args := range [][]string{
				{"users", "set-tier", "nobody", "pro"},
				{"users", "delete", "nobody"},
				{"users", "delete", "amy"},
				{"keys", "list", "nobody"},
				{"users", "set-tier", "BO", "pro"}, // names match byte for byte
			} {
				if _, err := cli(t, env, "", args...); !errors.Is(err, models.ErrNotFound) {
					t.Errorf("%s = %v, want an error wrapping ErrNotFound", strings.Join(args, " "), err)
				}
			}
			if _, err := cli(t, env, "pw\n", "users", "passwd", "nobody"); !errors.Is(err, models.ErrNotFound) {
				t.Errorf("users passwd nobody = %v, want an error wrapping ErrNotFound", err)
			}
		})
	}
}

func TestCLIDatabaseUnreachable(t *testing.T) {
	env := map[string]string{"DB_DRIVER": "mysql", "DB_DSN": "nobody@tcp(127.0.0.1:1)/x?timeout=1s"}
	start := time.Now()
	_, err := cli(t, env, "", "keys", "create", "amy")
	if err == nil || errors.Is(err, ErrUsage) {
		t.Errorf("keys create on an unreachable database = %v, want a database error", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("keys create on an unreachable database took %v, want it bounded", took)
	}
}

// TestCLIHealthcheck: "tollgate healthcheck" (a container's HEALTHCHECK)
// succeeds while the server on PORT answers /healthz with 200, and fails
// (not a usage error) when it answers otherwise or nothing listens there.
func TestCLIHealthcheck(t *testing.T) {
	t.Parallel()
	status := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			w.WriteHeader(code)
		}))
		t.Cleanup(srv.Close)
		return strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)
	}
	tests := []struct {
		name    string
		port    string
		healthy bool
	}{
		{"200", status(http.StatusOK), true},
		{"503", status(http.StatusServiceUnavailable), false},
		{"nothing listening", "1", false}, // tcpmux: nobody serves it
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// No database: the check must not need one.
			env := map[string]string{"PORT": tt.port, "DB_DRIVER": "mysql", "DB_DSN": "nobody@tcp(127.0.0.1:1)/x"}
			out, err := cli(t, env, "", "healthcheck")
			if tt.healthy && (err != nil || !strings.Contains(out, "200")) {
				t.Errorf("healthcheck on a healthy server = %v, printed %q; want nil and a line saying 200", err, out)
			}
			if !tt.healthy && (err == nil || errors.Is(err, ErrUsage)) {
				t.Errorf("healthcheck = %v, want an error (not a usage error)", err)
			}
		})
	}
}

// TestOverrideSubjectsAreCanonical: an address override is stored in the one
// form client addresses are compared in, however it was written.
func TestOverrideSubjectsAreCanonical(t *testing.T) {
	tests := []struct{ arg, want string }{
		{"amy", "user:amy"},
		{"ip:10.0.0.0/8", "ip:10.0.0.0/8"},
		{"ip:1.2.3.4", "ip:1.2.3.4/32"},
		{"ip:::ffff:1.2.3.0/120", "ip:1.2.3.0/24"},
		{"ip:::FFFF:1.2.3.4", "ip:1.2.3.4/32"},
		{"ip:2001:DB8:0:0::/64", "ip:2001:db8::/64"},
		{"ip:2001:db8::1", "ip:2001:db8::1/128"},
	}
	for _, tt := range tests {
		cmd, err := parseCommand([]string{"overrides", "set", tt.arg, "--policy", "tier", "--limit", "5"})
		if err != nil {
			t.Errorf("parseCommand(overrides set %q) = %v", tt.arg, err)
			continue
		}
		if got := cmd.override.Subject(); got != tt.want {
			t.Errorf("overrides set %q: subject %q, want %q", tt.arg, got, tt.want)
		}
	}
}

// mustQuota is quota, failing the test on an error.
func mustQuota(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, _, err := quota(t, env, args...)
	if err != nil {
		t.Fatalf("quota %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// quotaRow returns the fields POLICY, ALGORITHM, LIMIT, WINDOW, USED,
// REMAINING of the row of the named limit in a quota printout.
func quotaRow(t *testing.T, out, name string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 7 && f[0] == name {
			return f[:6]
		}
	}
	t.Fatalf("no row for %s in:\n%s", name, out)
	return nil
}

func TestQuotaUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"show without WHO", []string{"show"}},
		{"show with two", []string{"show", "amy", "bo"}},
		{"show with a policy", []string{"show", "amy", "--policy", "p"}},
		{"show a bad address", []string{"show", "ip:1.2.3"}},
		{"show an address with a prefix", []string{"show", "ip:2001:db8::/64"}},
		{"show an empty address", []string{"show", "ip:"}},
		{"show a flag", []string{"show", "--all"}},
		{"reset without WHO", []string{"reset", "--policy", "p"}},
		{"reset with an unknown flag", []string{"reset", "amy", "--all"}},
		{"grant without a policy", []string{"grant", "amy", "1"}},
		{"grant without N", []string{"grant", "amy", "--policy", "p"}},
		{"grant zero", []string{"grant", "amy", "0", "--policy", "p"}},
		{"grant a negative", []string{"grant", "amy", "-1", "--policy", "p"}},
		{"grant a fraction", []string{"grant", "amy", "1.5", "--policy", "p"}},
		{"grant a word", []string{"grant", "amy", "one", "--policy", "p"}},
		{"grant to a name with a control character", []string{"grant", "amy\n", "1", "--policy", "p"}},
		{"quota alone", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := quota(t, map[string]string{}, tt.args...)
			if !errors.Is(err, ErrUsage) {
				t.Errorf("quota %q = %v, want an error wrapping ErrUsage", tt.args, err)
			}
			if out != "" {
				t.Errorf("quota %q printed %q, want nothing", tt.args, out)
			}
		})
	}
}

// TestQuotaSettings: settings and names the command cannot work with.
func TestQuotaSettings(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	if _, _, err := quota(t, env, "show", "nobody"); err == nil || errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), `no user "nobody"`) {
		t.Errorf("quota show nobody = %v, want a failure naming the unknown user", err)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "1", "--policy", "nope"); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "fixed_window") {
		t.Errorf("quota grant --policy nope = %v, want a usage error listing the policies", err)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "6", "--policy", "fixed_window"); !errors.Is(err, ErrUsage) {
		t.Errorf("quota grant of 6 under a limit of 5 = %v, want a usage error", err)
	}
	embedded := map[string]string{"DB_DSN": env["DB_DSN"]}
	if _, _, err := quota(t, embedded, "show", "ip:1.2.3.4"); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Errorf("quota show without REDIS_URL = %v, want a settings error naming REDIS_URL", err)
	}
	env["RATE_LIMIT_ENABLED"] = "false"
	if _, _, err := quota(t, env, "show", "ip:1.2.3.4"); err == nil || !strings.Contains(err.Error(), "RATE_LIMIT_ENABLED") {
		t.Errorf("quota show with rate limiting off = %v, want an error saying so", err)
	}
}

// TestQuotaSeesOverrides: an override in force replaces the policy's limit
// for its user, in show and in a grant, as on the servers.
func TestQuotaSeesOverrides(t *testing.T) {
	t.Parallel()
	env := testEnv(t)
	// A database of its own: the run's MySQL database is shared by the
	// services of other tests, whose john_doe must keep the policy's limit.
	env["DB_DRIVER"], env["DB_DSN"] = "sqlite", filepath.Join(t.TempDir(), "overrides.db")
	if out, err := cli(t, env, "", "overrides", "set", "john_doe", "--policy", "fixed_window", "--limit", "2"); err != nil {
		t.Fatalf("overrides set: %v\n%s", err, out)
	}
	out := mustQuota(t, env, "grant", "john_doe", "2", "--policy", "fixed_window")
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "fixed_window (override ") {
			row = strings.Fields(line)
		}
	}
	// fixed_window (override N) ALGORITHM LIMIT WINDOW USED REMAINING RESET
	if len(row) < 8 || row[4] != "2" || row[7] != "4" {
		t.Errorf("grant of 2 under an override of 2: row %q, want limit 2 and remaining 4\n%s", row, out)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "3", "--policy", "fixed_window"); !errors.Is(err, ErrUsage) {
		t.Errorf("grant of 3 under an override of 2 = %v, want a usage error (at most one quota)", err)
	}
	if got := quotaRow(t, mustQuota(t, env, "show", "jane"), "fixed_window")[2]; got != "5" {
		t.Errorf("show jane: limit %s, want the policy's 5 (the override is john_doe's)", got)
	}
}

// TestQuotaGrantSkipsHeldLimits: a grant under a policy mixing a
// concurrency limit (places held while requests run: nothing to grant) and
// a calendar quota, as the example file's heavy, grants the calendar quota
// and says it skipped the other; a policy of held limits alone is refused.
func TestQuotaGrantSkipsHeldLimits(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomically(t, path, `policies:
  - name: heavy
    key: user_or_ip
    limits:
      - {algorithm: concurrency, limit: 4, timeout: 30s}
      - {algorithm: calendar, limit: 100, period: month, timezone: Europe/Berlin}
  - name: places
    key: user_or_ip
    limits:
      - {algorithm: concurrency, limit: 4, timeout: 30s}
`)
	env := testEnv(t)
	env["RATE_LIMIT_POLICY_FILE"] = path
	env["DB_DRIVER"], env["DB_DSN"] = "sqlite", filepath.Join(t.TempDir(), "quota.db")
	out, _, err := quota(t, env, "grant", "john_doe", "5", "--policy", "heavy")
	if err != nil {
		t.Fatalf("grant 5 under heavy = %v, want the calendar quota granted\n%s", err, out)
	}
	if got := quotaRow(t, out, "heavy-2"); got[1] != "calendar" || got[5] != "105" {
		t.Errorf("grant 5 under heavy: calendar row %q, want remaining 105\n%s", got, out)
	}
	if !strings.Contains(out, "note: heavy-1 (concurrency) not granted") {
		t.Errorf("grant under heavy does not say it skipped the concurrency limit:\n%s", out)
	}
	if _, _, err := quota(t, env, "grant", "john_doe", "5", "--policy", "places"); !errors.Is(err, ErrUsage) {
		t.Errorf("grant under a policy of concurrency limits alone = %v, want a usage error", err)
	}
	for _, n := range []string{"-5", "0", "1.5"} {
		_, _, err := quota(t, env, "grant", "john_doe", n, "--policy", "heavy")
		if !errors.Is(err, ErrUsage) || !strings.Contains(fmt.Sprint(err), "N must be a positive integer") {
			t.Errorf("grant %s = %v, want a usage error saying N must be a positive integer", n, err)
		}
	}
}

// TestOverrideSetChecksThePolicy: overrides set refuses (a usage error,
// exit 2, stored nowhere) an override the servers would leave out, saying
// why: a limit below the policy's cost, a limit beyond its algorithm's
// bound. One the policy can use is stored; one of a policy in no file is
// stored with a note.
func TestOverrideSetChecksThePolicy(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policies.yaml")
	writeAtomically(t, path, `policies:
  - name: tb
    key: user
    cost: 3
    limits: [{algorithm: token_bucket, limit: 10, window: 1m}]
  - name: cal
    key: user
    limits: [{algorithm: calendar, limit: 100, period: month}]
`)
	env := map[string]string{
		"DB_DRIVER": "sqlite", "DB_DSN": filepath.Join(t.TempDir(), "overrides.db"),
		"SEED_USERS": "john_doe:EXAMPLE_PASSWORD", "RATE_LIMIT_POLICY_FILE": path,
	}
	tests := []struct {
		name string
		args []string
		want string // in the error; "" for none
	}{
		{"a limit below the cost", []string{"--policy", "tb", "--limit", "2"}, "cost 3"},
		{"a limit beyond the bound", []string{"--policy", "tb", "--limit", "3000000000", "--window", "1h"}, "beyond exact arithmetic"},
		{"a limit the policy can use", []string{"--policy", "tb", "--limit", "3"}, ""},
		{"a policy in no file", []string{"--policy", "nope", "--limit", "2"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := cli(t, env, "", append([]string{"overrides", "set", "john_doe"}, tt.args...)...)
			if tt.want == "" {
				if err != nil {
					t.Errorf("overrides set %q = %v, want success\n%s", tt.args, err, out)
				}
				return
			}
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("overrides set %q = %v, want a usage error naming %q\n%s", tt.args, err, tt.want, out)
			}
		})
	}
	list, err := cli(t, env, "", "overrides", "list")
	if err != nil {
		t.Fatalf("overrides list: %v", err)
	}
	if got := strings.Count(list, "user:john_doe"); got != 2 {
		t.Errorf("overrides list: %d overrides, want the 2 accepted\n%s", got, list)
	}
}
