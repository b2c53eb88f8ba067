package activities

import (
	"context"
	"time"

	"github.com/optoutsync/optoutsync/activities/ledger"
)

// RunRecord is a successful run, as the workflow ends it.
type RunRecord struct {
	IntegrationID string    `json:"integrationId"`
	FinishedAt    time.Time `json:"finishedAt"`
}

// FinishRun records a successful run in the ledger, which every worker
// reads for the time since each integration's last successful run.
func (a *Activities) FinishRun(ctx context.Context, in RunRecord) error {
	wf, rid := run(ctx)
	return a.ledger.RecordRun(ctx, ledger.Run{Integration: in.IntegrationID, FinishedAt: in.FinishedAt, WorkflowID: wf, RunID: rid})
}
