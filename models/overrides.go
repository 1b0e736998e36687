package models

import (
	"context"
	"fmt"
	"time"

	"gorm.io/gorm"
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
