package models

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gorm.io/gorm"
)

// KeyInfo describes one API key for listings; the key itself is not stored.
type KeyInfo struct {
	ID        uint
	User      string // empty when the user was deleted
	Prefix    string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// Users returns every user ordered by name.
func (s *Store) Users(ctx context.Context) ([]User, error) {
	var us []User
	if err := s.db.WithContext(ctx).Order("username").Find(&us).Error; err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}

// Tier returns the tier of the user name. An unknown user is an error
// wrapping ErrNotFound.
func (s *Store) Tier(ctx context.Context, name string) (string, error) {
	u, err := findUser(s.db.WithContext(ctx), name)
	if err != nil {
		return "", fmt.Errorf("find user %q: %w", name, err)
	}
	return u.Tier, nil
}

// SetTier gives the user name the tier tier. An unknown user is an error
// wrapping ErrNotFound.
func (s *Store) SetTier(ctx context.Context, name, tier string) error {
	if tier == "" || len(tier) > 32 {
		return fmt.Errorf("set tier of %q: tier: want 1 to 32 bytes: %w", name, ErrInvalid)
	}
	return s.updateUser(ctx, "set tier of", name, map[string]any{"tier": tier})
}

// SetPassword replaces the password of the user name (stored as a bcrypt
// hash). An unknown user is an error wrapping ErrNotFound.
func (s *Store) SetPassword(ctx context.Context, name, password string) error {
	if password == "" || len(password) > 72 {
		return fmt.Errorf("set password of %q: password: want 1 to 72 bytes: %w", name, ErrInvalid)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return fmt.Errorf("set password of %q: hash password: %w", name, err)
	}
	return s.updateUser(ctx, "set password of", name, map[string]any{"password_hash": string(hash)})
}

func (s *Store) updateUser(ctx context.Context, doing, name string, changes map[string]any) error {
	db := s.db.WithContext(ctx)
	u, err := findUser(db, name)
	if err != nil {
		return fmt.Errorf("%s %q: %w", doing, name, err)
	}
	if err := db.Model(&u).Updates(changes).Error; err != nil {
		return fmt.Errorf("%s %q: %w", doing, name, err)
	}
	return nil
}

// DeleteUser revokes the API keys of the user name and deletes the user, in
// one transaction. An unknown user is an error wrapping ErrNotFound.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		u, err := findUser(tx, name)
		if err != nil {
			return err
		}
		err = tx.Model(&APIKey{}).Where("user_id = ? AND revoked_at IS NULL", u.ID).Update("revoked_at", time.Now().UTC()).Error
		if err != nil {
			return fmt.Errorf("revoke keys: %w", err)
		}
		return tx.Delete(&u).Error
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

// APIKeys lists the API keys of the user name, or of every user when name is
// empty, ordered by id; revoked keys too. An unknown user is an error
// wrapping ErrNotFound.
func (s *Store) APIKeys(ctx context.Context, name string) ([]KeyInfo, error) {
	db := s.db.WithContext(ctx)
	q := db.Table("api_keys").
		Select("api_keys.id, users.username AS user, api_keys.prefix, api_keys.created_at, api_keys.revoked_at").
		Joins("LEFT JOIN users ON users.id = api_keys.user_id").
		Order("api_keys.id")
	if name != "" {
		u, err := findUser(db, name)
		if err != nil {
			return nil, fmt.Errorf("list api keys of %q: %w", name, err)
		}
		q = q.Where("api_keys.user_id = ?", u.ID)
	}
	var rows []struct {
		ID        uint
		User      *string
		Prefix    string
		CreatedAt time.Time
		RevokedAt *time.Time
	}
	if err := q.Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	out := make([]KeyInfo, len(rows))
	for i, r := range rows {
		out[i] = KeyInfo{ID: r.ID, User: deref(r.User), Prefix: r.Prefix, CreatedAt: r.CreatedAt, RevokedAt: r.RevokedAt}
	}
	return out, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
