package models

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"

	"tollgate/username"
)

var (
	// ErrNotFound is wrapped by errors about a row that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUserExists is wrapped by CreateUser's error when the name is taken.
	ErrUserExists = errors.New("user already exists")
	// ErrInvalid is wrapped by errors about a name, password or tier that
	// cannot be stored.
	ErrInvalid = errors.New("invalid")
)

// KeyPrefix starts every API key, so a key is recognisable (in logs that
// should not hold it, in secret scanners).
const KeyPrefix = "tg_"

// dummyHash (of a password nobody has, at the default cost) is compared against
// when a user does not exist, so unknown and known names take as long to reject.
const dummyHash = "$2a$10$SdouQ6ncYYGXcQIwNohdSu0G40zWsWE6sgXIHSxD4OEbMrLKN4xRS"

// Store runs the service's queries. Every call is bounded by its ctx.
type Store struct {
	db    *gorm.DB
	cost  int    // bcrypt cost of the hashes it makes
	dummy string // a hash at cost, compared against for unknown names
}

// StoreOptions are a Store's settings; each field says what its zero value
// means.
type StoreOptions struct {
	// HashCost is the bcrypt cost of the hashes it makes; unknown names are
	// checked against a hash of that cost too (so they still take as long
	// as known ones). 0: bcrypt.DefaultCost, the service's; tests use
	// bcrypt.MinCost, as a hash at the default cost takes about a second
	// under the race detector.
	HashCost int
}

// NewStore returns a Store on db with the settings of o.
func NewStore(db *gorm.DB, o StoreOptions) (*Store, error) {
	cost := o.HashCost
	if cost == 0 || cost == bcrypt.DefaultCost {
		return &Store{db: db, cost: bcrypt.DefaultCost, dummy: dummyHash}, nil
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte(rand.Text()), cost)
	if err != nil {
		return nil, fmt.Errorf("hash cost %d: %w", cost, err)
	}
	return &Store{db: db, cost: cost, dummy: string(dummy)}, nil
}

// Continents returns every continent ordered by id.
func (s *Store) Continents(ctx context.Context) ([]Continent, error) {
	var cs []Continent
	if err := s.db.WithContext(ctx).Order("continent_id").Find(&cs).Error; err != nil {
		return nil, fmt.Errorf("list continents: %w", err)
	}
	return cs, nil
}

// CheckPassword reports whether name exists and password is its password,
// and if so the user's name as stored and tier. Names match byte for byte
// (see username.Valid): "John_Doe" is not "john_doe".
func (s *Store) CheckPassword(ctx context.Context, name, password string) (storedName, tier string, ok bool, err error) {
	u, err := findUser(s.db.WithContext(ctx), name)
	if errors.Is(err, ErrNotFound) {
		// As long as a wrong password: no timing oracle for names.
		_ = bcrypt.CompareHashAndPassword([]byte(s.dummy), []byte(password)) // its time, not its answer
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("find user: %w", err)
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		return "", "", false, nil
	}
	return u.Username, u.Tier, true, nil
}

// findUser returns the user named name, byte for byte, or an error wrapping
// ErrNotFound. The column's collation compares bytes on both databases (see
// Migrate); the check in Go keeps that true on a MySQL whose only binary
// collation ignores trailing spaces, and on a table not migrated yet.
func findUser(db *gorm.DB, name string) (User, error) {
	var u User
	err := db.Where("username = ?", name).Take(&u).Error
	if errors.Is(err, gorm.ErrRecordNotFound) || (err == nil && u.Username != name) {
		return User{}, ErrNotFound
	}
	return u, err
}

// CheckAPIKey reports whether key is a key that was created and not revoked,
// and if so the name and tier of its user.
func (s *Store) CheckAPIKey(ctx context.Context, key string) (name, tier string, ok bool, err error) {
	var row struct {
		Username string
		Tier     string
	}
	err = s.db.WithContext(ctx).Table("api_keys").
		Select("users.username, users.tier").
		Joins("JOIN users ON users.id = api_keys.user_id").
		Where("api_keys.hash = ? AND api_keys.revoked_at IS NULL", hashKey(key)).
		Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("find api key: %w", err)
	}
	return row.Username, row.Tier, true, nil
}

// CreateUser adds the user name with password (stored as a bcrypt hash) and
// tier (empty: DefaultTier). A taken name is an error wrapping ErrUserExists.
func (s *Store) CreateUser(ctx context.Context, name, password, tier string) error {
	tier = cmp.Or(tier, DefaultTier)
	// The limits are those of HTTP Basic (no colon in the name), bcrypt (72
	// bytes) and the columns.
	switch {
	case !username.Valid(name):
		return fmt.Errorf("create user %q: name: want %s: %w", name, username.Rule, ErrInvalid)
	case password == "" || len(password) > 72:
		return fmt.Errorf("create user %q: password: want 1 to 72 bytes: %w", name, ErrInvalid)
	case len(tier) > 32:
		return fmt.Errorf("create user %q: tier: want at most 32 bytes: %w", name, ErrInvalid)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return fmt.Errorf("create user %q: hash password: %w", name, err)
	}
	err = s.db.WithContext(ctx).Create(&User{Username: name, PasswordHash: string(hash), Tier: tier}).Error
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("create user %q: %w", name, ErrUserExists)
	}
	if err != nil {
		return fmt.Errorf("create user %q: %w", name, err)
	}
	return nil
}

// CreateAPIKey makes a new key for the user userName and returns its id and
// the key itself, which is stored only as a hash: it cannot be shown again.
// An unknown user is an error wrapping ErrNotFound.
func (s *Store) CreateAPIKey(ctx context.Context, userName string) (id uint, key string, err error) {
	db := s.db.WithContext(ctx)
	u, err := findUser(db, userName)
	if errors.Is(err, ErrNotFound) {
		return 0, "", fmt.Errorf("create api key: user %q: %w", userName, ErrNotFound)
	}
	if err != nil {
		return 0, "", fmt.Errorf("create api key: find user %q: %w", userName, err)
	}
	secret := make([]byte, 32)
	rand.Read(secret) // never fails (crypto/rand panics rather than returning short)
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(secret)
	k := APIKey{UserID: u.ID, Hash: hashKey(key), Prefix: key[:len(KeyPrefix)+6]}
	if err := db.Create(&k).Error; err != nil {
		return 0, "", fmt.Errorf("create api key for %q: %w", userName, err)
	}
	return k.ID, key, nil
}

// RevokeAPIKey revokes the key with id; revoking it again changes nothing.
// An unknown id is an error wrapping ErrNotFound.
func (s *Store) RevokeAPIKey(ctx context.Context, id uint) error {
	db := s.db.WithContext(ctx)
	res := db.Model(&APIKey{}).Where("id = ? AND revoked_at IS NULL", id).Update("revoked_at", time.Now().UTC())
	if res.Error != nil {
		return fmt.Errorf("revoke api key %d: %w", id, res.Error)
	}
	if res.RowsAffected > 0 {
		return nil
	}
	var n int64
	if err := db.Model(&APIKey{}).Where("id = ?", id).Count(&n).Error; err != nil {
		return fmt.Errorf("revoke api key %d: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("revoke api key %d: %w", id, ErrNotFound)
	}
	return nil
}

// hashKey is the stored form of an API key: hex SHA-256.
func hashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// Ping reports whether the database answers before ctx is done.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}
