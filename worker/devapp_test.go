package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/workflows"
)

// devApp is the whole worker process in -dev mode with the built-in demo:
// the embedded Temporal server on a SQLite file in dir, the Web UI, the
// emulators, the schedules, the worker, the operations listener and (with
// a key) the codec server.
type devApp struct {
	app       *fx.App
	dir       string
	dev       *DevServer
	codec     *CodecServer
	ops       *OpsServer
	emulators *Emulators
	client    client.Client
	stop      func()
}

// startDevApp starts it, its log discarded.
func startDevApp(t *testing.T) *devApp {
	t.Helper()
	return startDevAppWith(t, slog.New(slog.DiscardHandler))
}

// startDevAppWith starts it with log as the worker's logger.
func startDevAppWith(t *testing.T, log *slog.Logger) *devApp {
	t.Helper()
	a := &devApp{dir: t.TempDir()}
	a.app = NewApp(Flags{Dev: true, DataDir: a.dir, SkipCredentialCheck: true}, log,
		fx.Populate(&a.dev, &a.codec, &a.ops, &a.emulators, &a.client))
	require.NoError(t, a.app.Err())
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	require.NoError(t, a.app.Start(ctx))
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = a.app.Stop(context.Background())
		}
	})
	a.stop = func() {
		stopped = true
		require.NoError(t, a.app.Stop(context.Background()))
	}
	return a
}

// pauseSchedules pauses the demo's schedules (they fire every 2 minutes),
// so that only the runs a test triggers happen.
func (a *devApp) pauseSchedules(t *testing.T) {
	t.Helper()
	for _, in := range DemoConfig().Integrations {
		require.NoError(t, a.client.ScheduleClient().GetHandle(t.Context(), workflows.ScheduleID(in.ID)).Pause(t.Context(), client.SchedulePauseOptions{}))
	}
}

// runDemo triggers the demo integration's schedule and waits for the run,
// whose result the app's own client (with the codec) decodes.
func (a *devApp) runDemo(t *testing.T) (workflowID string, res workflows.SyncResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	h := a.client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID("demo"))
	require.NoError(t, h.Trigger(ctx, client.ScheduleTriggerOptions{}))
	var runID string
	require.Eventually(t, func() bool {
		d, err := h.Describe(ctx)
		if err != nil || len(d.Info.RecentActions) == 0 {
			return false
		}
		r := d.Info.RecentActions[0].StartWorkflowResult
		workflowID, runID = r.WorkflowID, r.FirstExecutionRunID
		return true
	}, time.Minute, 100*time.Millisecond)
	require.NoError(t, a.client.GetWorkflow(ctx, workflowID, runID).Get(ctx, &res))
	return workflowID, res
}
