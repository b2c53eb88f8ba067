package netsuitetest

import "time"

// DateSemantics is how the emulator's SuiteQL relates a date column
// (lastmodifieddate, datecreated), which it stores as an instant, to a
// TO_DATE literal, which is a local wall-clock time in Options.TimeZone.
// The choice only shows in a zone with daylight saving, around a change of
// offset: in the autumn one local hour happens twice (a fold), in the
// spring one never happens (a gap).
//
// UNCONFIRMED: how NetSuite compares them is not in our reference. Its
// SuiteQL is Oracle SQL and returns dates in the user's time zone, and an
// Oracle DATE is a wall-clock time without a zone, hence the default,
// WallClock. The other two model a server that turns the literal into an
// instant, as a TIMESTAMP WITH TIME ZONE or java.time would, so that a test
// can show a client correct whichever NetSuite does.
type DateSemantics int

const (
	// WallClock compares local wall-clock times: a date column reads as
	// its instant's wall-clock time in Options.TimeZone, and a TO_DATE
	// literal is taken as written. The two passes of a fold share their
	// wall-clock times, so a change in the second pass sorts, and
	// compares, before a change late in the first. The default.
	WallClock DateSemantics = iota
	// EarlierInstant compares instants, taking an ambiguous literal as the
	// first pass of the fold (the offset before the change: java.time's
	// default). A literal in a gap is moved back by the gap. Before
	// DateSemantics existed, this was the emulator's only behaviour (Go's
	// time.Date).
	EarlierInstant
	// LaterInstant compares instants, taking an ambiguous literal as the
	// second pass (standard time: Oracle's rule for a TIMESTAMP WITH TIME
	// ZONE region when ERROR_ON_OVERLAP_TIME is false). A literal in a gap
	// is moved forward by the gap (java.time's rule).
	LaterInstant
)

// String names the semantics, for test names.
func (d DateSemantics) String() string {
	switch d {
	case WallClock:
		return "WallClock"
	case EarlierInstant:
		return "EarlierInstant"
	case LaterInstant:
		return "LaterInstant"
	}
	return "DateSemantics(?)"
}

// wall is t's wall-clock time in loc, as a zone-less value: the fields of
// t.In(loc) in UTC, which compares and formats as those fields.
func wall(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
}

// instant resolves the wall-clock time w (fields in UTC) in loc to an
// instant: the earliest or the latest instant whose wall-clock time is w,
// and in a gap the earliest or the latest of w read with each offset in
// force around it.
func instant(w time.Time, loc *time.Location, later bool) time.Time {
	// The offsets loc uses within a day either side of w. A day is wider
	// than any change of offset a zone has made since 1900.
	var offsets []int
	for t := w.Add(-26 * time.Hour); ; {
		_, off := t.In(loc).Zone()
		offsets = append(offsets, off)
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || end.After(w.Add(26*time.Hour)) {
			break
		}
		t = end
	}
	var exact, all []time.Time
	for _, off := range offsets {
		c := w.Add(-time.Duration(off) * time.Second)
		all = append(all, c)
		if wall(c, loc).Equal(w) {
			exact = append(exact, c)
		}
	}
	if len(exact) == 0 {
		exact = all // a gap
	}
	pick := exact[0]
	for _, c := range exact[1:] {
		if later == c.After(pick) {
			pick = c
		}
	}
	return pick
}
