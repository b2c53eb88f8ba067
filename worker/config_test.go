package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
)

const nsTBA = `{kind: netsuite, accountId: "1234567_SB1", consumerKeyEnv: NS_CK, consumerSecretEnv: NS_CS, tokenIdEnv: NS_TI, tokenSecretEnv: NS_TS, timeZone: UTC`

// one builds a one-integration configuration from its marketing and crm
// flow mappings and extra integration-level lines.
func one(marketing, crm, extra string) string {
	return "integrations:\n  - id: acme\n    marketing: " + marketing + "\n    crm: " + crm + "\n" + extra
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(one(`{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`, nsTBA+`}`, "")), false)
	require.NoError(t, err)
	in := cfg.Integrations[0]
	require.Equal(t, 15*time.Minute, in.Interval())
	s := in.Settings()
	require.Equal(t, "acme", s.IntegrationID)
	require.Equal(t, []string{"customer", "contact"}, s.RecordTypes)
	require.Equal(t, connectors.OptOutField{Kind: connectors.OptOutStandard}, s.OptOut)
	require.Equal(t, connectors.StatusSubscribed, s.StatusIfNew)
	require.Equal(t, 2*time.Minute, s.Overlap)
	require.Equal(t, 1000, s.PageSize)
	require.Equal(t, 10, s.PagesPerActivity)
	require.False(t, s.CRMToMarketing)
	require.Nil(t, s.FieldMap)
}

func TestParseConfigExample(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "config.example.yaml"), false)
	require.NoError(t, err)
	require.NotEmpty(t, cfg.Integrations)
}

