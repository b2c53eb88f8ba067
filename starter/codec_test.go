package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/worker/codec"
	"github.com/optoutsync/optoutsync/worker/temporalclient"
	"github.com/optoutsync/optoutsync/workflows"
)

// TestStarterWithCodec: against a worker that encrypts payloads, the
// starter (its real dial, configured by the environment as an operator
// would) reads results with the same keys, and without them says which
// variable to set.
func TestStarterWithCodec(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	ctx := t.Context()
	_, err := ts.GetDefaultClient().OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        ts.GetDefaultNamespace(),
		SearchAttributes: map[string]enumspb.IndexedValueType{workflows.IntegrationKey.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD},
	})
	require.NoError(t, err)

	secret := make([]byte, codec.KeySize)
	_, err = rand.Read(secret)
	require.NoError(t, err)
	keys := "k1:" + base64.StdEncoding.EncodeToString(secret)
	wc, err := codec.New([]codec.Key{{ID: "k1", Secret: secret}}, true)
	require.NoError(t, err)
	var opts client.Options
	temporalclient.WithCodec(&opts, wc)
	c := ts.NewClientWithOptions(opts)

	mk := connectorstest.NewMarketing()
	mk.Add("ann@example.com", connectors.StatusUnsubscribed)
	crm := connectorstest.NewCRM()
	crm.Add("customer", "ann@example.com", connectorstest.StatusSoftOptIn)
	reg := activities.MapRegistry{"acme": {
		Settings: activities.Settings{
			IntegrationID: "acme", MarketingKind: "fake", CRMKind: "fake", Audience: "a1",
			RecordTypes: []string{"customer"}, PageSize: 100, PagesPerActivity: 10, StatusIfNew: connectors.StatusSubscribed,
		},
		Marketing: mk, CRM: crm,
	}}
	led, err := ledger.Open(ctx, ledger.Config{DSN: filepath.Join(t.TempDir(), "ledger.db"), Key: ledgertest.TestKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = led.Close() })
	w := worker.New(c, workflows.TaskQueue, worker.Options{})
	w.RegisterWorkflow(workflows.SyncWorkflow)
	w.RegisterActivity(activities.New(reg, led, nil))
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
	createSchedule(t, c, "acme")

	t.Setenv("TEMPORAL_CONFIG_FILE", filepath.Join(t.TempDir(), "none.toml"))
	t.Setenv("TEMPORAL_ADDRESS", ts.GetFrontendHostPort())
	t.Setenv("TEMPORAL_NAMESPACE", ts.GetDefaultNamespace())
	t.Setenv(codec.KeysEnv, keys)
	starter := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(ctx, args, &out, &errOut, dial)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := starter("run", "acme")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "1 CRM record(s) opted out")
	code, out, errOut = starter("status", "acme")
	require.Equal(t, ExitOK, code, errOut)
	require.Contains(t, out, "finished in")

	// What the server stores is ciphertext: its input and its result.
	desc, err := c.ScheduleClient().GetHandle(ctx, "optout-sync-acme").Describe(ctx)
	require.NoError(t, err)
	wid := desc.Info.RecentActions[0].StartWorkflowResult.WorkflowID
	it := ts.GetDefaultClient().GetWorkflowHistory(ctx, wid, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	seen := 0
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		for _, p := range append(e.GetWorkflowExecutionStartedEventAttributes().GetInput().GetPayloads(),
			e.GetWorkflowExecutionCompletedEventAttributes().GetResult().GetPayloads()...) {
			require.Equal(t, codec.MetadataEncoding, string(p.Metadata[converter.MetadataEncoding]))
			seen++
		}
	}
	require.Equal(t, 2, seen)

	// Without the key: an error that says what to set.
	t.Setenv(codec.KeysEnv, "")
	code, _, errOut = starter("status", "acme")
	require.NotEqual(t, ExitOK, code)
	require.Contains(t, errOut, `payload is encrypted with key "k1", and no codec key is configured: set OPTOUT_CODEC_KEYS`)

	// A bad key stops it before it dials, naming the variable, not the key.
	t.Setenv(codec.KeysEnv, "k1:"+base64.StdEncoding.EncodeToString(secret[:16]))
	code, _, errOut = starter("status", "acme")
	require.Equal(t, ExitUsage, code)
	require.Equal(t, "starter: OPTOUT_CODEC_KEYS: key \"k1\" is 16 bytes; AES-256 needs exactly 32 (openssl rand -base64 32)\n", errOut)
}
