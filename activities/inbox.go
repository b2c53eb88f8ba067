package activities

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
)

// Bounds of the events inbox.
const (
	// MaxEventsBatch bounds the events one TakeEvents applies.
	MaxEventsBatch = 500
	// EventsDedupeFor is how long an applied delivery's key is kept to
	// recognise its retry: Mailchimp retries a failed delivery for about
	// 75 minutes.
	EventsDedupeFor = 2 * time.Hour
)

// TakeEventsInput asks TakeEvents to keep pushed events in the inbox and,
// with Apply, to apply the oldest waiting there.
type TakeEventsInput struct {
	IntegrationID string  `json:"integrationId"`
	Events        []Event `json:"events,omitempty"`
	Apply         bool    `json:"apply,omitempty"`
}

// TakeEventsResult is what TakeEvents did.
type TakeEventsResult struct {
	PageResult
	// Taken are the events new to the inbox; Duplicates the retried
	// deliveries already taken (applied or not).
	Taken      int `json:"taken"`
	Duplicates int `json:"duplicates,omitempty"`
	// Applied are the events applied; Superseded those dropped as not the
	// person's latest choice.
	Applied    int `json:"applied,omitempty"`
	Superseded int `json:"superseded,omitempty"`
	// Waiting are the events left in the inbox.
	Waiting int `json:"waiting"`
	// Deferred says why the waiting events could not be applied now (the
	// CRM or the platform is down, the integration is not configured on
	// this worker): they stay in the inbox for a later try.
	Deferred string `json:"deferred,omitempty"`
}

// TakeEvents keeps pushed events in the ledger's inbox, each delivery
// once, so that the events workflow carries none of them in its state;
// then, with Apply, it applies up to MaxEventsBatch of the oldest waiting,
// of each person only the latest choice, through the rules of the
// scheduled sync. It fails only when the events could not be kept; a
// failure to apply them is Deferred, and they wait for the next try. The
// integration's settings are this worker's: each batch stands alone.
func (a *Activities) TakeEvents(ctx context.Context, in TakeEventsInput) (TakeEventsResult, error) {
	var res TakeEventsResult
	entries := make([]ledger.InboxEntry, 0, len(in.Events))
	for _, ev := range in.Events {
		data, err := json.Marshal(ev)
		if err != nil {
			return res, err
		}
		entries = append(entries, ledger.InboxEntry{Delivery: ev.Key, Data: string(data)})
	}
	added, err := a.ledger.Stash(ctx, in.IntegrationID, entries, time.Now().Add(-EventsDedupeFor))
	if err != nil {
		return res, classify(err, in.IntegrationID, "keeping pushed events")
	}
	res.Taken, res.Duplicates = added, len(entries)-added
	limit := 0
	if in.Apply {
		limit = MaxEventsBatch
	}
	waiting, total, err := a.ledger.Inbox(ctx, in.IntegrationID, limit)
	if err != nil {
		return res, classify(err, in.IntegrationID, "reading pushed events")
	}
	res.Waiting = total
	if len(waiting) == 0 {
		return res, nil
	}
	evs := make([]Event, 0, len(waiting))
	ids := make([]int64, 0, len(waiting))
	for _, e := range waiting {
		ids = append(ids, e.ID)
		var ev Event
		if err := json.Unmarshal([]byte(e.Data), &ev); err != nil {
			// Written by this code: reported and passed over, never
			// retried forever.
			a.log.Error("pushed event unreadable; skipped", "integration", in.IntegrationID, "delivery", e.Delivery, "error", err)
			res.Counts.EventsIgnored++
			continue
		}
		evs = append(evs, ev)
	}
	batch, superseded := LatestPerPerson(evs)
	applied, err := a.applyEvents(ctx, EventsInput{IntegrationID: in.IntegrationID, Events: batch})
	if err != nil {
		if _, named := errors.AsType[*temporal.ApplicationError](err); !named {
			err = classify(err, in.IntegrationID, "applying pushed events")
		}
		a.log.Warn("pushed events wait in the inbox", "integration", in.IntegrationID, "waiting", total, "error", err)
		res.Deferred = err.Error()
		return res, nil
	}
	res.PageResult = applied
	res.Counts.EventsIgnored += len(evs) - len(batch) - superseded
	if applied.HoldWatermark {
		// Some writes failed transiently: the whole batch is applied again
		// later (writes already made are found done).
		res.Deferred = "some writes failed transiently; the batch is applied again"
		return res, nil
	}
	if err := a.ledger.MarkApplied(ctx, in.IntegrationID, ids, time.Now()); err != nil {
		// Applied and not marked: applied again next time, which finds the
		// writes done.
		res.Deferred = classify(err, in.IntegrationID, "marking pushed events applied").Error()
		return res, nil
	}
	res.Applied, res.Superseded, res.Waiting = len(batch), superseded, total-len(waiting)
	return res, nil
}

// LatestPerPerson keeps, of each person's opt-outs (unsubscribes and
// spam complaints) and subscribes, only those of the latest choice: the
// subscribes when the latest subscribe is newer than every opt-out, the
// opt-outs otherwise (an opt-out wins a tie). Everything else (a clean, an
// address change, a deletion by the account) is kept. It reports how many
// it dropped.
func LatestPerPerson(evs []Event) ([]Event, int) {
	optOut := func(ev Event) bool {
		return ev.Type == connectors.EventUnsubscribe && !AccountDeleted(ev) ||
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
	out := make([]Event, 0, len(evs))
	for _, ev := range evs {
		in, hasIn := lastIn[ev.Person]
		outAt, hasOut := lastOut[ev.Person]
		switch {
		case ev.Type == connectors.EventUnsubscribe && !AccountDeleted(ev) && hasIn && in.After(outAt):
			continue // a later subscribe is the person's choice
		case ev.Type == connectors.EventSubscribe && hasOut && !in.After(outAt):
			continue // an opt-out as late or later stands
		}
		out = append(out, ev)
	}
	return out, len(evs) - len(out)
}
