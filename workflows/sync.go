// Package workflows holds SyncWorkflow, the durable sync of one
// integration, in three steps: marketing-to-crm always, crm-to-marketing
// when crmToMarketing is on, and field-sync when fields are mapped.
//
// Each run reads only what changed since its watermarks, page by page
// through activities that return counts and cursors, carries its state
// across continue-as-new, and hands the next run its watermarks through its
// result (a scheduled run reads the last completion result).
package workflows

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
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
	PhaseResubscribes   Phase = "marketing-to-crm:resubscribes"
	PhaseLateRecords    Phase = "marketing-to-crm:late-records"
	PhaseCRMToMarketing Phase = "crm-to-marketing"
	PhaseAudience       Phase = "field-sync:audience"
	PhaseFields         Phase = "field-sync"
	PhaseDone           Phase = "done"
	PhaseFailed         Phase = "failed"
)

// Watermarks are the points in time each step reads changes from.
type Watermarks struct {
	Unsubscribed time.Time `json:"unsubscribed"`
	Cleaned      time.Time `json:"cleaned"`
	Resubscribes time.Time `json:"resubscribes"`
	LateRecords  time.Time `json:"lateRecords"`
	CRMOptOuts   time.Time `json:"crmOptOuts"`
	Audience     time.Time `json:"audience"`
	Fields       time.Time `json:"fields"`
}

// Fingerprints are, per step, a hash of the settings that decide what the
// step reads and writes (audience, record types, lists, opt-out field...).
// A step whose fingerprint differs from the last completed run's reads
// from the beginning once: a watermark says nothing about what the old
// settings never looked at.
type Fingerprints struct {
	Unsubscribed string `json:"unsubscribed"`
	Cleaned      string `json:"cleaned"`
	Resubscribes string `json:"resubscribes"`
	LateRecords  string `json:"lateRecords"`
	CRMOptOuts   string `json:"crmOptOuts"`
	Audience     string `json:"audience,omitempty"`
	Fields       string `json:"fields"`
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
	// Fingerprints, with Since, are the settings those watermarks were read
	// with (a rerun from an earlier run's result): a step whose settings
	// changed since reads from the beginning, as after the last run.
	Fingerprints *Fingerprints `json:"fingerprints,omitempty"`
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
	// Version is the workflow code version the run started with (see
	// ledgerVersion), so a continued run keeps its steps.
	Version workflow.Version `json:"version,omitempty"`
	// Mirror is the audience-mirror version the run started with (see
	// mirrorVersion): with it, field sync reads the audience into the
	// ledger first and looks members up there.
	Mirror workflow.Version `json:"mirror,omitempty"`
	// Resets are the notes of steps that read from the beginning because
	// their settings changed.
	Resets []string `json:"resets,omitempty"`
	// LaterConsent are address hashes of members whose re-subscribe is
	// newer than a CRM opt-out (bounded).
	LaterConsent []string `json:"laterConsent,omitempty"`
	// OldestPending is the first sighting of the oldest opt-out not yet
	// propagated, as the ledger said after the last activity.
	OldestPending *time.Time `json:"oldestPending,omitempty"`
	// Previous are the last completed run's fingerprints, when it had any.
	Previous *Fingerprints `json:"previous,omitempty"`
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
	// Fingerprints are this run's settings per step, for the next run.
	Fingerprints *Fingerprints `json:"fingerprints,omitempty"`
	// OldestPending is the first sighting of the oldest opt-out observed but
	// not yet written to its other side; PropagationAgeSeconds is its age
	// when the run finished (0 when nothing is pending).
	OldestPending         *time.Time `json:"oldestPending,omitempty"`
	PropagationAgeSeconds int64      `json:"propagationAgeSeconds,omitempty"`
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
	// OldestPending and PropagationAgeSeconds: the oldest opt-out not yet
	// written to its other side, and its age now.
	OldestPending         *time.Time `json:"oldestPending,omitempty"`
	PropagationAgeSeconds int64      `json:"propagationAgeSeconds,omitempty"`
}

// ledgerVersion marks the runs that keep the consent ledger: they have the
// re-subscribe and late-record steps and compare settings fingerprints.
// Runs recorded before it replay with the old steps.
const (
	ledgerChange  = "consent-ledger"
	ledgerVersion = workflow.Version(1)
)

// mirrorVersion marks the runs whose field sync mirrors the audience in
// the ledger first (the field-sync:audience phase).
const (
	mirrorChange  = "audience-mirror"
	mirrorVersion = workflow.Version(1)
)

