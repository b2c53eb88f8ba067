package devserver_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/optoutsync/optoutsync/worker/devserver"
)

const taskQueue = "devserver-test"

// integrationAttr is a Keyword search attribute every test server registers.
const integrationAttr = "OptOutIntegration"

var integrationKey = temporal.NewSearchAttributeKeyKeyword(integrationAttr)

// withAttr adds integrationAttr to opts' search attributes.
func withAttr(opts devserver.Options) devserver.Options {
	sas := map[string]enumspb.IndexedValueType{integrationAttr: enumspb.INDEXED_VALUE_TYPE_KEYWORD}
	for k, v := range opts.SearchAttributes {
		sas[k] = v
	}
	opts.SearchAttributes = sas
	return opts
}

// Echo is the trivial workflow the tests run: it proves a worker polls and completes tasks.
func Echo(_ workflow.Context, s string) (string, error) { return "echo " + s, nil }

// testLogger sends server warnings to the test log, where they help explain a failure. It
// goes quiet once the test's cleanups are done: a server goroutine that logs after that
// would make t.Log panic.
func testLogger(t *testing.T) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, nil))
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p))
	}
	return len(p), nil
}

// startE starts a server that is stopped when the test ends. It returns the error rather
// than failing so that it can run in a goroutine.
func startE(t *testing.T, opts devserver.Options) (*devserver.Server, error) {
	opts = withAttr(opts)
	opts.Logger = testLogger(t)
	began := time.Now()
	s, err := devserver.Start(t.Context(), opts)
	if err != nil {
		return nil, err
	}
	t.Logf("server started in %v at %s (UI %q)", time.Since(began), s.FrontendAddress(), s.UIURL())
	t.Cleanup(func() {
		began := time.Now()
		require.NoError(t, s.Stop())
		t.Logf("server %s stopped in %v", s.FrontendAddress(), time.Since(began))
	})
	return s, nil
}

func start(t *testing.T, opts devserver.Options) *devserver.Server {
	t.Helper()
	s, err := startE(t, opts)
	require.NoError(t, err)
	return s
}

