package bullhorn_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// TestSplitCursorRandomisedNoLoss: random stamps (long runs of one
// millisecond, runs crossing seconds, bounds inside runs), both search date
// formats, short server pages, several types, tearsheets or none, parts
// read interleaved while records change: every record opted out at the
// end of the read that is due (in the tearsheet, or modified since) is
// read at least once.
func TestSplitCursorRandomisedNoLoss(t *testing.T) {
	connectorstest.Randomised(t, 8, 7, splitFuzz)
}

func splitFuzz(t *testing.T, rng *rand.Rand) {
	dates := bullhorntest.DatesEpochMillis
	if rng.IntN(2) == 1 {
		dates = bullhorntest.DatesCompact
	}
	maxCount := []int{0, 0, 120, 37}[rng.IntN(4)]
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now, SearchDates: dates, MaxCount: maxCount, RequestsPerMinute: -1})
	t.Cleanup(s.Close)
	since := clock.Now()
	types := []string{"Candidate", "ClientContact", "Lead"}
	var ids []int64
	kind := map[int64]string{}
	n := 2000 + rng.IntN(3000)
	for i := range n {
		switch r := rng.IntN(100); {
		case r < 3:
			clock.Advance(time.Duration(rng.IntN(3000)) * time.Millisecond)
		case r < 60:
			clock.Advance(time.Duration(rng.IntN(3)) * time.Millisecond)
		}
		tp := types[0]
		if rng.IntN(6) == 0 {
			tp = types[1+rng.IntN(2)]
		}
		id := s.Add(tp, bullhorntest.Person{LastName: "P", Email: fmt.Sprintf("p%d@example.com", i), OptedOut: rng.IntN(3) != 0})
		ids = append(ids, id)
		kind[id] = tp
	}
	// A long run in one millisecond, straddling whatever bound falls in it.
	for i := range 700 {
		id := s.Add("Candidate", bullhorntest.Person{LastName: "R", Email: fmt.Sprintf("r%d@example.com", i), OptedOut: true})
		ids = append(ids, id)
		kind[id] = "Candidate"
	}
	for i := range 1500 {
		if rng.IntN(4) == 0 {
			clock.Advance(time.Duration(rng.IntN(700)) * time.Millisecond)
		}
		id := s.Add("Candidate", bullhorntest.Person{LastName: "Q", Email: fmt.Sprintf("q%d@example.com", i), OptedOut: rng.IntN(2) == 0})
		ids = append(ids, id)
		kind[id] = "Candidate"
	}
	var lists []string
	member := map[int64]bool{}
	if rng.IntN(2) == 0 {
		ts := s.AddTearsheet("T")
		lists = []string{strconv.FormatInt(ts, 10)}
		for _, id := range ids {
			if kind[id] != "Lead" && rng.IntN(5) == 0 {
				s.AddToTearsheet(ts, id)
				member[id] = true
			}
		}
	}
	c := newClient(t, s)
	size := []int{100, 250, 1000, 37}[rng.IntN(4)]
	read := func(cursor string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: types, Field: std, Since: since, Lists: lists, Cursor: cursor, PageSize: size})
	}
	got := map[string]int{}
	add := func(p connectors.RecordPage) {
		for _, r := range p.Records {
			got[r.Ref.ID]++
		}
	}
	first, err := read("")
	require.NoError(t, err)
	add(first)
	open := []string{}
	if first.Next != "" {
		// Read on a bit before splitting, sometimes.
		cur := first.Next
		for range rng.IntN(3) {
			p, err := read(cur)
			require.NoError(t, err)
			add(p)
			if cur = p.Next; cur == "" {
				break
			}
		}
		if cur != "" {
			parts, err := c.SplitCursor(t.Context(), cur, 2+rng.IntN(7))
			require.NoError(t, err)
			if parts == nil {
				parts = []string{cur}
			}
			open = parts
		}
	}
	t.Logf("dates %v maxCount %d size %d lists %v parts %d", dates, maxCount, size, lists, len(open))
	modified := map[int64]bool{}
	lastIdx := len(open) - 1
	for pages := 0; len(open) > 0; pages++ {
		require.Less(t, pages, 20000)
		// Modify a few records while the last part is still open.
		if lastIdx >= 0 && rng.IntN(8) == 0 {
			clock.Advance(time.Second)
			for range 1 + rng.IntN(5) {
				id := ids[rng.IntN(len(ids))]
				out := rng.IntN(3) != 0
				require.NoError(t, s.Update(id, map[string]any{"massMailOptOut": out}))
				modified[id] = true
			}
		}
		i := rng.IntN(len(open))
		if lastIdx >= 0 && i == lastIdx && len(open) > 1 && rng.IntN(3) != 0 {
			i = rng.IntN(lastIdx) // keep the last part for later, mostly
		}
		p, err := read(open[i])
		require.NoError(t, err)
		add(p)
		if p.Next != "" {
			open[i] = p.Next
			continue
		}
		open = append(open[:i], open[i+1:]...)
		switch {
		case i == lastIdx:
			lastIdx = -1
		case i < lastIdx:
			lastIdx--
		}
	}
	// What the read owed: every record opted out and not modified during
	// the read (a modified one is the next run's, whose watermark is no
	// later than this run's start), a tearsheet member or modified since
	// (all were).
	for _, id := range ids {
		rec, ok := s.Record(id)
		require.True(t, ok)
		if out, _ := rec["massMailOptOut"].(bool); !out || modified[id] {
			continue // a record modified during the read moved past the run's start: the next run's
		}
		require.GreaterOrEqual(t, got[strconv.FormatInt(id, 10)], 1, "%s %d (member %v, modified %v) lost", kind[id], id, member[id], modified[id])
	}
}
