package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/worker/codec"
	"github.com/optoutsync/optoutsync/worker/devserver"
	"github.com/optoutsync/optoutsync/workflows"
)

// testCodecKey is a fresh "id:base64key" entry.
func testCodecKey(t testing.TB, id string) string {
	t.Helper()
	b := make([]byte, codec.KeySize)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return id + ":" + base64.StdEncoding.EncodeToString(b)
}

// rawClient reads the server without any codec: what is stored.
func (a *devApp) rawClient(t *testing.T) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{HostPort: a.dev.Address, Namespace: devserver.DefaultNamespace,
		Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// payloadsIn finds every Payload in m, except search attributes, which
// Temporal indexes and no codec touches.
func payloadsIn(m protoreflect.Message) []*commonpb.Payload {
	switch m.Descriptor().FullName() {
	case "temporal.api.common.v1.Payload":
		return []*commonpb.Payload{m.Interface().(*commonpb.Payload)}
	case "temporal.api.common.v1.SearchAttributes":
		return nil
	}
	var out []*commonpb.Payload
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				out = append(out, payloadsIn(mv.Message())...)
				return true
			})
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				out = append(out, payloadsIn(v.List().Get(i).Message())...)
			}
		case fd.Message() != nil && !fd.IsMap() && !fd.IsList():
			out = append(out, payloadsIn(v.Message())...)
		}
		return true
	})
	return out
}

func history(t *testing.T, c client.Client, workflowID string) []*historypb.HistoryEvent {
	t.Helper()
	var events []*historypb.HistoryEvent
	it := c.GetWorkflowHistory(t.Context(), workflowID, "", false, 0)
	for it.HasNext() {
		e, err := it.Next()
		require.NoError(t, err)
		events = append(events, e)
	}
	return events
}

// decodeViaServer posts payloads to the codec server as the Web UI does
// (from its origin, with the namespace header and the token).
func decodeViaServer(t *testing.T, url, origin, token string, payloads []*commonpb.Payload) []*commonpb.Payload {
	t.Helper()
	body, err := protojson.Marshal(&commonpb.Payloads{Payloads: payloads})
	require.NoError(t, err)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/decode", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Namespace", devserver.DefaultNamespace)
	req.Header.Set("Origin", origin)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	require.Equal(t, origin, resp.Header.Get("Access-Control-Allow-Origin"))
	require.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
	var out commonpb.Payloads
	require.NoError(t, protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, &out))
	require.Len(t, out.Payloads, len(payloads))
	return out.Payloads
}

func codecRequest(t *testing.T, method, url string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(`{"payloads":[]}`))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp
}

// storedText are texts of the demo run's payloads that appear nowhere else
// in Temporal's database (not in workflow ids, activity types or search
// attributes): JSON field names of its input and result, and settings
// that travel in activity inputs.
var storedText = []string{`"integrationId"`, `"finishedAt"`, netsuitetest.DemoSavedSearch, mailchimptest.DemoNetSuiteAudience}

// databaseText reads Temporal's SQLite files (the database, and its
// write-ahead log if one is left) after the server stopped.
func databaseText(t *testing.T, dir string) []byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, devserver.DBFileName+"*"))
	require.NoError(t, err)
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		all = append(all, b...)
	}
	require.NotEmpty(t, all)
	return all
}

