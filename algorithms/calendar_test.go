package algorithms

import (
	"archive/zip"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones of the tests, without a system zone database too
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
	santiago, havana, azores := mustZone(t, "America/Santiago"), mustZone(t, "America/Havana"), mustZone(t, "Atlantic/Azores")
	apia := mustZone(t, "Pacific/Apia")
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
		// Clocks go forward at midnight: the day starts at 01:00, its first instant.
		{"Santiago, midnight skipped", Day, santiago, at(santiago, 2026, 9, 6, 12, 0),
			[4]time.Time{at(santiago, 2026, 9, 5, 0, 0), at(santiago, 2026, 9, 6, 1, 0), at(santiago, 2026, 9, 7, 0, 0), at(santiago, 2026, 9, 8, 0, 0)}, 23 * time.Hour},
		{"Santiago, the day before the skipped midnight", Day, santiago, at(santiago, 2026, 9, 5, 23, 59),
			[4]time.Time{at(santiago, 2026, 9, 4, 0, 0), at(santiago, 2026, 9, 5, 0, 0), at(santiago, 2026, 9, 6, 1, 0), at(santiago, 2026, 9, 7, 0, 0)}, 24 * time.Hour},
		{"Havana, the first instant of a day without midnight", Day, havana, at(havana, 2026, 3, 8, 1, 0),
			[4]time.Time{at(havana, 2026, 3, 7, 0, 0), at(havana, 2026, 3, 8, 1, 0), at(havana, 2026, 3, 9, 0, 0), at(havana, 2026, 3, 10, 0, 0)}, 23 * time.Hour},
		{"Azores, midnight skipped", Day, azores, at(azores, 2026, 3, 29, 12, 0),
			[4]time.Time{at(azores, 2026, 3, 28, 0, 0), at(azores, 2026, 3, 29, 1, 0), at(azores, 2026, 3, 30, 0, 0), at(azores, 2026, 3, 31, 0, 0)}, 23 * time.Hour},
		// Clocks go back from midnight to 23:00: 23:30 comes twice, the
		// second time (03:30 UTC) still on the 4th, whose day is 25 hours.
		{"Santiago, back across midnight", Day, santiago, time.Date(2026, 4, 5, 3, 30, 0, 0, time.UTC),
			[4]time.Time{at(santiago, 2026, 4, 3, 0, 0), at(santiago, 2026, 4, 4, 0, 0), time.Date(2026, 4, 5, 4, 0, 0, 0, time.UTC), at(santiago, 2026, 4, 6, 0, 0)}, 25 * time.Hour},
		// Samoa skipped 2011-12-30: an empty period, passed over.
		{"Apia, after the day that never was", Day, apia, at(apia, 2011, 12, 31, 12, 0),
			[4]time.Time{at(apia, 2011, 12, 29, 0, 0), at(apia, 2011, 12, 31, 0, 0), at(apia, 2012, 1, 1, 0, 0), at(apia, 2012, 1, 2, 0, 0)}, 24 * time.Hour},
		{"Apia, before the day that never was", Day, apia, at(apia, 2011, 12, 29, 12, 0),
			[4]time.Time{at(apia, 2011, 12, 28, 0, 0), at(apia, 2011, 12, 29, 0, 0), at(apia, 2011, 12, 31, 0, 0), at(apia, 2012, 1, 1, 0, 0)}, 24 * time.Hour},
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

// tzdataZones returns every zone of the tzdata Go embeds (time/tzdata is
// built from $GOROOT/lib/time/zoneinfo.zip), loaded from that zip: the
// zones a server without a zone database has. It skips the test when the
// zip is not there.
func tzdataZones(t *testing.T) []*time.Location {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		t.Skipf("go env GOROOT: %v: no zoneinfo.zip to list the zones of", err)
	}
	name := filepath.Join(strings.TrimSpace(string(out)), "lib", "time", "zoneinfo.zip")
	z, err := zip.OpenReader(name)
	if err != nil {
		t.Skipf("the zones of time/tzdata: %v", err)
	}
	defer z.Close()
	var zones []*time.Location
	for _, f := range z.File {
		if strings.HasSuffix(f.Name, "/") {
			continue
		}
		r, err := f.Open()
		if err != nil {
			t.Fatalf("%s: %s: %v", name, f.Name, err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("%s: %s: %v", name, f.Name, err)
		}
		loc, err := time.LoadLocationFromTZData(f.Name, data)
		if err != nil {
			t.Fatalf("%s: zone %s: %v", name, f.Name, err)
		}
		zones = append(zones, loc)
	}
	return zones
}

// TestZoneSweep: in every zone, every day, ISO week and month of 2026-2035
// starts at the first instant of its first day's local date (where the
// clock skips midnight, the instant it skips to), ends where the next
// starts, and is not empty nor longer than its limit's Window; and Starts
// at its first and last millisecond gives prev < cur <= now < next < after.
// Zones whose clocks agree over those years (links, and zones that differ
// only in their history) give the same periods: each clock is swept once.
func TestZoneSweep(t *testing.T) {
	zones := tzdataZones(t)
	if len(zones) < 400 {
		t.Fatalf("%d zones in time/tzdata, want several hundred", len(zones))
	}
	from, to := time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2036, 4, 1, 0, 0, 0, 0, time.UTC)
	clocks := map[string][]*time.Location{}
	var order []string
	for _, loc := range zones {
		c := clock(loc, from, to)
		if clocks[c] == nil {
			order = append(order, c)
		}
		clocks[c] = append(clocks[c], loc)
	}
	t.Logf("%d zones, %d clocks from %v to %v", len(zones), len(clocks), from.Format(time.DateOnly), to.Format(time.DateOnly))
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	last := time.Date(2035, 12, 31, 0, 0, 0, 0, time.UTC)
	periods := []struct {
		period Period
		key    time.Time // the first day of the first period, as a date in UTC
		step   func(time.Time) time.Time
	}{
		{Day, first, func(d time.Time) time.Time { return d.AddDate(0, 0, 1) }},
		{Week, time.Date(2025, 12, 29, 0, 0, 0, 0, time.UTC), func(d time.Time) time.Time { return d.AddDate(0, 0, 7) }},
		{Month, first, func(d time.Time) time.Time { return d.AddDate(0, 1, 0) }},
	}
	for _, c := range order {
		locs := clocks[c]
		var names []string
		for _, loc := range locs {
			names = append(names, loc.String())
		}
		t.Run(locs[0].String(), func(t *testing.T) {
			t.Parallel()
			for _, p := range periods {
				l, err := CalendarLimit(1, p.period, locs[0])
				if err != nil {
					t.Fatal(err)
				}
				var before [4]time.Time // Starts in the period before
				for key := p.key; !key.After(last); key = p.step(key) {
					if !sweepPeriod(t, l, key, &before) {
						t.Logf("the same clock: %s", strings.Join(names, ", "))
						break // one failure per clock and period says enough
					}
				}
			}
		})
	}
}

