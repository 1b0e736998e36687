package models

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/google/go-cmp/cmp"
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

func seed(t *testing.T, db *gorm.DB, users ...Credential) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := Seed(ctx, db, users); err != nil {
		t.Fatalf("Seed: %v", err)
	}
}

var wantContinents = []Continent{
	{1, "ASIA"}, {2, "AFRICA"}, {3, "NORTH AMERICA"}, {4, "SOUTH AMERICA"},
	{5, "ANTARCTICA"}, {6, "EUROPE"}, {7, "AUSTRALIA"},
}

func TestSeedIsIdempotent(t *testing.T) {
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			john := Credential{Name: "john_doe", Password: "EXAMPLE_PASSWORD"}
			seed(t, db, john)
			seed(t, db, john)
			got, err := NewStore(db).Continents(t.Context())
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
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
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
					if err := Seed(ctx, db, []Credential{{Name: "amy", Password: "pw"}}); err != nil {
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
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			seed(t, db, Credential{Name: "john_doe", Password: "old"})
			seed(t, db, Credential{Name: "john_doe", Password: "EXAMPLE_PASSWORD"}) // password changed
			store := NewStore(db)
			tests := []struct {
				name, user, password string
				want                 bool
			}{
				{"right password", "john_doe", "EXAMPLE_PASSWORD", true},
				{"old password", "john_doe", "old", false},
				{"wrong password", "john_doe", "nope", false},
				{"unknown user", "jane", "EXAMPLE_PASSWORD", false},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					got, err := store.CheckPassword(t.Context(), tt.user, tt.password)
					if err != nil || got != tt.want {
						t.Errorf("CheckPassword(%q, %q) = %v, %v; want %v, nil", tt.user, tt.password, got, err, tt.want)
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

func TestOpenUnknownDriver(t *testing.T) {
	if _, err := Open(t.Context(), slog.New(slog.NewTextHandler(io.Discard, nil)), "postgres", "x"); err == nil {
		t.Error("Open(postgres) = nil error, want an error")
	}
}
