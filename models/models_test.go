package models

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// databases returns, per backend, a maker of fresh databases: SQLite always,
// and a database of its own on the MySQL server of TEST_MYSQL_DSN when set.
// It gives the driver and DSN, for tests that connect more than once.
func databases(t *testing.T) map[string]func(t *testing.T) (driver, dsn string) {
	t.Helper()
	dbs := map[string]func(t *testing.T) (string, string){
		"sqlite": func(t *testing.T) (string, string) {
			return "sqlite", filepath.Join(t.TempDir(), "test.db")
		},
	}
	if dsn := os.Getenv("TEST_MYSQL_DSN"); dsn != "" {
		dbs["mysql"] = func(t *testing.T) (string, string) { return "mysql", ownMySQLDatabase(t, dsn) }
	}
	return dbs
}

func open(t *testing.T, driver, dsn string) *gorm.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := Open(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), driver, dsn)
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

// ownMySQLDatabase creates a database for this test beside the one dsn names,
// and drops it afterwards, so tests never share rows.
func ownMySQLDatabase(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("TEST_MYSQL_DSN: %v", err)
	}
	admin := open(t, "mysql", dsn)
	b := make([]byte, 4)
	rand.Read(b)
	name := "tollgate_test_" + hex.EncodeToString(b)
	if err := admin.Exec("CREATE DATABASE " + name).Error; err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() { admin.Exec("DROP DATABASE " + name) })
	cfg.DBName = name
	return cfg.FormatDSN()
}

func seed(t *testing.T, db *gorm.DB, users ...Account) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := SeedAtCost(ctx, db, users, testCost); err != nil {
		t.Fatalf("Seed: %v", err)
	}
}

// testCost is the bcrypt cost of the hashes tests make: a hash at
// bcrypt.DefaultCost takes about a second under the race detector.
// TestDefaultHashCost checks that the service's own calls keep the default.
const testCost = bcrypt.MinCost

// testStore is a Store on db hashing at testCost.
func testStore(t *testing.T, db *gorm.DB) *Store {
	t.Helper()
	s, err := NewStore(db, StoreOptions{HashCost: testCost})
	if err != nil {
		t.Fatalf("NewStore(HashCost %d): %v", testCost, err)
	}
	return s
}

// TestDefaultHashCost: Seed and NewStore's CreateUser (SetPassword uses the
// same cost field) hash at
// bcrypt.DefaultCost, and so does the hash an unknown name is checked
// against, whatever cost tests use elsewhere.
func TestDefaultHashCost(t *testing.T) {
	t.Parallel()
	db := open(t, "sqlite", filepath.Join(t.TempDir(), "test.db"))
	ctx := t.Context()
	if err := Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := Seed(ctx, db, []Account{{Name: "amy", Password: "pw"}}); err != nil {
		t.Fatalf("Seed: %v", err)
	}
	store, err := NewStore(db, StoreOptions{})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	if err := store.CreateUser(ctx, "bo", "pw", ""); err != nil {
		t.Fatalf("CreateUser(bo): %v", err)
	}
	cost := func(name string) int {
		t.Helper()
		var u User
		if err := db.Where("username = ?", name).Take(&u).Error; err != nil {
			t.Fatalf("find %s: %v", name, err)
		}
		c, err := bcrypt.Cost([]byte(u.PasswordHash))
		if err != nil {
			t.Fatalf("bcrypt.Cost(%s's hash): %v", name, err)
		}
		return c
	}
	for _, name := range []string{"amy", "bo"} {
		if got := cost(name); got != bcrypt.DefaultCost {
			t.Errorf("cost of %s's hash = %d, want bcrypt.DefaultCost %d", name, got, bcrypt.DefaultCost)
		}
	}
	if got, err := bcrypt.Cost([]byte(store.dummy)); err != nil || got != bcrypt.DefaultCost {
		t.Errorf("cost of the hash unknown names are checked against = %d, %v; want %d", got, err, bcrypt.DefaultCost)
	}
	cheap := testStore(t, db)
	if got, err := bcrypt.Cost([]byte(cheap.dummy)); err != nil || got != testCost {
		t.Errorf("NewStore(HashCost %d): unknown names are checked against cost %d, %v; want %d", testCost, got, err, testCost)
	}
}

var wantContinents = []Continent{
	{1, "ASIA"}, {2, "AFRICA"}, {3, "NORTH AMERICA"}, {4, "SOUTH AMERICA"},
	{5, "ANTARCTICA"}, {6, "EUROPE"}, {7, "AUSTRALIA"},
}

