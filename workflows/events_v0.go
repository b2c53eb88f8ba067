package workflows

import (
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/optoutsync/optoutsync/activities"
)

// Bounds of the deliveries eventsWorkflowV0 remembers.
const (
	// dedupeFor is how long a delivery's key is remembered: Mailchimp
	// retries a failed delivery for about 75 minutes.
	dedupeFor = 2 * time.Hour
	// maxDedupeKeys bounds the keys carried across continue-as-new (a
	// duplicate past it is applied again, which writes nothing new).
	maxDedupeKeys = 20000
)

// eventsWorkflowV0 is EventsWorkflow as it was before the inbox: it kept
// pending events and the keys of recent deliveries in its own state. It
// runs only to finish the runs started before (their histories replay
// with it); each continues as new into the current EventsWorkflow. It can
// go once no run of it is left (one release).
func eventsWorkflowV0(ctx workflow.Context, in EventsRun) error {
	if in.IntegrationID == "" {
		return temporal.NewNonRetryableApplicationError("integrationId is required", activities.ErrTypeConfig, nil)
	}
	st := &in
	window := st.BatchWindow
	if window <= 0 {
		window = defaultBatchWindow
	}
	continueAfter := st.ContinueAfter
	if continueAfter <= 0 {
		continueAfter = defaultContinueAfter
	}
	seen := make(map[string]bool, len(st.Keys))
	for _, k := range st.Keys {
		seen[k] = true
	}
	var (
		lastErr       string
		lastApplied   *time.Time
		oldestPending *time.Time
	)
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (EventsStatus, error) {
		return EventsStatus{
			IntegrationID: st.IntegrationID, Pending: len(st.Pending), Received: st.Received, Duplicates: st.Duplicates,
			Superseded: st.Superseded, Batches: st.Batches, Counts: st.Counts, Continued: st.Continued,
			LastApplied: lastApplied, LastError: lastErr, OldestPending: oldestPending,
			PropagationAgeSeconds: ageSeconds(oldestPending, workflow.Now(ctx)),
		}, nil
	}); err != nil {
		return err
	}

	take := func(evs []activities.Event) {
		now := workflow.Now(ctx).Unix()
		for _, ev := range evs {
			st.Received++
			if seen[ev.Key] {
				st.Duplicates++
				continue
			}
			seen[ev.Key] = true
			st.Keys, st.KeyTimes = append(st.Keys, ev.Key), append(st.KeyTimes, now)
			st.Pending = append(st.Pending, ev)
		}
		// Forget the keys past the platform's retry period, and the oldest
		// beyond the bound.
		cut := 0
		for cut < len(st.Keys) && (now-st.KeyTimes[cut] > int64(dedupeFor/time.Second) || len(st.Keys)-cut > maxDedupeKeys) {
			delete(seen, st.Keys[cut])
			cut++
		}
		st.Keys, st.KeyTimes = st.Keys[cut:], st.KeyTimes[cut:]
	}
	// Signals are read only here, in the workflow's own coroutine, so that
	// none can be taken off the channel and then left behind by a
	// continue-as-new.
	ch := workflow.GetSignalChannel(ctx, EventsSignal)
	drain := func() {
		for {
			var evs []activities.Event
			if !ch.ReceiveAsync(&evs) {
				return
			}
			take(evs)
		}
	}
	receive := func(c workflow.ReceiveChannel, _ bool) {
		var evs []activities.Event
		c.Receive(ctx, &evs)
		take(evs)
	}

	loadCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumInterval: time.Minute, MaximumAttempts: 5},
	})
	applyCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second, MaximumAttempts: 5,
		},
	})
	var settings *activities.Settings
	failures := 0
	backoff := func(err error) error {
		lastErr = err.Error()
		failures++
		wait := min(time.Duration(1<<min(failures, 8))*time.Second, 5*time.Minute)
		return workflow.Sleep(ctx, wait)
	}
	for {
		drain()
		info := workflow.GetInfo(ctx)
		if info.GetCurrentHistoryLength() >= continueAfter || info.GetContinueAsNewSuggested() {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return err
			}
			drain() // nothing is yielded between this and the return
			st.Continued++
			return workflow.NewContinueAsNewError(ctx, EventsWorkflow, *st)
		}
		if len(st.Pending) == 0 {
			sel := workflow.NewSelector(ctx)
			sel.AddReceive(ch, receive)
			sel.Select(ctx)
			continue
		}
		// Let a burst gather: until the window ends or a batch is full.
		timerCtx, cancelTimer := workflow.WithCancel(ctx)
		timer := workflow.NewTimer(timerCtx, window)
		for fired := false; !fired && len(st.Pending) < activities.MaxEventsBatch; {
			sel := workflow.NewSelector(ctx)
			sel.AddReceive(ch, receive)
			sel.AddFuture(timer, func(workflow.Future) { fired = true })
			sel.Select(ctx)
		}
		cancelTimer()
		drain()
		if settings == nil {
			var s activities.Settings
			if err := workflow.ExecuteActivity(loadCtx, a.LoadSettings, st.IntegrationID).Get(ctx, &s); err != nil {
				// Even when this worker does not know the integration (a
				// configuration rollout, a removed integration) the events
				// taken stay pending: the run never ends with them.
				if err := backoff(err); err != nil {
					return err
				}
				continue
			}
			settings = &s
		}
		n := min(len(st.Pending), activities.MaxEventsBatch)
		batch, superseded := activities.LatestPerPerson(st.Pending[:n])
		var res activities.PageResult
		err := workflow.ExecuteActivity(applyCtx, a.ApplyEvents, activities.EventsInput{
			IntegrationID: st.IntegrationID, Settings: settings, Events: batch,
		}).Get(ctx, &res)
		if err != nil {
			// The batch stays pending; the settings are read again, in
			// case a configuration change is what it waits for.
			settings = nil
			if err := backoff(err); err != nil {
				return err
			}
			continue
		}
		st.Pending = slices.Delete(st.Pending, 0, n)
		st.Superseded += superseded
		st.Batches++
		st.Counts.Add(res.Counts)
		oldestPending = res.OldestPending
		now := workflow.Now(ctx)
		lastApplied = &now
		if res.HoldWatermark {
			// A write failed for a transient reason: the batch's opt-outs
			// are applied again later (writes already made are found done).
			st.Pending = append(st.Pending, batch...)
			if err := backoff(temporal.NewApplicationError("some writes failed transiently; retrying the batch", "TransientWrites")); err != nil {
				return err
			}
			continue
		}
		failures, lastErr = 0, ""
	}
}
