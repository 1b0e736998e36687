package limiter

import (
	"context"
	"testing"
	"time"
	_ "time/tzdata" // the zones of the tests, without a system zone database too

	"tollgate/algorithms"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// calendarDecide decides one request under l on key with an engine whose
// clock (the one the periods are computed from) is ours.
func calendarDecide(t *testing.T, rdb redis.UniversalClient, ours time.Time, l algorithms.Limit, key string) Decision {
	t.Helper()
	e := New(rdb, Options{Clock: func() time.Time { return ours }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := e.Decide(ctx, []Rule{{Algorithm: algo("calendar"), Limit: l, Key: key}})
	if err != nil {
		t.Fatalf("Decide(): %v", err)
	}
	return res.Decisions[0]
}

// TestCalendarPeriods: across daylight-saving changes and month ends, on
// miniredis whose clock plays Redis's: the period is Redis's, whatever the
// instance's clock says, and the reset, retry and window are the real ones.
func TestCalendarPeriods(t *testing.T) {
	zone := func(name string) *time.Location {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	berlin, newYork := zone("Europe/Berlin"), zone("America/New_York")
	santiago, havana, azores := zone("America/Santiago"), zone("America/Havana"), zone("Atlantic/Azores")
	tests := []struct {
		name     string
		period   algorithms.Period
		loc      *time.Location
		boundary time.Time     // a period ends here
		before   time.Duration // the length of the period that ends there
		after    time.Duration // and of the one that starts there
	}{
		{"Berlin, into the 23-hour day", algorithms.Day, berlin, time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), 24 * time.Hour, 23 * time.Hour},
		{"Berlin, out of the 23-hour day", algorithms.Day, berlin, time.Date(2026, 3, 30, 0, 0, 0, 0, berlin), 23 * time.Hour, 24 * time.Hour},
		{"Berlin, into the 25-hour day", algorithms.Day, berlin, time.Date(2026, 10, 25, 0, 0, 0, 0, berlin), 24 * time.Hour, 25 * time.Hour},
		{"New York, into the 23-hour day", algorithms.Day, newYork, time.Date(2026, 3, 8, 0, 0, 0, 0, newYork), 24 * time.Hour, 23 * time.Hour},
		{"New York, out of the 25-hour day", algorithms.Day, newYork, time.Date(2026, 11, 2, 0, 0, 0, 0, newYork), 25 * time.Hour, 24 * time.Hour},
		// Clocks go forward at midnight: the day starts at 01:00.
		{"Santiago, into the day without midnight", algorithms.Day, santiago, time.Date(2026, 9, 6, 1, 0, 0, 0, santiago), 24 * time.Hour, 23 * time.Hour},
		{"Havana, into the day without midnight", algorithms.Day, havana, time.Date(2026, 3, 8, 1, 0, 0, 0, havana), 24 * time.Hour, 23 * time.Hour},
		{"Azores, into the day without midnight", algorithms.Day, azores, time.Date(2026, 3, 29, 1, 0, 0, 0, azores), 24 * time.Hour, 23 * time.Hour},
		// Clocks go back from midnight to 23:00: the 4th has 25 hours.
		{"Santiago, out of the day with 23:00 twice", algorithms.Day, santiago, time.Date(2026, 4, 5, 4, 0, 0, 0, time.UTC), 25 * time.Hour, 24 * time.Hour},
		{"month end, Berlin, October to November", algorithms.Month, berlin, time.Date(2026, 11, 1, 0, 0, 0, 0, berlin), 31*24*time.Hour + time.Hour, 30 * 24 * time.Hour},
		{"month end, New York, February of a leap year", algorithms.Month, newYork, time.Date(2028, 3, 1, 0, 0, 0, 0, newYork), 29 * 24 * time.Hour, 31*24*time.Hour - time.Hour},
		{"year end, UTC week", algorithms.Week, time.UTC, time.Date(2027, 1, 4, 0, 0, 0, 0, time.UTC), 7 * 24 * time.Hour, 7 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			l, err := algorithms.CalendarLimit(2, tt.period, tt.loc)
			if err != nil {
				t.Fatal(err)
			}
			// Redis is 300ms before the boundary; one instance's clock is a
			// second past it, another's a second short of it.
			redisNow := tt.boundary.Add(-300 * time.Millisecond)
			m.SetTime(redisNow)
			ahead, behind := tt.boundary.Add(time.Second), tt.boundary.Add(-time.Second)
			for i, ours := range []time.Time{ahead, behind} {
				d := calendarDecide(t, rdb, ours, l, "k")
				if !d.Allowed || d.Remaining != 1-i {
					t.Fatalf("request %d before the boundary (our clock %v): Decide() = %+v, want allowed with %d left", i+1, ours, d, 1-i)
				}
				if d.Window != tt.before || d.ResetAfter != 300*time.Millisecond {
					t.Errorf("request %d: window %v, reset after %v; want %v, 300ms (the period's end)", i+1, d.Window, d.ResetAfter, tt.before)
				}
			}
			d := calendarDecide(t, rdb, ahead, l, "k")
			if d.Allowed || d.RetryAfter != 300*time.Millisecond || !d.Now.Add(d.RetryAfter).Equal(tt.boundary) {
				t.Errorf("third request before the boundary: Decide() = %+v, want denied until %v", d, tt.boundary)
			}
			// Redis passes the boundary; our clocks stay where they were.
			m.SetTime(tt.boundary)
			for i, ours := range []time.Time{behind, ahead} {
				d := calendarDecide(t, rdb, ours, l, "k")
				if !d.Allowed || d.Remaining != 1-i {
					t.Fatalf("request %d at the boundary (our clock %v): Decide() = %+v, want allowed with %d left: a new period", i+1, ours, d, 1-i)
				}
				if d.Window != tt.after || d.ResetAfter != tt.after {
					t.Errorf("request %d in the new period: window %v, reset after %v; want both %v", i+1, d.Window, d.ResetAfter, tt.after)
				}
			}
			if d := calendarDecide(t, rdb, behind, l, "k"); d.Allowed || d.RetryAfter != tt.after {
				t.Errorf("third request in the new period: Decide() = %+v, want denied for %v", d, tt.after)
			}
		})
	}
}

// TestCalendarOnRealRedis: on a real Redis (and Cluster) the periods are
// placed around Redis's TIME with a zone whose midnight falls 1.5s after
// it: the instances' clocks differ by seconds, Redis decides which side.
func TestCalendarOnRealRedis(t *testing.T) {
	for backend, newHarness := range harnesses(t) {
		if backend == "miniredis" {
			continue // TestCalendarPeriods steers its clock
		}
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			prefix := h.prefix()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			now, err := h.rdb.Time(ctx).Result()
			if err != nil {
				t.Fatalf("TIME: %v", err)
			}
			// A zone whose next midnight is 1.5s after Redis's now.
			boundary := now.Add(1500 * time.Millisecond).Truncate(time.Millisecond)
			offset := -int(boundary.Sub(boundary.Truncate(24*time.Hour)) / time.Second)
			loc := time.FixedZone("test", offset)
			// The offset is whole seconds: find the midnight it makes.
			boundary = time.Date(boundary.In(loc).Year(), boundary.In(loc).Month(), boundary.In(loc).Day(), 0, 0, 0, 0, loc)
			if boundary.Before(now) {
				boundary = boundary.AddDate(0, 0, 1)
			}
			l, err := algorithms.CalendarLimit(2, algorithms.Day, loc)
			if err != nil {
				t.Fatal(err)
			}
			key := prefix + "{cal}:k"
			ahead := boundary.Add(3 * time.Second) // an instance whose clock is past the midnight
			behind := now.Add(-3 * time.Second)
			for i, ours := range []time.Time{ahead, behind} {
				if d := calendarDecide(t, h.rdb, ours, l, key); !d.Allowed || d.Remaining != 1-i {
					t.Fatalf("request %d (our clock %v, Redis before %v): Decide() = %+v, want allowed with %d left", i+1, ours, boundary, d, 1-i)
				}
			}
			d := calendarDecide(t, h.rdb, ahead, l, key)
			if d.Now.Before(boundary) {
				if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 1500*time.Millisecond || !d.Now.Add(d.RetryAfter).Equal(boundary) {
					t.Errorf("third request: Decide() = %+v, want denied until %v", d, boundary)
				}
			} else {
				t.Logf("a loaded machine: Redis passed the midnight before the third request")
			}
			time.Sleep(time.Until(boundary) + 50*time.Millisecond) // Redis's clock has to pass it: it cannot be steered
			for i, ours := range []time.Time{behind, ahead} {
				d := calendarDecide(t, h.rdb, ours, l, key)
				if !d.Allowed || d.Remaining != 1-i || d.Window != 24*time.Hour {
					t.Errorf("request %d after the midnight (our clock %v): Decide() = %+v, want allowed with %d left in a 24h period", i+1, ours, d, 1-i)
				}
			}
		})
	}
}

