package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	require.Equal(t, 100, s.PagesPerActivity)
	require.False(t, s.CRMToMarketing)
	require.False(t, s.SkipAbsent, "absent addresses are added as unsubscribed by default")
	require.Nil(t, s.FieldMap)
}

func TestParseConfigAddAbsentAsUnsubscribed(t *testing.T) {
	mc := `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`
	for v, skip := range map[string]bool{"false": true, "true": false} {
		cfg, err := ParseConfig([]byte(one(mc, nsTBA+`}`, "    crmToMarketing: true\n    addAbsentAsUnsubscribed: "+v+"\n")), false)
		require.NoError(t, err)
		require.Equal(t, skip, cfg.Integrations[0].Settings().SkipAbsent, v)
	}
	_, err := ParseConfig([]byte(one(mc, nsTBA+`}`, "    addAbsentAsUnsubscribed: 1\n")), false)
	require.ErrorContains(t, err, "addAbsentAsUnsubscribed")
	require.ErrorContains(t, err, "acme")
}

func TestParseConfigExample(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "config.example.yaml"), false)
	require.NoError(t, err)
	require.NotEmpty(t, cfg.Integrations)
}

// TestParseConfigErrors feeds bad configurations and checks that each is
// refused at start with a line naming exactly its integration and key
// (want), saying what is wrong (msg), with nothing before it.
func TestParseConfigErrors(t *testing.T) {
	mc := `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`
	ns := nsTBA + `}`
	sf := `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID, clientSecretEnv: SF_SECRET`
	nsWith := func(extra string) string { return nsTBA + ", " + extra + "}" }
	bh := `{kind: bullhorn, clientIdEnv: B_ID, clientSecretEnv: B_SECRET, usernameEnv: B_USER, passwordEnv: B_PASS`
	bhWith := func(extra string) string { return bh + ", " + extra + "}" }
	sfWith := func(extra string) string { return sf + ", " + extra + "}" }
	dyn := `{kind: dynamics, orgURL: "https://contoso.crm.dynamics.com", tenantId: "72f988bf-86f1-41af-91ab-2d7cd011db47", clientIdEnv: D_ID, clientSecretEnv: D_SECRET`
	dynWith := func(extra string) string { return dyn + ", " + extra + "}" }
	campaigns := make([]string, 301)
	for i := range campaigns {
		campaigns[i] = fmt.Sprintf("%q", fmt.Sprintf("701%012d", i))
	}
	const acme = `integration "acme": `
	tests := []struct {
		name, yaml, want, msg string
	}{
		{"empty", ``, "", "configuration is empty"},
		{"only a comment", "# nothing\n", "", "configuration is empty"},
		{"second document", one(mc, ns, "") + "---\nintegrations: []\n", "configuration", "only one YAML document"},
		{"no integrations", "integrations: []\n", "integrations", "at least one integration"},
		{"top-level unknown key", "integration: []\n", "integration", "unknown key"},
		{"unknown key", one(mc, ns, "    crmToMarketting: true\n"), acme + "crmToMarketting", "unknown key (known: addAbsentAsUnsubscribed, crm, crmToMarketing"},
		{"key given twice", one(mc, ns, "    schedule: 5m\n    schedule: 10m\n"), acme + "schedule", "given twice"},
		{"unknown marketing key", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, apikey: x}`, ns, ""), acme + "marketing.apikey", "unknown key"},
		{"missing id", "integrations:\n  - marketing: " + mc + "\n    crm: " + ns + "\n", `integration "#1": id`, "required"},
		{"bad id", strings.Replace(one(mc, ns, ""), "id: acme", "id: Acme_1", 1), `integration "Acme_1": id`, "must be lower-case"},
		{"duplicate id", one(mc, ns, "  - id: acme\n    marketing: "+mc+"\n    crm: "+ns+"\n"), acme + "id", "duplicate id"},
		{"schedule not a duration", one(mc, ns, "    schedule: 15\n"), acme + "schedule", `"15" is not a duration`},
		{"schedule 290 years", one(mc, ns, "    schedule: 2540400h\n"), acme + "schedule", "must be between 10s and 24h0m0s"},
		{"schedule too short", one(mc, ns, "    schedule: 1ms\n"), acme + "schedule", "must be between"},
		{"overlap negative", one(mc, ns, "    overlap: -1m\n"), acme + "overlap", "must be between 0s and 24h0m0s"},
		{"overlap two days", one(mc, ns, "    overlap: 48h\n"), acme + "overlap", "must be between"},
		{"status if new", one(mc, ns, "    statusIfNew: cleaned\n"), acme + "statusIfNew", `"cleaned" is not one of`},
		{"page size", one(mc, ns, "    pageSize: 5000\n"), acme + "pageSize", "5000 must be between 1 and 1000"},
		{"page size not a number", one(mc, ns, "    pageSize: ten\n"), acme + "pageSize", `expected a whole number, found "ten"`},
		{"pages per activity negative", one(mc, ns, "    pagesPerActivity: -1\n"), acme + "pagesPerActivity", "-1 must be between 1 and 100"},
		{"pages per activity huge", one(mc, ns, "    pagesPerActivity: 100000\n"), acme + "pagesPerActivity", "must be between 1 and 100"},
		{"toggle not a boolean", one(mc, ns, "    crmToMarketing: maybe\n"), acme + "crmToMarketing", `expected true or false, found "maybe"`},
		{"field map not a block", one(mc, ns, "    fieldMap: [FNAME]\n"), acme + "fieldMap", "expected a block of keys, found a list"},
		{"merge tag", one(mc, ns, "    fieldMap: {firstName: fname}\n"), acme + "fieldMap.firstName", `"fname" is not a merge tag`},
		{"merge tag too long", one(mc, ns, "    fieldMap: {firstName: FIRSTNAMEXYZ}\n"), acme + "fieldMap.firstName", "is not a merge tag"},
		{"merge tag EMAIL", one(mc, ns, "    fieldMap: {email: EMAIL}\n"), acme + "fieldMap.email", "the member's address"},
		{"merge tag twice", one(mc, ns, "    fieldMap: {firstName: FNAME, altName: FNAME}\n"), acme + "fieldMap.firstName", "merge field FNAME is also mapped from altName"},
		{"netsuite field with a quote", one(mc, ns, "    fieldMap: {\"first'Name\": FNAME}\n"), acme + "fieldMap.first'Name", "is not a NetSuite field id"},
		{"salesforce field with SQL", one(mc, sf+"}", "    fieldMap: {\"Name FROM Lead--\": FNAME}\n"), acme + "fieldMap.Name FROM Lead--", "is not a Salesforce field API name"},
		{"marketing missing", "integrations:\n  - id: acme\n    crm: " + ns + "\n", acme + "marketing", "required"},
		{"marketing kind missing", one(`{audience: abc, apiKeyEnv: K}`, ns, ""), acme + "marketing.kind", "required (mailchimp)"},
		{"marketing kind unknown", one(`{kind: hubspot, audience: abc}`, ns, ""), acme + "marketing.kind", `unknown kind "hubspot"`},
		{"marketing not a block", one(`mailchimp`, ns, ""), acme + "marketing.kind", "required"},
		{"audience missing", one(`{kind: mailchimp, apiKeyEnv: K}`, ns, ""), acme + "marketing.audience", "required"},
		{"audience path", one(`{kind: mailchimp, audience: "../lists/x'", apiKeyEnv: K}`, ns, ""), acme + "marketing.audience", "is not an audience id"},
		{"no mailchimp credential", one(`{kind: mailchimp, audience: abc}`, ns, ""), acme + "marketing.apiKeyEnv", "a credential is required"},
		{"key env and file", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, apiKeyFile: /k}`, ns, ""), acme + "marketing.apiKeyEnv", "give only one of apiKeyEnv and apiKeyFile"},
		{"key and token", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, oauthTokenEnv: T, dc: us6}`, ns, ""), acme + "marketing.apiKeyEnv", "give either an API key"},
		{"oauth needs dc", one(`{kind: mailchimp, audience: abc, oauthTokenEnv: T}`, ns, ""), acme + "marketing.dc", "required with an OAuth token"},
		{"bad dc", one(`{kind: mailchimp, audience: abc, oauthTokenEnv: T, dc: "us-6"}`, ns, ""), acme + "marketing.dc", `"us-6" is not a data center`},
		{"bad env name", one(`{kind: mailchimp, audience: abc, apiKeyEnv: "MC KEY"}`, ns, ""), acme + "marketing.apiKeyEnv", `"MC KEY" is not an environment variable name`},
		{"emulator outside dev", one(`{kind: mailchimp, audience: abc, baseURL: emulator}`, ns, ""), acme + "marketing.baseURL", `"emulator" is only allowed with -dev`},
		{"ftp base URL", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, baseURL: "ftp://x"}`, ns, ""), acme + "marketing.baseURL", `"ftp://x" is not an https URL`},
		{"plain http outside dev", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, baseURL: "http://us6.api.mailchimp.com/3.0"}`, ns, ""), acme + "marketing.baseURL", "plain http would send the credentials in clear"},
		{"base URL with a query", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, baseURL: "https://x.example/?a=1"}`, ns, ""), acme + "marketing.baseURL", "no user, query, fragment or space"},
		{"crm missing", "integrations:\n  - id: acme\n    marketing: " + mc + "\n", acme + "crm", "required"},
		{"crm kind missing", one(mc, `{accountId: "1"}`, ""), acme + "crm.kind", "required (bullhorn, dynamics, netsuite, salesforce"},
		{"crm kind unknown", one(mc, `{kind: hubspot}`, ""), acme + "crm.kind", `unknown kind "hubspot"`},
		{"netsuite account missing", one(mc, `{kind: netsuite, consumerKeyEnv: A, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D, timeZone: UTC}`, ""), acme + "crm.accountId", "required"},
		{"netsuite account form", one(mc, `{kind: netsuite, accountId: "12-34", consumerKeyEnv: A, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D, timeZone: UTC}`, ""), acme + "crm.accountId", `"12-34" is not a NetSuite account id`},
		{"netsuite no credentials", one(mc, `{kind: netsuite, accountId: "1", timeZone: UTC}`, ""), acme + "crm.consumerKeyEnv", "credentials are required"},
		{"netsuite partial TBA", one(mc, `{kind: netsuite, accountId: "1", consumerKeyEnv: A, consumerSecretEnv: B, timeZone: UTC}`, ""), acme + "crm.tokenIdEnv", "required for token-based auth"},
		{"netsuite TBA and M2M", one(mc, nsWith(`clientIdEnv: X`), ""), acme + "crm.consumerKeyEnv", "give either the four TBA secrets"},
		{"netsuite M2M certificate", one(mc, `{kind: netsuite, accountId: "1", clientIdEnv: X, privateKeyFile: /k.pem, timeZone: UTC}`, ""), acme + "crm.certificateId", "required for M2M auth"},
		{"netsuite env and file", one(mc, `{kind: netsuite, accountId: "1", consumerKeyEnv: A, consumerKeyFile: /a, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D, timeZone: UTC}`, ""), acme + "crm.consumerKeyEnv", "give only one of consumerKeyEnv and consumerKeyFile"},
		{"netsuite given a salesforce key", one(mc, nsWith(`instanceURL: "https://x.my.salesforce.com"`), ""), acme + "crm.instanceURL", "unknown key"},
		{"netsuite time zone", one(mc, strings.Replace(nsTBA, "timeZone: UTC", "timeZone: Mars/Olympus", 1)+`}`, ""), acme + "crm.timeZone", `"Mars/Olympus" is not an IANA time zone`},
		{"netsuite time zone Local", one(mc, strings.Replace(nsTBA, "timeZone: UTC", "timeZone: Local", 1)+`}`, ""), acme + "crm.timeZone", `"Local" is this machine's zone`},
		{"netsuite time zone missing", one(mc, strings.Replace(nsTBA, ", timeZone: UTC", "", 1)+`}`, ""), acme + "crm.timeZone", "required: the integration user's time zone"},
		{"netsuite partner", one(mc, nsWith(`recordTypes: [customer, partner]`), ""), acme + "crm.recordTypes[1]", `"partner" is not a record type this connector syncs (known: customer, contact)`},
		{"netsuite vendor", one(mc, nsWith(`recordTypes: [vendor]`), ""), acme + "crm.recordTypes[0]", `"vendor" is not a record type`},
		{"netsuite record type case", one(mc, nsWith(`recordTypes: [customer, Contact]`), ""), acme + "crm.recordTypes[1]", `"Contact" is not a record type`},
		{"netsuite record type twice", one(mc, nsWith(`recordTypes: [customer, customer]`), ""), acme + "crm.recordTypes[1]", "listed twice"},
		{"record types not a list", one(mc, nsWith(`recordTypes: customer`), ""), acme + "crm.recordTypes", "expected a list"},
		{"netsuite saved search", one(mc, nsWith(`lists: ["customsearch_ok", "my search"]`), ""), acme + "crm.lists[1]", `"my search" is not a saved search id`},
		{"netsuite saved search path", one(mc, nsWith(`lists: ["../x"]`), ""), acme + "crm.lists[0]", "is not a saved search id"},
		{"netsuite list twice", one(mc, nsWith(`lists: ["123", "123"]`), ""), acme + "crm.lists[1]", "listed twice"},
		{"netsuite concurrency", one(mc, nsWith(`concurrency: 1000`), ""), acme + "crm.concurrency", "1000 must be between 1 and 100"},
		{"mailchimp in flight", one(`{kind: mailchimp, audience: abc, apiKeyEnv: K, maxInFlight: 11}`, ns, ""), acme + "marketing.maxInFlight", "11 must be between 1 and 10"},
		{"salesforce in flight", one(mc, sfWith(`maxInFlight: 50`), ""), acme + "crm.maxInFlight", "50 must be between 1 and 25"},
		{"netsuite concurrency negative", one(mc, nsWith(`concurrency: -1`), ""), acme + "crm.concurrency", "-1 must be between 1 and 100"},
		{"custom needs field", one(mc, nsWith(`optOut: {kind: custom}`), ""), acme + "crm.optOut.field", "required when kind is custom"},
		{"inverted needs field", one(mc, nsWith(`optOut: {kind: inverted}`), ""), acme + "crm.optOut.field", "required when kind is inverted"},
		{"standard takes no field", one(mc, nsWith(`optOut: {kind: standard, field: custentity_x}`), ""), acme + "crm.optOut.field", "not used when kind is standard"},
		{"opt-out kind", one(mc, nsWith(`optOut: {kind: soft}`), ""), acme + "crm.optOut.kind", `unknown kind "soft"`},
		{"opt-out unknown key", one(mc, nsWith(`optOut: {kind: custom, feild: custentity_x}`), ""), acme + "crm.optOut.feild", "unknown key (known: field, kind)"},
		{"netsuite custom field name", one(mc, nsWith(`optOut: {kind: custom, field: mc_optout}`), ""), acme + "crm.optOut.field", `"mc_optout" must be a custom entity field id`},
		{"netsuite custom field SQL", one(mc, nsWith(`optOut: {kind: custom, field: "custentity_x' OR 1=1"}`), ""), acme + "crm.optOut.field", "must be a custom entity field id"},
		{"netsuite cleaned field name", one(mc, nsWith(`cleanedField: bounced`), ""), acme + "crm.cleanedField", `"bounced" must be a custom entity field id`},
		{"cleaned is not opt-out", one(mc, nsWith(`optOut: {kind: custom, field: custentity_x}, cleanedField: custentity_x`), ""), acme + "crm.cleanedField", "must differ from optOut.field"},
		{"salesforce instance", one(mc, `{kind: salesforce, clientIdEnv: SF_ID, clientSecretEnv: S}`, ""), acme + "crm.instanceURL", "required"},
		{"salesforce instance over http", one(mc, `{kind: salesforce, instanceURL: "http://acme.my.salesforce.com", clientIdEnv: SF_ID, clientSecretEnv: S}`, ""), acme + "crm.instanceURL", "plain http"},
		{"salesforce client id", one(mc, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientSecretEnv: S}`, ""), acme + "crm.clientIdEnv", "required"},
		{"salesforce no secret", one(mc, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID}`, ""), acme + "crm.clientSecretEnv", "a credential is required"},
		{"salesforce jwt username", one(mc, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID, privateKeyFile: /k.pem}`, ""), acme + "crm.username", "required with privateKey"},
		{"salesforce username with a secret", one(mc, sfWith(`username: sync@acme.com`), ""), acme + "crm.username", "only used with privateKey"},
		{"salesforce given a netsuite key", one(mc, sfWith(`accountId: "123"`), ""), acme + "crm.accountId", "unknown key"},
		{"salesforce custom field name", one(mc, sfWith(`optOut: {kind: custom, field: Marketing_Opt_Out}`), ""), acme + "crm.optOut.field", `"Marketing_Opt_Out" must be a custom field (...__c)`},
		{"salesforce custom field quote", one(mc, sfWith(`optOut: {kind: inverted, field: "Opt'In__c"}`), ""), acme + "crm.optOut.field", "is not a Salesforce field API name"},
		{"salesforce campaign id", one(mc, sfWith(`lists: ["7015g000000ABCD", "campaign-1"]`), ""), acme + "crm.lists[1]", `"campaign-1" is not a Campaign id`},
		{"salesforce 301 campaigns", one(mc, sfWith(`lists: [`+strings.Join(campaigns, ", ")+`]`), ""), acme + "crm.lists", "301 lists; at most 300"},
		{"salesforce record type", one(mc, sfWith(`recordTypes: [contact]`), ""), acme + "crm.recordTypes[0]", `"contact" is not a record type this connector syncs (known: Contact, Lead, Account)`},
		{"salesforce api version", one(mc, sfWith(`apiVersion: "62"`), ""), acme + "crm.apiVersion", `"62" is not an API version`},
		{"ledger driver", "ledger: {driver: mysql}\n" + one(mc, ns, ""), "ledger.driver", `unknown driver "mysql"`},
		{"ledger postgres URL", "ledger: {driver: postgres}\n" + one(mc, ns, ""), "ledger.urlEnv", "needs exactly one of urlEnv, urlFile"},
		{"ledger unknown key", "ledger: {drivr: sqlite}\n" + one(mc, ns, ""), "ledger.drivr", "unknown key"},
		{"dynamics org URL", one(mc, `{kind: dynamics, tenantId: "72f988bf-86f1-41af-91ab-2d7cd011db47", clientIdEnv: D_ID, clientSecretEnv: D_SECRET}`, ""), acme + "crm.orgURL", "required"},
		{"dynamics org URL with a path", one(mc, `{kind: dynamics, orgURL: "https://contoso.crm.dynamics.com/api/data/v9.2", tenantId: contoso.onmicrosoft.com, clientIdEnv: D_ID, clientSecretEnv: D_SECRET}`, ""), acme + "crm.orgURL", "without a path"},
		{"dynamics org URL over http", one(mc, `{kind: dynamics, orgURL: "http://contoso.crm.dynamics.com", tenantId: contoso.onmicrosoft.com, clientIdEnv: D_ID, clientSecretEnv: D_SECRET}`, ""), acme + "crm.orgURL", "plain http"},
		{"dynamics tenant", one(mc, `{kind: dynamics, orgURL: "https://contoso.crm.dynamics.com", clientIdEnv: D_ID, clientSecretEnv: D_SECRET}`, ""), acme + "crm.tenantId", "required"},
		{"dynamics tenant form", one(mc, `{kind: dynamics, orgURL: "https://contoso.crm.dynamics.com", tenantId: "not a tenant", clientIdEnv: D_ID, clientSecretEnv: D_SECRET}`, ""), acme + "crm.tenantId", `"not a tenant" is not a tenant id`},
		{"dynamics client id", one(mc, `{kind: dynamics, orgURL: "https://contoso.crm.dynamics.com", tenantId: contoso.onmicrosoft.com, clientSecretEnv: D_SECRET}`, ""), acme + "crm.clientIdEnv", "required"},
		{"dynamics secret and certificate", one(mc, dynWith(`certificateFile: /c.pem`), ""), acme + "crm.clientSecretEnv", "not both"},
		{"dynamics no credential", one(mc, `{kind: dynamics, orgURL: "https://contoso.crm.dynamics.com", tenantId: contoso.onmicrosoft.com, clientIdEnv: D_ID}`, ""), acme + "crm.clientSecretEnv", "a credential is required"},
		{"dynamics list id", one(mc, dynWith(`lists: ["8d2c7a4e-0000-4000-a000-000000000001", "news"]`), ""), acme + "crm.lists[1]", `"news" is not a marketing list id`},
		{"dynamics record type", one(mc, dynWith(`recordTypes: [Contact]`), ""), acme + "crm.recordTypes[0]", `"Contact" is not a record type this connector syncs (known: contact, lead, account)`},
		{"dynamics custom field prefix", one(mc, dynWith(`optOut: {kind: custom, field: optout}`), ""), acme + "crm.optOut.field", "publisher prefix"},
		{"dynamics standard field as custom", one(mc, dynWith(`optOut: {kind: custom, field: donotbulkemail}`), ""), acme + "crm.optOut.field", "use kind standard"},
		{"dynamics email column", one(mc, dynWith(`emailColumns: [emailaddress1, emailaddress4]`), ""), acme + "crm.emailColumns[1]", `"emailaddress4" is not emailaddress1, emailaddress2 or emailaddress3`},
		{"dynamics in flight", one(mc, dynWith(`maxInFlight: 60`), ""), acme + "crm.maxInFlight", "60 must be between 1 and 52"},
		{"dynamics field map", one(mc, dyn+"}", "    fieldMap: {\"First Name\": FNAME}\n"), acme + "fieldMap.First Name", "is not a Dataverse column logical name"},
		{"dynamics given a salesforce key", one(mc, dynWith(`instanceURL: "https://x.my.salesforce.com"`), ""), acme + "crm.instanceURL", "unknown key"},
		{"bullhorn no credentials", one(mc, `{kind: bullhorn}`, ""), acme + "crm.clientIdEnv", "required"},
		{"bullhorn no password", one(mc, `{kind: bullhorn, clientIdEnv: B_ID, clientSecretEnv: B_SECRET, usernameEnv: B_USER}`, ""), acme + "crm.passwordEnv", "required"},
		{"bullhorn tearsheet id", one(mc, bhWith(`lists: ["12", "news"]`), ""), acme + "crm.lists[1]", `"news" is not a Tearsheet id`},
		{"bullhorn record type", one(mc, bhWith(`recordTypes: [candidate]`), ""), acme + "crm.recordTypes[0]", `"candidate" is not a record type this connector syncs (known: Candidate, ClientContact, Lead)`},
		{"bullhorn standard field as custom", one(mc, bhWith(`optOut: {kind: custom, field: massMailOptOut}`), ""), acme + "crm.optOut.field", "must be a custom field"},
		{"bullhorn email field", one(mc, bhWith(`emailFields: [email, email4]`), ""), acme + "crm.emailFields[1]", `"email4" is not email, email2 or email3`},
		{"bullhorn in flight", one(mc, bhWith(`maxInFlight: 60`), ""), acme + "crm.maxInFlight", "60 must be between 1 and 50"},
		{"bullhorn per minute", one(mc, bhWith(`requestsPerMinute: 2000`), ""), acme + "crm.requestsPerMinute", "2000 must be between 1 and 1500"},
		{"bullhorn yes text", one(mc, bhWith(`trueText: "No"`), ""), acme + "crm.trueText", "does not read as yes"},
		{"bullhorn login info over http", one(mc, bhWith(`loginInfoURL: "http://rest.bullhornstaffing.com/rest-services"`), ""), acme + "crm.loginInfoURL", "plain http"},
		{"bullhorn field map", one(mc, bh+"}", "    fieldMap: {\"first name\": FNAME}\n"), acme + "fieldMap.first name", "is not a Bullhorn field name"},
	}
	require.GreaterOrEqual(t, len(tests), 60)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.yaml), false)
			require.Error(t, err)
			var ce *ConfigError
			require.ErrorAs(t, err, &ce, "a configuration error, printed alone")
			prefix := tt.want + ": "
			if tt.want == "" {
				prefix = ""
			}
			found := false
			for _, line := range ce.Problems {
				if strings.HasPrefix(line, prefix) && strings.Contains(strings.TrimPrefix(line, prefix), tt.msg) {
					found = true
				}
				require.Regexp(t, `^(integration "[^"]+": |[a-zA-Z]+[:.]|configuration)`, line, "every line starts with what it is about")
			}
			require.True(t, found, "no line %q…%q in:\n%s", prefix, tt.msg, err)
		})
	}
}

