// Package workflows holds SyncWorkflow, the durable sync of one
// integration: Marketing → CRM always, CRM → Marketing when the Step 1
// toggle is on, and the field mapping (Step 3) when fields are mapped.
//
// Each run reads only what changed since its watermarks, page by page
// through activities that return counts and cursors, carries its state
// across continue-as-new, and hands the next run its watermarks through its
// result (a scheduled run reads the last completion result).
package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
)

// Names the worker, the starter and the temporal CLI share.
const (
	// TaskQueue is the task queue of the sync workers.
	TaskQueue = "optout-sync"
	// StatusQuery returns a Status: `temporal workflow query --type status`.
	StatusQuery = "status"
	// IDPrefix starts every schedule and workflow id.
	IDPrefix = "optout-sync-"
)

// IntegrationKey is the custom search attribute holding the integration
// id, so `temporal workflow list --query 'OptOutIntegration="demo"'` finds
// an integration's runs.
var IntegrationKey = temporal.NewSearchAttributeKeyKeyword("OptOutIntegration")

// ScheduleID is the id of an integration's schedule; scheduled runs get
// workflow ids that start with it.
func ScheduleID(integration string) string { return IDPrefix + integration }

// WorkflowID is the id of a run started directly (not by the schedule).
func WorkflowID(integration string) string { return IDPrefix + integration + "-manual" }

// Phase is where a run is.
type Phase string

// The phases, in order.
const (
	PhaseStarting       Phase = "starting"
	PhaseUnsubscribes   Phase = "marketing-to-crm:unsubscribed"
	PhaseCleaned        Phase = "marketing-to-crm:cleaned"
	PhaseCRMToMarketing Phase = "crm-to-marketing"
	PhaseFields         Phase = "field-sync"
	PhaseDone           Phase = "done"
	PhaseFailed         Phase = "failed"
)

// Watermarks are the points in time each step reads changes from.
type Watermarks struct {
	Unsubscribed time.Time `json:"unsubscribed"`
	Cleaned      time.Time `json:"cleaned"`
	CRMOptOuts   time.Time `json:"crmOptOuts"`
	Fields       time.Time `json:"fields"`
}

// StepCounts are the counts of each step.
type StepCounts struct {
	MarketingToCRM activities.Counts `json:"marketingToCRM"`
	CRMToMarketing activities.Counts `json:"crmToMarketing"`
	FieldSync      activities.Counts `json:"fieldSync"`
}

// SyncInput starts a run. Only the integration id is needed; no secret is
// ever part of it.
type SyncInput struct {
	IntegrationID string `json:"integrationId"`
	// Since overrides the watermarks the run would otherwise take from the
	// last completed run (e.g. a full resync from zero).
	Since *Watermarks `json:"since,omitempty"`
	// ContinueAfter continues the run as new after this many activity
	// calls, or earlier when Temporal suggests it; 0 means 500.
	ContinueAfter int `json:"continueAfter,omitempty"`
	// State carries a run in progress across continue-as-new.
	State *RunState `json:"state,omitempty"`
}

// RunState is everything a run needs to go on after continue-as-new.
type RunState struct {
	StartedAt time.Time  `json:"startedAt"`
	Since     Watermarks `json:"since"`
	Phase     Phase      `json:"phase"`
	Cursor    string     `json:"cursor,omitempty"`
	Counts    StepCounts `json:"counts"`
	// Held marks the steps whose watermark must stay put: an item failed
	// and the next run must retry it.
	Held      map[Phase]bool             `json:"held,omitempty"`
	Failures  []activities.FailureReport `json:"failures,omitempty"`
	Usage     *activities.APIUsage       `json:"crmApiUsage,omitempty"`
	Continued int                        `json:"continued,omitempty"`
	// Settings are loaded once per run and carried across continue-as-new.
	Settings *activities.Settings `json:"settings,omitempty"`
}

// SyncResult is a run's summary, and the next run's starting point.
type SyncResult struct {
	IntegrationID string                     `json:"integrationId"`
	StartedAt     time.Time                  `json:"startedAt"`
	FinishedAt    time.Time                  `json:"finishedAt"`
	Counts        StepCounts                 `json:"counts"`
	Failures      []activities.FailureReport `json:"failures,omitempty"`
	// Next are the watermarks the next run starts from.
	Next Watermarks `json:"next"`
	// CRMAPIUsage is the CRM's daily API budget after the run, where it has one.
	CRMAPIUsage *activities.APIUsage `json:"crmApiUsage,omitempty"`
	// Notes say, in words, what the run did and why records did or did not move.
	Notes []string `json:"notes,omitempty"`
}

