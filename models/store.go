package models

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// dummyHash (of a password nobody has, at the default cost) is compared against
// when a user does not exist, so unknown and known names take as long to reject.
const dummyHash = "$2a$10$SdouQ6ncYYGXcQIwNohdSu0G40zWsWE6sgXIHSxD4OEbMrLKN4xRS"

// Store runs the service's queries. Every call is bounded by its ctx.
type Store struct {
	db *gorm.DB
}

// NewStore returns a Store on db.
func NewStore(db *gorm.DB) *Store {
	return &Store{db: db}
}

// Continents returns every continent ordered by id.
func (s *Store) Continents(ctx context.Context) ([]Continent, error) {
	var cs []Continent
	if err := s.db.WithContext(ctx).Order("continent_id").Find(&cs).Error; err != nil {
		return nil, fmt.Errorf("list continents: %w", err)
	}
	return cs, nil
}

// CheckPassword reports whether name exists and password is its password.
func (s *Store) CheckPassword(ctx context.Context, name, password string) (bool, error) {
	var u User
	err := s.db.WithContext(ctx).Where("username = ?", name).Take(&u).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		bcrypt.CompareHashAndPassword([]byte(dummyHash), []byte(password))
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find user: %w", err)
	}
	return bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) == nil, nil
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