func TestSeedIsIdempotent(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			john := Account{Name: "john_doe", Password: "EXAMPLE_PASSWORD"}
			seed(t, db, john)
			seed(t, db, john)
			got, err := testStore(t, db).Continents(t.Context())
			if err != nil {
				t.Fatalf("Continents: %v", err)
			}
			if diff := cmp.Diff(wantContinents, got); diff != "" {
				t.Errorf("continents after seeding twice (-want +got):\n%s", diff)
			}
			var users int64
			db.Model(&User{}).Where("username = ?", "john_doe").Count(&users)
			if users != 1 {
				t.Errorf("john_doe rows after seeding twice = %d, want 1", users)
			}
		})
	}
}

func TestMigrateAndSeedConcurrently(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			// Several instances starting at once on an empty database, each
			// with connections of its own, all create the tables and seed.
			var wg sync.WaitGroup
			for range 4 {
				db := open(t, driver, dsn)
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					if err := Migrate(ctx, db); err != nil {
						t.Errorf("concurrent Migrate: %v", err)
						return
					}
					if err := SeedAtCost(ctx, db, []Account{{Name: "amy", Password: "pw"}}, testCost); err != nil {
						t.Errorf("concurrent Seed: %v", err)
					}
				})
			}
			wg.Wait()
			db := open(t, driver, dsn)
			var continents, users int64
			db.Model(&Continent{}).Count(&continents)
			db.Model(&User{}).Count(&users)
			if continents != 7 || users != 1 {
				t.Errorf("after concurrent seeding: %d continents, %d users; want 7, 1", continents, users)
			}
		})
	}
}

func TestCheckPassword(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			seed(t, db, Account{Name: "john_doe", Password: "old"})
			seed(t, db, Account{Name: "john_doe", Password: "EXAMPLE_PASSWORD"}) // password changed
			seed(t, db, Account{Name: "paula", Password: "pw", Tier: "pro"})
			store := testStore(t, db)
			tests := []struct {
				name, user, password string
				wantTier             string
				wantOK               bool
			}{
				{"right password", "john_doe", "EXAMPLE_PASSWORD", "free", true},
				{"old password", "john_doe", "old", "", false},
				{"wrong password", "john_doe", "nope", "", false},
				{"unknown user", "jane", "EXAMPLE_PASSWORD", "", false},
				{"seeded with a tier", "paula", "pw", "pro", true},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					_, tier, ok, err := store.CheckPassword(t.Context(), tt.user, tt.password)
					if err != nil || tier != tt.wantTier || ok != tt.wantOK {
						t.Errorf("CheckPassword(%q, %q) = %q, %v, %v; want %q, %v, nil", tt.user, tt.password, tier, ok, err, tt.wantTier, tt.wantOK)
					}
				})
			}
			var u User
			db.Where("username = ?", "john_doe").Take(&u)
			if u.PasswordHash == "" || u.PasswordHash == "EXAMPLE_PASSWORD" {
				t.Errorf("stored password hash = %q, want a bcrypt hash", u.PasswordHash)
			}
		})
	}
}

func TestSeedTiers(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			store := testStore(t, db)
			steps := []struct {
				seed     Account
				wantTier string
			}{
				{Account{Name: "amy", Password: "pw"}, "free"},
				{Account{Name: "amy", Password: "pw", Tier: "pro"}, "pro"},
				{Account{Name: "amy", Password: "pw"}, "pro"},                 // no tier: kept
				{Account{Name: "amy", Password: "pw2", Tier: "gold"}, "gold"}, // password and tier at once
			}
			for i, s := range steps {
				seed(t, db, s.seed)
				_, tier, ok, err := store.CheckPassword(t.Context(), s.seed.Name, s.seed.Password)
				if err != nil || !ok || tier != s.wantTier {
					t.Errorf("step %d: CheckPassword() = %q, %v, %v; want %q, true, nil", i, tier, ok, err, s.wantTier)
				}
			}
		})
	}
}

func TestTier(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			store := testStore(t, db)
			seed(t, db, Account{Name: "amy", Password: "pw", Tier: "pro"})
			if tier, err := store.Tier(t.Context(), "amy"); err != nil || tier != "pro" {
				t.Errorf("Tier(amy) = %q, %v; want pro, nil", tier, err)
			}
			for _, other := range []string{"Amy", "amy ", "bob"} { // byte for byte
				if _, err := store.Tier(t.Context(), other); !errors.Is(err, ErrNotFound) {
					t.Errorf("Tier(%q) error = %v, want ErrNotFound", other, err)
				}
			}
		})
	}
}

