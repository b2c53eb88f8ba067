package dynamicstest_test

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
)

type envSecrets map[string]string

func (e envSecrets) Secret(key string, ref connectors.SecretRef) (string, error) {
	return e[ref.Env], nil
}

// TestDemoEmulatesAConfiguration points a configuration at the demo, as
// the dev mode does, and reads the demo lists through the connector it opens.
func TestDemoEmulatesAConfiguration(t *testing.T) {
	d := dynamicstest.Demo()
	t.Cleanup(d.Close)
	cfg := &dynamics.Config{BaseURL: connectors.EmulatorURL, CRMScope: connectors.CRMScope{Lists: []string{dynamicstest.DemoList, dynamicstest.DemoLeadList}}}
	env := map[string]string{}
	require.NoError(t, d.Emulate(cfg, env))
	require.NoError(t, cfg.Validate(true))
	require.Equal(t, []string{d.ListID, d.LeadListID}, cfg.Lists)
	for _, want := range []string{d.URL, d.TenantID, d.ClientID, d.ClientSecret, d.ListID, d.LeadListID} {
		require.Contains(t, d.Describe(), want)
	}
	crm, err := cfg.Open(envSecrets(env), slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	in, out := map[string]bool{}, map[string]bool{}
	q := connectors.OptOutQuery{Types: cfg.RecordTypes, Field: cfg.OptOut, Lists: cfg.Lists}
	for i := 0; ; i++ {
		require.Less(t, i, 10)
		page, err := crm.OptedOut(t.Context(), q)
		require.NoError(t, err)
		for _, r := range page.Records {
			if r.InLists {
				in[r.Email] = true
			} else {
				out[r.Email] = true
			}
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	require.Equal(t, map[string]bool{"sven@example.com": true, "uma@example.com": true}, in, "opted out in the static and the dynamic list")
	require.Equal(t, map[string]bool{"rita@example.com": true, "vic@example.com": true}, out, "opted out outside both")
}
