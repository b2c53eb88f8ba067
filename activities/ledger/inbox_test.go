package ledger_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
)

func TestTheInboxTakesEachDeliveryOnceAndKeepsItUntilApplied(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		entries := func(from, to int) []ledger.InboxEntry {
			var es []ledger.InboxEntry
			for i := from; i < to; i++ {
				es = append(es, ledger.InboxEntry{Delivery: fmt.Sprintf("d%03d", i), Data: fmt.Sprintf(`{"n":%d}`, i)})
			}
			return es
		}
		added, err := l.Stash(ctx, integ, entries(0, 120), t0)
		require.NoError(t, err)
		require.Equal(t, 120, added)
		// A retried delivery, and the same keys in another integration.
		added, err = l.Stash(ctx, integ, entries(100, 130), t0)
		require.NoError(t, err)
		require.Equal(t, 10, added)
		added, err = l.Stash(ctx, "other", entries(0, 5), t0)
		require.NoError(t, err)
		require.Equal(t, 5, added)

		got, total, err := l.Inbox(ctx, integ, 50)
		require.NoError(t, err)
		require.Equal(t, 130, total)
		require.Len(t, got, 50)
		for i, e := range got {
			require.Equal(t, fmt.Sprintf("d%03d", i), e.Delivery, "oldest first")
			require.Equal(t, fmt.Sprintf(`{"n":%d}`, i), e.Data)
		}
		ids := make([]int64, len(got))
		for i, e := range got {
			ids[i] = e.ID
		}
		require.NoError(t, l.MarkApplied(ctx, integ, ids, t0.Add(time.Minute)))
		got, total, err = l.Inbox(ctx, integ, 500)
		require.NoError(t, err)
		require.Equal(t, 80, total)
		require.Equal(t, "d050", got[0].Delivery)

		// An applied delivery retried within the window is not taken again;
		// after it, it is forgotten and would be.
		added, err = l.Stash(ctx, integ, entries(0, 1), t0)
		require.NoError(t, err)
		require.Zero(t, added)
		added, err = l.Stash(ctx, integ, entries(0, 1), t0.Add(2*time.Minute))
		require.NoError(t, err)
		require.Equal(t, 1, added)
		// Not-yet-applied ones are never forgotten.
		_, total, err = l.Inbox(ctx, integ, 0)
		require.NoError(t, err)
		require.Equal(t, 81, total)

		_, err = l.Stash(ctx, integ, []ledger.InboxEntry{{Data: "{}"}}, t0)
		require.ErrorContains(t, err, integ)
	})
}
