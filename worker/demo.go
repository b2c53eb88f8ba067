//go:build !nodev

package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/connectors/salesforce"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
	"github.com/optoutsync/optoutsync/workflows"
)

// devEmulator is a running emulator of one system, seeded with its demo
// data by its own package.
type devEmulator interface {
	// Emulate points a configuration block of the system at the
	// emulator, putting the credentials it names into env.
	Emulate(cfg any, env map[string]string) error
	// Describe says where it listens and how to sign in.
	Describe() string
	Close()
}

// emulatorKinds are the emulators of the dev mode, by kind: one line per
// system, beside its line in the connector tables.
var emulatorKinds = map[string]func() devEmulator{
	"bullhorn":   func() devEmulator { return bullhorntest.Demo() },
	"dynamics":   func() devEmulator { return dynamicstest.Demo() },
	"mailchimp":  func() devEmulator { return mailchimptest.Demo() },
	"netsuite":   func() devEmulator { return netsuitetest.Demo() },
	"salesforce": func() devEmulator { return salesforcetest.Demo() },
}

// demoSchedule is the demo integrations' interval.
const demoSchedule = "2m"

// DemoConfig is the built-in demo: NetSuite ⇄ Mailchimp scoped to a saved
// search, Salesforce ⇄ Mailchimp scoped to a campaign and Dynamics 365 ⇄
// Mailchimp scoped to a static and a dynamic marketing list, all with the
// crm-to-marketing step on and a field mapping, all against the
// emulators ("emulator" base URLs, resolved by Emulators.Resolve).
func DemoConfig() *Config {
	return &Config{Webhooks: Webhooks{Listen: "127.0.0.1:0"}, Codec: CodecSettings{keysOptional: true}, Integrations: []Integration{
		{
			ID:            "demo",
			Schedule:      demoSchedule,
			MarketingKind: "mailchimp",
			Marketing: &mailchimp.Config{AudienceID: mailchimptest.DemoNetSuiteAudience, BaseURL: connectors.EmulatorURL,
				WebhookTokenEnv: mailchimptest.DemoWebhookTokenEnv},
			CRMKind: "netsuite",
			CRM: &netsuite.Config{BaseURL: connectors.EmulatorURL, CRMScope: connectors.CRMScope{
				Lists: []string{netsuitetest.DemoSavedSearch}, CleanedField: netsuitetest.DemoCleanedField,
			}},
			CRMToMarketing: true,
			FieldMap:       map[string]string{"firstName": "FNAME", "lastName": "LNAME"},
		},
		{
			ID:            "demo-salesforce",
			Schedule:      demoSchedule,
			MarketingKind: "mailchimp",
			Marketing: &mailchimp.Config{AudienceID: mailchimptest.DemoSalesforceAudience, BaseURL: connectors.EmulatorURL,
				WebhookTokenEnv: mailchimptest.DemoWebhookTokenEnv},
			CRMKind:        "salesforce",
			CRM:            &salesforce.Config{BaseURL: connectors.EmulatorURL, CRMScope: connectors.CRMScope{Lists: []string{salesforcetest.DemoCampaign}}},
			CRMToMarketing: true,
			FieldMap:       map[string]string{"FirstName": "FNAME", "LastName": "LNAME"},
		},
		{
			ID:            "demo-dynamics",
			Schedule:      demoSchedule,
			MarketingKind: "mailchimp",
			Marketing:     &mailchimp.Config{AudienceID: dynamicstest.DemoAudience, BaseURL: connectors.EmulatorURL},
			CRMKind:       "dynamics",
			CRM: &dynamics.Config{BaseURL: connectors.EmulatorURL, CRMScope: connectors.CRMScope{
				Lists: []string{dynamicstest.DemoList, dynamicstest.DemoLeadList},
			}},
			CRMToMarketing: true,
			FieldMap:       map[string]string{"firstname": "FNAME", "lastname": "LNAME"},
		},
		{
			ID:            "demo-bullhorn",
			Schedule:      demoSchedule,
			MarketingKind: "mailchimp",
			Marketing:     &mailchimp.Config{AudienceID: bullhorntest.DemoAudience, BaseURL: connectors.EmulatorURL},
			CRMKind:       "bullhorn",
			CRM: &bullhorn.Config{BaseURL: connectors.EmulatorURL, CRMScope: connectors.CRMScope{
				Lists: []string{bullhorntest.DemoTearsheet},
			}},
			CRMToMarketing: true,
			FieldMap:       map[string]string{"firstName": "FNAME", "lastName": "LNAME"},
		},
	}}
}

