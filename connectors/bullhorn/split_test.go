package bullhorn_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// readSplit reads a first page, splits the rest into up to 8 parts and
// reads every part to its end, after edit (the records that change while
// the parts are read), and returns how often each record was read, and
// the parts.
func readSplit(t *testing.T, c *bullhorn.Client, edit func(), read func(cursor string) (connectors.RecordPage, error)) (map[string]int, int) {
	t.Helper()
	got := map[string]int{}
	add := func(page connectors.RecordPage) {
		for _, r := range page.Records {
			got[r.Ref.String()]++
		}
	}
	first, err := read("")
	require.NoError(t, err)
	add(first)
	require.NotEmpty(t, first.Next)
	parts, err := c.SplitCursor(t.Context(), first.Next, 8)
	require.NoError(t, err)
	edit()
	for i, p := range parts {
		again, err := c.SplitCursor(t.Context(), p, 8)
		require.NoError(t, err)
		if i < len(parts)-1 {
			require.Nil(t, again, "a bounded part is not split again")
		}
		for cursor, n := p, 0; cursor != ""; n++ {
			require.Less(t, n, 1000, "the part does not end")
			page, err := read(cursor)
			require.NoError(t, err)
			add(page)
			cursor = page.Next
		}
	}
	return got, len(parts)
}

// TestSplitCursorPartsReadExactlyTheRest: the parts of a split read of
// changed records, read each on its own, return every record the read
// would have returned, once, across a run of records stamped in the same
// millisecond and into the read's next record type; a record modified
// while the parts are read is read by the last part, not lost. Whether
// the search takes date ranges in milliseconds or to the second.
func TestSplitCursorPartsReadExactlyTheRest(t *testing.T) {
	for _, dates := range []bullhorntest.DateFormat{bullhorntest.DatesEpochMillis, bullhorntest.DatesCompact} {
		t.Run(map[bullhorntest.DateFormat]string{bullhorntest.DatesEpochMillis: "millis", bullhorntest.DatesCompact: "compact"}[dates], func(t *testing.T) { testSplit(t, dates) })
	}
}

func testSplit(t *testing.T, dates bullhorntest.DateFormat) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now, SearchDates: dates})
	t.Cleanup(s.Close)
	since := clock.Now()
	want := map[string]bool{}
	var ids []int64
	for i := range 3000 {
		if i < 1200 || i > 1800 {
			clock.Advance(time.Millisecond) // 600 records in one millisecond in the middle
		}
		n := s.AddCandidate(bullhorntest.Person{LastName: "P", Email: "p" + strconv.Itoa(i) + "@example.com", OptedOut: i%3 != 1})
		ids = append(ids, n)
		if i%3 != 1 {
			want["Candidate/"+id(n)] = true
		}
	}
	lead := s.AddLead(bullhorntest.Person{LastName: "L", Email: "lead@example.com", OptedOut: true})
	want["Lead/"+id(lead)] = true
	c := newClient(t, s)
	// A record of the middle of the read opts out while the parts are read.
	late := ids[2500] // not opted out before
	want["Candidate/"+id(late)] = true
	got, parts := readSplit(t, c, func() {
		clock.Advance(time.Second)
		require.NoError(t, s.Update(late, map[string]any{"massMailOptOut": true}))
	}, func(cursor string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate", "Lead"}, Field: std, Since: since, Cursor: cursor, PageSize: 100})
	})
	require.GreaterOrEqual(t, parts, 3, "the rest is split")
	t.Logf("%d parts", parts)
	require.Equal(t, len(want), len(got), "records read")
	for r := range want {
		require.Equal(t, 1, got[r], "%s read once", r)
	}

	// A list-member read without lists splits the same way.
	got, _ = readSplit(t, c, func() {}, func(cursor string) (connectors.RecordPage, error) {
		return c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"Candidate"}, Field: std, Cursor: cursor, PageSize: 100})
	})
	require.Equal(t, 3000, len(got), "records read")
	for r, n := range got {
		require.Equal(t, 1, n, "%s read once", r)
	}

	none, err := c.SplitCursor(t.Context(), "", 8)
	require.NoError(t, err)
	require.Nil(t, none, "nothing to split before a first page")
}

// staggered400 holds every answer of 400 to a search until want of them
// arrived, then lets the first go at once and the others a moment later,
// as the answers of reads sent at once come back: each part's read on a
// client that has not learnt the search's date format yet.
type staggered400 struct {
	want    int32
	arrived atomic.Int32
	all     chan struct{}
	once    sync.Once
	first   atomic.Bool
}

func (s *staggered400) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusBadRequest || !strings.Contains(r.URL.Path, "/search/") {
		return resp, err
	}
	if s.arrived.Add(1) == s.want {
		s.once.Do(func() { close(s.all) })
	}
	select {
	case <-s.all:
	case <-time.After(5 * time.Second):
	}
	if !s.first.CompareAndSwap(false, true) {
		time.Sleep(100 * time.Millisecond)
	}
	return resp, nil
}

// TestPartsReadAtOnceOnAFreshClientLearnCompactDates: the parts of a
// split read, carried in the cursor, are read at once by the next call,
// perhaps on another worker (or after a restart) whose client has not
// yet learnt that the search takes dates as yyyyMMddHHmmss. Every part's
// first search is refused with 400; each must fall back and read on, not
// fail with the 400 (ErrInvalid, which ends the run) because another
// part's fallback flipped the format meanwhile.
func TestPartsReadAtOnceOnAFreshClientLearnCompactDates(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now, SearchDates: bullhorntest.DatesCompact})
	t.Cleanup(s.Close)
	since := clock.Now()
	for i := range 3000 {
		clock.Advance(7 * time.Millisecond)
		s.AddCandidate(bullhorntest.Person{LastName: "P", Email: "p" + strconv.Itoa(i) + "@example.com", OptedOut: true})
	}
	q := connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, Since: since, PageSize: 100}
	first := newClient(t, s)
	page, err := first.OptedOut(t.Context(), q)
	require.NoError(t, err)
	parts, err := first.SplitCursor(t.Context(), page.Next, 4)
	require.NoError(t, err)
	require.Len(t, parts, 4)

	gate := &staggered400{want: int32(len(parts)), all: make(chan struct{})}
	fresh := newClient(t, s, func(o *bullhorn.Options) { o.Transport = gate })
	require.NoError(t, fresh.Ping(t.Context()))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() {
			q := q
			q.Cursor = p
			_, errs[i] = fresh.OptedOut(t.Context(), q)
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "part %d", i)
	}
}
