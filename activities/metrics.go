package activities

import (
	"context"
	"errors"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/connectors/metrics"
)

// observe adds what one activity call did to the product series: the
// opt-outs it read and wrote, by direction (the step), field sync's member
// writes, and the items it could not write, by kind. It is called once per
// successful call; a call resumed from a heartbeat returns (and so adds)
// the earlier attempt's pages too, which that attempt never added.
func observe(integration string, step Step, c Counts) {
	dir := string(step)
	switch step {
	case MarketingToCRM:
		metrics.OptOutsObserved.WithLabelValues(integration, dir).Add(float64(c.Unsubscribes))
		metrics.OptOutsWritten.WithLabelValues(integration, dir).Add(float64(c.CRMOptedOut + c.LateOptedOut))
		// Found by the re-subscribes read, but a CRM opt-out reaching the audience.
		metrics.OptOutsWritten.WithLabelValues(integration, string(CRMToMarketing)).Add(float64(c.JoinedUnsub))
	case CRMToMarketing:
		metrics.OptOutsObserved.WithLabelValues(integration, dir).Add(float64(c.CRMOptOuts))
		metrics.OptOutsWritten.WithLabelValues(integration, dir).Add(float64(c.Unsubscribed + c.AddedUnsub))
	case FieldSync:
		metrics.FieldSyncWrites.WithLabelValues(integration, "updated").Add(float64(c.FieldsUpdated))
		metrics.FieldSyncWrites.WithLabelValues(integration, "added").Add(float64(c.MembersAdded))
	}
	metrics.ItemFailures.WithLabelValues(integration, dir, metrics.KindTransient).Add(float64(c.Failed))
	metrics.ItemFailures.WithLabelValues(integration, dir, metrics.KindFinal).Add(float64(c.Refused))
	metrics.ItemFailures.WithLabelValues(integration, dir, metrics.KindCompliance).Add(float64(c.ComplianceHeld))
}

// activityFailed counts an error classify met, by what it made of it:
// final when retrying cannot fix it, transient otherwise. A cancelled
// context is nobody's failure (a read ahead no longer needed, a worker
// stopping) and is not counted.
func activityFailed(integration string, err, classified error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	kind := metrics.KindTransient
	var app *temporal.ApplicationError
	if errors.As(classified, &app) && app.NonRetryable() {
		kind = metrics.KindFinal
	}
	metrics.ActivityFailures.WithLabelValues(integration, kind).Inc()
}

// workerStop is closed when the worker running the activity is told to
// stop; nil outside an activity (a benchmark calling it directly).
func workerStop(ctx context.Context) <-chan struct{} {
	if !activity.IsActivity(ctx) {
		return nil
	}
	return activity.GetWorkerStopChannel(ctx)
}

func stopping(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}
