package main

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/server/temporaltest"

	"github.com/optoutsync/optoutsync/workflows"
)

// TestSchedulesIdempotent runs against a real in-process Temporal server:
// the first start creates the schedules, a second start with a changed
// interval updates them in place, and a third with nothing changed is a
// no-op that does not fail.
func TestSchedulesIdempotent(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c := ts.GetDefaultClient()
	ctx := t.Context()
	log := slog.New(slog.DiscardHandler)

	require.NoError(t, EnsureSearchAttribute(ctx, c, ts.GetDefaultNamespace(), log))
	// Twice: the second answer (already there) is not an error.
	require.NoError(t, EnsureSearchAttribute(ctx, c, ts.GetDefaultNamespace(), log))

	cfg := testConfig(t, "1h")
	require.NoError(t, EnsureSchedules(ctx, c, cfg, log))

	desc := describe(t, c, "acme")
	require.Equal(t, enumspb.SCHEDULE_OVERLAP_POLICY_SKIP, desc.Schedule.Policy.Overlap)
	require.Equal(t, time.Hour, desc.Schedule.Spec.Intervals[0].Every)
	act, ok := desc.Schedule.Action.(*client.ScheduleWorkflowAction)
	require.True(t, ok)
	require.Equal(t, workflows.ScheduleID("acme"), act.ID)
	require.Equal(t, workflows.TaskQueue, act.TaskQueue)
	require.Equal(t, "SyncWorkflow", act.Workflow)
	v, ok := act.TypedSearchAttributes.GetKeyword(workflows.IntegrationKey)
	require.True(t, ok)
	require.Equal(t, "acme", v)
	require.Len(t, act.Args, 1)

	// Same again with a new interval: updated, not duplicated, not failed.
	cfg = testConfig(t, "30m")
	require.NoError(t, EnsureSchedules(ctx, c, cfg, log))
	require.Equal(t, 30*time.Minute, describe(t, c, "acme").Schedule.Spec.Intervals[0].Every)
	require.Equal(t, 30*time.Minute, describe(t, c, "beta").Schedule.Spec.Intervals[0].Every)
	require.NoError(t, EnsureSchedules(ctx, c, cfg, log))
}

func describe(t *testing.T, c client.Client, id string) *client.ScheduleDescription {
	t.Helper()
	d, err := c.ScheduleClient().GetHandle(t.Context(), workflows.ScheduleID(id)).Describe(t.Context())
	require.NoError(t, err)
	return d
}

func testConfig(t *testing.T, every string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(`
integrations:
  - id: acme
    schedule: `+every+`
    marketing: {kind: mailchimp, audience: a1, apiKeyEnv: MC_KEY}
    crm: {kind: netsuite, accountId: "123", consumerKeyEnv: A, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D, timeZone: UTC}
  - id: beta
    schedule: `+every+`
    marketing: {kind: mailchimp, audience: a2, apiKeyEnv: MC_KEY}
    crm: {kind: netsuite, accountId: "456", consumerKeyEnv: A, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D, timeZone: UTC}
`), false)
	require.NoError(t, err)
	return cfg
}