// TestCalendarDayWithoutMidnight: a day whose midnight the clock skips
// (it goes from 23:59:59 to 01:00) is a 23-hour period from 01:00, decided
// all day long: at noon on miniredis, whose clock and ours agree.
func TestCalendarDayWithoutMidnight(t *testing.T) {
	tests := []struct {
		zone      string
		noon      [3]int // the day, at 12:00 local
		nextStart time.Duration
	}{
		{"America/Santiago", [3]int{2026, 9, 6}, 12 * time.Hour},
		{"America/Havana", [3]int{2026, 3, 8}, 12 * time.Hour},
		{"Atlantic/Azores", [3]int{2026, 3, 29}, 12 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.zone, func(t *testing.T) {
			t.Parallel()
			loc, err := time.LoadLocation(tt.zone)
			if err != nil {
				t.Fatal(err)
			}
			m := miniredis.RunT(t)
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			t.Cleanup(func() { rdb.Close() })
			l, err := algorithms.CalendarLimit(2, algorithms.Day, loc)
			if err != nil {
				t.Fatal(err)
			}
			noon := time.Date(tt.noon[0], time.Month(tt.noon[1]), tt.noon[2], 12, 0, 0, 0, loc)
			m.SetTime(noon)
			for i := range 2 {
				d := calendarDecide(t, rdb, noon, l, "k")
				if !d.Allowed || d.Remaining != 1-i || d.Window != 23*time.Hour || d.ResetAfter != tt.nextStart {
					t.Errorf("request %d at %v: Decide() = %+v, want allowed with %d left, a 23h window reset after %v", i+1, noon, d, 1-i, tt.nextStart)
				}
			}
			if d := calendarDecide(t, rdb, noon, l, "k"); d.Allowed || d.RetryAfter != tt.nextStart {
				t.Errorf("third request at %v: Decide() = %+v, want denied for %v", noon, d, tt.nextStart)
			}
		})
	}
}

