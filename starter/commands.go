package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/workflows"
)

// RunOptions tune Run.
type RunOptions struct {
	// NoWait returns as soon as the run has started, printing its id.
	NoWait bool
	// Out receives the progress and the summary.
	Out io.Writer
	// Poll is the progress interval; 0 means one second.
	Poll time.Duration
	// StartTimeout bounds the wait for the schedule to start the run; 0 means 30s.
	StartTimeout time.Duration
}

// Run triggers the integration's schedule, so that the run gets the last
// completion result (its watermarks) and the schedule's overlap policy, then
// follows the run it started: progress from the status query every Poll,
// then the summary. A run already in progress (the schedule skips the
// trigger) is followed instead.
func Run(ctx context.Context, c client.Client, integration string, o RunOptions) error {
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	h := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(integration))
	desc, err := describeSchedule(ctx, h, integration)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	// Keyed by workflow and run id: the schedule names runs by the second,
	// so a run triggered in the same second as the last may reuse its id.
	for _, a := range desc.Info.RecentActions {
		if r := a.StartWorkflowResult; r != nil {
			known[runKey(*r)] = true
		}
	}
	for _, r := range desc.Info.RunningWorkflows {
		known[runKey(r)] = true
	}
	var wid string
	if len(desc.Info.RunningWorkflows) > 0 {
		// SKIP would drop the trigger: follow the run in progress.
		wid = desc.Info.RunningWorkflows[0].WorkflowID
		fmt.Fprintf(o.Out, "A run of %s is already in progress: %s\n", integration, wid)
	} else {
		if err := h.Trigger(ctx, client.ScheduleTriggerOptions{}); err != nil {
			return fail(ExitUnreachable, "triggering schedule %s: %w", h.GetID(), err)
		}
		wid, err = waitForStart(ctx, h, known, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "Started %s\n", wid)
	}
	if o.NoWait {
		fmt.Fprintf(o.Out, "Follow it with: starter status %s  (or temporal workflow query --workflow-id %s --type %s)\n",
			integration, wid, workflows.StatusQuery)
		return nil
	}
	return follow(ctx, c, wid, o)
}

func describeSchedule(ctx context.Context, h client.ScheduleHandle, integration string) (*client.ScheduleDescription, error) {
	desc, err := h.Describe(ctx)
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return nil, fail(ExitUnreachable, "no schedule %s: is %q in the worker's configuration, and has the worker started?", h.GetID(), integration)
	case err != nil:
		return nil, fail(ExitUnreachable, "describing schedule %s: %w", h.GetID(), err)
	}
	return desc, nil
}

func runKey(e client.ScheduleWorkflowExecution) string {
	return e.WorkflowID + "/" + e.FirstExecutionRunID
}

// waitForStart polls the schedule until a workflow it did not list before
// shows up among its running workflows or recent actions.
func waitForStart(ctx context.Context, h client.ScheduleHandle, known map[string]bool, o RunOptions) (string, error) {
	deadline := time.Now().Add(o.StartTimeout)
	tick := min(o.Poll, 200*time.Millisecond)
	for {
		desc, err := h.Describe(ctx)
		if err != nil {
			return "", fail(ExitUnreachable, "describing schedule %s: %w", h.GetID(), err)
		}
		for _, r := range desc.Info.RunningWorkflows {
			if !known[runKey(r)] {
				return r.WorkflowID, nil
			}
		}
		for _, a := range desc.Info.RecentActions {
			if r := a.StartWorkflowResult; r != nil && !known[runKey(*r)] {
				return r.WorkflowID, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fail(ExitRunFailed, "the schedule %s did not start a run within %s (was the trigger skipped by its overlap policy, or did the last run start in this same second? try again)", h.GetID(), o.StartTimeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(tick):
		}
	}
}

// follow prints the run's status every Poll until it closes, then its
// summary. The workflow id without a run id follows continue-as-new.
func follow(ctx context.Context, c client.Client, wid string, o RunOptions) error {
	done := make(chan error, 1)
	var res workflows.SyncResult
	go func() { done <- c.GetWorkflow(ctx, wid, "").Get(ctx, &res) }()
	last := ""
	t := time.NewTicker(o.Poll)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fail(ExitRunFailed, "run %s failed: %w", wid, err)
			}
			printResult(o.Out, wid, res)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			st, err := queryStatus(ctx, c, wid)
			if err != nil {
				continue // the run may be between tasks; the next tick retries
			}
			if line := progressLine(st); line != last {
				fmt.Fprintln(o.Out, line)
				last = line
			}
		}
	}
}

