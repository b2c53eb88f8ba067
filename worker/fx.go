package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/worker/codec"
	"github.com/optoutsync/optoutsync/worker/temporalclient"
	"github.com/optoutsync/optoutsync/workflows"
)

// Flags are the command line, supplied to the app as a value.
type Flags struct {
	// ConfigPath is the configuration file; "" with Dev runs the demo.
	ConfigPath string
	// Dev runs the embedded Temporal server, the UI and (where the
	// configuration asks for them) the emulators in this process.
	Dev bool
	// DataDir holds the dev server's SQLite file.
	DataDir string
	// FrontendPort and UIPort are the dev server's ports; CodecPort is the
	// codec server's when payloads are encrypted and codec.listen is not set.
	FrontendPort, UIPort, CodecPort int
	// SkipCredentialCheck turns off the start-up ping of each connector.
	SkipCredentialCheck bool
	// OpsPort is the dev mode's operations listener port on 127.0.0.1
	// when the configuration sets no ops.listen: 0 picks a free one, -1
	// turns it off.
	OpsPort int
	// StopTimeout is how long running activities get to finish when the
	// worker stops; 0 means workerStopTimeout.
	StopTimeout time.Duration
}

// ConfigModule reads the configuration and the credentials it names and
// builds the integrations' connectors.
var ConfigModule = fx.Module("config",
	fx.Provide(
		provideConfigSource,
		provideConfig,
		provideEnv,
		provideRegistry,
		provideLedger,
	),
)

// TemporalModule is the Temporal client, configured like the temporal CLI.
var TemporalModule = fx.Module("temporal",
	fx.Provide(
		provideClientOptions,
		provideClient,
	),
)

// WorkerModule runs SyncWorkflow and the activities on the task queue and
// keeps the schedules in step with the configuration.
var WorkerModule = fx.Module("worker",
	fx.Provide(
		func(reg activities.MapRegistry, led ledger.Ledger, log *slog.Logger) *activities.Activities {
			return activities.New(reg, led, log)
		},
		provideWorker,
	),
	// Invoked in this order, so the schedules exist before the worker polls.
	fx.Invoke(registerSetup, registerWorker),
)

// ConfigSource reads the configuration: the file -config names, with the
// production rules. The dev mode decorates it.
type ConfigSource func() (*Config, error)

func provideConfigSource(f Flags) ConfigSource {
	return func() (*Config, error) {
		if f.ConfigPath == "" {
			return nil, &ConfigError{Problems: []string{"-config is required (or -dev to run the built-in demo)"}}
		}
		return LoadConfig(f.ConfigPath, false)
	}
}

func provideConfig(src ConfigSource) (*Config, error) { return src() }

func provideEnv() LookupEnv { return os.LookupEnv }

// provideClientOptions are the worker's client options: the connection the
// temporal CLI's settings name, and the payload codec.
func provideClientOptions(log *slog.Logger, c *codec.Codec) (client.Options, error) {
	return temporalclient.Options(log, c)
}

// provideRegistry builds the connectors; the ledger keeps the refresh
// tokens of those whose refresh tokens rotate (Bullhorn).
func provideRegistry(cfg *Config, env LookupEnv, led ledger.Ledger, log *slog.Logger) (activities.MapRegistry, error) {
	tokens, _ := led.(bullhorn.TokenStore)
	return BuildRegistryWithTokens(cfg, env, log, tokens)
}

// provideLedger opens the consent ledger (applying its migrations) and
// closes it when the worker stops.
func provideLedger(lc fx.Lifecycle, cfg *Config, env LookupEnv) (ledger.Ledger, error) {
	lcfg, err := cfg.Ledger.Resolve(env)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := ledger.Open(ctx, lcfg)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(l.Close))
	return l, nil
}

