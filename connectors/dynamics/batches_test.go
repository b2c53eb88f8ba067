package dynamics_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// readCounting pages an OptedOut read to its end with the client each
// page names (client(i) for page i), calling between(i, page) after page
// i, and returns how often each record was read.
func readCounting(t *testing.T, q connectors.OptOutQuery, client func(i int) *dynamics.Client, between func(i int, page connectors.RecordPage)) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "the read does not end")
		page, err := client(i).OptedOut(t.Context(), q)
		require.NoError(t, err)
		for _, r := range page.Records {
			got[r.Ref.ID]++
		}
		if page.Next == "" {
			return got
		}
		q.Cursor = page.Next
		between(i, page)
	}
}

// TestOptedOutReadsInBatchesOfFiveThousand: a read of changed opt-outs
// asks Dataverse's largest page, and the pages after the first take the
// rest of the batch without a call; every record comes once.
func TestOptedOutReadsInBatchesOfFiveThousand(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	srv := newEnv(t, dynamicstest.Options{Clock: clock.Now, RequestLimit: -1})
	ids := srv.Seed("contacts", 2_500, func(i int) dynamicstest.Person {
		clock.Advance(300 * time.Millisecond)
		return dynamicstest.Person{LastName: "P", Email: fmt.Sprintf("p%d@example.com", i), OptedOut: true}
	})
	c := clientFor(t, srv)
	require.NoError(t, c.Ping(t.Context()))
	before := srv.Middleware.Total()
	got := readCounting(t, connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, PageSize: 100},
		func(int) *dynamics.Client { return c }, func(int, connectors.RecordPage) {})
	require.Len(t, got, len(ids))
	for id, n := range got {
		require.Equal(t, 1, n, "%s read once", id)
	}
	require.Equal(t, 1, srv.Middleware.Total()-before, "one query for 25 pages")
}

// TestABatchReadAgainResumesAfterTheLastRowReturned: a page whose cursor
// finds no kept batch (another worker, or a restart) reads the batch again
// and goes on after the last row returned, also when records were
// modified between the pages: the one returned last, which leaves the
// batch (every record stamped in its second is then returned again, never
// lost), and one not yet returned, which moves to the end of the read.
func TestABatchReadAgainResumesAfterTheLastRowReturned(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	srv := newEnv(t, dynamicstest.Options{Clock: clock.Now, RequestLimit: -1})
	ids := srv.Seed("contacts", 300, func(i int) dynamicstest.Person {
		if i%3 == 0 {
			clock.Advance(time.Second) // three records to a second: pages of 10 end inside one
		}
		return dynamicstest.Person{LastName: "P", Email: fmt.Sprintf("p%d@example.com", i), OptedOut: true}
	})
	second := map[string]time.Time{} // id -> the second it was stamped in
	for _, id := range ids {
		r, ok := srv.Record(id)
		require.True(t, ok)
		second[strings.ToLower(id)] = r["modifiedon"].(time.Time)
	}
	clients := []*dynamics.Client{clientFor(t, srv), clientFor(t, srv)}
	var last string
	got := readCounting(t, connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, PageSize: 10},
		func(i int) *dynamics.Client { return clients[i%2] }, // no page finds its batch kept
		func(i int, page connectors.RecordPage) {
			if i != 3 {
				return
			}
			clock.Advance(time.Minute)
			// The last record returned, and one the read has not reached.
			last = page.Records[len(page.Records)-1].Ref.ID
			require.NoError(t, srv.Update(last, map[string]any{"firstname": "Moved"}))
			require.NoError(t, srv.Update(ids[200], map[string]any{"firstname": "Moved"}))
		})
	require.Len(t, got, len(ids), "every record read")
	for _, id := range ids {
		id = strings.ToLower(id)
		switch {
		case id == last:
			require.Equal(t, 2, got[id], "returned, then again at the end of the read")
		case id == strings.ToLower(ids[200]):
			require.Equal(t, 1, got[id], "moved ahead of the read: read once, at the end")
		case second[id].Equal(second[last]):
			// Its second: returned again if it came before it.
			require.Contains(t, []int{1, 2}, got[id], "%s", id)
		default:
			require.Equal(t, 1, got[id], "%s", id)
		}
	}
}
