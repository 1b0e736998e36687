package models

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	mysqldriver "github.com/go-sql-driver/mysql"
	"golang.org/x/crypto/bcrypt"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"tollgate/username"
)

// Open connects to the database (driver "sqlite" or "mysql"), sets pool
// limits and checks that it answers before ctx is done.
func Open(ctx context.Context, log *slog.Logger, driver, dsn string) (*gorm.DB, error) {
	var dialector gorm.Dialector
	var conn *sql.DB // mysql's, closed here if GORM fails
	switch driver {
	case "mysql":
		cfg, err := mysqldriver.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("open mysql database: DB_DSN: %w", err) // config.Load checks it first
		}
		// DATETIME columns (created_at) scan into time.Time only with
		// parseTime; every other parameter stays as written.
		cfg.ParseTime = true
		// The driver's own log lines (one per broken connection) go to
		// log, throttled, instead of stderr.
		cfg.Logger = driverLog{log: log, warn: &throttle{period: errorPeriod, now: time.Now}}
		connector, err := mysqldriver.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("open mysql database: DB_DSN: %w", err)
		}
		conn = sql.OpenDB(connector)
		dialector = mysql.New(mysql.Config{Conn: conn, DSNConfig: cfg})
	case "sqlite":
		if !strings.Contains(dsn, "?") {
			// One writer at a time: wait for the lock instead of failing.
			dsn += "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"
		}
		dialector = sqlite.Open(dsn)
	default:
		return nil, fmt.Errorf("open database: unknown driver %q", driver)
	}
	db, err := gorm.Open(dialector, &gorm.Config{
		Logger:               newQueryLog(log),
		TranslateError:       true,
		DisableAutomaticPing: true, // pinged below, under ctx
	})
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		if isUnknownDatabase(err) { // the dialector asks the server's version
			return nil, noDatabase(dsn)
		}
		return nil, fmt.Errorf("open %s database: %w", driver, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open %s database: %w", driver, err)
	}
	if driver == "sqlite" {
		sqlDB.SetMaxOpenConns(1)
	} else {
		sqlDB.SetMaxOpenConns(20)
		sqlDB.SetMaxIdleConns(10)
	}
	sqlDB.SetConnMaxLifetime(30 * time.Minute)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		if isUnknownDatabase(err) {
			return nil, noDatabase(dsn)
		}
		return nil, fmt.Errorf("ping %s database: %w", driver, err)
	}
	return db, nil
}

// ErrNoDatabase is returned by Open when the MySQL server has no database of
// the DSN's name: waiting will not bring it, an operator must create it.
var ErrNoDatabase = errors.New("database does not exist")

// isUnknownDatabase reports whether err is MySQL's ER_BAD_DB_ERROR (1049),
// "Unknown database".
func isUnknownDatabase(err error) bool {
	var me *mysqldriver.MySQLError
	return errors.As(err, &me) && me.Number == 1049
}

// noDatabase says which database is missing and how to create it.
func noDatabase(dsn string) error {
	name := "countries"
	if cfg, err := mysqldriver.ParseDSN(dsn); err == nil {
		name = cfg.DBName
	}
	return fmt.Errorf("%w: %q (MySQL error 1049): create it and the service's user as an administrator, e.g. "+
		"CREATE DATABASE `%s` CHARACTER SET utf8mb4; CREATE USER 'api_user'@'%%' IDENTIFIED BY '...'; "+
		"GRANT ALL PRIVILEGES ON `%s`.* TO 'api_user'@'%%'; (docs/configuration.md: Real Redis and MySQL)", ErrNoDatabase, name, name, name)
}

// Migrate creates or updates the tables. Instances starting together race to
// create them; the losers see "already exists" and succeed on a retry.
func Migrate(ctx context.Context, db *gorm.DB) error {
	err := retry(ctx, func() error { return db.WithContext(ctx).AutoMigrate(&Continent{}, &User{}, &APIKey{}, &OverrideRow{}) })
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if db.Name() == "mysql" {
		if err := retry(ctx, func() error { return exactUserNames(db.WithContext(ctx)) }); err != nil {
			return fmt.Errorf("migrate: users.username collation: %w", err)
		}
	}
	return nil
}

