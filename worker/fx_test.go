package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/fx"

	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
	"github.com/optoutsync/optoutsync/worker/codec"
)

func testFlags(t *testing.T) Flags {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	// The ledger in the test's directory, not the package's.
	ledger := fmt.Sprintf("ledger: {path: %q}\n", filepath.Join(dir, "ledger.db"))
	require.NoError(t, os.WriteFile(path, []byte(ledger+one(`{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`, nsTBA+`}`, "")), 0o600))
	return Flags{ConfigPath: path}
}

// TestValidateApp catches a broken dependency graph (a missing provider,
// a cycle) in both modes without starting anything.
func TestValidateApp(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, f := range []Flags{testFlags(t), {Dev: true}} {
		opts := []fx.Option{fx.NopLogger, fx.Supply(f, log), ConfigModule, TemporalModule, OpsModule, WorkerModule, WebhookModule, CodecModule}
		if f.Dev {
			opts = append(opts, DevOptions)
		}
		require.NoError(t, fx.ValidateApp(opts...), "dev=%v", f.Dev)
	}
}

// TestValidateAppBroken shows the check is not vacuous.
func TestValidateAppBroken(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	err := fx.ValidateApp(fx.NopLogger, fx.Supply(testFlags(t), log), TemporalModule, WorkerModule)
	require.Error(t, err)
	require.Contains(t, err.Error(), "missing type")
}

// TestMissingCredentialStopsTheWorker: the app does not build when a named
// environment variable is missing, and says which.
func TestMissingCredentialStopsTheWorker(t *testing.T) {
	t.Setenv("MC_KEY", "0123456789abcdef-us6")
	// The ledger opens first (it keeps refresh tokens for the connectors).
	t.Setenv("OPTOUT_LEDGER_KEY", "a test ledger key of 32 bytes!!!")
	t.Setenv(codec.KeysEnv, testCodecKey(t, "k1"))
	t.Chdir(t.TempDir())
	app := NewApp(testFlags(t), slog.New(slog.DiscardHandler))
	require.Error(t, app.Err())
	require.Contains(t, app.Err().Error(), `integration "acme": crm.consumerKeyEnv: environment variable NS_CK is not set`)
}

// TestDemoConfigResolves: the demo configuration, resolved against freshly
// seeded emulators, is valid and builds every connector.
func TestDemoConfigResolves(t *testing.T) {
	cfg := DemoConfig()
	e := NewEmulators()
	defer e.Close()
	require.NoError(t, e.Resolve(cfg))
	require.NoError(t, cfg.Validate(true))
	require.Equal(t, e.Get("salesforce").(*salesforcetest.DemoServer).CampaignID, cfg.Integrations[1].CRM.Scope().Lists[0])
	reg, err := BuildRegistry(cfg, e.Lookup(func(string) (string, bool) { return "", false }), nil)
	require.NoError(t, err)
	require.Len(t, reg, len(cfg.Integrations))
	var out bytes.Buffer
	printBanner(&out, "127.0.0.1:7233", "http://127.0.0.1:8233", "127.0.0.1:9464", cfg)
	require.Contains(t, out.String(), "temporal schedule trigger --schedule-id optout-sync-demo")
	require.Contains(t, out.String(), "http://127.0.0.1:9464/metrics")
	require.NotContains(t, out.String(), e.Get("mailchimp").(*mailchimptest.Server).APIKey)
}

// TestDevAppBuildsOnAFreshDataDirectory: the first start of the demo
// builds the whole graph, the ledger included, in a data directory that
// does not exist yet, keyed with the demo key.
func TestDevAppBuildsOnAFreshDataDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fresh", "data")
	app := NewApp(Flags{Dev: true, DataDir: dir, SkipCredentialCheck: true}, slog.New(slog.DiscardHandler))
	require.NoError(t, app.Err())
	_, err := os.Stat(filepath.Join(dir, "ledger.db"))
	require.NoError(t, err, "the demo's ledger sits in the data directory")
}

// TestMissingLedgerKeyStopsTheWorker: outside the demo the ledger's key is
// required, and the error names where it was looked for.
func TestMissingLedgerKeyStopsTheWorker(t *testing.T) {
	for _, v := range []string{"MC_KEY", "NS_CK", "NS_CS", "NS_TI", "NS_TS"} {
		t.Setenv(v, "0123456789abcdef-us6")
	}
	t.Setenv("OPTOUT_LEDGER_KEY", "")
	t.Setenv(codec.KeysEnv, testCodecKey(t, "k1"))
	t.Chdir(t.TempDir())
	app := NewApp(testFlags(t), slog.New(slog.DiscardHandler))
	require.Error(t, app.Err())
	require.Contains(t, app.Err().Error(), "ledger.keyEnv: environment variable OPTOUT_LEDGER_KEY is not set")
}

// TestConfigErrorIsPrintedAlone: a bad file stops the app with a
// ConfigError that main prints without the dependency-injection context
// fx wraps around it.
func TestConfigErrorIsPrintedAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(one(`{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`,
		strings.Replace(nsTBA, "timeZone: UTC", "timeZone: Mars/Olympus", 1)+`}`, "")), 0o600))
	app := NewApp(Flags{ConfigPath: path}, slog.New(slog.DiscardHandler))
	require.Error(t, app.Err())
	require.Contains(t, app.Err().Error(), "provideConfig", "fx adds its context…")
	var ce *ConfigError
	require.ErrorAs(t, app.Err(), &ce)
	require.Equal(t, `integration "acme": crm.timeZone: "Mars/Olympus" is not an IANA time zone such as America/Los_Angeles`, ce.Error(), "…which main leaves out")
}