// provideClient returns a lazy client: it dials on first use, which is in
// an OnStart hook, after the dev server (when there is one) has started.
// With the operations listener on, the SDK reports its own metrics there.
func provideClient(lc fx.Lifecycle, opts client.Options, cfg *Config, log *slog.Logger) (client.Client, error) {
	if cfg.Ops.Listen != "" && opts.MetricsHandler == nil {
		opts.MetricsHandler = temporalMetrics(log)
	}
	c, err := client.NewLazyClient(opts)
	if err != nil {
		return nil, err
	}
	lc.Append(fx.StopHook(c.Close))
	return c, nil
}

// workerStopTimeout is how long the worker waits for running activities
// on shutdown unless -stop-timeout says otherwise; fx's stop timeout is
// longer (see NewApp).
const workerStopTimeout = 20 * time.Second

func (f Flags) stopTimeout() time.Duration {
	if f.StopTimeout > 0 {
		return f.StopTimeout
	}
	return workerStopTimeout
}

func provideWorker(c client.Client, acts *activities.Activities, sd fx.Shutdowner, h *Health, f Flags, log *slog.Logger) worker.Worker {
	w := worker.New(c, workflows.TaskQueue, worker.Options{
		WorkerStopTimeout: f.stopTimeout(),
		// A fatal worker error (the namespace is gone, the server refuses
		// the worker) ends the process with a non-zero exit, so that a
		// supervisor restarts or reports it.
		OnFatalError: func(err error) {
			h.WorkerFailed(err)
			log.Error("worker stopped on a fatal error", "error", err)
			if serr := sd.Shutdown(fx.ExitCode(1)); serr != nil {
				log.Error("shutdown failed", "error", serr)
			}
		},
	})
	w.RegisterWorkflow(workflows.SyncWorkflow)
	w.RegisterWorkflow(workflows.ExplainWorkflow)
	w.RegisterWorkflow(workflows.EventsWorkflow)
	w.RegisterActivity(acts)
	return w
}

func registerWorker(lc fx.Lifecycle, w worker.Worker, h *Health) {
	// worker.Start returns once the pollers run; it does not block. Stop
	// stops polling and waits up to the stop timeout for running activities.
	lc.Append(fx.StartStopHook(func() error {
		if err := w.Start(); err != nil {
			return err
		}
		h.WorkerStarted()
		return nil
	}, func() {
		h.WorkerStopping()
		w.Stop()
	}))
}

// registerSetup adds the search attribute and the schedules at start, and
// checks the credentials in the background (a rejected credential is
// logged and fails only that integration's runs).
func registerSetup(lc fx.Lifecycle, c client.Client, opts client.Options, cfg *Config, reg activities.MapRegistry, f Flags, log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	lc.Append(fx.Hook{
		OnStart: func(start context.Context) error {
			if err := EnsureSearchAttribute(start, c, opts.Namespace, log); err != nil {
				return err
			}
			if err := EnsureSchedules(start, c, cfg, log); err != nil {
				return err
			}
			if !f.SkipCredentialCheck {
				go CheckCredentials(ctx, reg, log)
			}
			return nil
		},
		OnStop: func(context.Context) error { cancel(); return nil },
	})
}

// NewApp assembles the worker process.
func NewApp(f Flags, log *slog.Logger, extra ...fx.Option) *fx.App {
	opts := []fx.Option{
		fx.Supply(f, log),
		fx.WithLogger(func() fxevent.Logger {
			// fx's own events at debug: quiet unless something fails.
			l := &fxevent.SlogLogger{Logger: log}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		fx.StartTimeout(2 * time.Minute),
		fx.StopTimeout(f.stopTimeout() + 10*time.Second),
		ConfigModule,
		TemporalModule,
		// Before the worker: it starts first and stops last.
		OpsModule,
		WorkerModule,
		WebhookModule,
		CodecModule,
	}
	if f.Dev {
		opts = append(opts, DevOptions)
	}
	return fx.New(append(opts, extra...)...)
}