func TestCreateUser(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			seed(t, db)
			store := testStore(t, db)
			if err := store.CreateUser(t.Context(), "amy", "pw", "pro"); err != nil {
				t.Fatalf("CreateUser(amy) = %v, want nil", err)
			}
			if err := store.CreateUser(t.Context(), "bo", "pw", ""); err != nil {
				t.Fatalf("CreateUser(bo) = %v, want nil", err)
			}
			tests := []struct {
				name, user, password, tier string
				want                       error
			}{
				{"taken name", "amy", "other", "free", ErrUserExists},
				{"empty name", "", "pw", "free", ErrInvalid},
				{"colon in name", "a:b", "pw", "free", ErrInvalid},
				{"long name", strings.Repeat("a", 65), "pw", "free", ErrInvalid},
				{"newline in name", "amy\nbo", "pw", "free", ErrInvalid},
				{"tab in name", "amy\tbo", "pw", "free", ErrInvalid},
				{"C1 in name", "amy\u0085", "pw", "free", ErrInvalid},
				{"empty password", "cy", "", "free", ErrInvalid},
				{"long password", "cy", strings.Repeat("p", 73), "free", ErrInvalid},
				{"long tier", "cy", "pw", strings.Repeat("t", 33), ErrInvalid},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					err := store.CreateUser(t.Context(), tt.user, tt.password, tt.tier)
					if !errors.Is(err, tt.want) {
						t.Errorf("CreateUser(%q) = %v, want an error wrapping %v", tt.user, err, tt.want)
					}
					if err != nil && tt.password != "" && strings.Contains(err.Error(), tt.password) {
						t.Errorf("CreateUser(%q) error %q shows the password", tt.user, err)
					}
				})
			}
			for _, u := range []struct{ name, password, tier string }{{"amy", "pw", "pro"}, {"bo", "pw", "free"}} {
				_, tier, ok, err := store.CheckPassword(t.Context(), u.name, u.password)
				if err != nil || !ok || tier != u.tier {
					t.Errorf("CheckPassword(%q) = %q, %v, %v; want %q, true, nil", u.name, tier, ok, err, u.tier)
				}
			}
		})
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			seed(t, db, Account{Name: "amy", Password: "pw", Tier: "pro"}, Account{Name: "bo", Password: "pw"})
			store := testStore(t, db)
			ctx := t.Context()

			id1, key1, err := store.CreateAPIKey(ctx, "amy")
			if err != nil {
				t.Fatalf("CreateAPIKey(amy) = %v", err)
			}
			id2, key2, err := store.CreateAPIKey(ctx, "amy")
			if err != nil {
				t.Fatalf("CreateAPIKey(amy) again = %v", err)
			}
			_, key3, err := store.CreateAPIKey(ctx, "bo")
			if err != nil {
				t.Fatalf("CreateAPIKey(bo) = %v", err)
			}
			if id1 == id2 || key1 == key2 {
				t.Errorf("two keys share id %d or key", id1)
			}
			if !strings.HasPrefix(key1, KeyPrefix) || len(key1) != len(KeyPrefix)+43 {
				t.Errorf("key = %q, want %s and 43 base64url characters (32 bytes)", key1, KeyPrefix)
			}
			var rows []APIKey
			db.Order("id").Find(&rows)
			for i, key := range []string{key1, key2, key3} {
				sum := sha256.Sum256([]byte(key))
				if len(rows) != 3 || rows[i].Hash != hex.EncodeToString(sum[:]) {
					t.Fatalf("stored keys = %+v, want 3 rows holding the hex SHA-256 of each key", rows)
				}
			}
			for _, r := range rows {
				if !strings.HasPrefix(r.Prefix, KeyPrefix) || len(r.Prefix) >= len(key1)/2 {
					t.Errorf("stored prefix = %q, want a short start of the key", r.Prefix)
				}
			}

			if err := store.RevokeAPIKey(ctx, id1); err != nil {
				t.Fatalf("RevokeAPIKey(%d) = %v", id1, err)
			}
			if err := store.RevokeAPIKey(ctx, id1); err != nil {
				t.Errorf("RevokeAPIKey(%d) again = %v, want nil", id1, err)
			}
			if err := store.RevokeAPIKey(ctx, 999999); !errors.Is(err, ErrNotFound) {
				t.Errorf("RevokeAPIKey(999999) = %v, want an error wrapping ErrNotFound", err)
			}
			if _, _, err := store.CreateAPIKey(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
				t.Errorf("CreateAPIKey(nobody) = %v, want an error wrapping ErrNotFound", err)
			}

			tests := []struct {
				name, key, wantName, wantTier string
				wantOK                        bool
			}{
				{"revoked", key1, "", "", false},
				{"live", key2, "amy", "pro", true},
				{"another user's", key3, "bo", "free", true},
				{"unknown", KeyPrefix + strings.Repeat("A", 43), "", "", false},
				{"empty", "", "", "", false},
				{"the stored hash itself", rows[1].Hash, "", "", false},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					name, tier, ok, err := store.CheckAPIKey(ctx, tt.key)
					if err != nil || name != tt.wantName || tier != tt.wantTier || ok != tt.wantOK {
						t.Errorf("CheckAPIKey() = %q, %q, %v, %v; want %q, %q, %v, nil", name, tier, ok, err, tt.wantName, tt.wantTier, tt.wantOK)
					}
				})
			}
		})
	}
}

