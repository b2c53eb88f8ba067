package temporalclient_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"go.temporal.io/server/temporaltest"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/optoutsync/optoutsync/worker/codec"
	"github.com/optoutsync/optoutsync/worker/temporalclient"
)

const hash = "9e107d9d372bb6826bd81d3542a419d6"

func Refuse(context.Context, string) error {
	return temporal.NewNonRetryableApplicationError("member "+hash+" refused: compliance state", "Compliance", nil)
}

func Run(ctx workflow.Context, in string) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	return workflow.ExecuteActivity(ctx, Refuse, in).Get(ctx, nil)
}

// TestFailuresAreEncrypted: with encryption on, a failure's message (an
// activity's, and the workflow's that carries it) is stored encrypted, and
// a client with the key reads it back.
func TestFailuresAreEncrypted(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t))
	key := codec.Key{ID: "k1", Secret: make([]byte, codec.KeySize)}
	_, err := rand.Read(key.Secret)
	require.NoError(t, err)
	cd, err := codec.New([]codec.Key{key}, true)
	require.NoError(t, err)
	var opts client.Options
	temporalclient.WithCodec(&opts, cd)
	c := ts.NewClientWithOptions(opts)

	w := worker.New(c, "codec-test", worker.Options{})
	w.RegisterWorkflow(Run)
	w.RegisterActivity(Refuse)
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: "codec-test"}, Run, "input "+hash)
	require.NoError(t, err)
	err = run.Get(ctx, nil)
	require.ErrorContains(t, err, "member "+hash+" refused", "a client with the key reads the failure")
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	require.Equal(t, "Compliance", appErr.Type(), "the failure's type is not encrypted, its text is")

	it := ts.GetDefaultClient().GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	failures := 0
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		text, err := protojson.Marshal(e)
		require.NoError(t, err)
		require.NotContains(t, string(text), hash[:12], "event %d %s", e.EventId, e.EventType)
		if f := e.GetActivityTaskFailedEventAttributes().GetFailure(); f != nil {
			failures++
			require.Equal(t, "Encoded failure", f.GetMessage())
			require.Equal(t, codec.MetadataEncoding, string(f.GetEncodedAttributes().GetMetadata()[converter.MetadataEncoding]))
		}
		if f := e.GetWorkflowExecutionFailedEventAttributes().GetFailure(); f != nil {
			failures++
			require.Equal(t, "Encoded failure", f.GetCause().GetMessage())
		}
	}
	require.Equal(t, 2, failures)
}

// TestOptions: the connection comes from the temporal CLI's variables, the
// codec is applied, and with encryption off failures stay readable.
func TestOptions(t *testing.T) {
	t.Setenv("TEMPORAL_CONFIG_FILE", filepath.Join(t.TempDir(), "none.toml"))
	t.Setenv("TEMPORAL_ADDRESS", "temporal.example.com:7233")
	t.Setenv("TEMPORAL_NAMESPACE", "optout")
	cd, err := codec.New(nil, false)
	require.NoError(t, err)
	opts, err := temporalclient.Options(nil, cd)
	require.NoError(t, err)
	require.Equal(t, "temporal.example.com:7233", opts.HostPort)
	require.Equal(t, "optout", opts.Namespace)
	require.NotNil(t, opts.DataConverter)
	f := opts.FailureConverter.ErrorToFailure(temporal.NewApplicationError("plain "+hash, "T"))
	require.True(t, strings.HasPrefix(f.GetMessage(), "plain "), "no key: nothing to encrypt failures with")

	t.Setenv("TEMPORAL_ADDRESS", "")
	t.Setenv("TEMPORAL_NAMESPACE", "")
	opts, err = temporalclient.Options(nil, nil)
	require.NoError(t, err)
	require.Equal(t, client.DefaultHostPort, opts.HostPort)
	require.Equal(t, client.DefaultNamespace, opts.Namespace)
}
