package main

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// The webhooks block and the integrations' webhook keys are checked like
// every other key: each problem names where it is.
func TestWebhookConfigErrors(t *testing.T) {
	const mc = `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY%s}`
	crm := nsTBA + `}`
	for name, tc := range map[string]struct {
		top, marketing, want string
	}{
		"bad listen":          {"webhooks: {listen: 'nope'}\n", ", webhookTokenEnv: HOOK", `webhooks.listen: "nope" is not a listen address`},
		"port out of range":   {"webhooks: {listen: ':70000'}\n", ", webhookTokenEnv: HOOK", `webhooks.listen: ":70000"`},
		"http public URL":     {"webhooks: {listen: ':8089', publicURL: 'http://x.example.com'}\n", ", webhookTokenEnv: HOOK", "webhooks.publicURL"},
		"public without":      {"webhooks: {publicURL: 'https://x.example.com'}\n", ", webhookTokenEnv: HOOK", "webhooks.publicURL: given without webhooks.listen"},
		"nobody receives":     {"webhooks: {listen: ':8089'}\n", "", "webhooks.listen: no integration receives webhooks"},
		"secret without hook": {"", ", webhookSigningSecretEnv: SIG", `integration "acme": marketing.webhookSigningSecretEnv: given without webhookTokenEnv`},
		"both token sources":  {"", ", webhookTokenEnv: HOOK, webhookTokenFile: /x", "marketing.webhookTokenEnv: give only one"},
		"unknown key":         {"webhooks: {listen: ':8089', port: 1}\n", ", webhookTokenEnv: HOOK", "webhooks.port"},
	} {
		cfg, err := ParseConfig([]byte(tc.top+one(fmt.Sprintf(mc, tc.marketing), crm, "")), false)
		if err == nil {
			err = cfg.Validate(false)
		}
		require.ErrorContains(t, err, tc.want, name)
	}

	cfg, err := ParseConfig([]byte("webhooks: {listen: '127.0.0.1:8089', publicURL: 'https://optout.example.com'}\n"+
		one(fmt.Sprintf(mc, ", webhookTokenEnv: HOOK, webhookSigningSecretEnv: SIG"), crm, "")), false)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate(false))
	require.Equal(t, Webhooks{Listen: "127.0.0.1:8089", PublicURL: "https://optout.example.com"}, cfg.Webhooks)

	// The token is read at start and must be unguessable.
	env := map[string]string{"MC_KEY": "0123456789abcdef-us6", "NS_CK": "k", "NS_CS": "s", "NS_TI": "t", "NS_TS": "u", "HOOK": "short", "SIG": "x"}
	_, err = BuildRegistry(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	require.ErrorContains(t, err, `integration "acme": marketing.webhookTokenEnv: the token must be 32 to 128`)
	env["HOOK"] = "0123456789abcdef0123456789abcdef"
	reg, err := BuildRegistry(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	require.NoError(t, err)
	require.NotNil(t, reg["acme"])
}

// The demo's integrations receive webhooks: the dev mode hands each a
// fresh token, and its receiver registers itself with the emulator.
func TestDemoIntegrationsReceiveWebhooks(t *testing.T) {
	cfg := DemoConfig()
	e := NewEmulators()
	defer e.Close()
	require.NoError(t, e.Resolve(cfg))
	require.NoError(t, cfg.Validate(true))
	require.NotEmpty(t, cfg.Webhooks.Listen)
	reg, err := BuildRegistry(cfg, e.Lookup(func(string) (string, bool) { return "", false }), nil)
	require.NoError(t, err)
	for _, id := range []string{"demo", "demo-salesforce"} {
		h, ok := reg[id].Marketing.(connectors.Webhooks)
		require.True(t, ok, id)
		require.Len(t, h.WebhookToken(), 32, id)
	}
}

// The Mailchimp demo seeds the audiences the other emulators' demos pair with.
func TestDemoAudiencesPair(t *testing.T) {
	require.Equal(t, dynamicstest.DemoAudience, mailchimptest.DemoDynamicsAudience)
	require.Equal(t, bullhorntest.DemoAudience, mailchimptest.DemoBullhornAudience)
	mc := mailchimptest.Demo()
	defer mc.Close()
	for _, aud := range []string{mailchimptest.DemoDynamicsAudience, mailchimptest.DemoBullhornAudience} {
		require.NotEmpty(t, mc.Members(aud), aud)
	}
}
