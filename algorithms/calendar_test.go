package algorithms

import (
	"testing"
	"time"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("LoadLocation(%q): %v", name, err)
	}
	return loc
}

// TestStarts: the periods around an instant, in local midnights, across
// daylight-saving changes (23- and 25-hour days), ISO weeks and month and
// year ends.
func TestStarts(t *testing.T) {
	berlin, newYork := mustZone(t, "Europe/Berlin"), mustZone(t, "America/New_York")
	at := func(loc *time.Location, y int, m time.Month, d, h, min int) time.Time {
		return time.Date(y, m, d, h, min, 0, 0, loc)
	}
	tests := []struct {
		name   string
		period Period
		loc    *time.Location
		now    time.Time
		want   [4]time.Time
		length time.Duration // of the current period
	}{
		{"Berlin, the day clocks go forward", Day, berlin, at(berlin, 2026, 3, 29, 12, 0),
			[4]time.Time{at(berlin, 2026, 3, 28, 0, 0), at(berlin, 2026, 3, 29, 0, 0), at(berlin, 2026, 3, 30, 0, 0), at(berlin, 2026, 3, 31, 0, 0)}, 23 * time.Hour},
		{"Berlin, the day clocks go back", Day, berlin, at(berlin, 2026, 10, 25, 1, 30),
			[4]time.Time{at(berlin, 2026, 10, 24, 0, 0), at(berlin, 2026, 10, 25, 0, 0), at(berlin, 2026, 10, 26, 0, 0), at(berlin, 2026, 10, 27, 0, 0)}, 25 * time.Hour},
		{"New York, the day clocks go forward", Day, newYork, at(newYork, 2026, 3, 8, 23, 59),
			[4]time.Time{at(newYork, 2026, 3, 7, 0, 0), at(newYork, 2026, 3, 8, 0, 0), at(newYork, 2026, 3, 9, 0, 0), at(newYork, 2026, 3, 10, 0, 0)}, 23 * time.Hour},
		{"New York, the day clocks go back", Day, newYork, at(newYork, 2026, 11, 1, 0, 0),
			[4]time.Time{at(newYork, 2026, 10, 31, 0, 0), at(newYork, 2026, 11, 1, 0, 0), at(newYork, 2026, 11, 2, 0, 0), at(newYork, 2026, 11, 3, 0, 0)}, 25 * time.Hour},
		{"ISO week from Monday, on a Sunday", Week, time.UTC, at(time.UTC, 2026, 11, 29, 23, 0),
			[4]time.Time{at(time.UTC, 2026, 11, 16, 0, 0), at(time.UTC, 2026, 11, 23, 0, 0), at(time.UTC, 2026, 11, 30, 0, 0), at(time.UTC, 2026, 12, 7, 0, 0)}, 7 * 24 * time.Hour},
		{"Berlin week with the change", Week, berlin, at(berlin, 2026, 3, 27, 10, 0),
			[4]time.Time{at(berlin, 2026, 3, 16, 0, 0), at(berlin, 2026, 3, 23, 0, 0), at(berlin, 2026, 3, 30, 0, 0), at(berlin, 2026, 4, 6, 0, 0)}, 7*24*time.Hour - time.Hour},
		{"month end into February of a leap year", Month, time.UTC, at(time.UTC, 2028, 1, 31, 23, 59),
			[4]time.Time{at(time.UTC, 2027, 12, 1, 0, 0), at(time.UTC, 2028, 1, 1, 0, 0), at(time.UTC, 2028, 2, 1, 0, 0), at(time.UTC, 2028, 3, 1, 0, 0)}, 31 * 24 * time.Hour},
		{"Berlin October, 31 days and an hour", Month, berlin, at(berlin, 2026, 10, 31, 23, 0),
			[4]time.Time{at(berlin, 2026, 9, 1, 0, 0), at(berlin, 2026, 10, 1, 0, 0), at(berlin, 2026, 11, 1, 0, 0), at(berlin, 2026, 12, 1, 0, 0)}, 31*24*time.Hour + time.Hour},
		{"year end, New York", Month, newYork, at(newYork, 2026, 12, 31, 23, 59),
			[4]time.Time{at(newYork, 2026, 11, 1, 0, 0), at(newYork, 2026, 12, 1, 0, 0), at(newYork, 2027, 1, 1, 0, 0), at(newYork, 2027, 2, 1, 0, 0)}, 31 * 24 * time.Hour},
		{"the first instant of a month", Month, berlin, at(berlin, 2026, 11, 1, 0, 0),
			[4]time.Time{at(berlin, 2026, 10, 1, 0, 0), at(berlin, 2026, 11, 1, 0, 0), at(berlin, 2026, 12, 1, 0, 0), at(berlin, 2027, 1, 1, 0, 0)}, 30 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := CalendarLimit(10, tt.period, tt.loc)
			if err != nil {
				t.Fatal(err)
			}
			// The instant matters, not the zone it is given in.
			got := l.Starts(tt.now.UTC())
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("Starts(%v)[%d] = %v, want %v", tt.now, i, got[i], tt.want[i])
				}
			}
			if _, length := l.Span(tt.now); length != tt.length {
				t.Errorf("Span(%v) length = %v, want %v", tt.now, length, tt.length)
			}
			if length := got[2].Sub(got[1]); length > l.Window {
				t.Errorf("period of %v is longer than the limit's Window %v", length, l.Window)
			}
		})
	}
}

func TestCalendarLimitErrors(t *testing.T) {
	if _, err := CalendarLimit(5, "year", nil); err == nil {
		t.Error("CalendarLimit(period year) = nil error, want one")
	}
	l, err := CalendarLimit(5, Day, nil)
	if err != nil || l.Location != time.UTC {
		t.Errorf("CalendarLimit(nil zone) = %+v, %v; want UTC", l, err)
	}
	fw, _ := Lookup("fixed_window")
	if err := fw.Validate(l); err == nil {
		t.Error("fixed_window.Validate(a calendar limit) = nil, want an error")
	}
}
