package workflows

import (
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/optoutsync/optoutsync/activities"
)

// EventsSignal carries a []activities.Event to an integration's
// EventsWorkflow; the webhook receiver sends it with signal-with-start.
const EventsSignal = "events"

// EventsWorkflowID is the id of an integration's long-lived events workflow.
func EventsWorkflowID(integration string) string { return IDPrefix + integration + "-events" }

// Bounds of the events workflow.
const (
	// defaultBatchWindow is how long the first event of a batch waits for
	// others, so that a burst is taken in a few activities.
	defaultBatchWindow = 200 * time.Millisecond
	// defaultContinueAfter is the history length after which the workflow
	// continues as new, well under Temporal's 10,240-event warning.
	defaultContinueAfter = 4000
	// maxCarried bounds the events not yet in the inbox that a continue-
	// as-new carries (about 300 bytes each, under the 2 MB payload limit):
	// with more, the run goes on until they are kept or its history
	// reaches mustContinueAfter.
	maxCarried        = 3000
	mustContinueAfter = 40000
	// inboxChange is the GetVersion change id of the inbox: runs begun
	// before it finish with eventsWorkflowV0.
	inboxChange = "events-inbox"
)

// EventsRun is the events workflow's input, and all its state across
// continue-as-new.
type EventsRun struct {
	IntegrationID string `json:"integrationId"`
	// Pending are events received and not yet in the ledger's inbox.
	Pending []activities.Event `json:"pending,omitempty"`
	// Waiting is how many events the inbox held, not yet applied, at the
	// last look.
	Waiting int `json:"waiting,omitempty"`
	// Keys and KeyTimes are the recent deliveries a run of
	// eventsWorkflowV0 remembered; the inbox remembers them now.
	Keys     []string `json:"keys,omitempty"`
	KeyTimes []int64  `json:"keyTimes,omitempty"`
	// Counts add up across batches and runs.
	Counts     activities.Counts `json:"counts"`
	Received   int               `json:"received"`
	Duplicates int               `json:"duplicates"`
	Superseded int               `json:"superseded"`
	Batches    int               `json:"batches"`
	Continued  int               `json:"continued"`
	// BatchWindow and ContinueAfter override the defaults (tests).
	BatchWindow   time.Duration `json:"batchWindow,omitempty"`
	ContinueAfter int           `json:"continueAfter,omitempty"`
}

// EventsStatus is what the status query of the events workflow returns.
type EventsStatus struct {
	IntegrationID string            `json:"integrationId"`
	Pending       int               `json:"pending"`
	Received      int               `json:"received"`
	Duplicates    int               `json:"duplicates"`
	Superseded    int               `json:"superseded"`
	Batches       int               `json:"batches"`
	Counts        activities.Counts `json:"counts"`
	Continued     int               `json:"continuedAsNew,omitempty"`
	LastApplied   *time.Time        `json:"lastApplied,omitempty"`
	LastError     string            `json:"lastError,omitempty"`
	// OldestPending and PropagationAgeSeconds: the oldest opt-out not yet
	// written to its other side, and its age now.
	OldestPending         *time.Time `json:"oldestPending,omitempty"`
	PropagationAgeSeconds int64      `json:"propagationAgeSeconds,omitempty"`
}