// Emulators are the dev mode's in-process emulators, each started the
// first time a configuration points a system of its kind at "emulator".
// The emulators keep their state in memory, so a restart seeds them
// again; the Temporal data persists in the dev server's SQLite file.
type Emulators struct {
	running map[string]devEmulator
	// Env holds the emulators' credentials under the variable names the
	// resolved configuration refers to.
	Env map[string]string
}

// NewEmulators returns an empty set; Resolve starts them.
func NewEmulators() *Emulators {
	return &Emulators{running: map[string]devEmulator{}, Env: map[string]string{}}
}

// Resolve points every "emulator" block of cfg at its running emulator,
// in place, starting the emulator when it is the first of its kind.
func (e *Emulators) Resolve(cfg *Config) error {
	use := func(kind string, block any) error {
		if e.running[kind] == nil {
			start, ok := emulatorKinds[kind]
			if !ok {
				return fmt.Errorf("no emulator for kind %q", kind)
			}
			e.running[kind] = start()
		}
		return e.running[kind].Emulate(block, e.Env)
	}
	for _, in := range cfg.Integrations {
		if in.Marketing != nil && in.Marketing.Emulated() {
			if err := use(in.MarketingKind, in.Marketing); err != nil {
				return fmt.Errorf("integration %q: marketing.baseURL: %w", in.ID, err)
			}
		}
		if in.CRM != nil && in.CRM.Emulated() {
			if err := use(in.CRMKind, in.CRM); err != nil {
				return fmt.Errorf("integration %q: crm.baseURL: %w", in.ID, err)
			}
		}
	}
	return nil
}

// Get returns the running emulator of a kind, or nil.
func (e *Emulators) Get(kind string) devEmulator { return e.running[kind] }

// Close stops the emulators.
func (e *Emulators) Close() {
	for _, em := range e.running {
		em.Close()
	}
}

// Describe is every running emulator's Describe, by kind.
func (e *Emulators) Describe() string {
	var b strings.Builder
	for _, kind := range slices.Sorted(maps.Keys(e.running)) {
		b.WriteString("\n" + e.running[kind].Describe())
	}
	return b.String()
}

// Lookup overlays the emulators' credentials (and the demo ledger key,
// when no key is set) on env.
func (e *Emulators) Lookup(env LookupEnv) LookupEnv {
	return func(name string) (string, bool) {
		if v, ok := e.Env[name]; ok {
			return v, true
		}
		if v, ok := env(name); ok || name != ledger.DefaultKeyEnv {
			return v, ok
		}
		return ledger.DemoKey, true
	}
}

// printBanner tells the person running -dev where everything is.
func printBanner(w io.Writer, frontend, ui, ops string, cfg *Config) {
	var b strings.Builder
	fmt.Fprintf(&b, "\noptout-sync dev mode\n")
	fmt.Fprintf(&b, "  Temporal frontend  %s\n", frontend)
	fmt.Fprintf(&b, "  Temporal Web UI    %s\n", ui)
	if ops != "" {
		fmt.Fprintf(&b, "  Metrics            http://%s/metrics  (health: /livez, /readyz)\n", ops)
	}
	fmt.Fprintf(&b, "  Integrations:\n")
	for _, in := range cfg.Integrations {
		fmt.Fprintf(&b, "    %-18s %s ⇄ %s every %s (schedule %s)\n", in.ID, in.CRMKind, in.MarketingKind, in.Interval(), workflows.ScheduleID(in.ID))
	}
	id := cfg.Integrations[0].ID
	fmt.Fprintf(&b, "\nTry:\n")
	fmt.Fprintf(&b, "  go run ./starter run %s\n", id)
	fmt.Fprintf(&b, "  go run ./starter status %s\n", id)
	fmt.Fprintf(&b, "  go run ./starter schedules\n")
	fmt.Fprintf(&b, "  go run ./worker -emulators   # the emulators' URLs and credentials\n")
	fmt.Fprintf(&b, "  temporal schedule trigger --schedule-id %s\n", workflows.ScheduleID(id))
	fmt.Fprintf(&b, "  temporal workflow list --query 'OptOutIntegration=\"%s\"'\n", id)
	fmt.Fprintf(&b, "  temporal workflow query --workflow-id <id from the list> --type status\n\n")
	fmt.Fprint(w, b.String())
}
