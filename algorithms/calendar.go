package algorithms

import (
	"fmt"
	"time"
)

// Period is a calendar period of the calendar algorithm.
type Period string

// The calendar periods. A period starts at local midnight of its first day,
// so a day is 23 or 25 hours long across a daylight-saving change.
const (
	Day   Period = "day"
	Week  Period = "week" // ISO: from Monday
	Month Period = "month"
)

// longest is the longest the period can be: with a 25-hour day in it.
func (p Period) longest() time.Duration {
	switch p {
	case Day:
		return 25 * time.Hour
	case Week:
		return 7*24*time.Hour + time.Hour
	case Month:
		return 31*24*time.Hour + time.Hour
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

// start is the start of the period holding t, in t's location: midnight
// of its first day. Where a daylight-saving change skips midnight, time.Date
// gives the first instant of the day or the last of the day before; the
// loop in Starts keeps the periods in order either way.
func (p Period) start(t time.Time) time.Time {
	y, m, d := t.Date()
	switch p {
	case Week:
		d -= (int(t.Weekday()) + 6) % 7 // Monday is day 0
	case Month:
		d = 1
	}
	return time.Date(y, m, d, 0, 0, 0, 0, t.Location())
}

// next is the start of the period after the one holding t.
func (p Period) next(t time.Time) time.Time {
	y, m, d := p.start(t).Date()
	switch p {
	case Day:
		d++
	case Week:
		d += 7
	case Month:
		m++
	}
	return time.Date(y, m, d, 0, 0, 0, 0, t.Location())
}

// Starts returns the starts of the period before the one holding now, of
// that one, and of the two after it, in l.Location: the calendar module's
// arguments. Redis's clock picks the current period among the three, so
// instances whose clocks differ (by less than a period) agree.
func (l Limit) Starts(now time.Time) [4]time.Time {
	loc := l.Location
	if loc == nil {
		loc = time.UTC
	}
	now = now.In(loc)
	cur := l.Period.start(now)
	if cur.After(now) { // midnight skipped: the day began at the change
		cur = now
	}
	prev := l.Period.start(cur.Add(-time.Nanosecond))
	next := l.Period.next(now)
	return [4]time.Time{prev, cur, next, l.Period.next(next)}
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
