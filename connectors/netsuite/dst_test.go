package netsuite_test

import (
	"fmt"
	"testing"
	"time"
	_ "time/tzdata" // America/New_York, whatever the machine has

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

var allDateSemantics = []netsuitetest.DateSemantics{netsuitetest.WallClock, netsuitetest.EarlierInstant, netsuitetest.LaterInstant}

// changed is a record and the instant it was modified.
type changed struct {
	ref connectors.RecordRef
	at  time.Time
}

// readMembers pages through ListMembers and returns the refs read.
func readMembers(t *testing.T, c *netsuite.Client, q connectors.ListMembersQuery) map[connectors.RecordRef]bool {
	t.Helper()
	out := map[connectors.RecordRef]bool{}
	for range 1000 {
		page, err := c.ListMembers(t.Context(), q)
		require.NoError(t, err)
		for _, r := range page.Records {
			out[r.Ref] = true
		}
		if page.Next == "" {
			return out
		}
		q.Cursor = page.Next
	}
	t.Fatal("ListMembers never ended")
	return nil
}

// requireEveryChangeRead reads OptedOut, in pages of one (its keyset on
// lastmodifieddate then crosses a change of clocks a row at a time) and of
// a thousand, and ListMembers (whose keyset is the id) from each watermark,
// and fails on any change at or after the watermark that was not read.
func requireEveryChangeRead(t *testing.T, c *netsuite.Client, loc *time.Location, records []changed, watermarks []time.Time) {
	t.Helper()
	clock := func(x time.Time) string { return x.In(loc).Format(time.TimeOnly + " MST") }
	for _, since := range watermarks {
		members := readMembers(t, c, connectors.ListMembersQuery{Types: both, Since: since})
		for _, size := range []int{1, 1000} {
			got := readAll(t, c, connectors.OptOutQuery{Types: both, Field: standard, Since: since, PageSize: size})
			for _, r := range records {
				if r.at.Before(since) {
					continue // may be read again (the widening), need not be
				}
				_, ok := got[r.ref]
				require.True(t, ok, "OptedOut from %s in pages of %d hid the change at %s", clock(since), size, clock(r.at))
				require.True(t, members[r.ref], "ListMembers from %s hid the change at %s", clock(since), clock(r.at))
			}
		}
	}
}

// TestWatermarkAcrossTheAutumnFold is the autumn change in New York on
// 2026-11-01, when 02:00 EDT (06:00Z) becomes 01:00 EST and the hour from
// 01:00 to 02:00 happens twice. Whichever way NetSuite reads a local time
// in that hour, a read from any watermark sees every change made after it.
func TestWatermarkAcrossTheAutumnFold(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	edt := func(h, m int) time.Time { return time.Date(2026, 11, 1, h+4, m, 0, 0, time.UTC) }
	est := func(h, m int) time.Time { return time.Date(2026, 11, 1, h+5, m, 0, 0, time.UTC) }
	for _, dates := range allDateSemantics {
		t.Run(dates.String(), func(t *testing.T) {
			t.Parallel()
			s := netsuitetest.NewServer(netsuitetest.Options{TimeZone: ny, Dates: dates})
			defer s.Close()
			c := tbaClient(t, s, func(cfg *netsuite.Options) { cfg.TimeZone = ny })
			var records []changed
			add := func(typ string, at time.Time) connectors.RecordRef {
				e := netsuitetest.Entity{Email: fmt.Sprintf("r%d@example.com", len(records)), SubscriptionStatus: "2", LastModified: at}
				var id string
				if typ == "contact" {
					id = s.AddContact(e)
				} else {
					id = s.AddCustomer(e)
				}
				records = append(records, changed{ref(typ, id), at})
				return ref(typ, id)
			}
			add("customer", edt(0, 40))
			firstPass := add("customer", edt(1, 30)) // 01:30 EDT, 05:30Z
			add("contact", edt(1, 55))
			add("contact", est(1, 5))
			secondPass := add("customer", est(1, 20)) // 01:20 EST, 06:20Z
			add("contact", est(1, 45))
			add("customer", est(2, 10))
			add("contact", est(3, 0))

			// The case as reported: a watermark at 01:10 EST, in the second
			// pass, after a change at 01:30 EDT and before one at 01:20 EST.
			since := est(1, 10)
			got := readAll(t, c, connectors.OptOutQuery{Types: both, Field: standard, Since: since})
			require.Contains(t, got, secondPass, "01:20 EST is after the watermark")
			require.Contains(t, got, firstPass, "01:30 EDT reads again: a duplicate, harmless")

			// A watermark late in the first pass: 01:20 EST is forty minutes
			// after it but reads "01:20", before "01:50".
			got = readAll(t, c, connectors.OptOutQuery{Types: both, Field: standard, Since: edt(1, 50)})
			require.Contains(t, got, secondPass)

			// And every watermark, ten minutes apart, from 00:30 EDT to
			// 02:30 EST, read in pages of one (the keyset crosses the fold
			// a row at a time) and of a thousand.
			var watermarks []time.Time
			for w := edt(0, 30); !w.After(est(2, 30)); w = w.Add(10 * time.Minute) {
				watermarks = append(watermarks, w)
			}
			requireEveryChangeRead(t, c, ny, records, watermarks)
		})
	}
}

// TestWatermarkAcrossTheSpringGap is the spring change in New York on
// 2026-03-08, when 02:00 EST (07:00Z) becomes 03:00 EDT and no local time
// from 02:00 to 03:00 exists.
func TestWatermarkAcrossTheSpringGap(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	est := func(h, m, sec int) time.Time { return time.Date(2026, 3, 8, h+5, m, sec, 0, time.UTC) }
	edt := func(h, m, sec int) time.Time { return time.Date(2026, 3, 8, h+4, m, sec, 0, time.UTC) }
	for _, dates := range allDateSemantics {
		t.Run(dates.String(), func(t *testing.T) {
			t.Parallel()
			s := netsuitetest.NewServer(netsuitetest.Options{TimeZone: ny, Dates: dates})
			defer s.Close()
			c := tbaClient(t, s, func(cfg *netsuite.Options) { cfg.TimeZone = ny })
			var records []changed
			for i, at := range []time.Time{est(1, 30, 0), est(1, 59, 59), edt(3, 0, 0), edt(3, 0, 1), edt(3, 10, 0), edt(4, 0, 0)} {
				id := s.AddCustomer(netsuitetest.Entity{Email: fmt.Sprintf("s%d@example.com", i), SubscriptionStatus: "4", LastModified: at})
				records = append(records, changed{ref("customer", id), at})
			}
			var watermarks []time.Time
			for w := est(1, 0, 0); !w.After(edt(4, 0, 0)); w = w.Add(10 * time.Minute) {
				watermarks = append(watermarks, w)
			}
			watermarks = append(watermarks, est(1, 59, 59), edt(3, 0, 0), edt(3, 0, 1))
			requireEveryChangeRead(t, c, ny, records, watermarks)

			// Nothing to widen in the spring: a watermark after the gap
			// reads nothing from before it.
			got := readAll(t, c, connectors.OptOutQuery{Types: both, Field: standard, Since: edt(3, 0, 0)})
			require.Len(t, got, 4)
		})
	}
}
