package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/worker/devserver"
	"github.com/optoutsync/optoutsync/workflows"
)

// workerMainEnv, set to the JSON of a command line, makes the test binary
// run the worker's main with it instead of the tests: the real process,
// its signal handling and exit code, without building another binary.
const workerMainEnv = "OPTOUT_TEST_WORKER_MAIN"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(workerMainEnv); ok {
		var a []string
		if err := json.Unmarshal([]byte(args), &a); err != nil {
			fmt.Fprintln(os.Stderr, workerMainEnv+":", err)
			os.Exit(2)
		}
		os.Exit(run(a))
	}
	os.Exit(m.Run())
}

// TestSIGTERMLetsTheRunningActivityFinish runs the worker as its own
// process against a Temporal server and slow emulators, and sends it
// SIGTERM while an activity is writing opt-outs to NetSuite: the activity
// reads no further page, finishes the pages under way (up to eight at
// once) and completes (no failure, no timeout in the history), every
// write it reports is in NetSuite and none more, the process exits 0, and
// a worker started again goes on from the next page to the end of the run.
func TestSIGTERMLetsTheRunningActivityFinish(t *testing.T) {
	const (
		audience = "drain-aud"
		people   = 200
		page     = 10 // 20 pages, more than an activity handles at once
	)
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	ns := netsuitetest.NewServer(netsuitetest.Options{})
	t.Cleanup(ns.Close)
	mc.AddList(audience, "Drain")
	refs := make([]connectors.RecordRef, people)
	for i := range people {
		email := fmt.Sprintf("drain%d@example.com", i)
		require.NoError(t, mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: "unsubscribed"}))
		refs[i] = connectors.RecordRef{Type: "customer", ID: ns.AddCustomer(netsuitetest.Entity{Email: email, SubscriptionStatus: "1"})}
	}
	// Eight pages of 10 writes at NetSuite's 5 at once take about three seconds.
	ns.Middleware.SetFaults(emulator.Faults{Latency: 200 * time.Millisecond})
	urls, certFile := serveTLS(t, mc.Handler(), ns.Handler())
	optedOut := func() int {
		n := 0
		for _, r := range refs {
			if e, ok := ns.Entity(r.Type, r.ID); ok && e.SubscriptionStatus == "2" {
				n++
			}
		}
		return n
	}

	srv, err := devserver.Start(t.Context(), devserver.Options{UIPort: -1, Logger: slog.New(slog.DiscardHandler),
		SearchAttributes: map[string]enumspb.IndexedValueType{workflows.IntegrationKey.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	c, err := client.Dial(client.Options{HostPort: srv.FrontendAddress(), Namespace: srv.Namespace(),
		Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	require.NoError(t, err)
	t.Cleanup(c.Close)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, `
ledger: {path: %q}
codec: {encryption: "off"}   # the test reads the activities' results in the history
integrations:
  - id: drain
    schedule: 24h
    pageSize: %d
    pagesPerActivity: 100   # the activity would go on to the end but for SIGTERM
    marketing: {kind: mailchimp, audience: %s, apiKeyEnv: DRAIN_MC_KEY, baseURL: %q}
    crm: {kind: netsuite, accountId: %q, baseURL: %q, timeZone: UTC, recordTypes: [customer],
          consumerKeyEnv: DRAIN_NS_CK, consumerSecretEnv: DRAIN_NS_CS, tokenIdEnv: DRAIN_NS_TI, tokenSecretEnv: DRAIN_NS_TS}
`, filepath.Join(dir, "ledger.db"), page, audience, urls[0]+"/3.0", ns.AccountID, urls[1]), 0o600))
	args, err := json.Marshal([]string{"-config", cfg, "-skip-credential-check", "-log-format", "json", "-stop-timeout", "1m"})
	require.NoError(t, err)
	// startWorker starts the worker process; exited returns its Wait
	// error once it has exited.
	startWorker := func() (cmd *exec.Cmd, out *syncBuffer, done <-chan struct{}, exited func() error) {
		cmd = exec.Command(os.Args[0])
		cmd.Dir = dir
		out = &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Env = append(withoutTemporalEnv(os.Environ()),
			workerMainEnv+"="+string(args),
			"TEMPORAL_ADDRESS="+srv.FrontendAddress(), "TEMPORAL_NAMESPACE="+srv.Namespace(),
			"OPTOUT_LEDGER_KEY=shutdown test ledger key, not a secret", "SSL_CERT_FILE="+certFile,
			"DRAIN_MC_KEY="+mc.APIKey, "DRAIN_NS_CK="+ns.ConsumerKey, "DRAIN_NS_CS="+ns.ConsumerSecret,
			"DRAIN_NS_TI="+ns.TokenID, "DRAIN_NS_TS="+ns.TokenSecret)
		require.NoError(t, cmd.Start())
		ch := make(chan struct{})
		var err error
		go func() { err = cmd.Wait(); close(ch) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-ch:
			case <-time.After(time.Minute):
				_ = cmd.Process.Kill()
			}
		})
		return cmd, out, ch, func() error { <-ch; return err }
	}

	cmd, out, done, exited := startWorker()
	run, err := c.ExecuteWorkflow(t.Context(), client.StartWorkflowOptions{ID: "drain-run", TaskQueue: workflows.TaskQueue},
		workflows.SyncWorkflow, workflows.SyncInput{IntegrationID: "drain"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		for endpoint, n := range ns.Middleware.Counts() {
			if strings.HasPrefix(endpoint, "PATCH") && n > 0 {
				return true
			}
		}
		return false
	}, 2*time.Minute, 20*time.Millisecond, "the worker starts writing; its log:\n%s", out)
	require.Less(t, optedOut(), page, "SIGTERM comes in the middle of the first page")

	signalled := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-done:
		require.NoError(t, exited(), "exit code 0; log:\n%s", out)
	case <-time.After(2 * time.Minute):
		t.Fatalf("the worker did not exit; log:\n%s", out)
	}
	t.Logf("the worker exited %s after SIGTERM, %d opt-outs written", time.Since(signalled).Round(time.Millisecond), optedOut())

	// The history: every activity started has completed, the one under
	// way at SIGTERM with the page it was writing, and handed the rest on.
	written, started, completed := 0, 0, 0
	var last activities.PageResult
	iter := c.GetWorkflowHistory(t.Context(), "drain-run", run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(t, err)
		switch ev.GetEventType() {
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			started++
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED, enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			t.Fatalf("an activity did not complete: %v", ev)
		case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			completed++
			var res activities.PageResult
			if err := json.Unmarshal(ev.GetActivityTaskCompletedEventAttributes().GetResult().GetPayloads()[0].GetData(), &res); err == nil {
				written += res.Counts.CRMOptedOut
				last = res
			}
		}
	}
	require.Equal(t, started, completed, "every activity started completed")
	require.Positive(t, written, "the page under way was written")
	require.Equal(t, optedOut(), written, "what the activity reports is what NetSuite holds: no page was cut")
	require.Zero(t, written%page, "whole pages only")
	require.NotEmpty(t, last.Next, "the activity returned before the step's end, with its cursor")
	require.Less(t, written, people)

	// A worker started again goes on from there to the end of the run.
	_, out, done, exited = startWorker()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var res workflows.SyncResult
	require.NoError(t, run.Get(ctx, &res), "log:\n%s", out)
	require.Equal(t, people, optedOut())
	require.Equal(t, people, res.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, people, res.Counts.MarketingToCRM.Unsubscribes, "no page read twice, none skipped")
	select {
	case <-done:
		t.Fatalf("the second worker exited: %v", errors.Join(exited(), fmt.Errorf("log:\n%s", out)))
	default:
	}
}