func queryStatus(ctx context.Context, c client.Client, wid string) (workflows.Status, error) {
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var st workflows.Status
	v, err := c.QueryWorkflow(qctx, wid, "", workflows.StatusQuery)
	if err != nil {
		return st, err
	}
	return st, v.Get(&st)
}

func progressLine(st workflows.Status) string {
	m, k, f := st.Counts.MarketingToCRM, st.Counts.CRMToMarketing, st.Counts.FieldSync
	s := fmt.Sprintf("  %-30s marketing-to-crm: %d read, %d opted out | crm-to-marketing: %d read, %d unsubscribed | fields: %d updated, %d added",
		st.Phase, m.Read, m.CRMOptedOut, k.Read, k.Unsubscribed, f.FieldsUpdated, f.MembersAdded)
	if st.Failures > 0 {
		s += fmt.Sprintf(" | %d failure(s)", st.Failures)
	}
	if st.LastError != "" {
		s += " | error: " + st.LastError
	}
	return s
}

// printResult prints a run's summary: counts, notes, failures.
func printResult(w io.Writer, wid string, r workflows.SyncResult) {
	fmt.Fprintf(w, "\nRun %s of %s finished in %s\n", wid, r.IntegrationID, r.FinishedAt.Sub(r.StartedAt).Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	counts := func(name string, c activities.Counts) {
		if c == (activities.Counts{}) {
			return // a step that is off or found nothing; the notes say which
		}
		fmt.Fprintf(tw, "  %s\tread %d\t", name, c.Read)
		var parts []string
		add := func(label string, n int) {
			if n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", label, n))
			}
		}
		add("unsubscribes", c.Unsubscribes)
		add("cleaned", c.Cleaned)
		add("CRM opted out", c.CRMOptedOut)
		add("already opted out", c.CRMAlreadyOut)
		add("cleaned recorded", c.CleanedRecorded)
		add("not in CRM", c.NotInCRM)
		add("duplicate records", c.DuplicateRecords)
		add("CRM opt-outs", c.CRMOptOuts)
		add("unsubscribed", c.Unsubscribed)
		add("outside lists", c.OutsideLists)
		add("invalid emails", c.InvalidEmails)
		add("compliance held", c.ComplianceHeld)
		add("fields updated", c.FieldsUpdated)
		add("members added", c.MembersAdded)
		add("skipped (blocked)", c.SkippedBlocked)
		add("skipped (opted out)", c.SkippedOptOut)
		add("failed", c.Failed)
		fmt.Fprintln(tw, strings.Join(parts, ", "))
	}
	counts("marketing-to-crm", r.Counts.MarketingToCRM)
	counts("crm-to-marketing", r.Counts.CRMToMarketing)
	counts("field-sync", r.Counts.FieldSync)
	tw.Flush()
	if r.CRMAPIUsage != nil {
		fmt.Fprintf(w, "  CRM API usage: %d of %d\n", r.CRMAPIUsage.Used, r.CRMAPIUsage.Max)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "Notes:")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	if len(r.Failures) > 0 {
		fmt.Fprintf(w, "Failures (%d shown):\n", len(r.Failures))
		for _, f := range r.Failures {
			who := f.Record
			if f.AddressHash != "" {
				who = strings.TrimPrefix(who+" ", " ") + "address " + f.AddressHash
			}
			fmt.Fprintf(w, "  - [%s] %s %s: %s\n", f.Step, who, f.Code, f.Reason)
		}
	}
	n := r.Next
	fmt.Fprintf(w, "Next run reads from: unsubscribed %s, cleaned %s, re-subscribes %s, late records %s, CRM opt-outs %s, audience %s, fields %s\n",
		ts(n.Unsubscribed), ts(n.Cleaned), ts(n.Resubscribes), ts(n.LateRecords), ts(n.CRMOptOuts), ts(n.Audience), ts(n.Fields))
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "the beginning"
	}
	return t.Local().Format(time.DateTime)
}