// TestCodecEndToEnd runs the demo with payload encryption on: the run's
// history holds only ciphertext (the schedule's input too), the codec
// server decodes it over real HTTP, as the Web UI does, to the run's real
// input and result, the Web UI is told where the codec server is, and
// Temporal's SQLite file holds none of the run's payload text. The same run
// without a key stores that text (TestCodecOffStoresPlaintext), so the scan
// is not vacuous.
func TestCodecEndToEnd(t *testing.T) {
	const token = "codec-test-token-0123456789abcdef"
	t.Setenv(codec.KeysEnv, testCodecKey(t, "k2")+","+testCodecKey(t, "k1"))
	t.Setenv(codec.TokenEnv, token)
	a := startDevApp(t)
	require.NotEmpty(t, a.codec.URL(), "with a key, the demo serves the codec")
	origin := a.dev.UIURL()

	workflowID, res := a.runDemo(t)
	require.Equal(t, "demo", res.IntegrationID)
	require.NotEmpty(t, res.Notes)

	// Every payload of the history is ciphertext under the current key.
	raw := a.rawClient(t)
	events := history(t, raw, workflowID)
	var input, result []*commonpb.Payload
	n := 0
	for _, e := range events {
		for _, p := range payloadsIn(e.ProtoReflect()) {
			n++
			require.Equal(t, codec.MetadataEncoding, string(p.Metadata[converter.MetadataEncoding]), "event %d %s", e.EventId, e.EventType)
			require.Equal(t, "k2", string(p.Metadata[codec.MetadataKeyID]))
		}
		if a := e.GetWorkflowExecutionStartedEventAttributes(); a != nil {
			input = a.GetInput().GetPayloads()
		}
		if a := e.GetWorkflowExecutionCompletedEventAttributes(); a != nil {
			result = a.GetResult().GetPayloads()
		}
	}
	require.Greater(t, n, 10, "the run's activities, their inputs and results")
	require.Len(t, input, 1)
	require.Len(t, result, 1)

	// The codec server opens them, over HTTP, for the UI's origin.
	var in workflows.SyncInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(decodeViaServer(t, a.codec.URL(), origin, token, input)[0], &in))
	require.Equal(t, workflows.SyncInput{IntegrationID: "demo"}, in)
	var out workflows.SyncResult
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(decodeViaServer(t, a.codec.URL(), origin, token, result)[0], &out))
	require.Equal(t, res, out)

	// The schedule the worker created holds its input encrypted too.
	ds, err := raw.WorkflowService().DescribeSchedule(t.Context(), &workflowservice.DescribeScheduleRequest{
		Namespace: devserver.DefaultNamespace, ScheduleId: workflows.ScheduleID("demo")})
	require.NoError(t, err)
	sched := ds.GetSchedule().GetAction().GetStartWorkflow().GetInput().GetPayloads()
	require.Len(t, sched, 1)
	require.Equal(t, codec.MetadataEncoding, string(sched[0].Metadata[converter.MetadataEncoding]))

	// CORS preflight from the UI (no token in a preflight), and the token.
	pre := codecRequest(t, http.MethodOptions, a.codec.URL()+"/decode", map[string]string{
		"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type,x-namespace"})
	require.Equal(t, http.StatusNoContent, pre.StatusCode)
	require.Equal(t, origin, pre.Header.Get("Access-Control-Allow-Origin"))
	require.Equal(t, "Content-Type,X-Namespace,Authorization", pre.Header.Get("Access-Control-Allow-Headers"))
	require.Equal(t, "true", pre.Header.Get("Access-Control-Allow-Credentials"))
	localhost := strings.Replace(origin, "127.0.0.1", "localhost", 1)
	require.Equal(t, localhost, codecRequest(t, http.MethodOptions, a.codec.URL()+"/decode", map[string]string{
		"Origin": localhost, "Access-Control-Request-Method": "POST"}).Header.Get("Access-Control-Allow-Origin"))
	require.Equal(t, http.StatusForbidden, codecRequest(t, http.MethodOptions, a.codec.URL()+"/decode", map[string]string{
		"Origin": "http://127.0.0.1:1", "Access-Control-Request-Method": "POST"}).StatusCode)
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + token + "x"} {
		resp := codecRequest(t, http.MethodPost, a.codec.URL()+"/decode", map[string]string{"Origin": origin, "Authorization": auth})
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "Authorization %q", auth)
	}

	// The embedded Web UI is configured with the codec endpoint.
	resp, err := http.Get(a.dev.UIURL() + "/api/v1/settings")
	require.NoError(t, err)
	var settings struct{ Codec struct{ Endpoint string } }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&settings))
	resp.Body.Close()
	require.Equal(t, a.codec.URL(), settings.Codec.Endpoint)

	// At rest: none of the run's payload text is in Temporal's database.
	a.stop()
	db := databaseText(t, a.dir)
	for _, s := range append(storedText, res.Notes...) {
		require.False(t, bytes.Contains(db, []byte(s)), "%q is readable in %s", s, devserver.DBFileName)
	}
}

// TestCodecOffStoresPlaintext: the demo without a key stores its payloads
// in clear (the dev mode's default), the UI has no codec endpoint, and
// the scan of TestCodecEndToEnd finds every text it looks for.
func TestCodecOffStoresPlaintext(t *testing.T) {
	t.Setenv(codec.KeysEnv, "")
	a := startDevApp(t)
	require.Empty(t, a.codec.URL())
	workflowID, res := a.runDemo(t)
	for _, e := range history(t, a.rawClient(t), workflowID) {
		if in := e.GetWorkflowExecutionStartedEventAttributes(); in != nil {
			require.Equal(t, "json/plain", string(in.GetInput().GetPayloads()[0].Metadata[converter.MetadataEncoding]))
		}
	}
	resp, err := http.Get(a.dev.UIURL() + "/api/v1/settings")
	require.NoError(t, err)
	var settings struct{ Codec struct{ Endpoint string } }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&settings))
	resp.Body.Close()
	require.Empty(t, settings.Codec.Endpoint)

	a.stop()
	db := databaseText(t, a.dir)
	for _, s := range append(storedText, res.Notes...) {
		require.True(t, bytes.Contains(db, []byte(s)), "%q should be readable without the codec", s)
	}
}
