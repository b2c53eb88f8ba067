package workflows_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"

	"github.com/optoutsync/optoutsync/workflows"
)

// TestReplayRecordedHistories replays every recorded history in testdata
// against today's SyncWorkflow and EventsWorkflow: a change that would break the runs already
// in flight on a cluster fails here first. Record a new one with
// UPDATE_HISTORIES=1 go test -run Integration ./workflows/.
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob("testdata/*-history.json")
	require.NoError(t, err)
	require.NotEmpty(t, files, "no recorded history to replay")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			r.RegisterWorkflow(workflows.SyncWorkflow)
			r.RegisterWorkflow(workflows.EventsWorkflow)
			require.NoError(t, r.ReplayWorkflowHistoryFromJSONFile(nil, f))
		})
	}
}