// EventsWorkflow applies an integration's pushed marketing events as they
// arrive. It takes them from EventsSignal, gathers a burst, and hands it
// to TakeEvents, which keeps each delivery once in the ledger's inbox and
// applies the oldest waiting there (of each person only the latest
// choice) through the rules of the scheduled sync. Its own state holds
// only the events not yet in the inbox, so a long CRM outage under heavy
// traffic grows the inbox, not the workflow. It never ends on its own:
// events that could not be kept or applied are tried again after a
// backoff, and it continues as new before its history grows long. The
// scheduled SyncWorkflow remains the safety net.
func EventsWorkflow(ctx workflow.Context, in EventsRun) error {
	if in.IntegrationID == "" {
		return temporal.NewNonRetryableApplicationError("integrationId is required", activities.ErrTypeConfig, nil)
	}
	if workflow.GetVersion(ctx, inboxChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return eventsWorkflowV0(ctx, in)
	}
	st := &in
	st.Keys, st.KeyTimes = nil, nil // the inbox recognises a retried delivery
	window := st.BatchWindow
	if window <= 0 {
		window = defaultBatchWindow
	}
	continueAfter := st.ContinueAfter
	if continueAfter <= 0 {
		continueAfter = defaultContinueAfter
	}
	var (
		lastErr       string
		lastApplied   *time.Time
		oldestPending *time.Time
		// retryAt is when the inbox is next applied after a failure.
		retryAt  time.Time
		failures int
		// stashFailing: the last events offered to the inbox could not be
		// kept.
		stashFailing bool
	)
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (EventsStatus, error) {
		return EventsStatus{
			IntegrationID: st.IntegrationID, Pending: len(st.Pending) + st.Waiting, Received: st.Received, Duplicates: st.Duplicates,
			Superseded: st.Superseded, Batches: st.Batches, Counts: st.Counts, Continued: st.Continued,
			LastApplied: lastApplied, LastError: lastErr, OldestPending: oldestPending,
			PropagationAgeSeconds: ageSeconds(oldestPending, workflow.Now(ctx)),
		}, nil
	}); err != nil {
		return err
	}
	// Signals are read only here, in the workflow's own coroutine, so that
	// none can be taken off the channel and then left behind by a
	// continue-as-new.
	ch := workflow.GetSignalChannel(ctx, EventsSignal)
	take := func(evs []activities.Event) {
		st.Received += len(evs)
		st.Pending = append(st.Pending, evs...)
	}
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
	takeCtx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second, MaximumAttempts: 5,
		},
	})
	backoff := func(reason string) time.Duration {
		lastErr = reason
		failures++
		return min(time.Duration(1<<min(failures, 8))*time.Second, 5*time.Minute)
	}
	for {
		drain()
		// Time to continue as new: first the events taken are kept in the
		// inbox, so that the next run starts with next to none of them;
		// while they cannot be kept, up to maxCarried are carried.
		info := workflow.GetInfo(ctx)
		long := info.GetCurrentHistoryLength() >= continueAfter || info.GetContinueAsNewSuggested()
		if long && (len(st.Pending) == 0 || stashFailing && len(st.Pending) <= maxCarried) ||
			info.GetCurrentHistoryLength() >= mustContinueAfter {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return err
			}
			drain() // nothing is yielded between this and the return
			st.Continued++
			return workflow.NewContinueAsNewError(ctx, EventsWorkflow, *st)
		}
		now := workflow.Now(ctx)
		due := st.Waiting > 0 && !now.Before(retryAt)
		if len(st.Pending) == 0 && !due {
			// Nothing to keep, nothing to apply yet: wait for events, or
			// for the time to try the inbox again.
			timerCtx, cancelTimer := workflow.WithCancel(ctx)
			sel := workflow.NewSelector(ctx)
			sel.AddReceive(ch, receive)
			if st.Waiting > 0 {
				sel.AddFuture(workflow.NewTimer(timerCtx, retryAt.Sub(now)), func(workflow.Future) {})
			}
			sel.Select(ctx)
			cancelTimer()
			continue
		}
		if len(st.Pending) > 0 && !long {
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
		}
		n := min(len(st.Pending), activities.MaxEventsBatch)
		apply := !long && !workflow.Now(ctx).Before(retryAt)
		var res activities.TakeEventsResult
		err := workflow.ExecuteActivity(takeCtx, a.TakeEvents, activities.TakeEventsInput{
			IntegrationID: st.IntegrationID, Events: st.Pending[:n], Apply: apply,
		}).Get(ctx, &res)
		if err != nil {
			// Not kept (the ledger's database is unreachable): the events
			// stay here, and are offered again after a backoff.
			stashFailing = true
			if err := workflow.Sleep(ctx, backoff(err.Error())); err != nil {
				return err
			}
			continue
		}
		stashFailing = false
		st.Pending = slices.Delete(st.Pending, 0, n)
		st.Duplicates += res.Duplicates
		st.Waiting = res.Waiting
		if !apply {
			continue
		}
		st.Counts.Add(res.Counts)
		st.Superseded += res.Superseded
		if res.OldestPending != nil || res.Deferred == "" {
			oldestPending = res.OldestPending
		}
		if res.Deferred != "" {
			// The inbox keeps the events; applied again after a backoff,
			// while new ones are still taken in.
			retryAt = workflow.Now(ctx).Add(backoff(res.Deferred))
			continue
		}
		st.Batches++
		failures, lastErr, retryAt = 0, "", time.Time{}
		at := workflow.Now(ctx)
		lastApplied = &at
	}
}
