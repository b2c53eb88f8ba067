package main

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// TestRejectedCredentialIsAWarning: an integration whose key the API
// refuses does not stop the worker; the start-up check logs a warning
// naming the integration, and the other integration is unaffected. Its
// runs then fail with the activities' non-retryable Unauthorized error.
func TestRejectedCredentialIsAWarning(t *testing.T) {
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	defer mc.Close()
	mc.AddList("a1", "Audience")
	cfg, err := ParseConfig([]byte(`
integrations:
  - id: good
    marketing: {kind: mailchimp, audience: a1, apiKeyEnv: GOOD_KEY, baseURL: "`+mc.URL+`"}
    crm: `+nsTBA+`}
  - id: bad
    marketing: {kind: mailchimp, audience: a1, apiKeyEnv: BAD_KEY, baseURL: "`+mc.URL+`"}
    crm: `+nsTBA+`}
`), true) // the emulator speaks plain http, which only -dev allows
	require.NoError(t, err)
	env := map[string]string{"GOOD_KEY": mc.APIKey, "BAD_KEY": "00000000000000000000000000000000-us6",
		"NS_CK": "a", "NS_CS": "b", "NS_TI": "c", "NS_TS": "d"}
	reg, err := BuildRegistry(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	require.NoError(t, err)
	require.Len(t, reg, 2)

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	// Only the marketing side is pinged here: the NetSuite account is fictitious.
	for _, in := range reg {
		in.CRM = nil
	}
	CheckCredentials(t.Context(), reg, log)
	require.Contains(t, logs.String(), "integration=bad")
	require.NotContains(t, logs.String(), "integration=good")
	require.NotContains(t, logs.String(), "00000000000000000000000000000000")
}