// Status prints the status of the integration's current or last run: the
// status query for a running one, the result (or the failure) for a
// closed one. A failed last run is exit code 1.
func Status(ctx context.Context, c client.Client, integration string, w io.Writer) error {
	wid, running, err := latestRun(ctx, c, integration)
	if err != nil {
		return err
	}
	if running {
		st, err := queryStatus(ctx, c, wid)
		if err != nil {
			return fail(ExitUnreachable, "querying %s: %w (is a worker running?)", wid, err)
		}
		fmt.Fprintf(w, "Run %s of %s is running (started %s)\n", wid, integration, st.StartedAt.Local().Format(time.DateTime))
		fmt.Fprintln(w, progressLine(st))
		return nil
	}
	var res workflows.SyncResult
	if err := c.GetWorkflow(ctx, wid, "").Get(ctx, &res); err != nil {
		fmt.Fprintf(w, "Last run %s of %s failed\n", wid, integration)
		return fail(ExitRunFailed, "run %s: %w", wid, err)
	}
	printResult(w, wid, res)
	return nil
}

// latestRun finds the integration's latest run through the
// OptOutIntegration search attribute, falling back on the schedule's
// running workflows and recent actions (visibility may lag a moment).
func latestRun(ctx context.Context, c client.Client, integration string) (wid string, running bool, err error) {
	resp, lerr := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query:    fmt.Sprintf("%s = %q", workflows.IntegrationKey.GetName(), integration),
		PageSize: 10,
	})
	var newest time.Time
	if lerr == nil {
		for _, e := range resp.GetExecutions() {
			if st := e.GetStartTime().AsTime(); wid == "" || st.After(newest) {
				wid, newest = e.GetExecution().GetWorkflowId(), st
			}
		}
	}
	h := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(integration))
	desc, derr := h.Describe(ctx)
	if derr == nil {
		if n := len(desc.Info.RunningWorkflows); n > 0 {
			wid = desc.Info.RunningWorkflows[n-1].WorkflowID
		} else if n := len(desc.Info.RecentActions); n > 0 && wid == "" {
			if r := desc.Info.RecentActions[n-1].StartWorkflowResult; r != nil {
				wid = r.WorkflowID
			}
		}
	}
	if wid == "" {
		var nf *serviceerror.NotFound
		if lerr != nil && !errors.As(lerr, &nf) {
			return "", false, fail(ExitUnreachable, "listing runs of %s: %w", integration, lerr)
		}
		if errors.As(derr, &nf) {
			return "", false, fail(ExitUnreachable, "no run of %q found, and no schedule %s: is it in the worker's configuration?", integration, workflows.ScheduleID(integration))
		}
		return "", false, fail(ExitUnreachable, "no run of %q found (schedule %s: %v)", integration, workflows.ScheduleID(integration), orNone(derr))
	}
	// The latest run of that id (after any continue-as-new).
	d, err := c.DescribeWorkflowExecution(ctx, wid, "")
	if err != nil {
		return "", false, fail(ExitUnreachable, "describing %s: %w", wid, err)
	}
	return wid, d.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
}

func orNone(err error) string {
	if err == nil {
		return "exists, no runs yet"
	}
	return err.Error()
}

// Schedules lists the integrations' schedules with their next and last runs.
func Schedules(ctx context.Context, c client.Client, w io.Writer) error {
	iter, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{PageSize: 100})
	if err != nil {
		return fail(ExitUnreachable, "listing schedules: %w", err)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCHEDULE\tINTEGRATION\tEVERY\tSTATE\tNEXT RUN\tLAST RUN\tLAST WORKFLOW")
	n := 0
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			return fail(ExitUnreachable, "listing schedules: %w", err)
		}
		if !strings.HasPrefix(e.ID, workflows.IDPrefix) {
			continue
		}
		n++
		every := "-"
		if e.Spec != nil && len(e.Spec.Intervals) > 0 {
			every = e.Spec.Intervals[0].Every.String()
		}
		state := "active"
		if e.Paused {
			state = "paused"
		}
		next, lastAt, lastWF := "-", "-", "-"
		if len(e.NextActionTimes) > 0 {
			next = e.NextActionTimes[0].Local().Format(time.DateTime)
		}
		if k := len(e.RecentActions); k > 0 {
			a := e.RecentActions[k-1]
			lastAt = a.ActualTime.Local().Format(time.DateTime)
			if a.StartWorkflowResult != nil {
				lastWF = a.StartWorkflowResult.WorkflowID
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, strings.TrimPrefix(e.ID, workflows.IDPrefix), every, state, next, lastAt, lastWF)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n == 0 {
		fmt.Fprintln(w, "(no optout-sync schedules: start the worker with a configuration)")
	}
	return nil
}
