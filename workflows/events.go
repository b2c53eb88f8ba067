package workflows

import (
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
)

// EventsSignal carries a []activities.Event to an integration's
// EventsWorkflow; the webhook receiver sends it with signal-with-start.
const EventsSignal = "events"

// EventsWorkflowID is the id of an integration's long-lived events workflow.
func EventsWorkflowID(integration string) string { return IDPrefix + integration + "-events" }

// Bounds of the events workflow.
const (
	// defaultBatchWindow is how long the first event of a batch waits for
	// others, so that a burst is applied in a few activities.
	defaultBatchWindow = 200 * time.Millisecond
	// maxEventsBatch bounds the events one activity applies.
	maxEventsBatch = 500
	// dedupeFor is how long a delivery's key is remembered: Mailchimp
	// retries a failed delivery for about 75 minutes.
	dedupeFor = 2 * time.Hour
	// maxDedupeKeys bounds the keys carried across continue-as-new (a
	// duplicate past it is applied again, which writes nothing new).
	maxDedupeKeys = 20000
	// defaultContinueAfter is the history length after which the workflow
	// continues as new, well under Temporal's 10,240-event warning.
	defaultContinueAfter = 4000
)

// EventsRun is the events workflow's input, and all its state across
// continue-as-new.
type EventsRun struct {
	IntegrationID string `json:"integrationId"`
	// Pending are events received and not yet applied.
	Pending []activities.Event `json:"pending,omitempty"`
	// Keys and KeyTimes remember recent deliveries (oldest first), so that
	// a retried delivery is applied once.
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
// arrive: it takes them from EventsSignal, drops the platform's retries of
// a delivery already taken, keeps only the latest status change per
// person in a batch, applies the batch with ApplyEvents, and continues as
// new before its history grows long. It never ends on its own: a failed
// batch stays pending and is tried again after a backoff, with settings
// reloaded. The scheduled SyncWorkflow remains the safety net.
func EventsWorkflow(ctx workflow.Context, in EventsRun) error {
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
		for fired := false; !fired && len(st.Pending) < maxEventsBatch; {
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
		n := min(len(st.Pending), maxEventsBatch)
		batch, superseded := latestPerPerson(st.Pending[:n])
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

// latestPerPerson keeps, of each person's opt-outs (unsubscribes and
// spam complaints) and subscribes, only those of the latest choice: the
// subscribes when the latest subscribe is newer than every opt-out, the
// opt-outs otherwise (an opt-out wins a tie). Everything else (a clean, an
// address change, a deletion by the account) is kept. It reports how many
// it dropped.
func latestPerPerson(evs []activities.Event) ([]activities.Event, int) {
	optOut := func(ev activities.Event) bool {
		return ev.Type == connectors.EventUnsubscribe && !activities.AccountDeleted(ev) ||
			ev.Type == connectors.EventCleaned && ev.Reason == "abuse"
	}
	lastOut, lastIn := map[string]time.Time{}, map[string]time.Time{}
	for _, ev := range evs {
		switch {
		case optOut(ev):
			if t, ok := lastOut[ev.Person]; !ok || ev.FiredAt.After(t) {
				lastOut[ev.Person] = ev.FiredAt
			}
		case ev.Type == connectors.EventSubscribe:
			if t, ok := lastIn[ev.Person]; !ok || ev.FiredAt.After(t) {
				lastIn[ev.Person] = ev.FiredAt
			}
		}
	}
	out := make([]activities.Event, 0, len(evs))
	for _, ev := range evs {
		in, hasIn := lastIn[ev.Person]
		outAt, hasOut := lastOut[ev.Person]
		switch {
		case ev.Type == connectors.EventUnsubscribe && !activities.AccountDeleted(ev) && hasIn && in.After(outAt):
			continue // a later subscribe is the person's choice
		case ev.Type == connectors.EventSubscribe && hasOut && !in.After(outAt):
			continue // an opt-out as late or later stands
		}
		out = append(out, ev)
	}
	return out, len(evs) - len(out)
}