// TestCalendarLargeMonthlyLimit: a calendar's counts are only added and
// compared, never multiplied by its period in ms, so a monthly quota of
// millions is exact (it was refused above 3,358,359): 5,000,000 admitted,
// the next unit denied until the month ends, a grant of the whole quota
// kept. On every backend.
func TestCalendarLargeMonthlyLimit(t *testing.T) {
	l, err := algorithms.CalendarLimit(5_000_000, algorithms.Month, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.ValidateFor("calendar"); err != nil {
		t.Fatalf("ValidateFor(calendar, 5,000,000 a month) = %v, want nil", err)
	}
	for backend, newHarness := range harnesses(t) {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			e := New(h.rdb, Options{Clock: h.now})
			rule := Rule{Algorithm: algo("calendar"), Limit: l, Key: h.prefix() + "{cal}:big"}
			decide := func(cost int) Decision {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				r := rule
				r.Cost = cost
				res, err := e.Decide(ctx, []Rule{r})
				if err != nil {
					t.Fatalf("Decide(cost %d): %v", cost, err)
				}
				return res.Decisions[0]
			}
			if d := decide(4_999_999); !d.Allowed || d.Remaining != 1 || d.Limit != 5_000_000 {
				t.Errorf("Decide(cost 4,999,999) = %+v, want allowed with 1 left of 5,000,000", d)
			}
			if d := decide(1); !d.Allowed || d.Remaining != 0 {
				t.Errorf("Decide(cost 1) = %+v, want allowed with 0 left", d)
			}
			d := decide(1)
			y, m, _ := d.Now.UTC().Date()
			if next := time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC); d.Allowed || !d.Now.Add(d.RetryAfter).Equal(next) {
				t.Errorf("Decide(cost 1) on a spent quota = %+v, want denied until %v", d, next)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := e.Grant(ctx, []Rule{rule}, 5_000_000)
			if err != nil {
				t.Fatalf("Grant(5,000,000): %v", err)
			}
			if d := res.Decisions[0]; d.Remaining != 5_000_000 {
				t.Errorf("Grant(5,000,000) on a spent quota = %+v, want 5,000,000 left", d)
			}
			if d := decide(5_000_000); !d.Allowed || d.Remaining != 0 {
				t.Errorf("Decide(cost 5,000,000) after the grant = %+v, want allowed with 0 left", d)
			}
		})
	}
}