func dial(t *testing.T, s *devserver.Server) client.Client {
	t.Helper()
	c, err := client.Dial(client.Options{
		HostPort:  s.FrontendAddress(),
		Namespace: s.Namespace(),
		Logger:    sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// runEcho runs Echo to completion under a worker, tagged with the integration attribute.
func runEcho(t *testing.T, c client.Client, id, integration string) {
	t.Helper()
	w := worker.New(c, taskQueue, worker.Options{})
	w.RegisterWorkflow(Echo)
	require.NoError(t, w.Start())
	defer w.Stop()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    id,
		TaskQueue:             taskQueue,
		TypedSearchAttributes: temporal.NewSearchAttributes(integrationKey.ValueSet(integration)),
	}, Echo, "hi")
	require.NoError(t, err)
	var out string
	require.NoError(t, run.Get(ctx, &out))
	require.Equal(t, "echo hi", out)
}

// listIDs runs a visibility query and returns the workflow IDs it finds.
func listIDs(t *testing.T, c client.Client, query string) []string {
	t.Helper()
	resp, err := c.ListWorkflow(t.Context(), &workflowservice.ListWorkflowExecutionsRequest{Query: query})
	require.NoError(t, err)
	var ids []string
	for _, e := range resp.GetExecutions() {
		ids = append(ids, e.GetExecution().GetWorkflowId())
	}
	return ids
}

// eventuallyListed waits for visibility, which the history service updates asynchronously.
func eventuallyListed(t *testing.T, c client.Client, query string, want ...string) {
	t.Helper()
	require.EventuallyWithT(t, func(ct *assert.CollectT) {
		resp, err := c.ListWorkflow(t.Context(), &workflowservice.ListWorkflowExecutionsRequest{Query: query})
		require.NoError(ct, err)
		var ids []string
		for _, e := range resp.GetExecutions() {
			ids = append(ids, e.GetExecution().GetWorkflowId())
		}
		require.ElementsMatch(ct, want, ids)
	}, 20*time.Second, 100*time.Millisecond)
}

func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

// TestInMemory starts two in-memory servers at once (the second headless, on free ports),
// runs a workflow on the first, queries it by the integration search attribute, checks the
// UI, and checks the second server shares nothing with the first.
func TestInMemory(t *testing.T) {
	t.Parallel()
	var (
		servers [2]*devserver.Server
		errs    [2]error
		wg      sync.WaitGroup
	)
	for i, o := range []devserver.Options{{}, {UIPort: -1, Namespace: "other"}} {
		wg.Go(func() { servers[i], errs[i] = startE(t, o) })
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	a, b := servers[0], servers[1]
	require.Equal(t, "default", a.Namespace())
	require.Equal(t, "other", b.Namespace())
	require.NotEqual(t, a.FrontendAddress(), b.FrontendAddress())
	require.Empty(t, b.UIURL())

	ca := dial(t, a)
	sas, err := ca.OperatorService().ListSearchAttributes(t.Context(),
		&operatorservice.ListSearchAttributesRequest{Namespace: a.Namespace()})
	require.NoError(t, err)
	require.Equal(t, enumspb.INDEXED_VALUE_TYPE_KEYWORD, sas.GetCustomAttributes()[integrationAttr])

	runEcho(t, ca, "wf-x", "x")
	eventuallyListed(t, ca, `OptOutIntegration = "x"`, "wf-x")
	require.Empty(t, listIDs(t, ca, `OptOutIntegration = "y"`))

	// Each in-memory server has its own DB: b never saw wf-x.
	cb := dial(t, b)
	require.Empty(t, listIDs(t, cb, `OptOutIntegration = "x"`))

	t.Run("UI", func(t *testing.T) {
		status, body := httpGet(t, a.UIURL()+"/")
		require.Equal(t, http.StatusOK, status)
		require.Contains(t, string(body), "<html")

		status, body = httpGet(t, a.UIURL()+"/api/v1/settings")
		require.Equal(t, http.StatusOK, status, string(body))
		var settings struct {
			DefaultNamespace string
			Auth             struct{ Enabled bool }
		}
		require.NoError(t, json.Unmarshal(body, &settings))
		require.Equal(t, "default", settings.DefaultNamespace)
		require.False(t, settings.Auth.Enabled)

		// Through the UI's gRPC gateway to the embedded frontend: the page a person opens.
		status, body = httpGet(t, a.UIURL()+`/api/v1/namespaces/default/workflows?query=OptOutIntegration%3D%22x%22`)
		require.Equal(t, http.StatusOK, status, string(body))
		require.Contains(t, string(body), "wf-x")
	})

	// What a person does in the demo: open the schedule in the UI and trigger a run. The UI
	// posts with the CSRF token from its _csrf cookie, which only works over plain HTTP
	// because the cookie is not Secure.
	t.Run("UI triggers a schedule", func(t *testing.T) {
		h, err := ca.ScheduleClient().Create(t.Context(), client.ScheduleOptions{
			ID:   "sched",
			Spec: client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: 24 * time.Hour}}},
			Action: &client.ScheduleWorkflowAction{
				ID: "sched-run", Workflow: Echo, Args: []any{"s"}, TaskQueue: taskQueue,
				TypedSearchAttributes: temporal.NewSearchAttributes(integrationKey.ValueSet("sched")),
			},
		})
		require.NoError(t, err)

		// Schedules are listed from visibility, which lags a little behind Create.
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			status, body := httpGet(t, a.UIURL()+"/api/v1/namespaces/default/schedules")
			require.Equal(ct, http.StatusOK, status, string(body))
			require.Contains(ct, string(body), `"sched"`)
		}, 20*time.Second, 100*time.Millisecond)

		jar, err := cookiejar.New(nil)
		require.NoError(t, err)
		browser := &http.Client{Jar: jar}
		resp, err := browser.Get(a.UIURL() + "/")
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		base, err := url.Parse(a.UIURL())
		require.NoError(t, err)
		var token string
		for _, c := range jar.Cookies(base) {
			if c.Name == "_csrf" {
				token = c.Value
			}
		}
		require.NotEmpty(t, token, "the UI sets a _csrf cookie")

		patch := `{"patch":{"triggerImmediately":{}},"identity":"devserver-test","requestId":"trigger-1"}`
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost,
			a.UIURL()+"/api/v1/namespaces/default/schedules/sched/patch", strings.NewReader(patch))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CSRF-Token", token)
		resp, err = browser.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))

		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			desc, err := h.Describe(t.Context())
			require.NoError(ct, err)
			require.GreaterOrEqual(ct, desc.Info.NumActions, 1)
		}, 20*time.Second, 100*time.Millisecond)
		// The schedule suffixes the run's ID with its scheduled time.
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			ids := listIDs(t, ca, `OptOutIntegration = "sched" AND TemporalScheduledById = "sched"`)
			require.Len(ct, ids, 1)
			require.True(ct, strings.HasPrefix(ids[0], "sched-run-"), ids[0])
		}, 20*time.Second, 100*time.Millisecond)
	})
}

