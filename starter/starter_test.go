package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/workflows"
)

// TestStarter drives run, status and schedules against a real in-process
// Temporal server with a worker running SyncWorkflow over in-memory
// connectors. One server for the whole test: each start costs seconds.
func TestStarter(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	c := ts.GetDefaultClient()
	ctx := t.Context()

	_, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        ts.GetDefaultNamespace(),
		SearchAttributes: map[string]enumspb.IndexedValueType{workflows.IntegrationKey.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD},
	})
	require.NoError(t, err)

	// Ann unsubscribed in the audience; Ben opted out in the CRM. Ann's
	// record is customer/1, the reference explain prints below.
	mk := connectorstest.NewMarketing()
	mk.Add("ann@example.com", connectors.StatusUnsubscribed)
	mk.Add("ben@example.com", connectors.StatusSubscribed)
	crm := connectorstest.NewCRM()
	ann := crm.Add("customer", "ann@example.com", connectorstest.StatusSoftOptIn)
	crm.Add("customer", "ben@example.com", connectorstest.StatusSoftOptOut)
	reg := activities.MapRegistry{"acme": {
		Settings: activities.Settings{
			IntegrationID: "acme", MarketingKind: "fake", CRMKind: "fake", Audience: "a1", CRMToMarketing: true,
			RecordTypes: []string{"customer"}, PageSize: 100, PagesPerActivity: 10, StatusIfNew: connectors.StatusSubscribed,
		},
		Marketing: mk, CRM: crm,
	}}
	// The worker's ledger, and the configuration file explain reads it from.
	dir := t.TempDir()
	ledgerPath := filepath.Join(dir, "ledger.db")
	led, err := ledger.Open(ctx, ledger.Config{DSN: ledgerPath, Key: ledgertest.TestKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = led.Close() })
	t.Setenv("TEST_LEDGER_KEY", string(ledgertest.TestKey))
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte("integrations:\n  - id: acme\nledger:\n  path: "+ledgerPath+"\n  keyEnv: TEST_LEDGER_KEY\n"), 0o600))
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) {
		r.RegisterWorkflow(workflows.SyncWorkflow)
		r.RegisterWorkflow(workflows.ExplainWorkflow)
		r.RegisterActivity(activities.New(reg, led, nil))
	})
	// "broken" has a schedule but no integration on the worker: its runs fail.
	for _, id := range []string{"acme", "broken"} {
		createSchedule(t, c, id)
	}

	dial := func(context.Context) (client.Client, error) {
		return ts.NewClientWithOptions(client.Options{}), nil
	}
	starter := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, args, &out, &errOut, dial)
		return code, out.String(), errOut.String()
	}

	// run: triggers the schedule, follows the run, prints the summary.
	code, out, errOut := starter("run", "acme")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "Started optout-sync-acme-")
	require.Contains(t, out, "Notes:")
	require.Contains(t, out, "1 CRM record(s) opted out")
	require.Contains(t, out, "1 member(s) changed to unsubscribed")
	require.Contains(t, out, "1 CRM opt-out(s) were written by this product from a marketing unsubscribe and were not sent back")
	require.Equal(t, connectors.StatusUnsubscribed, mk.Member("ben@example.com").Status)
	require.True(t, crm.Record(ann).OptedOut(connectors.OptOutField{Kind: connectors.OptOutStandard}))

	// status of a closed run prints its result.
	code, out, errOut = starter("status", "acme")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "finished in")
	require.Contains(t, out, "Next run reads from")

	// run --no-wait returns the id at once; the second run starts from the
	// first run's watermarks (the schedule hands it the last result).
	// Scheduled runs are named by the second: let the second turn.
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	code, out, errOut = starter("run", "acme", "--no-wait")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "Started optout-sync-acme-")
	wid := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "Started "))
	var res workflows.SyncResult
	require.NoError(t, c.GetWorkflow(ctx, wid, "").Get(ctx, &res))
	require.Zero(t, res.Counts.MarketingToCRM.CRMOptedOut, "the second run must not redo the first one's work")

	// A failing run is exit code 1, its status too.
	code, _, errOut = starter("run", "broken")
	require.Equal(t, ExitRunFailed, code)
	require.Contains(t, errOut, "is not configured on this worker")
	require.Eventually(t, func() bool {
		code, _, _ = starter("status", "broken")
		return code == ExitRunFailed
	}, 10*time.Second, 200*time.Millisecond)

	// schedules lists both, with their last runs (visibility may lag).
	require.Eventually(t, func() bool {
		code, out, _ = starter("schedules")
		return code == ExitOK && strings.Contains(out, "optout-sync-acme") && strings.Contains(out, "optout-sync-broken") &&
			strings.Count(out, "optout-sync-acme-") == 1
	}, 10*time.Second, 200*time.Millisecond, out)
	require.Contains(t, out, "1h0m0s")

	// explain: the ledger's history of an address, then where it stands now.
	code, out, errOut = starter("explain", "Ann@Example.com", "-config", cfgPath)
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "person "+led.Person("ann@example.com"))
	require.Contains(t, out, "address hash "+connectors.AddressHash("ann@example.com"))
	require.Contains(t, out, "observed unsubscribe")
	require.Contains(t, out, "crm-opt-out → written")
	require.Contains(t, out, "a marketing unsubscribe sets the CRM opt-out on every record of the address")
	require.Contains(t, out, "acme: fake audience a1: unsubscribed")
	require.Contains(t, out, "acme: fake customer/1: opted out")
	require.Contains(t, out, "acme: ledger: opted out (unsubscribe in fake")
	require.NotContains(t, out, "ann@example.com", "only hashes and record ids are printed")
	// By the ledger key; and while Temporal is down, the history still answers.
	var outDown, errDown bytes.Buffer
	code = run(ctx, []string{"explain", led.Person("ann@example.com"), "-config", cfgPath}, &outDown, &errDown, func(context.Context) (client.Client, error) {
		return nil, errors.New("connection refused")
	})
	require.Equal(t, ExitOK, code, errDown.String())
	require.Contains(t, outDown.String(), "observed unsubscribe")
	code, out, errOut = starter("explain", "nobody@example.com", "-config", cfgPath)
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "The ledger holds nothing about this address")
	require.Contains(t, out, "acme: fake audience a1: not in the audience")
	code, _, _ = starter("explain", "not an address", "-config", cfgPath)
	require.Equal(t, ExitUsage, code)
	code, _, errOut = starter("explain", "ann@example.com", "-data", filepath.Join(dir, "nowhere"))
	require.Equal(t, ExitUsage, code)
	require.Contains(t, errOut, "no demo ledger")

	// Unknown integration, usage errors, unreachable server.
	code, _, errOut = starter("run", "nope")
	require.Equal(t, ExitUnreachable, code)
	require.Contains(t, errOut, "no schedule optout-sync-nope")
	code, _, _ = starter("status", "nope")
	require.Equal(t, ExitUnreachable, code)
	for _, args := range [][]string{{}, {"run"}, {"frobnicate"}, {"status", "a", "b"}, {"schedules", "--no-wait"}, {"run", "acme", "--bogus"}} {
		code, _, _ = starter(args...)
		require.Equal(t, ExitUsage, code, "%v", args)
	}
	var errOutB bytes.Buffer
	code = run(ctx, []string{"schedules"}, &bytes.Buffer{}, &errOutB, func(context.Context) (client.Client, error) {
		return nil, errors.New("connection refused")
	})
	require.Equal(t, ExitUnreachable, code)
	require.Contains(t, errOutB.String(), "cannot reach Temporal")
}

func createSchedule(t *testing.T, c client.Client, id string) {
	t.Helper()
	sa := temporal.NewSearchAttributes(workflows.IntegrationKey.ValueSet(id))
	_, err := c.ScheduleClient().Create(t.Context(), client.ScheduleOptions{
		ID:   workflows.ScheduleID(id),
		Spec: client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: time.Hour}}},
		Action: &client.ScheduleWorkflowAction{
			ID: workflows.ScheduleID(id), Workflow: workflows.SyncWorkflow, TaskQueue: workflows.TaskQueue,
			Args: []any{workflows.SyncInput{IntegrationID: id}}, TypedSearchAttributes: sa,
		},
		Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
	})
	require.NoError(t, err)
}
