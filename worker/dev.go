package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"go.temporal.io/sdk/client"
	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/worker/devserver"
)

// DevOptions add, in -dev mode, the embedded Temporal server with its Web
// UI and the emulators the configuration points at. The other modules
// take the dev values as optional parameters, so without -dev nothing of
// this exists.
var DevOptions = fx.Options(
	fx.Provide(provideDevEnv, provideDevServer),
	fx.Invoke(registerBanner),
)

// DevEnv is the dev mode's configuration, resolved against the emulators.
type DevEnv struct {
	Config    *Config
	Emulators *Emulators
}

// DevServer is the embedded Temporal server, started by an OnStart hook
// that runs before anything dials it.
type DevServer struct {
	// Address is the frontend's host:port, known before the start so the
	// (lazy) client can be configured.
	Address string
	srv     *devserver.Server
}

func provideDevEnv(lc fx.Lifecycle, f Flags) (*DevEnv, error) {
	var cfg *Config
	if f.ConfigPath == "" {
		cfg = DemoConfig()
	} else {
		c, err := LoadConfig(f.ConfigPath, true)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	// The demo's ledger sits beside the embedded server's database.
	if cfg.Ledger.Driver != ledger.Postgres && cfg.Ledger.Path == "" {
		cfg.Ledger.Path = filepath.Join(f.DataDir, "ledger.db")
	}
	e := StartEmulators(cfg)
	lc.Append(fx.StopHook(e.Close))
	if err := e.Resolve(cfg); err != nil {
		e.Close()
		return nil, err
	}
	return &DevEnv{Config: cfg, Emulators: e}, nil
}

func provideDevServer(lc fx.Lifecycle, f Flags, log *slog.Logger) (*DevServer, error) {
	port := f.FrontendPort
	if port == 0 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		port = p
	}
	d := &DevServer{Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			if f.DataDir != "" {
				if err := os.MkdirAll(f.DataDir, 0o755); err != nil {
					return fmt.Errorf("dev server data directory: %w", err)
				}
			}
			srv, err := devserver.Start(ctx, devserver.Options{
				DataDir: f.DataDir, FrontendPort: port, UIPort: f.UIPort, Logger: log.With("component", "temporal-dev-server"),
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

// devClientOptions points the client at the embedded server. Environment
// settings (TLS, API key) are for real clusters and are left out.
func devClientOptions(d *DevServer, log *slog.Logger) client.Options {
	return client.Options{HostPort: d.Address, Namespace: devserver.DefaultNamespace, Logger: log}
}

func registerBanner(lc fx.Lifecycle, d *DevServer, env *DevEnv) {
	lc.Append(fx.StartHook(func() {
		printBanner(os.Stdout, d.Address, d.UIURL(), env.Config, env.Emulators)
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