// TestRestartKeepsData stops a file-backed server and starts another on the same DataDir: the
// earlier run is still there, and a search attribute added to Options in between is
// registered on the existing namespace.
func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	began := time.Now()
	first, err := devserver.Start(t.Context(), withAttr(devserver.Options{DataDir: dir, UIPort: -1, Logger: testLogger(t)}))
	t.Logf("file-backed server started in %v", time.Since(began))
	require.NoError(t, err)
	c1, err := client.Dial(client.Options{
		HostPort:  first.FrontendAddress(),
		Namespace: first.Namespace(),
		Logger:    sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	require.NoError(t, err)
	_, err = devserver.Start(t.Context(), withAttr(devserver.Options{DataDir: dir, UIPort: -1, Logger: testLogger(t)}))
	require.ErrorContains(t, err, "in use by another running server")

	runEcho(t, c1, "wf-kept", "kept")
	eventuallyListed(t, c1, `OptOutIntegration = "kept"`, "wf-kept")
	c1.Close()
	began = time.Now()
	require.NoError(t, first.Stop())
	t.Logf("file-backed server stopped in %v", time.Since(began))
	require.NoError(t, first.Stop(), "Stop twice is fine")

	second := start(t, devserver.Options{
		DataDir:          dir,
		UIPort:           -1,
		SearchAttributes: map[string]enumspb.IndexedValueType{"OptOutRunKind": enumspb.INDEXED_VALUE_TYPE_KEYWORD},
		Retention:        7 * 24 * time.Hour,
	})
	c2 := dial(t, second)
	desc, err := c2.DescribeWorkflowExecution(t.Context(), "wf-kept", "")
	require.NoError(t, err)
	require.Equal(t, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, desc.GetWorkflowExecutionInfo().GetStatus())
	eventuallyListed(t, c2, `OptOutIntegration = "kept"`, "wf-kept")

	sas, err := c2.OperatorService().ListSearchAttributes(t.Context(),
		&operatorservice.ListSearchAttributesRequest{Namespace: second.Namespace()})
	require.NoError(t, err)
	require.Equal(t, enumspb.INDEXED_VALUE_TYPE_KEYWORD, sas.GetCustomAttributes()["OptOutRunKind"])
	require.Equal(t, enumspb.INDEXED_VALUE_TYPE_KEYWORD, sas.GetCustomAttributes()[integrationAttr])

	ns, err := c2.WorkflowService().DescribeNamespace(t.Context(),
		&workflowservice.DescribeNamespaceRequest{Namespace: second.Namespace()})
	require.NoError(t, err)
	require.Equal(t, 7*24*time.Hour, ns.GetConfig().GetWorkflowExecutionRetentionTtl().AsDuration())
}

// TestBadOptions checks that bad Options fail before anything starts, naming the field.
func TestBadOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		opts devserver.Options
		want string
	}{
		{devserver.Options{IP: "my-host"}, "IP"},
		{devserver.Options{UIPort: -2}, "UIPort"},
		{devserver.Options{FrontendPort: 70000}, "FrontendPort"},
		{devserver.Options{Retention: -time.Hour}, "Retention"},
		{devserver.Options{SearchAttributes: map[string]enumspb.IndexedValueType{"X": enumspb.INDEXED_VALUE_TYPE_UNSPECIFIED}}, `"X"`},
	} {
		_, err := devserver.Start(t.Context(), tc.opts)
		require.ErrorContains(t, err, tc.want)
	}
}