// exactCollations are the utf8mb4 collations that compare bytes and count
// trailing spaces (NO PAD), best first: MariaDB 10.2 and later, MySQL 8.0.17
// and later. utf8mb4_bin, the fallback, ignores trailing spaces.
var exactCollations = []string{"utf8mb4_nopad_bin", "utf8mb4_0900_bin"}

// exactUserNames gives users.username on MySQL/MariaDB a collation that
// compares bytes, so that a name differing in case, accents or trailing
// spaces is another name, in lookups and in the unique index alike. The
// default collation (utf8mb4_general_ci and the like) logged "JOHN_DOE" and
// "jöhn_doe " in as john_doe. Tables made before are altered once; SQLite
// compares bytes already.
func exactUserNames(db *gorm.DB) error {
	var current string
	err := db.Raw(`SELECT COALESCE(COLLATION_NAME, '') FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users' AND COLUMN_NAME = 'username'`).Scan(&current).Error
	if err != nil {
		return fmt.Errorf("read collation: %w", err)
	}
	var available []string
	err = db.Raw("SELECT COLLATION_NAME FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN ?", exactCollations).Scan(&available).Error
	if err != nil {
		return fmt.Errorf("list collations: %w", err)
	}
	want := "utf8mb4_bin"
	for _, c := range exactCollations {
		if slices.Contains(available, c) {
			want = c
			break
		}
	}
	if current == want {
		return nil
	}
	// Finer than any collation before it, so the unique index still holds.
	if err := db.Exec("ALTER TABLE users MODIFY username varchar(64) CHARACTER SET utf8mb4 COLLATE " + want + " NOT NULL").Error; err != nil {
		return fmt.Errorf("alter to %s: %w", want, err)
	}
	return nil
}

// retry runs fn up to three times, pausing a little longer each time: for
// start-up statements that collide with another instance's (a lost DDL race,
// a deadlock between upserts).
func retry(ctx context.Context, fn func() error) error {
	var err error
	for attempt := range 3 {
		if err = fn(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 50 * time.Millisecond):
		}
	}
	return err
}

// Seed writes the seven continents (ids 1..7, names as in the tutorial) and
// the given users. It is idempotent: running it again, from any number of
// instances at once, leaves the same rows. A seeded user whose password
// changed gets the new hash; one seeded with a tier gets that tier.
func Seed(ctx context.Context, db *gorm.DB, users []Account) error {
	return SeedAtCost(ctx, db, users, bcrypt.DefaultCost)
}

// SeedAtCost is Seed hashing new passwords at the given bcrypt cost (see
// StoreOptions.HashCost): tests seed at bcrypt.MinCost.
func SeedAtCost(ctx context.Context, db *gorm.DB, users []Account, cost int) error {
	db = db.WithContext(ctx)
	err := retry(ctx, func() error {
		// A copy per call: Create writes the ids it gets back into the rows,
		// and the seed data must stay as written (and unshared between
		// concurrent calls).
		rows := slices.Clone(continents)
		return db.Clauses(clause.OnConflict{
			Columns:   []clause.Column{{Name: "continent_id"}},
			DoUpdates: clause.AssignmentColumns([]string{"continent_name"}),
		}).Create(&rows).Error
	})
	if err != nil {
		return fmt.Errorf("seed continents: %w", err)
	}
	for _, u := range users {
		if err := retry(ctx, func() error { return seedUser(db, u, cost) }); err != nil {
			return fmt.Errorf("seed user %q: %w", u.Name, err)
		}
	}
	return nil
}

func seedUser(db *gorm.DB, c Account, cost int) error {
	if !username.Valid(c.Name) {
		return fmt.Errorf("name: want %s: %w", username.Rule, ErrInvalid)
	}
	u, err := findUser(db, c.Name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if err == nil {
		changes := map[string]any{}
		if c.Tier != "" && c.Tier != u.Tier {
			changes["tier"] = c.Tier
		}
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(c.Password)) != nil {
			hash, err := bcrypt.GenerateFromPassword([]byte(c.Password), cost)
			if err != nil {
				return err
			}
			changes["password_hash"] = string(hash)
		}
		if len(changes) == 0 {
			return nil
		}
		return db.Model(&u).Updates(changes).Error
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(c.Password), cost)
	if err != nil {
		return err
	}
	return db.Clauses(clause.OnConflict{DoNothing: true}).
		Create(&User{Username: c.Name, PasswordHash: string(hash), Tier: cmp.Or(c.Tier, DefaultTier)}).Error
}
