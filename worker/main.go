// Command worker runs the optout-sync Temporal worker: SyncWorkflow and its
// activities for the integrations of a configuration file, with one
// Temporal Schedule per integration.
//
//	worker -config config.yaml          # against TEMPORAL_ADDRESS etc.
//	worker -dev                         # demo: embedded Temporal + emulators
//	worker -dev -config real.yaml       # embedded Temporal, real systems
//	worker -emulators                   # only the seeded emulators
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	// The NetSuite time zone setting works in a container without zoneinfo.
	_ "time/tzdata"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var f Flags
	var verbose bool
	fs.StringVar(&f.ConfigPath, "config", os.Getenv("OPTOUT_CONFIG"), "configuration file (YAML); default $OPTOUT_CONFIG; with -dev and none, the built-in demo")
	fs.BoolVar(&f.Dev, "dev", false, "run the embedded Temporal server and Web UI (and, for the demo, the emulators) in this process")
	fs.StringVar(&f.DataDir, "data", "data", "dev mode: directory of the embedded server's SQLite database")
	fs.IntVar(&f.FrontendPort, "port", 7233, "dev mode: Temporal frontend port on 127.0.0.1")
	fs.IntVar(&f.UIPort, "ui-port", 8233, "dev mode: Temporal Web UI port on 127.0.0.1 (-1: no UI)")
	fs.IntVar(&f.CodecPort, "codec-port", 8234, "dev mode: codec server port on 127.0.0.1 when payloads are encrypted and the configuration sets no codec.listen")
	fs.IntVar(&f.OpsPort, "ops-port", 9464, "dev mode: metrics and health port on 127.0.0.1 when the configuration sets no ops.listen (0: a free port, -1: none)")
	fs.BoolVar(&f.SkipCredentialCheck, "skip-credential-check", false, "do not ping each integration's systems at start")
	fs.DurationVar(&f.StopTimeout, "stop-timeout", workerStopTimeout, "on SIGTERM, how long running activities get to finish before they are cancelled")
	fs.BoolVar(&verbose, "v", false, "debug logging")
	logFormat := fs.String("log-format", envOr("OPTOUT_LOG_FORMAT", "text"), "log format: text or json; default $OPTOUT_LOG_FORMAT or text")
	emulators := fs.Bool("emulators", false, "serve only the Mailchimp, NetSuite and Salesforce emulators, seeded with the demo data, and print their URLs and credentials")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *emulators {
		return serveEmulators(os.Stdout)
	}
	if f.Dev && f.DataDir != "" {
		abs, err := filepath.Abs(f.DataDir)
		if err == nil {
			f.DataDir = abs
		}
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	log, err := NewLogger(os.Stderr, *logFormat, level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}

	app := NewApp(f, log)
	if err := app.Err(); err != nil {
		// A configuration error is printed alone: the dependency graph
		// around it tells the user nothing.
		var cfgErr *ConfigError
		if errors.As(err, &cfgErr) {
			err = cfgErr
		}
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	// Run starts, waits for SIGINT/SIGTERM or a Shutdowner call, stops.
	ctx := context.Background()
	if err := app.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	sig := <-app.Wait()
	if err := app.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "worker: stopping:", err)
		if sig.ExitCode == 0 {
			return 1
		}
	}
	return sig.ExitCode
}