func TestParseConfigErrors(t *testing.T) {
	mc := `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`
	ns := nsTBA + `}`
	sf := `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID, clientSecretEnv: SF_SECRET`
	tests := []struct {
		name, yaml, want string
	}{
		{"empty", ``, "configuration is empty"},
		{"no integrations", "integrations: []\n", "at least one integration"},
		{"unknown key", one(mc, ns, "    crmToMarketting: true\n"), "field crmToMarketting not found"},
		{"unknown nested key", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, apikey: x}`, ns, ""), "field apikey not found"},
		{"missing id", "integrations:\n  - marketing: " + mc + "\n    crm: " + ns + "\n", `integration "#1": id: required`},
		{"bad id", strings.Replace(one(mc, ns, ""), "id: acme", "id: Acme_1", 1), `integration "Acme_1": id: "Acme_1" must be lower-case`},
		{"duplicate id", one(mc, ns, "  - id: acme\n    marketing: "+mc+"\n    crm: "+ns+"\n"), `integration "acme": id: duplicate id`},
		{"bad schedule", one(mc, ns, "    schedule: 15\n"), `integration "acme": schedule: "15" is not a duration`},
		{"bad overlap", one(mc, ns, "    overlap: -1m\n"), `integration "acme": overlap: "-1m" must not be negative`},
		{"status if new", one(mc, ns, "    statusIfNew: cleaned\n"), `integration "acme": statusIfNew: "cleaned" is not one of`},
		{"page size", one(mc, ns, "    pageSize: 5000\n"), `integration "acme": pageSize: 5000 must be between 1 and 1000`},
		{"pages per activity", one(mc, ns, "    pagesPerActivity: -1\n"), `pagesPerActivity: -1 must be positive`},
		{"merge tag", one(mc, ns, "    fieldMap: {firstName: fname}\n"), `integration "acme": fieldMap.firstName: "fname" is not a merge tag`},
		{"merge tag twice", one(mc, ns, "    fieldMap: {firstName: FNAME, altName: FNAME}\n"), `fieldMap.firstName: merge tag FNAME is also mapped from altName`},
		{"marketing kind missing", one(`{audience: abc, apiKeyEnv: K}`, ns, ""), `integration "acme": marketing.kind: required`},
		{"marketing kind unknown", one(`{kind: hubspot, audience: abc}`, ns, ""), `marketing.kind: unknown kind "hubspot"`},
		{"audience", one(`{kind: mailchimp, apiKeyEnv: K}`, ns, ""), `marketing.audience: required`},
		{"no mailchimp credential", one(`{kind: mailchimp, audience: abc}`, ns, ""), `marketing.apiKeyEnv: a credential is required`},
		{"two mailchimp credentials", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, apiKeyFile: /k}`, ns, ""), `marketing.apiKeyEnv: give only one of`},
		{"oauth needs dc", one(`{kind: mailchimp, audience: abc, oauthTokenEnv: T}`, ns, ""), `marketing.dc: required with an OAuth token`},
		{"bad env name", one(`{kind: mailchimp, audience: abc, apiKeyEnv: "MC KEY"}`, ns, ""), `marketing.apiKeyEnv: "MC KEY" is not an environment variable name`},
		{"emulator outside dev", one(`{kind: mailchimp, audience: abc, baseURL: emulator}`, ns, ""), `marketing.baseURL: "emulator" is only allowed with -dev`},
		{"bad base URL", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, baseURL: "ftp://x"}`, ns, ""), `marketing.baseURL: "ftp://x" is not an http(s) URL`},
		{"crm kind missing", one(mc, `{accountId: "1"}`, ""), `integration "acme": crm.kind: required`},
		{"crm kind unknown", one(mc, `{kind: dynamics}`, ""), `crm.kind: unknown kind "dynamics"`},
		{"netsuite account", one(mc, `{kind: netsuite, consumerKeyEnv: A, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D}`, ""), `crm.accountId: required`},
		{"netsuite account form", one(mc, `{kind: netsuite, accountId: "12-34", consumerKeyEnv: A, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D}`, ""), `crm.accountId: "12-34" is not a NetSuite account id`},
		{"netsuite no credentials", one(mc, `{kind: netsuite, accountId: "1"}`, ""), `crm.consumerKeyEnv: credentials are required`},
		{"netsuite partial TBA", one(mc, `{kind: netsuite, accountId: "1", consumerKeyEnv: A, consumerSecretEnv: B}`, ""), `crm.tokenIdEnv: required for token-based auth`},
		{"netsuite TBA and M2M", one(mc, nsTBA+`, clientIdEnv: X}`, ""), `crm.consumerKeyEnv: give either the four TBA secrets`},
		{"netsuite M2M certificate", one(mc, `{kind: netsuite, accountId: "1", clientIdEnv: X, privateKeyFile: /k.pem}`, ""), `crm.certificateId: required for M2M auth`},
		{"netsuite env and file", one(mc, `{kind: netsuite, accountId: "1", consumerKeyEnv: A, consumerKeyFile: /a, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D}`, ""), `crm.consumerKeyEnv: give only one of consumerKeyEnv and consumerKeyFile`},
		{"netsuite salesforce field", one(mc, nsTBA+`, instanceURL: "https://x.my.salesforce.com"}`, ""), `crm.instanceURL: not a netsuite setting`},
		{"netsuite time zone", one(mc, strings.Replace(nsTBA, "timeZone: UTC", "timeZone: Mars/Olympus", 1)+`}`, ""), `crm.timeZone: "Mars/Olympus" is not an IANA time zone`},
		{"netsuite time zone missing", one(mc, strings.Replace(nsTBA, ", timeZone: UTC", "", 1)+`}`, ""), `integration "acme": crm.timeZone: required: the NetSuite integration user's time zone`},
		{"netsuite record type", one(mc, nsTBA+`, recordTypes: [customer, Contact]}`, ""), `crm.recordTypes[1]: "Contact" is not a netsuite record type`},
		{"netsuite saved search", one(mc, nsTBA+`, lists: ["customsearch_ok", "my search"]}`, ""), `crm.lists[1]: "my search" is not a saved search id`},
		{"custom needs field", one(mc, nsTBA+`, optOut: {kind: custom}}`, ""), `integration "acme": crm.optOut.field: required when kind is custom`},
		{"inverted needs field", one(mc, nsTBA+`, optOut: {kind: inverted}}`, ""), `crm.optOut.field: required when kind is inverted`},
		{"standard takes no field", one(mc, nsTBA+`, optOut: {kind: standard, field: custentity_x}}`, ""), `crm.optOut.field: not used when kind is standard`},
		{"opt-out kind", one(mc, nsTBA+`, optOut: {kind: soft}}`, ""), `crm.optOut.kind: unknown kind "soft"`},
		{"netsuite custom field name", one(mc, nsTBA+`, optOut: {kind: custom, field: mc_optout}}`, ""), `crm.optOut.field: "mc_optout" must be a custom entity field (custentity...)`},
		{"netsuite cleaned field name", one(mc, nsTBA+`, cleanedField: bounced}`, ""), `crm.cleanedField: "bounced" must be a custom entity field`},
		{"cleaned is not opt-out", one(mc, nsTBA+`, optOut: {kind: custom, field: custentity_x}, cleanedField: custentity_x}`, ""), `crm.cleanedField: must differ from optOut.field`},
		{"salesforce instance", one(mc, `{kind: salesforce, clientIdEnv: SF_ID, clientSecretEnv: S}`, ""), `crm.instanceURL: required`},
		{"salesforce client id", one(mc, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientSecretEnv: S}`, ""), `crm.clientIdEnv: required`},
		{"salesforce no secret", one(mc, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID}`, ""), `crm.clientSecretEnv: a credential is required`},
		{"salesforce jwt username", one(mc, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID, privateKeyFile: /k.pem}`, ""), `crm.username: required with privateKey`},
		{"salesforce netsuite field", one(mc, sf+`, accountId: "123"}`, ""), `crm.accountId: not a salesforce setting`},
		{"salesforce custom field name", one(mc, sf+`, optOut: {kind: custom, field: Marketing_Opt_Out}}`, ""), `crm.optOut.field: "Marketing_Opt_Out" must be a custom field (...__c)`},
		{"salesforce campaign id", one(mc, sf+`, lists: ["7015g000000ABCD", "campaign-1"]}`, ""), `crm.lists[1]: "campaign-1" is not a Campaign id`},
		{"salesforce record type", one(mc, sf+`, recordTypes: [contact]}`, ""), `crm.recordTypes[0]: "contact" is not a salesforce record type`},
		{"salesforce api version", one(mc, sf+`, apiVersion: "62"}`, ""), `crm.apiVersion: "62" is not an API version`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml), false)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestParseConfigValid(t *testing.T) {
	mc := `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`
	tests := []struct{ name, crm, extra string }{
		{"netsuite TBA with files", `{kind: netsuite, accountId: "1234567", consumerKeyFile: /a, consumerSecretFile: /b, tokenIdFile: /c, tokenSecretFile: /d, timeZone: UTC}`, ""},
		{"netsuite M2M", `{kind: netsuite, accountId: "1234567", clientIdEnv: X, certificateId: cert, privateKeyFile: /k.pem, timeZone: America/New_York}`, ""},
		{"netsuite custom opt-out", nsTBA + `, optOut: {kind: custom, field: custentity_mc_optout}, cleanedField: custentity_mc_bounced, lists: ["123", customsearch_mc]}`, "    crmToMarketing: true\n"},
		{"salesforce client credentials", `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID, clientSecretEnv: S, lists: ["7015g000000ABCDAAA"]}`, ""},
		{"salesforce JWT inverted", `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID, privateKeyFile: /k.pem, username: sync@acme.com, optOut: {kind: inverted, field: Email_Opt_In__c}}`, "    fieldMap: {FirstName: FNAME, LastName: LNAME}\n    statusIfNew: pending\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(one(mc, tt.crm, tt.extra)), false)
			require.NoError(t, err)
		})
	}
}

// TestAllErrorsAtOnce: an operator fixes a file in one pass.
func TestAllErrorsAtOnce(t *testing.T) {
	_, err := ParseConfig([]byte(one(`{kind: mailchimp}`, `{kind: netsuite, accountId: "1"}`, "    schedule: soon\n")), false)
	require.Error(t, err)
	for _, want := range []string{"schedule:", "marketing.audience:", "marketing.apiKeyEnv:", "crm.consumerKeyEnv:"} {
		require.Contains(t, err.Error(), want)
	}
}

func TestBuildRegistrySecrets(t *testing.T) {
	cfg, err := ParseConfig([]byte(one(`{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`, nsTBA+`}`, "")), false)
	require.NoError(t, err)
	env := map[string]string{"MC_KEY": "0123456789abcdef-us6", "NS_CK": "ck", "NS_CS": "cs", "NS_TI": "ti"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	_, err = BuildRegistry(cfg, lookup, nil)
	require.EqualError(t, err, `integration "acme": crm.tokenSecretEnv: environment variable NS_TS is not set`)

	env["NS_TS"] = "super-secret-value"
	reg, err := BuildRegistry(cfg, lookup, nil)
	require.NoError(t, err)
	in, err := reg.Integration("acme")
	require.NoError(t, err)
	require.Equal(t, "abc", in.Settings.Audience)
	require.NotNil(t, in.Marketing)
	require.NotNil(t, in.CRM)
}

func TestBuildRegistrySecretFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "mc.key")
	require.NoError(t, os.WriteFile(key, []byte("0123456789abcdef-us6\n"), 0o600))
	cfg, err := ParseConfig([]byte(one(`{kind: mailchimp, audience: abc, apiKeyFile: `+key+`}`,
		`{kind: netsuite, accountId: "1", consumerKeyFile: `+filepath.Join(dir, "missing")+`, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D, timeZone: UTC}`, "")), false)
	require.NoError(t, err)
	env := map[string]string{"B": "b", "C": "c", "D": "d"}
	_, err = BuildRegistry(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	require.ErrorContains(t, err, `integration "acme": crm.consumerKeyFile: open `)
	require.ErrorContains(t, err, "no such file")
}
