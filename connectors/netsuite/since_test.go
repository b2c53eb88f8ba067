package netsuite

import (
	"testing"
	"time"
	_ "time/tzdata" // the zones below, whatever the machine has

	"github.com/stretchr/testify/require"
)

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

func TestSinceWallClock(t *testing.T) {
	ny := zone(t, "America/New_York")
	london := zone(t, "Europe/London")
	lordHowe := zone(t, "Australia/Lord_Howe") // a half-hour change
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return v
	}
	for _, tc := range []struct {
		name  string
		loc   *time.Location
		since time.Time
		want  string
	}{
		{"UTC has no fold", time.UTC, utc("2026-11-01T05:50:00Z"), "2026-11-01 05:50:00"},
		{"fixed zone has no fold", time.FixedZone("X", -5*3600), utc("2026-11-01T06:10:00Z"), "2026-11-01 01:10:00"},
		{"an ordinary day", ny, utc("2026-10-15T16:20:30Z"), "2026-10-15 12:20:30"},

		// New York, 2026-11-01: 02:00 EDT (06:00Z) becomes 01:00 EST.
		{"just before the repeated hour", ny, utc("2026-11-01T04:59:59Z"), "2026-11-01 00:59:59"},
		{"first pass, start", ny, utc("2026-11-01T05:00:00Z"), "2026-11-01 00:00:00"},
		{"first pass 01:50 EDT", ny, utc("2026-11-01T05:50:00Z"), "2026-11-01 00:50:00"},
		{"first pass, last second", ny, utc("2026-11-01T05:59:59Z"), "2026-11-01 00:59:59"},
		{"second pass, start", ny, utc("2026-11-01T06:00:00Z"), "2026-11-01 00:00:00"},
		{"second pass 01:10 EST", ny, utc("2026-11-01T06:10:00Z"), "2026-11-01 00:10:00"},
		{"second pass, last second", ny, utc("2026-11-01T06:59:59Z"), "2026-11-01 00:59:59"},
		{"an hour after the change", ny, utc("2026-11-01T07:00:00Z"), "2026-11-01 02:00:00"},

		// New York, 2026-03-08: 02:00 EST (07:00Z) becomes 03:00 EDT.
		{"spring: before the gap", ny, utc("2026-03-08T06:59:59Z"), "2026-03-08 01:59:59"},
		{"spring: after the gap", ny, utc("2026-03-08T07:00:00Z"), "2026-03-08 03:00:00"},
		{"spring: the hour after", ny, utc("2026-03-08T07:30:00Z"), "2026-03-08 03:30:00"},

		// London, 2026-10-25: 02:00 BST (01:00Z) becomes 01:00 GMT.
		{"London first pass", london, utc("2026-10-25T00:30:00Z"), "2026-10-25 00:30:00"},
		{"London second pass", london, utc("2026-10-25T01:30:00Z"), "2026-10-25 00:30:00"},

		// Lord Howe, 2026-04-05: 02:00 (+11, 15:00Z the day before) becomes 01:30 (+10:30).
		{"half-hour fold, second pass", lordHowe, utc("2026-04-04T15:15:00Z"), "2026-04-05 01:15:00"},
		{"half-hour fold, within the hour after", lordHowe, utc("2026-04-04T15:45:00Z"), "2026-04-05 01:45:00"},
		{"half-hour fold, an hour after", lordHowe, utc("2026-04-04T16:00:00Z"), "2026-04-05 02:30:00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, sinceWallClock(tc.since, tc.loc).Format(goDateFormat))
		})
	}
}

// TestSinceWallClockIsSafe checks the property itself, minute by minute
// around each change: whichever way the server reads the bound (as a
// wall-clock time, or as either instant it can name), no change at or after
// since is below it.
func TestSinceWallClockIsSafe(t *testing.T) {
	for _, c := range []struct {
		zone string
		at   string // an instant near a change of offset
	}{
		{"America/New_York", "2026-11-01T06:00:00Z"},
		{"America/New_York", "2026-03-08T07:00:00Z"},
		{"Europe/London", "2026-10-25T01:00:00Z"},
		{"Australia/Lord_Howe", "2026-04-04T15:00:00Z"},
		{"Australia/Lord_Howe", "2026-10-03T15:30:00Z"},
	} {
		loc := zone(t, c.zone)
		at, err := time.Parse(time.RFC3339, c.at)
		require.NoError(t, err)
		var offsets []int
		for _, x := range []time.Time{at.Add(-36 * time.Hour), at.Add(36 * time.Hour)} {
			_, off := x.In(loc).Zone()
			offsets = append(offsets, off)
		}
		wallOf := func(x time.Time) time.Time {
			l := x.In(loc)
			return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), 0, time.UTC)
		}
		for since := at.Add(-3 * time.Hour); since.Before(at.Add(3 * time.Hour)); since = since.Add(time.Minute) {
			bound := sinceWallClock(since, loc)
			for later := since; later.Before(since.Add(4 * time.Hour)); later = later.Add(time.Minute) {
				if wallOf(later).Before(bound) {
					t.Fatalf("%s: since %s, a change at %s reads %s, before %s", c.zone, since.In(loc), later.In(loc), wallOf(later), bound)
				}
			}
			// Every instant a server can read the bound as is at or before
			// since: those whose wall-clock time it is, or, for a bound in
			// a gap, the bound read with either offset.
			var exact, all []time.Time
			for _, off := range offsets {
				x := bound.Add(-time.Duration(off) * time.Second)
				all = append(all, x)
				if wallOf(x).Equal(bound) {
					exact = append(exact, x)
				}
			}
			if len(exact) == 0 {
				exact = all
			}
			for _, x := range exact {
				if x.After(since) {
					t.Fatalf("%s: since %s, the bound %s can be read as %s", c.zone, since.In(loc), bound, x.In(loc))
				}
			}
		}
	}
}
