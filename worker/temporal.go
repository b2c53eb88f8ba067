package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/workflows"
)

// EnsureSearchAttribute registers OptOutIntegration in the namespace. It
// is already there after the first start; where the operator API is not
// allowed (Temporal Cloud, a restricted role) it is added by hand
// (`tcld namespace search-attributes add` / `temporal operator
// search-attribute create`), so those answers are warnings, not failures.
func EnsureSearchAttribute(ctx context.Context, c client.Client, namespace string, log *slog.Logger) error {
	name := workflows.IntegrationKey.GetName()
	// Look first: adding one that exists makes the server log a warning
	// on every start.
	if list, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace}); err == nil {
		if t, ok := list.GetCustomAttributes()[name]; ok {
			if t != enumspb.INDEXED_VALUE_TYPE_KEYWORD {
				return fmt.Errorf("search attribute %s exists with type %s; it must be Keyword", name, t)
			}
			return nil
		}
	}
	_, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        namespace,
		SearchAttributes: map[string]enumspb.IndexedValueType{name: enumspb.INDEXED_VALUE_TYPE_KEYWORD},
	})
	var exists *serviceerror.AlreadyExists
	var denied *serviceerror.PermissionDenied
	var unimpl *serviceerror.Unimplemented
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exists):
		return nil
	case errors.As(err, &denied), errors.As(err, &unimpl):
		log.Warn("cannot add the search attribute; add it once by hand (temporal operator search-attribute create --name "+
			name+" --type Keyword) if it is missing", "error", err)
		return nil
	}
	return fmt.Errorf("adding search attribute %s: %w", name, err)
}

// ScheduleOptions is the schedule of one integration: every interval,
// start SyncWorkflow for it, skipping a tick while a run is still going.
func ScheduleOptions(id string, every time.Duration) client.ScheduleOptions {
	sa := temporal.NewSearchAttributes(workflows.IntegrationKey.ValueSet(id))
	return client.ScheduleOptions{
		ID:   workflows.ScheduleID(id),
		Spec: client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: every}}},
		Action: &client.ScheduleWorkflowAction{
			// Temporal appends the scheduled time to this id.
			ID:                    workflows.ScheduleID(id),
			Workflow:              workflows.SyncWorkflow,
			Args:                  []any{workflows.SyncInput{IntegrationID: id}},
			TaskQueue:             workflows.TaskQueue,
			TypedSearchAttributes: sa,
		},
		// SKIP: two runs of one integration at once would race on the same
		// watermarks; the next tick picks up what the long run missed.
		Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		// After a server outage, one catch-up run is enough: each run reads
		// everything since the last one's watermarks.
		CatchupWindow:         max(every, time.Minute),
		Note:                  "managed by the optout-sync worker from its configuration",
		TypedSearchAttributes: sa,
	}
}

// EnsureSchedules creates each integration's schedule, or updates it to
// the current configuration when it exists (a schedule paused by hand
// stays paused). Integrations missing from the configuration keep their
// schedules, with a warning: another worker may run them.
func EnsureSchedules(ctx context.Context, c client.Client, cfg *Config, log *slog.Logger) error {
	sc := c.ScheduleClient()
	want := map[string]bool{}
	for i := range cfg.Integrations {
		in := &cfg.Integrations[i]
		want[workflows.ScheduleID(in.ID)] = true
		if err := ensureSchedule(ctx, sc, ScheduleOptions(in.ID, in.Interval())); err != nil {
			return fmt.Errorf("integration %q: schedule: %w", in.ID, err)
		}
		log.Info("schedule ready", "integration", in.ID, "schedule", workflows.ScheduleID(in.ID), "every", in.Interval())
	}
	iter, err := sc.List(ctx, client.ScheduleListOptions{PageSize: 100})
	if err != nil {
		log.Warn("cannot list schedules", "error", err)
		return nil
	}
	for iter.HasNext() {
		e, err := iter.Next()
		if err != nil {
			log.Warn("cannot list schedules", "error", err)
			return nil
		}
		if strings.HasPrefix(e.ID, workflows.IDPrefix) && !want[e.ID] {
			log.Warn("schedule has no integration in this worker's configuration; delete it if the integration is gone",
				"schedule", e.ID, "command", "temporal schedule delete --schedule-id "+e.ID)
		}
	}
	return nil
}

func ensureSchedule(ctx context.Context, sc client.ScheduleClient, opts client.ScheduleOptions) error {
	// A search attribute added a moment ago may not be visible to the
	// frontend yet; the create is retried for a short while.
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		_, err = sc.Create(ctx, opts)
		var invalid *serviceerror.InvalidArgument
		if !errors.As(err, &invalid) || !strings.Contains(err.Error(), "search attribute") {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	var exists *serviceerror.AlreadyExists
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, temporal.ErrScheduleAlreadyRunning) && !errors.As(err, &exists):
		return err
	}
	h := sc.GetHandle(ctx, opts.ID)
	return h.Update(ctx, client.ScheduleUpdateOptions{
		DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
			s := in.Description.Schedule
			s.Spec = &opts.Spec
			s.Action = opts.Action
			if s.Policy == nil {
				s.Policy = &client.SchedulePolicies{}
			}
			s.Policy.Overlap = opts.Overlap
			s.Policy.CatchupWindow = opts.CatchupWindow
			sa := opts.TypedSearchAttributes
			return &client.ScheduleUpdate{Schedule: &s, TypedSearchAttributes: &sa}, nil
		},
	})
}