// clock describes loc's offsets from UTC between from and to: each change,
// as seconds since the epoch and the new offset.
func clock(loc *time.Location, from, to time.Time) string {
	var b strings.Builder
	last := -1 << 31
	for t := from.In(loc); t.Before(to); {
		if _, offset := t.Zone(); offset != last {
			fmt.Fprintf(&b, "%d:%d ", t.Unix(), offset)
			last = offset
		}
		_, end := t.ZoneBounds()
		switch {
		case end.IsZero():
			return b.String()
		case !end.After(t): // golang/go#81583, as in zone.at
			end = time.Date(t.UTC().Year()+1, time.January, 1, 0, 0, 0, 0, time.UTC)
		}
		t = end
	}
	return b.String()
}

// sweepPeriod checks the period of l whose first day is the date key,
// given Starts in the period before (zero for the first), which it
// replaces with Starts in this one. It reports whether all held. (No
// t.Helper: the sweep calls it 2.6 million times.)
func sweepPeriod(t *testing.T, l Limit, key time.Time, before *[4]time.Time) bool {
	loc := l.Location
	date := func(t time.Time) time.Time {
		y, m, d := t.In(loc).Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	}
	start := before[2] // where the period before ends
	if start.IsZero() {
		start = l.Starts(time.Date(key.Year(), key.Month(), key.Day(), 12, 0, 0, 0, loc))[1]
	}
	s := l.Starts(start) // at the period's first instant
	end := s[2].Add(-time.Millisecond)
	e := l.Starts(end) // and at its last millisecond
	for i, got := range [][4]time.Time{s, e} {
		now := []time.Time{start, end}[i]
		ordered := got[0].Before(got[1]) && !got[1].After(now) && now.Before(got[2]) && got[2].Before(got[3])
		if !ordered {
			t.Errorf("%s %s: Starts(%v) = %v, want prev < cur <= now < next < after", loc, l.Period, now, got)
			return false
		}
	}
	switch {
	case !equal(s, e):
		t.Errorf("%s %s from %v: Starts(%v) = %v, Starts(%v) = %v: one period, two answers", loc, l.Period, key.Format(time.DateOnly), start, s, end, e)
	case !s[1].Equal(start):
		t.Errorf("%s %s from %v: Starts(%v)[1] = %v, want the instant it was given: the period before ended there", loc, l.Period, key.Format(time.DateOnly), start, s[1])
	case !before[2].IsZero() && !equal([4]time.Time{before[1], before[2], before[3]}, [4]time.Time{s[0], s[1], s[2]}):
		t.Errorf("%s %s from %v: Starts = %v, the period before's %v: they do not tile", loc, l.Period, key.Format(time.DateOnly), s, *before)
	case !date(start).Equal(key) || !date(start.Add(-time.Nanosecond)).Before(key):
		t.Errorf("%s %s from %v: starts at %v (local date %v, a nanosecond before %v): want the first instant of %v",
			loc, l.Period, key.Format(time.DateOnly), start, date(start).Format(time.DateOnly), date(start.Add(-time.Nanosecond)).Format(time.DateOnly), key.Format(time.DateOnly))
	case s[2].Sub(s[1]) > l.Window:
		t.Errorf("%s %s from %v: %v long, more than the limit's Window %v", loc, l.Period, key.Format(time.DateOnly), s[2].Sub(s[1]), l.Window)
	default:
		*before = s
		return true
	}
	return false
}

// equal reports whether a and b hold the same instants.
func equal(a, b [4]time.Time) bool {
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
