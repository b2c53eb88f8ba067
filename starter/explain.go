package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"go.temporal.io/sdk/client"
	"gopkg.in/yaml.v3"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/workflows"
)

// demoIntegrations are the dev mode's integrations, explained when no
// configuration is given.
var demoIntegrations = []string{"demo", "demo-salesforce"}

// ledgerConfig is what explain reads of the worker's configuration file:
// the ledger and the integration ids.
type ledgerConfig struct {
	Integrations []struct {
		ID string `yaml:"id"`
	} `yaml:"integrations"`
	Ledger ledger.Settings `yaml:"ledger"`
}

// OpenLedger opens the ledger the worker's configuration names (path "":
// the dev mode's, in dataDir, keyed with $OPTOUT_LEDGER_KEY or the public
// demo key) and returns it with the configured integration ids.
func OpenLedger(ctx context.Context, path, dataDir string, env func(string) (string, bool)) (*ledger.SQL, []string, error) {
	var cfg ledgerConfig
	ids := demoIntegrations
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("reading configuration: %w", err)
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		ids = nil
		for _, in := range cfg.Integrations {
			ids = append(ids, in.ID)
		}
	} else {
		cfg.Ledger.Path = filepath.Join(dataDir, "ledger.db")
		if _, err := os.Stat(cfg.Ledger.Path); err != nil {
			return nil, nil, fmt.Errorf("no demo ledger at %s (start `worker -dev`, or give -config): %w", cfg.Ledger.Path, err)
		}
		plain := env
		env = func(name string) (string, bool) {
			if v, ok := plain(name); ok || name != ledger.DefaultKeyEnv {
				return v, ok
			}
			return ledger.DemoKey, true
		}
	}
	if p := cfg.Ledger.Validate(); len(p) > 0 {
		return nil, nil, errors.New(strings.Join(p, "; "))
	}
	lc, err := cfg.Ledger.Resolve(env)
	if err != nil {
		return nil, nil, err
	}
	l, err := ledger.Open(ctx, lc)
	if err != nil {
		return nil, nil, err
	}
	return l, ids, nil
}

// personKey matches a ledger person key (64 hex digits).
var personKey = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ExplainOptions tune Explain.
type ExplainOptions struct {
	Ledger       *ledger.SQL
	Integrations []string
	// Client reaches the worker for the current state; nil when Temporal
	// cannot be reached (the ledger's history is still printed).
	Client    client.Client
	TaskQueue string
	Out       io.Writer
	// Timeout bounds each current-state lookup; 0 means 30s.
	Timeout time.Duration
}

// Explain prints what the ledger knows about an address (or a ledger
// person key): every observation and write, with its rule and run, read
// straight from the ledger; then, through the worker, where the address
// stands now in each integration's systems.
func Explain(ctx context.Context, who string, o ExplainOptions) error {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	who = strings.TrimSpace(who)
	email, person := "", strings.ToLower(who)
	if !personKey.MatchString(person) {
		email, person = who, o.Ledger.Person(who)
		if person == "" {
			return fail(ExitUsage, "%q is neither an email address nor a ledger person key", who)
		}
	}
	fmt.Fprintf(o.Out, "person %s", person)
	if email != "" {
		fmt.Fprintf(o.Out, " (address hash %s)", connectors.AddressHash(email))
	}
	fmt.Fprintln(o.Out)
	hist, err := o.Ledger.History(ctx, person)
	if err != nil {
		return err
	}
	if len(hist) == 0 {
		fmt.Fprintln(o.Out, "\nThe ledger holds nothing about this address: no opt-out of it was ever observed.")
	} else {
		fmt.Fprintln(o.Out, "\nHistory (from the ledger):")
		tw := tabwriter.NewWriter(o.Out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  WHEN\tINTEGRATION\tWHAT\tSYSTEM\tSUBJECT\tRULE / RUN")
		for _, e := range hist {
			what := "observed " + e.Kind
			if e.Type == "wrote" {
				what = e.Kind + " → " + e.Result
				if e.Code != "" {
					what += " (" + e.Code + ")"
				}
			}
			if e.Via != "" {
				what += " via " + e.Via
			}
			if e.Audience != "" {
				what += " in audience " + e.Audience
			}
			detail := e.Rule
			if e.Cause != "" {
				detail += " [cause " + e.Cause + "]"
			}
			if !e.OccurredAt.IsZero() {
				detail += " [at the vendor " + ts(e.OccurredAt) + "]"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s run %s/%s\n", ts(e.At), e.Integration, what, e.System, e.Subject,
				strings.TrimSpace(detail), e.WorkflowID, e.RunID)
		}
		tw.Flush()
	}
	fmt.Fprintln(o.Out, "\nNow:")
	if email == "" {
		fmt.Fprintln(o.Out, "  (give the address rather than its key to see where it stands now)")
		return nil
	}
	if o.Client == nil {
		fmt.Fprintln(o.Out, "  (Temporal cannot be reached: the current state comes through the worker)")
		return nil
	}
	sealed, err := o.Ledger.Seal(email)
	if err != nil {
		return err
	}
	for _, id := range o.Integrations {
		st, err := currentState(ctx, o, id, sealed, connectors.AddressHash(email))
		if err != nil {
			fmt.Fprintf(o.Out, "  %s: cannot look it up: %v\n", id, err)
			continue
		}
		status := string(st.MemberStatus)
		if status == "" {
			status = "not in the audience"
		}
		fmt.Fprintf(o.Out, "  %s: %s audience %s: %s\n", id, st.Marketing, st.Audience, status)
		if len(st.Records) == 0 {
			fmt.Fprintf(o.Out, "  %s: %s: no record has the address\n", id, st.CRM)
		}
		for _, r := range st.Records {
			state := "not opted out"
			if r.OptedOut {
				state = "opted out"
			}
			fmt.Fprintf(o.Out, "  %s: %s %s: %s\n", id, st.CRM, r.Record, state)
		}
		if p := st.Ledger; p != nil {
			standing := "no standing opt-out"
			if p.OptedOut {
				standing = fmt.Sprintf("opted out (%s in %s, %s)", p.OptOutKind, p.OptOutSource, ts(p.OptOutAt))
			}
			if !p.ResubscribedAt.IsZero() {
				standing += fmt.Sprintf("; re-subscribed %s", ts(p.ResubscribedAt))
			}
			fmt.Fprintf(o.Out, "  %s: ledger: %s\n", id, standing)
		}
	}
	return nil
}

func currentState(ctx context.Context, o ExplainOptions, id, sealed, hash string) (activities.CurrentState, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	run, err := o.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.ExplainWorkflowID(id, hash), TaskQueue: o.TaskQueue, WorkflowExecutionTimeout: o.Timeout,
	}, workflows.ExplainWorkflow, activities.CurrentStateInput{IntegrationID: id, Sealed: sealed})
	if err != nil {
		return activities.CurrentState{}, err
	}
	var st activities.CurrentState
	err = run.Get(ctx, &st)
	return st, err
}
