package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
)

// TestLastRunsKeepTheLatestSuccessfulRun: each integration keeps its
// latest recorded run, whichever worker records it and in whatever order.
func TestLastRunsKeepTheLatestSuccessfulRun(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		runs, err := l.LastRuns(ctx)
		require.NoError(t, err)
		require.Empty(t, runs)

		t0 := time.Date(2026, 3, 1, 12, 0, 0, 123000, time.UTC)
		require.NoError(t, l.RecordRun(ctx, ledger.Run{Integration: "demo", FinishedAt: t0, WorkflowID: "wf-1", RunID: "r1"}))
		require.NoError(t, l.RecordRun(ctx, ledger.Run{Integration: "other", FinishedAt: t0, WorkflowID: "wf-o", RunID: "ro"}))
		later := ledger.Run{Integration: "demo", FinishedAt: t0.Add(15 * time.Minute), WorkflowID: "wf-2", RunID: "r2"}
		require.NoError(t, l.RecordRun(ctx, later))
		// A slower worker records an earlier run after the later one.
		require.NoError(t, l.RecordRun(ctx, ledger.Run{Integration: "demo", FinishedAt: t0.Add(5 * time.Minute), WorkflowID: "wf-3", RunID: "r3"}))

		runs, err = l.LastRuns(ctx)
		require.NoError(t, err)
		require.Equal(t, map[string]ledger.Run{
			"demo":  later,
			"other": {Integration: "other", FinishedAt: t0, WorkflowID: "wf-o", RunID: "ro"},
		}, runs)

		require.Error(t, l.RecordRun(ctx, ledger.Run{Integration: "demo"}), "a run without its time is refused")
	})
}
