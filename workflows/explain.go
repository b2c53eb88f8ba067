package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/optoutsync/optoutsync/activities"
)

// ExplainWorkflowID is the id of an explain lookup; one runs at a time per
// integration and address hash.
func ExplainWorkflowID(integration, addressHash string) string {
	return IDPrefix + integration + "-explain-" + addressHash
}

// ExplainWorkflow looks up where one (sealed) address stands now in an
// integration's systems, through the worker that holds the credentials:
// `starter explain` uses it for the "now" part of its answer.
func ExplainWorkflow(ctx workflow.Context, in activities.CurrentStateInput) (activities.CurrentState, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 3},
	})
	var out activities.CurrentState
	err := workflow.ExecuteActivity(ctx, a.CurrentState, in).Get(ctx, &out)
	return out, err
}