// runRecordVersion marks the runs that end by recording their success in
// the ledger (FinishRun), where every worker's metrics read it.
const (
	runRecordChange  = "run-record"
	runRecordVersion = workflow.Version(1)
)

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
		st.Version = workflow.GetVersion(ctx, ledgerChange, workflow.DefaultVersion, ledgerVersion)
		st.Mirror = workflow.GetVersion(ctx, mirrorChange, workflow.DefaultVersion, mirrorVersion)
		switch {
		case in.Since != nil:
			st.Since, st.Previous = *in.Since, in.Fingerprints
		case workflow.HasLastCompletionResult(ctx):
			var prev SyncResult
			if err := workflow.GetLastCompletionResult(ctx, &prev); err == nil {
				st.Since = prev.Next
				st.Previous = prev.Fingerprints
				if st.Previous == nil {
					st.Previous = &Fingerprints{}
				}
			} else {
				logger.Warn("last completion result unreadable; syncing from the beginning", "error", err)
			}
		default:
			if st.Version >= ledgerVersion {
				// The very first run: marketing-to-crm reads every
				// unsubscribe and finds every record of it now, so there
				// are no late records and no re-subscribes to catch up on.
				st.Since.Resubscribes, st.Since.LateRecords = st.StartedAt, st.StartedAt
			}
		}
	}
	var lastErr string
	if err := workflow.SetQueryHandler(ctx, StatusQuery, func() (Status, error) {
		return Status{
			IntegrationID: in.IntegrationID, Phase: st.Phase, StartedAt: st.StartedAt, Counts: st.Counts,
			Watermarks: st.Since, Failures: len(st.Failures), CRMAPIUsage: st.Usage, LastError: lastErr,
			Continued: st.Continued, OldestPending: st.OldestPending,
			PropagationAgeSeconds: ageSeconds(st.OldestPending, workflow.Now(ctx)),
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
		logRun(logger, in.IntegrationID, st, workflow.Now(ctx), err)
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
		if st.Version >= ledgerVersion && st.Previous != nil {
			resetChanged(st)
		}
	}

	continueAfter := in.ContinueAfter
	if continueAfter <= 0 {
		continueAfter = 500
	}
	calls := 0
	for st.Phase != PhaseDone {
		fn, input, counts := stepOf(st, in.IntegrationID)
		if fn == nil { // step turned off by the settings, or not in this version
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
		if st.Version >= ledgerVersion {
			st.OldestPending = res.OldestPending
		}
		for _, h := range res.LaterConsent {
			if len(st.LaterConsent) < MaxFailuresKept && !slices.Contains(st.LaterConsent, h) {
				st.LaterConsent = append(st.LaterConsent, h)
			}
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
	res := summarize(ctx, in.IntegrationID, st)
	if workflow.GetVersion(ctx, runRecordChange, workflow.DefaultVersion, runRecordVersion) >= runRecordVersion {
		rec := activities.RunRecord{IntegrationID: in.IntegrationID, FinishedAt: res.FinishedAt}
		if err := workflow.ExecuteActivity(ctx, a.FinishRun, rec).Get(ctx, nil); err != nil {
			return fail(err)
		}
	}
	logRun(logger, in.IntegrationID, st, res.FinishedAt, nil)
	return res, nil
}

// stepOf returns the activity, its input and the counts to add into for
// the current phase, or a nil activity when the phase is turned off.
func stepOf(st *RunState, id string) (any, activities.PageInput, *activities.Counts) {
	s := st.Settings
	in := activities.PageInput{IntegrationID: id, Settings: st.Settings, Cursor: st.Cursor}
	if st.Mirror >= mirrorVersion {
		in.RunStart = st.StartedAt
	}
	switch st.Phase {
	case PhaseUnsubscribes:
		in.Status, in.Since = connectors.StatusUnsubscribed, st.Since.Unsubscribed
		return a.SyncMarketingChanges, in, &st.Counts.MarketingToCRM
	case PhaseCleaned:
		in.Status, in.Since = connectors.StatusCleaned, st.Since.Cleaned
		return a.SyncMarketingChanges, in, &st.Counts.MarketingToCRM
	case PhaseResubscribes:
		if st.Version < ledgerVersion {
			return nil, in, nil
		}
		in.Status, in.Since = connectors.StatusSubscribed, st.Since.Resubscribes
		return a.SyncMarketingChanges, in, &st.Counts.MarketingToCRM
	case PhaseLateRecords:
		if st.Version < ledgerVersion {
			return nil, in, nil
		}
		in.Since = st.Since.LateRecords
		return a.SyncLateRecords, in, &st.Counts.MarketingToCRM
	case PhaseCRMToMarketing:
		if !s.CRMToMarketing {
			return nil, in, nil
		}
		in.Since = st.Since.CRMOptOuts
		return a.SyncCRMOptOuts, in, &st.Counts.CRMToMarketing
	case PhaseAudience:
		if len(s.FieldMap) == 0 || st.Mirror < mirrorVersion {
			return nil, in, nil
		}
		in.Since = st.Since.Audience
		return a.SyncAudience, in, &st.Counts.FieldSync
	case PhaseFields:
		if len(s.FieldMap) == 0 {
			return nil, in, nil
		}
		in.Since, in.Mirror = st.Since.Fields, st.Mirror >= mirrorVersion
		return a.SyncFields, in, &st.Counts.FieldSync
	}
	return nil, in, nil
}

func nextPhase(p Phase) Phase {
	switch p {
	case PhaseUnsubscribes:
		return PhaseCleaned
	case PhaseCleaned:
		return PhaseResubscribes
	case PhaseResubscribes:
		return PhaseLateRecords
	case PhaseLateRecords:
		return PhaseCRMToMarketing
	case PhaseCRMToMarketing:
		return PhaseAudience
	case PhaseAudience:
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
		Resubscribes: st.Since.Resubscribes,
		LateRecords:  st.Since.LateRecords,
		CRMOptOuts:   st.Since.CRMOptOuts,
		Audience:     st.Since.Audience,
		Fields:       st.Since.Fields,
	}
	var fp *Fingerprints
	if st.Version >= ledgerVersion {
		w.Resubscribes = advance(PhaseResubscribes, st.Since.Resubscribes)
		w.LateRecords = advance(PhaseLateRecords, st.Since.LateRecords)
		f := fingerprints(s)
		// A step that is off keeps the fingerprint of its last read, so
		// that turning it on compares with what it last looked at.
		var prev Fingerprints
		if st.Previous != nil {
			prev = *st.Previous
		}
		if !s.CRMToMarketing {
			f.CRMOptOuts = prev.CRMOptOuts
		}
		if len(s.FieldMap) == 0 {
			f.Fields = prev.Fields
		}
		if len(s.FieldMap) == 0 || st.Mirror < mirrorVersion {
			f.Audience = prev.Audience
		}
		fp = &f
	}
	// A step that is off keeps its watermark: turning it on later reads
	// everything it missed.
	if s.CRMToMarketing {
		w.CRMOptOuts = advance(PhaseCRMToMarketing, st.Since.CRMOptOuts)
	}
	if len(s.FieldMap) > 0 {
		w.Fields = advance(PhaseFields, st.Since.Fields)
		if st.Mirror >= mirrorVersion {
			w.Audience = advance(PhaseAudience, st.Since.Audience)
		}
	}
	now := workflow.Now(ctx)
	return SyncResult{
		IntegrationID:         id,
		StartedAt:             st.StartedAt,
		FinishedAt:            now,
		Counts:                st.Counts,
		Failures:              st.Failures,
		Next:                  w,
		CRMAPIUsage:           st.Usage,
		Fingerprints:          fp,
		OldestPending:         st.OldestPending,
		PropagationAgeSeconds: ageSeconds(st.OldestPending, now),
		Notes:                 notes(st),
	}
}

func ageSeconds(since *time.Time, now time.Time) int64 {
	if since == nil || !now.After(*since) {
		return 0
	}
	return int64(now.Sub(*since) / time.Second)
}

// fingerprints hashes, per step, the settings that decide what it reads
// and writes.
func fingerprints(s *activities.Settings) Fingerprints {
	h := func(parts ...string) string {
		sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
		return hex.EncodeToString(sum[:8])
	}
	types := strings.Join(slices.Sorted(slices.Values(s.RecordTypes)), ",")
	lists := strings.Join(slices.Sorted(slices.Values(s.Lists)), ",")
	optOut := string(s.OptOut.Kind) + ":" + s.OptOut.Field
	var fields, tags []string
	for _, k := range workflow.DeterministicKeys(s.FieldMap) {
		fields = append(fields, k+"="+s.FieldMap[k])
		tags = append(tags, s.FieldMap[k])
	}
	slices.Sort(tags)
	crm := s.MarketingKind + "/" + s.Audience + "|" + s.CRMKind
	crmOptOuts := []string{crm, types, lists, optOut}
	if s.SkipAbsent {
		// Only when set, so that existing fingerprints stay as they were.
		crmOptOuts = append(crmOptOuts, "skipAbsent")
	}
	return Fingerprints{
		Unsubscribed: h(crm, types, optOut),
		Cleaned:      h(crm, types, s.CleanedField),
		Resubscribes: h(crm),
		LateRecords:  h(crm, types, optOut),
		CRMOptOuts:   h(crmOptOuts...),
		Audience:     h(s.MarketingKind+"/"+s.Audience, strings.Join(tags, ",")),
		Fields:       h(crm, types, lists, optOut, strings.Join(fields, ","), string(s.StatusIfNew)),
	}
}

// resetChanged sends every step whose settings changed since the last
// completed run back to the beginning, once, and says why.
func resetChanged(st *RunState) {
	now, prev := fingerprints(st.Settings), *st.Previous
	reset := func(name, old, cur string, w *time.Time, what string) {
		if old == cur || w.IsZero() {
			return
		}
		*w = time.Time{}
		why := "its settings (" + what + ") changed since the last completed run"
		if old == "" {
			why = "the last completed run predates the consent ledger, which it fills"
		}
		st.Resets = append(st.Resets, fmt.Sprintf("%s reads from the beginning once: %s.", name, why))
	}
	reset("marketing-to-crm (unsubscribes)", prev.Unsubscribed, now.Unsubscribed, &st.Since.Unsubscribed, "audience, record types or opt-out field")
	reset("marketing-to-crm (cleaned)", prev.Cleaned, now.Cleaned, &st.Since.Cleaned, "audience, record types or cleaned field")
	reset("Re-subscribes", prev.Resubscribes, now.Resubscribes, &st.Since.Resubscribes, "audience")
	reset("Late CRM records", prev.LateRecords, now.LateRecords, &st.Since.LateRecords, "audience, record types or opt-out field")
	if st.Settings.CRMToMarketing {
		reset("crm-to-marketing", prev.CRMOptOuts, now.CRMOptOuts, &st.Since.CRMOptOuts, "audience, record types, lists, opt-out field or addAbsentAsUnsubscribed")
	}
	if len(st.Settings.FieldMap) > 0 {
		reset("field-sync", prev.Fields, now.Fields, &st.Since.Fields, "audience, record types, lists, opt-out field, field map or statusIfNew")
		if st.Mirror >= mirrorVersion {
			// A mirror never filled reads the whole audience, without a note.
			if prev.Audience == "" {
				st.Since.Audience = time.Time{}
			} else {
				reset("The audience mirror", prev.Audience, now.Audience, &st.Since.Audience, "audience or mapped merge fields")
			}
		}
	}
}

// notes explains the run in words: what moved, what did not, and why.
func notes(st *RunState) []string {
	s, c := st.Settings, st.Counts
	n := slices.Clone(st.Resets)
	m := c.MarketingToCRM
	n = append(n, fmt.Sprintf("marketing-to-crm: %d unsubscribed member(s) read; %d CRM record(s) opted out, %d already opted out, %d address(es) not in the CRM.",
		m.Unsubscribes, m.CRMOptedOut, m.CRMAlreadyOut, m.NotInCRM))
	if m.DuplicateRecords > 0 {
		n = append(n, fmt.Sprintf("%d extra CRM record(s) shared an address with another record; the opt-out went to all of them.", m.DuplicateRecords))
	}
	if m.LateOptedOut > 0 {
		n = append(n, fmt.Sprintf("%d CRM record(s) created or given an address after its marketing unsubscribe were opted out (the ledger remembers the unsubscribe).", m.LateOptedOut))
	}
	if m.JoinedUnsub > 0 {
		n = append(n, fmt.Sprintf("%d member(s) joined the audience after a CRM opt-out of their address that the audience had lacked, and were unsubscribed: joining is not consent after an opt-out (a later re-subscribe is).", m.JoinedUnsub))
	}
	if m.Resubscribes > 0 {
		n = append(n, fmt.Sprintf("%d member(s) re-subscribed after an opt-out: their later choice is recorded and no earlier opt-out will undo it.", m.Resubscribes))
	}
	if m.Cleaned > 0 {
		msg := fmt.Sprintf("%d cleaned (bounced) member(s): a bounce is not an opt-out, so the CRM opt-out was not set", m.Cleaned)
		if s.CleanedField != "" {
			msg += fmt.Sprintf("; %d record(s) marked in %s", m.CleanedRecorded, s.CleanedField)
		}
		n = append(n, msg+".")
	}
	if !s.CRMToMarketing {
		n = append(n, "crm-to-marketing is off (crmToMarketing: false): CRM opt-outs were not sent to the audience.")
	} else {
		k := c.CRMToMarketing
		n = append(n, fmt.Sprintf("crm-to-marketing: %d opted-out CRM record(s) read; %d member(s) changed to unsubscribed, %d address(es) not in the audience added as unsubscribed, %d already unsubscribed or cleaned (not sent).",
			k.CRMOptOuts, k.Unsubscribed, k.AddedUnsub, k.AlreadyUnsub))
		if k.EchoSkipped > 0 {
			n = append(n, fmt.Sprintf("%d CRM opt-out(s) were written by this product from a marketing unsubscribe and were not sent back.", k.EchoSkipped))
		}
		if k.LaterConsent > 0 {
			n = append(n, fmt.Sprintf("%d CRM opt-out(s) are older than the member's re-subscribe in the marketing platform: the later choice stands, the member stays subscribed and the CRM field is left as it is (address hashes: %s).",
				k.LaterConsent, strings.Join(st.LaterConsent, ", ")))
		}
		if k.AbsentNotAdded > 0 {
			n = append(n, fmt.Sprintf("%d opted-out address(es) are not in the audience (or are archived there) and were not added as unsubscribed members (addAbsentAsUnsubscribed: false); each is unsubscribed if it joins the audience.", k.AbsentNotAdded))
		}
		if k.KnownRefused > 0 {
			n = append(n, fmt.Sprintf("%d address(es) were refused for good by the marketing platform in an earlier run (invalid, fake or forgotten): not sent again; the ledger holds the answer.", k.KnownRefused))
		}
		if k.OutsideLists > 0 {
			n = append(n, fmt.Sprintf("%d opted-out CRM record(s) were left alone because they are outside the integration's lists %v; each is unsubscribed by the first run after it is added to one of them.", k.OutsideLists, s.Lists))
		}
		if k.InvalidEmails > 0 {
			n = append(n, fmt.Sprintf("%d opted-out CRM record(s) have a missing or invalid address and were skipped until corrected.", k.InvalidEmails))
		}
	}
	if len(s.FieldMap) > 0 {
		f := c.FieldSync
		n = append(n, fmt.Sprintf("field-sync: %d member(s) updated, %d added as %s; %d unsubscribed, cleaned, archived or departed member(s), %d opted-out CRM record(s) and %d address(es) the ledger holds as opted out given no update.",
			f.FieldsUpdated, f.MembersAdded, s.StatusIfNew, f.SkippedBlocked, f.SkippedOptOut, f.SkippedSuppressed))
		if f.Mirrored > 0 || f.FieldsUnchanged > 0 {
			n = append(n, fmt.Sprintf("field-sync: %d changed audience member(s) mirrored in the ledger; %d member(s) already held the CRM's values and were not written.",
				f.Mirrored, f.FieldsUnchanged))
		}
	}
	held := c.MarketingToCRM.ComplianceHeld + c.CRMToMarketing.ComplianceHeld + c.FieldSync.ComplianceHeld
	if held > 0 {
		n = append(n, fmt.Sprintf("%d write(s) refused by a compliance state (unsubscribed, cleaned or permanently deleted): final, not retried.", held))
	}
	refused := c.MarketingToCRM.Refused + c.CRMToMarketing.Refused + c.FieldSync.Refused
	if refused > 0 {
		n = append(n, fmt.Sprintf("%d item(s) were refused for good (an invalid, fake or forgotten address, a record that no longer exists): final, recorded in the ledger and named in the failures; they do not hold the watermark.", refused))
	}
	failed := c.MarketingToCRM.Failed + c.CRMToMarketing.Failed + c.FieldSync.Failed
	if failed > 0 {
		n = append(n, fmt.Sprintf("%d item(s) could not be written for a transient reason; their step's watermark was kept so the next run retries them.", failed))
	}
	if st.OldestPending != nil {
		n = append(n, fmt.Sprintf("The oldest opt-out not yet written to its other side was first seen at %s.", st.OldestPending.UTC().Format(time.RFC3339)))
	}
	return n
}
