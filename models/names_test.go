package models

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"
)

// TestUserNamesMatchByteForByte: a name that differs from a user's in case,
// accents or trailing spaces is another name, on every database (MySQL's
// default collation matched all of these to john_doe).
func TestUserNamesMatchByteForByte(t *testing.T) {
	t.Parallel()
	for backend, newDB := range databases(t) {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			seed(t, db, Account{Name: "john_doe", Password: "EXAMPLE_PASSWORD", Tier: "pro"})
			store := testStore(t, db)
			ctx := t.Context()
			for _, name := range []string{"JOHN_DOE", "John_Doe", "john_doe ", " john_doe", "jöhn_doe", "john_doé"} {
				if stored, tier, ok, err := store.CheckPassword(ctx, name, "EXAMPLE_PASSWORD"); err != nil || ok {
					t.Errorf("CheckPassword(%q, right password) = %q, %q, %v, %v; want not ok", name, stored, tier, ok, err)
				}
				if _, _, err := store.CreateAPIKey(ctx, name); !errors.Is(err, ErrNotFound) {
					t.Errorf("CreateAPIKey(%q) = %v, want an error wrapping ErrNotFound", name, err)
				}
			}
			if stored, tier, ok, err := store.CheckPassword(ctx, "john_doe", "EXAMPLE_PASSWORD"); err != nil || !ok || stored != "john_doe" || tier != "pro" {
				t.Errorf("CheckPassword(john_doe) = %q, %q, %v, %v; want john_doe, pro, true, nil", stored, tier, ok, err)
			}
			// Another name, so another user: the unique index compares bytes too.
			for _, name := range []string{"John_Doe", "john_doe "} {
				if err := store.CreateUser(ctx, name, "other-"+name, ""); err != nil {
					t.Fatalf("CreateUser(%q) beside john_doe = %v, want nil", name, err)
				}
				if stored, _, ok, err := store.CheckPassword(ctx, name, "other-"+name); err != nil || !ok || stored != name {
					t.Errorf("CheckPassword(%q, its password) = %q, %v, %v; want %q, true, nil", name, stored, ok, err, name)
				}
			}
			if _, _, ok, _ := store.CheckPassword(ctx, "john_doe", "other-John_Doe"); ok {
				t.Error("CheckPassword(john_doe, John_Doe's password) = ok, want not ok")
			}
		})
	}
}

// TestMigrateMakesUserNamesExact: a users table made by an earlier version,
// with the database's case- and accent-insensitive default collation, gets a
// byte-exact one, and keeps its rows.
func TestMigrateMakesUserNamesExact(t *testing.T) {
	t.Parallel()
	dsn := os.Getenv("TEST_MYSQL_DSN")
	if dsn == "" {
		t.Skip("TEST_MYSQL_DSN not set")
	}
	db := open(t, "mysql", ownMySQLDatabase(t, dsn))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// The table as AutoMigrate made it before, on a utf8mb4 database.
	if err := db.WithContext(ctx).AutoMigrate(&User{}); err != nil {
		t.Fatalf("AutoMigrate: %v", err)
	}
	if err := db.Exec("ALTER TABLE users MODIFY username varchar(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL").Error; err != nil {
		t.Fatalf("set the old collation: %v", err)
	}
	if err := db.Exec("INSERT INTO users (username, password_hash, tier) VALUES ('john_doe', ?, 'free')", dummyHash).Error; err != nil {
		t.Fatalf("insert john_doe: %v", err)
	}
	matches := func(name string) int64 {
		t.Helper()
		var n int64
		if err := db.Raw("SELECT COUNT(*) FROM users WHERE username = ?", name).Scan(&n).Error; err != nil {
			t.Fatalf("count %q: %v", name, err)
		}
		return n
	}
	if matches("JOHN_DOE") != 1 {
		t.Fatal("before Migrate, JOHN_DOE does not match john_doe: the test does not set up the old collation")
	}

	if err := Migrate(ctx, db); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	var collation string
	db.Raw(`SELECT COLLATION_NAME FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users' AND COLUMN_NAME = 'username'`).Scan(&collation)
	if !slices.Contains(exactCollations, collation) {
		t.Errorf("users.username collation after Migrate = %q, want one of %q", collation, exactCollations)
	}
	for _, name := range []string{"JOHN_DOE", "John_Doe", "john_doe ", "jöhn_doe"} {
		if n := matches(name); n != 0 {
			t.Errorf("after Migrate, username = %q matches %d rows, want 0", name, n)
		}
	}
	if n := matches("john_doe"); n != 1 {
		t.Errorf("after Migrate, username = 'john_doe' matches %d rows, want 1", n)
	}
	if err := Migrate(ctx, db); err != nil {
		t.Errorf("Migrate again: %v", err)
	}
}
