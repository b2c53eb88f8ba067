package netsuite_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// readParts reads a first page, splits the rest and reads every part to
// its end, and returns every record read, failing on one read twice.
func readParts(t *testing.T, c *netsuite.Client, read func(cursor string) (connectors.RecordPage, error)) (map[connectors.RecordRef]connectors.Record, int) {
	t.Helper()
	out := map[connectors.RecordRef]connectors.Record{}
	add := func(page connectors.RecordPage) {
		for _, r := range page.Records {
			_, dup := out[r.Ref]
			require.False(t, dup, "read twice: %s", r.Ref)
			out[r.Ref] = r
		}
	}
	first, err := read("")
	require.NoError(t, err)
	add(first)
	require.NotEmpty(t, first.Next)
	parts, err := c.SplitCursor(t.Context(), first.Next, 8)
	require.NoError(t, err)
	for _, p := range parts {
		again, err := c.SplitCursor(t.Context(), p, 8)
		require.NoError(t, err)
		require.Nil(t, again, "a part is not split again")
		for cursor := p; cursor != ""; {
			page, err := read(cursor)
			require.NoError(t, err)
			add(page)
			cursor = page.Next
		}
	}
	return out, len(parts)
}

// TestSplitCursorPartsReadExactlyTheRest: the parts of a split read,
// read each on its own, return every record the read would have
// returned, once, whether the read is by watermark, by saved search or a
// list-member read, across record types.
func TestSplitCursorPartsReadExactlyTheRest(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	c := tbaClient(t, s, func(o *netsuite.Options) { o.Concurrency = 4 })
	since := time.Now().Add(-time.Hour).Truncate(time.Second)
	var listed []connectors.RecordRef
	want := map[connectors.RecordRef]bool{}
	for i := range 230 {
		e := netsuitetest.Entity{Email: fmt.Sprintf("p%d@example.com", i), SubscriptionStatus: []string{"2", "1", "4"}[i%3],
			LastModified: since.Add(time.Duration(i%7) * time.Second)}
		typ, id := "customer", ""
		if i%5 == 0 {
			typ, id = "contact", s.AddContact(e)
		} else {
			id = s.AddCustomer(e)
		}
		if i%3 != 1 {
			want[ref(typ, id)] = true
		}
		if i%2 == 0 {
			listed = append(listed, ref(typ, id))
		}
	}
	none, err := c.SplitCursor(t.Context(), "", 8)
	require.NoError(t, err)
	require.Nil(t, none, "nothing to split before a first page")

	got, parts := readParts(t, c, func(cursor string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Since: since, Cursor: cursor, PageSize: 20})
	})
	require.Equal(t, 4, parts, "as many parts as the account's concurrency")
	require.Len(t, got, len(want))
	for r := range want {
		require.Contains(t, got, r)
	}

	s.AddSavedSearch("customsearch_split", listed...)
	got, _ = readParts(t, c, func(cursor string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Since: since, Lists: []string{"customsearch_split"},
			Cursor: cursor, PageSize: 20})
	})
	require.Len(t, got, len(want), "members of the search, then the rest modified since")
	inLists := 0
	for _, r := range listed {
		if want[r] {
			require.True(t, got[r].InLists)
			inLists++
		}
	}
	require.Positive(t, inLists)

	got, _ = readParts(t, c, func(cursor string) (connectors.RecordPage, error) {
		return c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: both, Cursor: cursor, PageSize: 20})
	})
	require.Len(t, got, 230)
}
