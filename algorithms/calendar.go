package algorithms

import (
	"fmt"
	"time"
)

// Period is a calendar period of the calendar algorithm.
type Period string

// The calendar periods. A period starts at the first instant of its first
// day: local midnight, or where the clock skips midnight, the instant it
// skips to (01:00 in America/Santiago on 2026-09-06). So a day is 23 or 25
// hours long across a daylight-saving change, and every period ends where
// the next starts.
const (
	Day   Period = "day"
	Week  Period = "week" // ISO: from Monday
	Month Period = "month"
)

// maxShift is the most a zone's clock moves at once, in the tzdata of
// 2026-2035 (TestZoneSweep): Antarctica/Troll's two-hour daylight saving.
const maxShift = 2 * time.Hour

// maxOffset bounds the offset of every zone from UTC, LMT included
// (Asia/Manila's was -15:56, America/Metlakatla's +15:13).
const maxOffset = 16 * time.Hour

// longest is the longest the period can be: with a day of maxShift more
// than 24 hours in it.
func (p Period) longest() time.Duration {
	switch p {
	case Day:
		return 24*time.Hour + maxShift
	case Week:
		return 7*24*time.Hour + maxShift
	case Month:
		return 31*24*time.Hour + maxShift
	}
	return 0
}

// CalendarLimit is the calendar limit of requests per period in loc (nil:
// UTC); its Window is the longest the period can be, the bound of a reset.
func CalendarLimit(requests int, period Period, loc *time.Location) (Limit, error) {
	if period.longest() == 0 {
		return Limit{}, fmt.Errorf("%w: period %q: want day, week or month", ErrInvalidLimit, period)
	}
	if loc == nil {
		loc = time.UTC
	}
	return Limit{Requests: requests, Window: period.longest(), Period: period, Location: loc}, nil
}

// Periods are named by their first day, a date held as midnight UTC.

// firstDay is the first day of the period holding the local date of t,
// given as its local clock in UTC.
func (p Period) firstDay(t time.Time) time.Time {
	y, m, d := t.Date()
	switch p {
	case Week:
		d -= (int(t.Weekday()) + 6) % 7 // Monday is day 0
	case Month:
		d = 1
	}
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// add is the first day of the period n periods after the one of day.
func (p Period) add(day time.Time, n int) time.Time {
	switch p {
	case Week:
		return day.Add(time.Duration(7*n) * 24 * time.Hour) // UTC has no daylight saving
	case Month:
		return day.AddDate(0, n, 0)
	}
	return day.Add(time.Duration(n) * 24 * time.Hour)
}

// Starts returns the starts of the period before the one holding now, of
// that one, and of the two after it, in l.Location: the calendar module's
// arguments. Redis's clock picks the current period among the three, so
// instances whose clocks differ (by less than a period) agree.
//
// The period starting on day starts at the first instant whose local date
// is day or later. Those starts never decrease from one period to the
// next, so the periods tile time; the period holding now is the last to
// start at or before it. That is the one of now's local date, but for two
// cases: where a clock went back across midnight (from 00:30 to 23:30, say),
// the half hour before midnight that comes again is already in the new
// day; and a day no clock shows (Pacific/Apia went from 2011-12-29 to
// 12-31) is an empty period, which Starts passes over.
func (l Limit) Starts(now time.Time) [4]time.Time {
	loc := l.Location
	if loc == nil {
		loc = time.UTC
	}
	p := l.Period
	z := zone{loc: loc}
	day := p.firstDay(now.Add(z.at(now).offset).UTC())
	for back := 1; ; back++ {
		// The distinct starts from back periods before now's local date's,
		// until two of them are after now.
		starts := make([]time.Time, 0, 8)
		after := 0
		for d := p.add(day, -back); after < 2; d = p.add(d, 1) {
			s := z.first(d)
			if len(starts) > 0 && s.Equal(starts[len(starts)-1]) {
				continue // an empty period
			}
			starts = append(starts, s)
			if s.After(now) {
				after++
			}
		}
		// The current period: the last start at or before now. It has one
		// before it unless the periods before now's date were empty.
		if cur := len(starts) - 3; cur >= 1 {
			return [4]time.Time{starts[cur-1], starts[cur], starts[cur+1], starts[cur+2]}
		}
	}
}

// Span is the period of l holding now (on Redis's clock): its start and
// length. For a limit without a period it is the zero time and l.Window.
func (l Limit) Span(now time.Time) (time.Time, time.Duration) {
	if l.Period == "" {
		return time.Time{}, l.Window
	}
	s := l.Starts(now)
	return s[1], s[2].Sub(s[1])
}

// zone is loc's offsets from UTC, read a stretch (a zone segment: the time
// between two changes of the clock) at a time: for the years past its table,
// every read parses the zone's rule, so Starts reads each stretch once.
type zone struct {
	loc     *time.Location
	stretch [4]stretch // the stretches read, up to 4 (in Starts, a day's take 1, a month's 2-4)
	n       int
}

// stretch is one offset of a zone, from start (zero: forever) until end
// (zero: forever).
type stretch struct {
	start, end time.Time
	offset     time.Duration
}

// at is the stretch holding t.
func (z *zone) at(t time.Time) stretch {
	for _, s := range z.stretch[:z.n] {
		if (s.start.IsZero() || !t.Before(s.start)) && (s.end.IsZero() || t.Before(s.end)) {
			return s
		}
	}
	t = t.In(z.loc)
	_, offset := t.Zone()
	start, end := t.ZoneBounds()
	if !end.IsZero() && !end.After(t) {
		// In the last UTC day of a leap year past the zone's table, Go
		// ends the stretch a day early, before t (golang/go#81583); the
		// offset holds until the year ends, in UTC.
		end = time.Date(t.UTC().Year()+1, time.January, 1, 0, 0, 0, 0, time.UTC)
	}
	s := stretch{start: start, end: end, offset: time.Duration(offset) * time.Second}
	if z.n < len(z.stretch) {
		z.stretch[z.n] = s
		z.n++
	}
	return s
}

// first is the first instant whose local date is day or later: local
// midnight, or the instant the clock skips it to. The local clock is
// t+offset, rising within a stretch and jumping between them, so the walk
// through the stretches from before any clock can show day finds it.
func (z *zone) first(day time.Time) time.Time {
	t := day.Add(-maxOffset)
	for {
		s := z.at(t)
		midnight := day.Add(-s.offset) // where this stretch's clock shows day's midnight
		switch {
		case !midnight.After(t): // the clock jumped past midnight as the stretch began
			return t.In(z.loc)
		case s.end.IsZero() || midnight.Before(s.end):
			return midnight.In(z.loc)
		}
		t = s.end
	}
}