// Status is what the status query returns.
type Status struct {
	IntegrationID string               `json:"integrationId"`
	Phase         Phase                `json:"phase"`
	StartedAt     time.Time            `json:"startedAt"`
	Counts        StepCounts           `json:"counts"`
	Watermarks    Watermarks           `json:"watermarks"`
	Failures      int                  `json:"failures"`
	CRMAPIUsage   *activities.APIUsage `json:"crmApiUsage,omitempty"`
	LastError     string               `json:"lastError,omitempty"`
	Continued     int                  `json:"continuedAsNew,omitempty"`
}

// MaxFailuresKept bounds the failures a run's state and result carry.
const MaxFailuresKept = 100

var a *activities.Activities // method values name the activities; never called

// SyncWorkflow syncs one integration once.
func SyncWorkflow(ctx workflow.Context, in SyncInput) (SyncResult, error) {
	logger := workflow.GetLogger(ctx)
	if in.IntegrationID == "" {
		return SyncResult{}, temporal.NewNonRetryableApplicationError("integrationId is required", activities.ErrTypeConfig, nil)
	}
	st := in.State
	if st == nil {
		st = &RunState{StartedAt: workflow.Now(ctx), Phase: PhaseStarting}
		switch {
		case in.Since != nil:
			st.Since = *in.Since
		case workflow.HasLastCompletionResult(ctx):
			var prev SyncResult
			if err := workflow.GetLastCompletionResult(ctx, &prev); err == nil {
				st.Since = prev.Next
			} else {
				logger.Warn("last completion result unreadable; syncing from the beginning", "error", err)
			}
		}
	}
	var lastErr string
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (Status, error) {
		return Status{
			IntegrationID: in.IntegrationID, Phase: st.Phase, StartedAt: st.StartedAt, Counts: st.Counts,
			Watermarks: st.Since, Failures: len(st.Failures), CRMAPIUsage: st.Usage, LastError: lastErr,
			Continued: st.Continued,
		}, nil
	}); err != nil {
		return SyncResult{}, err
	}

	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 15 * time.Minute,
		HeartbeatTimeout:    2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			MaximumAttempts:    8,
		},
	})
	fail := func(err error) (SyncResult, error) {
		lastErr = err.Error()
		st.Phase = PhaseFailed
		return SyncResult{}, err
	}

	if st.Settings == nil {
		var s activities.Settings
		if err := workflow.ExecuteActivity(ctx, a.LoadSettings, in.IntegrationID).Get(ctx, &s); err != nil {
			return fail(err)
		}
		st.Settings = &s
		st.Phase = PhaseUnsubscribes
	}

	continueAfter := in.ContinueAfter
	if continueAfter <= 0 {
		continueAfter = 500
	}
	calls := 0
	for st.Phase != PhaseDone {
		fn, input, counts := stepOf(st, in.IntegrationID)
		if fn == nil { // step turned off by the settings
			st.Phase, st.Cursor = nextPhase(st.Phase), ""
			continue
		}
		if calls >= continueAfter || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return fail(err)
			}
			st.Continued++
			return SyncResult{}, workflow.NewContinueAsNewError(ctx, SyncWorkflow,
				SyncInput{IntegrationID: in.IntegrationID, ContinueAfter: in.ContinueAfter, State: st})
		}
		var res activities.PageResult
		calls++
		if err := workflow.ExecuteActivity(ctx, fn, input).Get(ctx, &res); err != nil {
			return fail(err) // the phase is in the status; the error keeps its type
		}
		counts.Add(res.Counts)
		if res.CRMAPIUsage != nil {
			st.Usage = res.CRMAPIUsage
		}
		for _, f := range res.Failures {
			if len(st.Failures) < MaxFailuresKept {
				st.Failures = append(st.Failures, f)
			}
		}
		if res.HoldWatermark {
			if st.Held == nil {
				st.Held = map[Phase]bool{}
			}
			st.Held[st.Phase] = true
		}
		st.Cursor = res.Next
		if res.Next == "" {
			st.Phase = nextPhase(st.Phase)
		}
	}
	return summarize(ctx, in.IntegrationID, st), nil
}

// stepOf returns the activity, its input and the counts to add into for
// the current phase, or a nil activity when the phase is turned off.
func stepOf(st *RunState, id string) (any, activities.PageInput, *activities.Counts) {
	s := st.Settings
	in := activities.PageInput{IntegrationID: id, Cursor: st.Cursor}
	switch st.Phase {
	case PhaseUnsubscribes:
		in.Status, in.Since = connectors.StatusUnsubscribed, st.Since.Unsubscribed
		return a.SyncMarketingChanges, in, &st.Counts.MarketingToCRM
	case PhaseCleaned:
		in.Status, in.Since = connectors.StatusCleaned, st.Since.Cleaned
		return a.SyncMarketingChanges, in, &st.Counts.MarketingToCRM
	case PhaseCRMToMarketing:
		if !s.CRMToMarketing {
			return nil, in, nil
		}
		in.Since = st.Since.CRMOptOuts
		return a.SyncCRMOptOuts, in, &st.Counts.CRMToMarketing
	case PhaseFields:
		if len(s.FieldMap) == 0 {
			return nil, in, nil
		}
		in.Since = st.Since.Fields
		return a.SyncFields, in, &st.Counts.FieldSync
	}
	return nil, in, nil
}