func TestStoreHonoursContext(t *testing.T) {
	t.Parallel()
	db := open(t, "sqlite", filepath.Join(t.TempDir(), "test.db"))
	seed(t, db, Account{Name: "amy", Password: "pw"})
	store := testStore(t, db)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, _, err := store.CheckPassword(ctx, "amy", "pw"); err == nil {
		t.Error("CheckPassword(cancelled ctx) = nil error, want one")
	}
	if _, _, _, err := store.CheckAPIKey(ctx, "tg_x"); err == nil {
		t.Error("CheckAPIKey(cancelled ctx) = nil error, want one")
	}
	if err := store.CreateUser(ctx, "bo", "pw", ""); err == nil {
		t.Error("CreateUser(cancelled ctx) = nil error, want one")
	}
	if _, _, err := store.CreateAPIKey(ctx, "amy"); err == nil {
		t.Error("CreateAPIKey(cancelled ctx) = nil error, want one")
	}
	if err := store.RevokeAPIKey(ctx, 1); err == nil {
		t.Error("RevokeAPIKey(cancelled ctx) = nil error, want one")
	}
}

func TestOpenUnknownDriver(t *testing.T) {
	if _, err := Open(t.Context(), slog.New(slog.NewTextHandler(io.Discard, nil)), "postgres", "x"); err == nil {
		t.Error("Open(postgres) = nil error, want an error")
	}
}

// TestOpenMySQLWithoutParseTime: a DSN without parseTime=true still reads
// DATETIME columns (users.created_at), so Basic logins work: Open sets it.
func TestOpenMySQLWithoutParseTime(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("TEST_MYSQL_DSN")
	if dsn == "" {
		t.Skip("TEST_MYSQL_DSN not set")
	}
	cfg, err := mysql.ParseDSN(ownMySQLDatabase(t, dsn))
	if err != nil {
		t.Fatalf("ParseDSN: %v", err)
	}
	cfg.ParseTime = false
	cfg.Params = map[string]string{"charset": "utf8mb4"} // another parameter, kept
	db := open(t, "mysql", cfg.FormatDSN())
	seed(t, db, Account{Name: "john_doe", Password: "EXAMPLE_PASSWORD"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := testStore(t, db)
	_, tier, ok, err := s.CheckPassword(ctx, "john_doe", "EXAMPLE_PASSWORD")
	if err != nil || !ok || tier != DefaultTier {
		t.Errorf("CheckPassword() = %q, %v, %v; want %q, true, nil", tier, ok, err, DefaultTier)
	}
	if _, _, err := s.CreateAPIKey(ctx, "john_doe"); err != nil {
		t.Errorf("CreateAPIKey() = %v, want nil", err)
	}
}

// TestOpenMissingMySQLDatabase: a DSN naming a database the server does not
// have says so, and how to create it.
func TestOpenMissingMySQLDatabase(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("TEST_MYSQL_DSN")
	if dsn == "" {
		t.Skip("TEST_MYSQL_DSN not set")
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("TEST_MYSQL_DSN: %v", err)
	}
	b := make([]byte, 4)
	rand.Read(b)
	cfg.DBName = "tollgate_missing_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = Open(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), "mysql", cfg.FormatDSN())
	if !errors.Is(err, ErrNoDatabase) {
		t.Fatalf("Open() = %v, want an error wrapping ErrNoDatabase", err)
	}
	for _, want := range []string{cfg.DBName, "does not exist", "CREATE DATABASE `" + cfg.DBName + "`", "CREATE USER", "GRANT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Open() = %q, want it to mention %q", err, want)
		}
	}
}
