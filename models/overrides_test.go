package models

import (
	"errors"
	"testing"
	"time"
)

// TestOverrides: setting one again replaces it (by subject and policy, byte
// for byte: user:Amy is not user:amy), the list leaves out expired ones when
// asked, and deleting an unknown ID is ErrNotFound.
func TestOverrides(t *testing.T) {
	t.Parallel()
	for name, newDB := range databases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			driver, dsn := newDB(t)
			db := open(t, driver, dsn)
			seed(t, db)
			store := testStore(t, db)
			ctx := t.Context()
			now := time.Now().UTC().Truncate(time.Second)
			past := now.Add(-time.Hour)

			first, err := store.SetOverride(ctx, OverrideRow{Subject: "user:amy", Policy: "tier", Requests: 10})
			if err != nil {
				t.Fatalf("SetOverride() = %v", err)
			}
			if _, err := store.SetOverride(ctx, OverrideRow{Subject: "user:Amy", Policy: "tier", Requests: 20}); err != nil {
				t.Fatalf("SetOverride(Amy) = %v", err)
			}
			second, err := store.SetOverride(ctx, OverrideRow{Subject: "user:amy", Policy: "tier", Requests: 30, WindowMS: 1000})
			if err != nil || second == first {
				t.Fatalf("SetOverride(again) = %d, %v; want a new ID, nil", second, err)
			}
			if _, err := store.SetOverride(ctx, OverrideRow{Subject: "ip:10.0.0.0/8", Policy: "tier", Requests: 5, ExpiresAt: &past}); err != nil {
				t.Fatalf("SetOverride(expired) = %v", err)
			}
			all, err := store.Overrides(ctx, time.Time{})
			if err != nil || len(all) != 3 {
				t.Fatalf("Overrides() = %d rows, %v; want 3", len(all), err)
			}
			live, err := store.Overrides(ctx, now)
			if err != nil {
				t.Fatalf("Overrides(now) = %v", err)
			}
			got := map[string]int{}
			for _, o := range live {
				got[o.Subject] = o.Requests
			}
			if len(got) != 2 || got["user:amy"] != 30 || got["user:Amy"] != 20 {
				t.Errorf("Overrides(now) = %v, want user:amy 30, user:Amy 20", got)
			}
			if err := store.DeleteOverride(ctx, second); err != nil {
				t.Errorf("DeleteOverride(%d) = %v", second, err)
			}
			if err := store.DeleteOverride(ctx, second); !errors.Is(err, ErrNotFound) {
				t.Errorf("DeleteOverride(%d) again = %v, want ErrNotFound", second, err)
			}
		})
	}
}