func nextPhase(p Phase) Phase {
	switch p {
	case PhaseUnsubscribes:
		return PhaseCleaned
	case PhaseCleaned:
		return PhaseCRMToMarketing
	case PhaseCRMToMarketing:
		return PhaseFields
	}
	return PhaseDone
}

// summarize builds the run's result: the counts, the failures, the next
// watermarks (this run's start less the overlap, except for steps where an
// item failed, which keep theirs so the next run retries it), and notes.
func summarize(ctx workflow.Context, id string, st *RunState) SyncResult {
	s := st.Settings
	next := st.StartedAt.Add(-s.Overlap)
	advance := func(p Phase, old time.Time) time.Time {
		if st.Held[p] {
			return old
		}
		return next
	}
	w := Watermarks{
		Unsubscribed: advance(PhaseUnsubscribes, st.Since.Unsubscribed),
		Cleaned:      advance(PhaseCleaned, st.Since.Cleaned),
		CRMOptOuts:   st.Since.CRMOptOuts,
		Fields:       st.Since.Fields,
	}
	// A step that is off keeps its watermark: turning it on later reads
	// everything it missed.
	if s.CRMToMarketing {
		w.CRMOptOuts = advance(PhaseCRMToMarketing, st.Since.CRMOptOuts)
	}
	if len(s.FieldMap) > 0 {
		w.Fields = advance(PhaseFields, st.Since.Fields)
	}
	return SyncResult{
		IntegrationID: id,
		StartedAt:     st.StartedAt,
		FinishedAt:    workflow.Now(ctx),
		Counts:        st.Counts,
		Failures:      st.Failures,
		Next:          w,
		CRMAPIUsage:   st.Usage,
		Notes:         notes(st),
	}
}

// notes explains the run in words: what moved, what did not, and why.
func notes(st *RunState) []string {
	s, c := st.Settings, st.Counts
	var n []string
	m := c.MarketingToCRM
	n = append(n, fmt.Sprintf("Marketing → CRM: %d unsubscribed member(s) read; %d CRM record(s) opted out, %d already opted out, %d address(es) not in the CRM.",
		m.Unsubscribes, m.CRMOptedOut, m.CRMAlreadyOut, m.NotInCRM))
	if m.DuplicateRecords > 0 {
		n = append(n, fmt.Sprintf("%d extra CRM record(s) shared an address with another record; the opt-out went to all of them.", m.DuplicateRecords))
	}
	if m.Cleaned > 0 {
		msg := fmt.Sprintf("%d cleaned (bounced) member(s): a bounce is not an opt-out, so the CRM opt-out was not set", m.Cleaned)
		if s.CleanedField != "" {
			msg += fmt.Sprintf("; %d record(s) marked in %s", m.CleanedRecorded, s.CleanedField)
		}
		n = append(n, msg+".")
	}
	if !s.CRMToMarketing {
		n = append(n, "CRM → Marketing is off (Step 1 toggle): CRM opt-outs were not sent to the audience.")
	} else {
		k := c.CRMToMarketing
		n = append(n, fmt.Sprintf("CRM → Marketing: %d opted-out CRM record(s) read; %d address(es) unsubscribed from the audience.", k.CRMOptOuts, k.Unsubscribed))
		if k.OutsideLists > 0 {
			n = append(n, fmt.Sprintf("%d opted-out CRM record(s) were left alone because they are outside the integration's lists %v; each is unsubscribed by the first run after it is added to one of them.", k.OutsideLists, s.Lists))
		}
		if k.InvalidEmails > 0 {
			n = append(n, fmt.Sprintf("%d opted-out CRM record(s) have a missing or invalid address and were skipped until corrected.", k.InvalidEmails))
		}
	}
	if len(s.FieldMap) > 0 {
		f := c.FieldSync
		n = append(n, fmt.Sprintf("Field sync: %d member(s) updated, %d added as %s; %d unsubscribed, cleaned or archived member(s) and %d opted-out CRM record(s) given no update.",
			f.FieldsUpdated, f.MembersAdded, s.StatusIfNew, f.SkippedBlocked, f.SkippedOptOut))
	}
	held := c.MarketingToCRM.ComplianceHeld + c.CRMToMarketing.ComplianceHeld + c.FieldSync.ComplianceHeld
	if held > 0 {
		n = append(n, fmt.Sprintf("%d write(s) refused by a compliance state (unsubscribed, cleaned or permanently deleted): final, not retried.", held))
	}
	failed := c.MarketingToCRM.Failed + c.CRMToMarketing.Failed + c.FieldSync.Failed
	if failed > 0 {
		n = append(n, fmt.Sprintf("%d item(s) could not be written; their step's watermark was kept so the next run retries them.", failed))
	}
	return n
}
