//go:build !nodev

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/worker/devserver"
	"github.com/optoutsync/optoutsync/workflows"
)

// DevOptions overlay the production graph in -dev mode: the embedded
// Temporal server with its Web UI, a configuration read with the dev
// rules (the built-in demo when none is given) whose "emulator" blocks
// point at in-process emulators, their credentials over the environment,
// and the client pointed at the embedded server. Without -dev none of it
// exists, and no production provider asks whether it is in dev mode.
var DevOptions = fx.Options(
	fx.Provide(provideEmulators, provideDevServer),
	fx.Decorate(
		devPorts,
		decorateConfigSource,
		func(env LookupEnv, e *Emulators) LookupEnv { return e.Lookup(env) },
		devClientOptions,
		devCodecSetup,
	),
	fx.Invoke(registerBanner),
)

// devPorts picks a free loopback port for each port flag given as 0, so
// that the Web UI's origin and the codec server's address are known before
// either starts.
func devPorts(f Flags) (Flags, error) {
	for _, p := range []*int{&f.FrontendPort, &f.UIPort, &f.CodecPort} {
		if *p == 0 {
			free, err := freePort()
			if err != nil {
				return f, err
			}
			*p = free
		}
	}
	return f, nil
}

// DevServer is the embedded Temporal server, started by an OnStart hook
// that runs before anything dials it.
type DevServer struct {
	// Address is the frontend's host:port, known before the start so the
	// (lazy) client can be configured.
	Address string
	srv     *devserver.Server
}

func provideEmulators(lc fx.Lifecycle) *Emulators {
	e := NewEmulators()
	lc.Append(fx.StopHook(e.Close))
	return e
}

// decorateConfigSource reads the configuration file (or the demo) with
// the dev rules: its ledger defaults to the data directory, and its
// "emulator" blocks are pointed at the emulators before validation.
func decorateConfigSource(f Flags, e *Emulators) ConfigSource {
	return func() (*Config, error) {
		cfg := DemoConfig()
		if f.ConfigPath != "" {
			c, err := ReadConfig(f.ConfigPath)
			if err != nil {
				return nil, err
			}
			cfg = c
		}
		if cfg.Ledger.Driver != ledger.Postgres && cfg.Ledger.Path == "" {
			cfg.Ledger.Path = filepath.Join(f.DataDir, "ledger.db")
		}
		if cfg.Ops.Listen == "" && f.OpsPort >= 0 {
			cfg.Ops.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(f.OpsPort))
		}
		if err := e.Resolve(cfg); err != nil {
			return nil, err
		}
		if err := cfg.Validate(true); err != nil {
			return nil, err
		}
		return cfg, nil
	}
}

// provideDevServer starts the server after the codec server (its
// constructor runs first, so its start hook does), whose address the Web
// UI is given.
func provideDevServer(lc fx.Lifecycle, f Flags, cs *CodecServer, log *slog.Logger) (*DevServer, error) {
	port := f.FrontendPort
	d := &DevServer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if f.DataDir != "" {
				if err := os.MkdirAll(f.DataDir, 0o755); err != nil {
					return fmt.Errorf("dev server data directory: %w", err)
				}
			}
			srv, err := devserver.Start(ctx, devserver.Options{
				SearchAttributes: map[string]enumspb.IndexedValueType{workflows.IntegrationKey.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD},
				DataDir:          f.DataDir, FrontendPort: port, UIPort: f.UIPort, Logger: log.With("component", "temporal-dev-server"),
				CodecEndpoint: cs.URL(),
			})
			if err != nil {
				return fmt.Errorf("starting the embedded Temporal server: %w", err)
			}
			d.srv = srv
			return nil
		},
		OnStop: func(context.Context) error {
			if d.srv == nil {
				return nil
			}
			return d.srv.Stop()
		},
	})
	return d, nil
}

// UIURL is the Web UI's address once started.
func (d *DevServer) UIURL() string {
	if d.srv == nil {
		return ""
	}
	return d.srv.UIURL()
}

// devClientOptions points the client at the embedded server. The
// environment's connection settings (TLS, API key, headers) are for real
// clusters and are left out; the rest (logger, payload codec) is kept.
func devClientOptions(opts client.Options, d *DevServer) client.Options {
	opts.HostPort, opts.Namespace = d.Address, devserver.DefaultNamespace
	opts.ConnectionOptions, opts.Credentials, opts.HeadersProvider = client.ConnectionOptions{}, nil, nil
	return opts
}

func registerBanner(lc fx.Lifecycle, d *DevServer, ops *OpsServer, cfg *Config, s CodecSetup, cs *CodecServer) {
	lc.Append(fx.StartHook(func() {
		printBanner(os.Stdout, d.Address, d.UIURL(), ops.Addr(), cfg)
		printCodecBanner(os.Stdout, s, cs)
	}))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
