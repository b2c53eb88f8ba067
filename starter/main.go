// Command starter is the command-line client of optout-sync: it runs an
// integration now (through its schedule, so the run continues from the
// last run's watermarks), shows a run's status, and lists the schedules.
//
//	starter run <integration> [--no-wait]
//	starter status <integration>
//	starter schedules
//	starter explain <email or ledger key> [-config worker.yaml]
//
// It reads the Temporal connection like the temporal CLI does
// (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_*, TEMPORAL_API_KEY,
// TEMPORAL_PROFILE), and the payload keys like the worker does
// (OPTOUT_CODEC_KEYS). The same can be done with the temporal CLI:
//
//	temporal schedule trigger --schedule-id optout-sync-<integration>
//	temporal workflow list --query 'OptOutIntegration="<integration>"'
//	temporal workflow query --workflow-id <workflow id> --type status
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/optoutsync/optoutsync/worker/codec"
	"github.com/optoutsync/optoutsync/worker/temporalclient"
	"github.com/optoutsync/optoutsync/workflows"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitRunFailed   = 1
	ExitUsage       = 2
	ExitUnreachable = 3 // cannot reach Temporal, or no such integration / run
)

const usage = `usage:
  starter run <integration> [--no-wait]   trigger the integration's schedule and follow the run
  starter status <integration>            status of the current or last run
  starter schedules                       list the integrations' schedules
  starter explain <email or key>          what the consent ledger knows of an address, and where
                                          it stands now (-config: the worker's file; without it,
                                          the demo's ledger in -data)

The Temporal connection comes from TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_TLS_*, TEMPORAL_API_KEY and TEMPORAL_PROFILE, as for the temporal CLI;
the payload encryption keys from OPTOUT_CODEC_KEYS (or OPTOUT_CODEC_KEYS_FILE),
as for the worker.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, dial)
	stop()
	os.Exit(code)
}

// dial connects to Temporal as the worker does: the temporal CLI's
// connection settings, and the payload codec of $OPTOUT_CODEC_KEYS.
func dial(ctx context.Context) (client.Client, error) {
	c, err := codec.FromEnv(os.LookupEnv)
	if err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	opts, err := temporalclient.Options(slog.New(slog.DiscardHandler), c)
	if err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	return client.DialContext(ctx, opts)
}

// exitError is an error with its exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func fail(code int, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// run parses args, runs the command and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, dial func(context.Context) (client.Client, error)) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("starter "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	noWait := fs.Bool("no-wait", false, "run: print the workflow id and return at once")
	configPath := fs.String("config", os.Getenv("OPTOUT_CONFIG"), "explain: the worker's configuration file")
	dataDir := fs.String("data", "data", "explain: the demo's data directory, without -config")
	// Flags may come after the integration id, as in `run acme --no-wait`.
	var pos []string
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return ExitUsage
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos, rest = append(pos, rest[0]), rest[1:]
		}
	}
	want := map[string]int{"run": 1, "status": 1, "schedules": 0, "explain": 1}
	n, ok := want[cmd]
	switch {
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	case !ok:
		fmt.Fprintf(stderr, "starter: unknown command %q\n\n%s", cmd, usage)
		return ExitUsage
	case len(pos) != n:
		fmt.Fprintf(stderr, "starter %s: wrong number of arguments\n\n%s", cmd, usage)
		return ExitUsage
	case *noWait && cmd != "run":
		fmt.Fprintf(stderr, "starter %s: --no-wait is only for run\n", cmd)
		return ExitUsage
	}

	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := dial(dctx)
	cancel()
	var ee *exitError
	if errors.As(err, &ee) {
		// The settings are wrong (a bad codec key): no use going on.
		fmt.Fprintf(stderr, "starter: %v\n", err)
		return ee.code
	}
	if cmd == "explain" {
		// The ledger answers even while Temporal is down.
		if err != nil {
			c = nil
		} else {
			defer c.Close()
		}
		return explain(ctx, pos[0], *configPath, *dataDir, c, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "starter: cannot reach Temporal: %v\n", err)
		return ExitUnreachable
	}
	defer c.Close()

	switch cmd {
	case "run":
		err = Run(ctx, c, pos[0], RunOptions{NoWait: *noWait, Out: stdout})
	case "status":
		err = Status(ctx, c, pos[0], stdout)
	case "schedules":
		err = Schedules(ctx, c, stdout)
	}
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "starter %s: %v\n", cmd, err)
	if errors.As(err, &ee) {
		return ee.code
	}
	if ctx.Err() != nil {
		return ExitRunFailed
	}
	return ExitUnreachable
}

// explain runs the explain command.
func explain(ctx context.Context, who, configPath, dataDir string, c client.Client, stdout, stderr io.Writer) int {
	l, ids, err := OpenLedger(ctx, configPath, dataDir, os.LookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "starter explain: %v\n", err)
		return ExitUsage
	}
	defer l.Close()
	err = Explain(ctx, who, ExplainOptions{Ledger: l, Integrations: ids, Client: c, TaskQueue: workflows.TaskQueue, Out: stdout})
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "starter explain: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitRunFailed
}
