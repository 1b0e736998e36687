package models

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"tollgate/policy"
	"tollgate/username"
)

// OverrideRow is one row of the overrides table: limits for one identity that
// replace a policy's own (see policy.Override, which it becomes). Subject is
// "user:NAME" or "ip:CIDR" in canonical form, checked before it is stored.
type OverrideRow struct {
	ID        int64  `gorm:"primaryKey"`
	Subject   string `gorm:"size:80;not null;index"`
	Policy    string `gorm:"size:64;not null"`
	Requests  int    `gorm:"not null"`           // per window
	WindowMS  int64  `gorm:"not null;default:0"` // 0: the window of the limit it replaces
	ExpiresAt *time.Time
	CreatedAt time.Time
}

// SetOverride stores o, replacing any override of the same subject and
// policy (subjects compare byte for byte, as user names do), and returns
// its new ID: a replaced override's count is not carried over.
func (s *Store) SetOverride(ctx context.Context, o OverrideRow) (int64, error) {
	o.ID = 0
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var same []OverrideRow
		if err := tx.Where("policy = ? AND subject = ?", o.Policy, o.Subject).Find(&same).Error; err != nil {
			return err
		}
		for _, old := range same {
			// MySQL's default collation finds "user:Amy" for "user:amy" too.
			if old.Subject == o.Subject && old.Policy == o.Policy {
				if err := tx.Delete(&OverrideRow{}, old.ID).Error; err != nil {
					return err
				}
			}
		}
		return tx.Create(&o).Error
	})
	if err != nil {
		return 0, fmt.Errorf("set override %s of %s: %w", o.Subject, o.Policy, err)
	}
	return o.ID, nil
}

// Overrides lists the overrides by ID; with now not zero, only those that
// have not expired at now.
func (s *Store) Overrides(ctx context.Context, now time.Time) ([]OverrideRow, error) {
	db := s.db.WithContext(ctx).Order("id")
	if !now.IsZero() {
		db = db.Where("expires_at IS NULL OR expires_at > ?", now.UTC())
	}
	var out []OverrideRow
	if err := db.Find(&out).Error; err != nil {
		return nil, fmt.Errorf("list overrides: %w", err)
	}
	return out, nil
}

// DeleteOverride deletes the override id; an unknown id is an error
// wrapping ErrNotFound.
func (s *Store) DeleteOverride(ctx context.Context, id int64) error {
	res := s.db.WithContext(ctx).Delete(&OverrideRow{}, id)
	if res.Error != nil {
		return fmt.Errorf("delete override %d: %w", id, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("delete override %d: %w", id, ErrNotFound)
	}
	return nil
}

// PolicyOverrides reads the overrides not expired at now, as the policies
// take them. A row that does not read as one (edited by hand) is left out
// and named in the error.
func (s *Store) PolicyOverrides(ctx context.Context, now time.Time) ([]policy.Override, error) {
	rows, err := s.Overrides(ctx, now)
	if err != nil {
		return nil, err
	}
	out := make([]policy.Override, 0, len(rows))
	var errs []error
	for _, r := range rows {
		o, err := overrideOf(r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	return out, errors.Join(errs...)
}

// overrideOf is the row r as the policies take it.
func overrideOf(r OverrideRow) (policy.Override, error) {
	o := policy.Override{ID: r.ID, Policy: r.Policy, Limit: r.Requests, Window: time.Duration(r.WindowMS) * time.Millisecond}
	if r.ExpiresAt != nil {
		o.Expires = *r.ExpiresAt
	}
	user, hasUser := strings.CutPrefix(r.Subject, "user:")
	var err error
	switch {
	case hasUser:
		o.User = user
		if !username.Valid(user) {
			err = fmt.Errorf("%w: %q: want user:NAME of %s", policy.ErrOverride, r.Subject, username.Rule)
		}
	case strings.HasPrefix(r.Subject, "ip:"):
		_, o.Prefix, err = policy.ParseOverrideSubject(r.Subject)
	default:
		err = fmt.Errorf("%w: %q: want user:NAME or ip:CIDR", policy.ErrOverride, r.Subject)
	}
	if err == nil {
		err = policy.CheckOverride(o)
	}
	if err != nil {
		return policy.Override{}, fmt.Errorf("override %d: %w", r.ID, err)
	}
	return o, nil
}