// TestCredentialFiles: a credential file must be a small regular file. A
// device, a FIFO or a huge file is refused without reading it whole (or
// at all, so the worker neither runs out of memory nor hangs).
func TestCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	big := filepath.Join(dir, "big")
	require.NoError(t, os.WriteFile(big, make([]byte, connectors.MaxSecretFile+1), 0o600))
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, []byte(" \n"), 0o600))
	for _, tc := range []struct{ path, msg string }{
		{"/dev/zero", "is not a regular file"},
		{fifo, "is not a regular file"},
		{dir, "is not a regular file"},
		{big, "is larger than 65536 bytes"},
		{empty, "is empty"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		cfg, err := ParseConfig([]byte(one(`{kind: mailchimp, audience: abc, apiKeyFile: "`+tc.path+`"}`, nsTBA+`}`, "")), false)
		require.NoError(t, err)
		env := map[string]string{"NS_CK": "a", "NS_CS": "b", "NS_TI": "c", "NS_TS": "d"}
		_, err = BuildRegistry(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
		require.ErrorContains(t, err, `integration "acme": marketing.apiKeyFile: `)
		require.ErrorContains(t, err, tc.msg)
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
		{"dynamics client secret", `{kind: dynamics, orgURL: "https://contoso.crm4.dynamics.com", tenantId: "72f988bf-86f1-41af-91ab-2d7cd011db47", clientIdEnv: D_ID, clientSecretFile: /s, lists: ["8d2c7a4e-0000-4000-a000-000000000001"]}`, "    crmToMarketing: true\n"},
		{"dynamics certificate inverted", `{kind: dynamics, orgURL: "https://contoso.crm.dynamics.com/", tenantId: contoso.onmicrosoft.com, clientIdEnv: D_ID, certificateFile: /c.pem, recordTypes: [contact, lead, account], emailColumns: [emailaddress1, emailaddress2], optOut: {kind: inverted, field: new_emailoptin}, cleanedField: new_bounced}`, "    fieldMap: {firstname: FNAME, lastname: LNAME}\n"},
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
	require.ErrorContains(t, err, `integration "acme": crm.consumerKeyFile: `)
	require.ErrorContains(t, err, "no such file")
}
