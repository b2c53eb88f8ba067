package main

// Probes of the configuration file as a new user would get it wrong.
// TestProbe* pin behaviour that was right when probed; TestProbeFixed*
// each pin a problem a probe found and the fix of it.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"
)

const (
	pMC   = `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}`
	pNS   = nsTBA + `}`
	pSF   = `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: SF_ID, clientSecretEnv: SF_SECRET`
	pAcme = `integration "acme": `
)

func pNSWith(extra string) string { return nsTBA + ", " + extra + "}" }
func pSFWith(extra string) string { return pSF + ", " + extra + "}" }
func pMCWith(extra string) string {
	return `{kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY, ` + extra + `}`
}
func pTZ(tz string) string { return strings.Replace(nsTBA, "timeZone: UTC", "timeZone: "+tz, 1) + "}" }

// probeLineOK is the rule every problem line must follow: it starts with
// the integration it is about, or with a top-level key of the document,
// or with "configuration".
var probeLinePrefix = regexp.MustCompile(`^(integration "[^"\n]*": |configuration|integrations[:.]|ledger[:.])`)

func probeLineOK(line string, topKeys []string) bool {
	if probeLinePrefix.MatchString(line) {
		return true
	}
	for _, k := range topKeys {
		if k != "" && (strings.HasPrefix(line, k+": ") || strings.HasPrefix(line, k+".")) {
			return true
		}
	}
	return false
}

// topLevelKeys are the keys of the document's top mapping, if it is one.
func topLevelKeys(b []byte) []string {
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	var ks []string
	for i := 0; i < len(doc.Content[0].Content); i += 2 {
		ks = append(ks, doc.Content[0].Content[i].Value)
	}
	return ks
}

// requireWellFormed checks that err is a *ConfigError whose every line
// (as printed) starts with what it is about.
func requireWellFormed(t *testing.T, b []byte, err error) *ConfigError {
	t.Helper()
	var ce *ConfigError
	require.ErrorAs(t, err, &ce, "a *ConfigError, printed alone")
	keys := topLevelKeys(b)
	for _, line := range strings.Split(ce.Error(), "\n") {
		require.True(t, probeLineOK(line, keys), "line without its integration or key: %q\nin:\n%s", line, ce.Error())
	}
	return ce
}

func probeEnv(m map[string]string) LookupEnv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var probeNSEnv = map[string]string{"MC_KEY": "0123456789abcdef-us6", "NS_CK": "a", "NS_CS": "b", "NS_TI": "c", "NS_TS": "d"}

// TestProbeRefused: bad files a new user writes, each refused at start
// with a line naming the integration and key.
func TestProbeRefused(t *testing.T) {
	many := make([]string, maxIntegrations+1)
	for i := range many {
		many[i] = fmt.Sprintf("  - {id: i%d, marketing: %s, crm: %s}", i, pMC, pNS)
	}
	tests := []struct{ name, yaml, want, msg string }{
		// YAML oddities.
		{"tab indentation", "integrations:\n\t- id: acme\n", "configuration", "found character that cannot start any token"},
		{"unknown alias", one(`*nope`, pNS, ""), "configuration", "unknown anchor 'nope'"},
		{"second document", one(pMC, pNS, "") + "---\n", "configuration", "only one YAML document"},
		{"merge key in integration", one(pMC, pNS, "    <<: {schedule: 5m}\n"), pAcme + "<<", "unknown key"},
		{"key quoted twice", one(pMC, pNS, "    schedule: 5m\n    \"schedule\": 10m\n"), pAcme + "schedule", "given twice"},
		{"key single-quoted twice", one(pMC, pNS, "    'pageSize': 1\n    pageSize: 2\n"), pAcme + "pageSize", "given twice"},
		{"cyrillic e in key", one(pMC, pNS, "    schedul\u0435: 5m\n"), pAcme + "schedul\u0435", "unknown key"},
		{"cyrillic a in id", strings.Replace(one(pMC, pNS, ""), "id: acme", "id: \u0430cme", 1), "integration \"\u0430cme\": id", "must be lower-case"},
		{"fullwidth env name", one(`{kind: mailchimp, audience: abc, apiKeyEnv: "ＭＣ"}`, pNS, ""), pAcme + "marketing.apiKeyEnv", "is not an environment variable name"},
		{"page size float", one(pMC, pNS, "    pageSize: 10.0\n"), pAcme + "pageSize", "expected a whole number, found the number 10.0"},
		{"page size 1e3", one(pMC, pNS, "    pageSize: 1e3\n"), pAcme + "pageSize", "expected a whole number"},
		{"page size NaN", one(pMC, pNS, "    pageSize: .nan\n"), pAcme + "pageSize", "expected a whole number"},
		{"page size inf", one(pMC, pNS, "    pageSize: .inf\n"), pAcme + "pageSize", "expected a whole number"},
		{"page size overflows int64", one(pMC, pNS, "    pageSize: 99999999999999999999\n"), pAcme + "pageSize", "expected a whole number"},
		{"page size fits uint64 only", one(pMC, pNS, "    pageSize: 18446744073709551615\n"), pAcme + "pageSize", "expected a whole number"},
		{"page size min int64", one(pMC, pNS, "    pageSize: -9223372036854775808\n"), pAcme + "pageSize", "must be between 1 and 1000"},
		{"page size !!str", one(pMC, pNS, "    pageSize: !!str 10\n"), pAcme + "pageSize", `expected a whole number, found "10"`},
		{"page size binary", one(pMC, pNS, "    pageSize: !!binary AAE=\n"), pAcme + "pageSize", "expected a whole number"},
		{"concurrency hex 101", one(pMC, pNSWith(`concurrency: 0x65`), ""), pAcme + "crm.concurrency", "101 must be between 1 and 100"},
		{"bool quoted", one(pMC, pNS, "    crmToMarketing: \"true\"\n"), pAcme + "crmToMarketing", "expected true or false"},
		{"bool number", one(pMC, pNS, "    crmToMarketing: 1\n"), pAcme + "crmToMarketing", "expected true or false"},
		{"bool list", one(pMC, pNS, "    crmToMarketing: [true]\n"), pAcme + "crmToMarketing", "expected true or false, found a list"},
		{"schedule negative zero", one(pMC, pNS, "    schedule: -0\n"), pAcme + "schedule", "must be between 10s"},
		{"schedule overflow", one(pMC, pNS, "    schedule: 9999999999h\n"), pAcme + "schedule", "is not a duration"},
		{"schedule one ns over a day", one(pMC, pNS, "    schedule: 24h0m0.000000001s\n"), pAcme + "schedule", "must be between"},
		{"schedule as a map", one(pMC, pNS, "    schedule: {every: 5m}\n"), pAcme + "schedule", "expected text, found a block of keys"},
		{"overlap negative zero-ish", one(pMC, pNS, "    overlap: -1ns\n"), pAcme + "overlap", "must be between 0s"},
		{"very long id", strings.Replace(one(pMC, pNS, ""), "id: acme", "id: "+strings.Repeat("a", 64), 1), `integration "` + strings.Repeat("a", 64) + `": id`, "at most 63"},
		{"deep nesting", one(pMC, pNS, "    fieldMap: "+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+"\n"), "configuration", ""},
		// Lists where blocks go and back.
		{"top level integrations a map", "integrations: {acme: {}}\n", "integrations", "expected a list, found a block of keys"},
		{"integration a list", "integrations:\n  - [a]\n", `integration "#1"`, "expected a block of keys, found a list"},
		{"ledger a list", "ledger: [sqlite]\n" + one(pMC, pNS, ""), "ledger", "expected a block of keys, found a list"},
		{"marketing a list", one(`[mailchimp]`, pNS, ""), pAcme + "marketing.kind", "required"},
		{"marketing null", one(`null`, pNS, ""), pAcme + "marketing", "required (kind: mailchimp)"},
		{"crm empty map", one(pMC, `{}`, ""), pAcme + "crm.kind", "required"},
		{"lists a string", one(pMC, pNSWith(`lists: customsearch_x`), ""), pAcme + "crm.lists", "expected a list"},
		{"lists of lists", one(pMC, pNSWith(`lists: [[customsearch_x]]`), ""), pAcme + "crm.lists[0]", "expected text, found a list"},
		{"optOut a string", one(pMC, pNSWith(`optOut: custom`), ""), pAcme + "crm.optOut", "expected a block of keys"},
		{"too many integrations", "integrations:\n" + strings.Join(many, "\n") + "\n", "integrations", "1001 integrations; at most 1000"},
		// URLs.
		{"https no host", one(pMCWith(`baseURL: "https://"`), pNS, ""), pAcme + "marketing.baseURL", "is not an https URL"},
		{"https only a path", one(pMC, `{kind: salesforce, instanceURL: "https:///services", clientIdEnv: A, clientSecretEnv: B}`, ""), pAcme + "crm.instanceURL", "is not an https URL"},
		{"userinfo", one(pMCWith(`baseURL: "https://user:pw@us6.api.mailchimp.com/3.0"`), pNS, ""), pAcme + "marketing.baseURL", "no user, query, fragment or space"},
		{"empty userinfo", one(pMCWith(`baseURL: "https://@x.example"`), pNS, ""), pAcme + "marketing.baseURL", "no user"},
		{"leading space", one(pMCWith(`baseURL: " https://x.example"`), pNS, ""), pAcme + "marketing.baseURL", "is not an https URL"},
		{"space in host", one(pMCWith(`baseURL: "https://x .example"`), pNS, ""), pAcme + "marketing.baseURL", "is not an https URL"},
		{"tab at end", one(pMCWith(`baseURL: "https://x.example\t"`), pNS, ""), pAcme + "marketing.baseURL", "is not an https URL"},
		{"empty IPv6", one(pMC, pSFWith(`loginURL: "https://[]"`), ""), pAcme + "crm.loginURL", "is not an https URL"},
		{"bad port", one(pMC, pSFWith(`loginURL: "https://login.salesforce.com:https"`), ""), pAcme + "crm.loginURL", "is not an https URL"},
		{"javascript", one(pMC, `{kind: netsuite, accountId: "1", timeZone: UTC, consumerKeyEnv: A, consumerSecretEnv: B, tokenIdEnv: C, tokenSecretEnv: D, baseURL: "javascript:alert(1)"}`, ""), pAcme + "crm.baseURL", "is not an https URL"},
		{"http loginURL", one(pMC, pSFWith(`loginURL: "http://127.0.0.1"`), ""), pAcme + "crm.loginURL", "plain http"},
		{"EMULATOR upper case", one(pMCWith(`baseURL: EMULATOR`), pNS, ""), pAcme + "marketing.baseURL", "is not an https URL"},
		// Credential names.
		{"env starting with a digit", one(`{kind: mailchimp, audience: abc, apiKeyEnv: 1KEY}`, pNS, ""), pAcme + "marketing.apiKeyEnv", "is not an environment variable name"},
		{"env with dollar", one(`{kind: mailchimp, audience: abc, apiKeyEnv: "$MC_KEY"}`, pNS, ""), pAcme + "marketing.apiKeyEnv", "is not an environment variable name"},
		{"env with dash", one(`{kind: mailchimp, audience: abc, apiKeyEnv: MC-KEY}`, pNS, ""), pAcme + "marketing.apiKeyEnv", "is not an environment variable name"},
		{"env with newline", one(`{kind: mailchimp, audience: abc, apiKeyEnv: "MC\nKEY"}`, pNS, ""), pAcme + "marketing.apiKeyEnv", "is not an environment variable name"},
		{"env 129 chars", one(`{kind: mailchimp, audience: abc, apiKeyEnv: A`+strings.Repeat("B", 128)+`}`, pNS, ""), pAcme + "marketing.apiKeyEnv", "is not an environment variable name"},
		{"file with trailing space", one(`{kind: mailchimp, audience: abc, apiKeyFile: "/run/secrets/k "}`, pNS, ""), pAcme + "marketing.apiKeyFile", "leading or trailing spaces"},
		{"file as a list", one(`{kind: mailchimp, audience: abc, apiKeyFile: [/a, /b]}`, pNS, ""), pAcme + "marketing.apiKeyFile", "expected text, found a list"},
		{"netsuite M2M certificate id injection", one(pMC, `{kind: netsuite, accountId: "1", clientIdEnv: X, certificateId: "a b'", privateKeyFile: /k, timeZone: UTC}`, ""), pAcme + "crm.certificateId", "is not a certificate id"},
		// Ids and lists with injection characters.
		{"audience with slash", one(`{kind: mailchimp, audience: "abc/../x", apiKeyEnv: K}`, pNS, ""), pAcme + "marketing.audience", "is not an audience id"},
		{"audience with query", one(`{kind: mailchimp, audience: "abc?x=1", apiKeyEnv: K}`, pNS, ""), pAcme + "marketing.audience", "is not an audience id"},
		{"audience 65 chars", one(`{kind: mailchimp, audience: a`+strings.Repeat("b", 64)+`, apiKeyEnv: K}`, pNS, ""), pAcme + "marketing.audience", "is not an audience id"},
		{"account with slash", one(pMC, strings.Replace(pNS, `"1234567_SB1"`, `"123/../x"`, 1), ""), pAcme + "crm.accountId", "is not a NetSuite account id"},
		{"account with dot", one(pMC, strings.Replace(pNS, `"1234567_SB1"`, `"evil.example"`, 1), ""), pAcme + "crm.accountId", "is not a NetSuite account id"},
		{"account 41 chars", one(pMC, strings.Replace(pNS, `"1234567_SB1"`, strings.Repeat("1", 41), 1), ""), pAcme + "crm.accountId", "is not a NetSuite account id"},
		{"saved search SQL", one(pMC, pNSWith(`lists: ["123; DROP TABLE x"]`), ""), pAcme + "crm.lists[0]", "is not a saved search id"},
		{"saved search quote", one(pMC, pNSWith(`lists: ["customsearch_a'b"]`), ""), pAcme + "crm.lists[0]", "is not a saved search id"},
		{"saved search 19 digits", one(pMC, pNSWith(`lists: ["1234567890123456789"]`), ""), pAcme + "crm.lists[0]", "is not a saved search id"},
		{"saved search null", one(pMC, pNSWith(`lists: [~]`), ""), pAcme + "crm.lists[0]", "is not a saved search id"},
		{"campaign SOQL", one(pMC, pSFWith(`lists: ["701000000000001' OR Id != '"]`), ""), pAcme + "crm.lists[0]", "is not a Campaign id"},
		{"campaign of another object", one(pMC, pSFWith(`lists: ["003000000000001AAA"]`), ""), pAcme + "crm.lists[0]", "is not a Campaign id"},
		{"netsuite 51 searches", one(pMC, pNSWith(`lists: [`+strings.TrimSuffix(strings.Repeat("customsearch_x, ", 51), ", ")+`]`), ""), pAcme + "crm.lists", "51 lists; at most 50"},
		// Time zones.
		{"tz lower case", one(pMC, pTZ("utc"), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		{"tz trailing space", one(pMC, pTZ(`"UTC "`), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		{"tz absolute path", one(pMC, pTZ("/etc/localtime"), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		{"tz dot dot", one(pMC, pTZ("../../etc/passwd"), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		{"tz offset", one(pMC, pTZ(`"+02:00"`), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		{"tz abbreviation", one(pMC, pTZ("PST"), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		{"tz zone.tab", one(pMC, pTZ("zone.tab"), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		{"tz a number", one(pMC, pTZ("-8"), ""), pAcme + "crm.timeZone", "is not an IANA time zone"},
		// Record types in other cases.
		{"netsuite CUSTOMER", one(pMC, pNSWith(`recordTypes: [CUSTOMER]`), ""), pAcme + "crm.recordTypes[0]", "is not a record type"},
		{"salesforce Contact with space", one(pMC, pSFWith(`recordTypes: ["Contact "]`), ""), pAcme + "crm.recordTypes[0]", "is not a record type"},
		{"salesforce LEAD", one(pMC, pSFWith(`recordTypes: [LEAD]`), ""), pAcme + "crm.recordTypes[0]", "is not a record type"},
		{"salesforce Account twice", one(pMC, pSFWith(`recordTypes: [Account, Account]`), ""), pAcme + "crm.recordTypes[1]", "listed twice"},
		// Field-map keys and tags.
		{"field with space", one(pMC, pNS, "    fieldMap: {\"first name\": FNAME}\n"), pAcme + "fieldMap.first name", "is not a NetSuite field id"},
		{"field with dot", one(pMC, pSF+"}", "    fieldMap: {Account.Name: FNAME}\n"), pAcme + "fieldMap.Account.Name", "is not a Salesforce field API name"},
		{"field starting with digit", one(pMC, pNS, "    fieldMap: {1st: FNAME}\n"), pAcme + "fieldMap.1st", "is not a NetSuite field id"},
		{"field 101 chars", one(pMC, pNS, "    fieldMap: {a"+strings.Repeat("b", 100)+": FNAME}\n"), pAcme + "fieldMap.a" + strings.Repeat("b", 100), "is not a NetSuite field id"},
		{"tag null", one(pMC, pNS, "    fieldMap: {firstName: ~}\n"), pAcme + "fieldMap.firstName", `"" is not a merge tag`},
		{"tag with space", one(pMC, pNS, "    fieldMap: {firstName: \"FNAME \"}\n"), pAcme + "fieldMap.firstName", "is not a merge tag"},
		{"tag with pipes", one(pMC, pNS, "    fieldMap: {firstName: \"*|FNAME|*\"}\n"), pAcme + "fieldMap.firstName", "is not a merge tag"},
		{"tag a number", one(pMC, pNS, "    fieldMap: {firstName: 1}\n"), pAcme + "fieldMap.firstName", "is not a merge tag"},
		{"tag a list", one(pMC, pNS, "    fieldMap: {firstName: [FNAME]}\n"), pAcme + "fieldMap.firstName", "expected text, found a list"},
		{"field twice", one(pMC, pNS, "    fieldMap: {firstName: FNAME, \"firstName\": LNAME}\n"), pAcme + "fieldMap.firstName", "given twice"},
		// Ledger block.
		{"ledger Postgres case", "ledger: {driver: Postgres, urlEnv: U}\n" + one(pMC, pNS, ""), "ledger.driver", `unknown driver "Postgres"`},
		{"ledger postgres with path", "ledger: {driver: postgres, urlEnv: U, path: /x.db}\n" + one(pMC, pNS, ""), "ledger.path", "only with driver sqlite"},
		{"ledger postgres both url", "ledger: {driver: postgres, urlEnv: U, urlFile: /u}\n" + one(pMC, pNS, ""), "ledger.urlEnv", "exactly one of"},
		{"ledger sqlite with url", "ledger: {urlEnv: U}\n" + one(pMC, pNS, ""), "ledger.urlEnv", "only with driver postgres"},
		{"ledger key both", "ledger: {keyEnv: K, keyFile: /k}\n" + one(pMC, pNS, ""), "ledger.keyEnv", "give only one of"},
		{"ledger driver a list", "ledger: {driver: [postgres]}\n" + one(pMC, pNS, ""), "ledger.driver", "expected text, found a list"},
		{"ledger twice", "ledger: {}\nledger: {}\n" + one(pMC, pNS, ""), "ledger", "given twice"},
		{"ledger key of a connector", "ledger: {apiKeyEnv: K}\n" + one(pMC, pNS, ""), "ledger.apiKeyEnv", "unknown key"},
		// Salesforce specifics.
		{"salesforce api version v-less long", one(pMC, pSFWith(`apiVersion: "62.00"`), ""), pAcme + "crm.apiVersion", "is not an API version"},
		{"salesforce api version a float", one(pMC, pSFWith(`apiVersion: 62.0`), ""), "", ""},
		{"salesforce username no at", one(pMC, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com", clientIdEnv: A, privateKeyFile: /k, username: "sync"}`, ""), pAcme + "crm.username", "is not a Salesforce username"},
		{"salesforce field with namespace twice", one(pMC, pSFWith(`optOut: {kind: custom, field: "a__b__c__c"}`), ""), pAcme + "crm.optOut.field", ""},
	}
	require.GreaterOrEqual(t, len(tests), 60)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.yaml)
			_, err := ParseConfig(b, false)
			if tt.want == "" && tt.msg == "" {
				// A value the rules accept (apiVersion 62.0 is text 62.0).
				return
			}
			require.Error(t, err)
			ce := requireWellFormed(t, b, err)
			found := false
			for _, line := range ce.Problems {
				if strings.HasPrefix(line, tt.want+": ") && strings.Contains(line, tt.msg) {
					found = true
				}
			}
			require.True(t, found, "no line %q…%q in:\n%s", tt.want, tt.msg, err)
		})
	}
}

// TestProbeAccepted: odd but valid files are accepted as meant.
func TestProbeAccepted(t *testing.T) {
	anchored := "integrations:\n" +
		"  - id: a\n    marketing: &m {kind: mailchimp, audience: abc, apiKeyEnv: MC_KEY}\n    crm: &c " + pNS + "\n" +
		"  - id: b\n    marketing: *m\n    crm: *c\n"
	tests := []struct{ name, yaml string }{
		{"BOM", "\ufeff" + one(pMC, pNS, "")},
		{"CRLF", strings.ReplaceAll(one(pMC, pNS, ""), "\n", "\r\n")},
		{"aliases for whole blocks", anchored},
		{"null ledger", "ledger:\n" + one(pMC, pNS, "")},
		{"explicit !!str kind", one(`{kind: !!str mailchimp, audience: abc, apiKeyEnv: MC_KEY}`, pNS, "")},
		{"numeric id", strings.Replace(one(pMC, pNS, ""), "id: acme", "id: 0", 1)},
		{"hex page size", one(pMC, pNS, "    pageSize: 0x3E8\n")},
		{"IPv6 instance", one(pMC, `{kind: salesforce, instanceURL: "https://[2001:db8::1]:8443", clientIdEnv: A, clientSecretEnv: B}`, "")},
		{"instance with a path", one(pMC, `{kind: salesforce, instanceURL: "https://acme.my.salesforce.com/", clientIdEnv: A, clientSecretEnv: B}`, "")},
		{"loginURL sandbox", one(pMC, `{kind: salesforce, instanceURL: "https://acme--dev.sandbox.my.salesforce.com", loginURL: "https://test.salesforce.com", clientIdEnv: A, privateKeyFile: /k, username: "a@b.c"}`, "")},
		{"api version with v", one(pMC, pSFWith(`apiVersion: v62.0`), "")},
		{"zero overlap", one(pMC, pNS, "    overlap: 0s\n")},
		{"schedule bounds", one(pMC, pNS, "    schedule: 24h\n")},
		{"Etc zone", one(pMC, pTZ("Etc/GMT+8"), "")},
		{"upper case custentity", one(pMC, pNSWith(`optOut: {kind: custom, field: CUSTENTITY_OPTOUT}`), "")},
		{"comments everywhere", "# a\nintegrations: # b\n  - id: acme # c\n    marketing: " + pMC + " # d\n    crm: " + pNS + "\n# e\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(tt.yaml), false)
			require.NoError(t, err)
			for i := range cfg.Integrations {
				_ = cfg.Integrations[i].Settings()
			}
		})
	}
}

// TestProbeCredentialPaths: credential files and variables a new user
// names wrongly are refused by BuildRegistry, naming integration and key,
// without hanging or reading a device.
func TestProbeCredentialPaths(t *testing.T) {
	dir := t.TempDir()
	zero := filepath.Join(dir, "zero")
	require.NoError(t, os.Symlink("/dev/zero", zero))
	loop := filepath.Join(dir, "loop")
	require.NoError(t, os.Symlink(loop, loop))
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	noRead := filepath.Join(dir, "noread")
	require.NoError(t, os.WriteFile(noRead, []byte("k-us6"), 0))
	for _, tc := range []struct{ path, msg string }{
		{"~/mc.key", "no such file"},
		{"relative/mc.key", "no such file"},
		{dir, "is not a regular file"},
		{zero, "is not a regular file"},
		{loop, "too many levels of symbolic links"},
		{sock, "is not a regular file"},
		{"/proc/self/mem", ""},
		{"/dev/stdin", ""},
	} {
		t.Run(tc.path, func(t *testing.T) {
			b := []byte(one(`{kind: mailchimp, audience: abc, apiKeyFile: "`+tc.path+`"}`, pNS, ""))
			cfg, err := ParseConfig(b, false)
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() { _, err := BuildRegistry(cfg, probeEnv(probeNSEnv), nil); done <- err }()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("BuildRegistry hangs on %s", tc.path)
			}
			require.Error(t, err)
			requireWellFormed(t, b, err)
			require.ErrorContains(t, err, `integration "acme": marketing.apiKeyFile: `)
			require.ErrorContains(t, err, tc.msg)
		})
	}
	if os.Geteuid() != 0 {
		b := []byte(one(`{kind: mailchimp, audience: abc, apiKeyFile: "`+noRead+`"}`, pNS, ""))
		cfg, err := ParseConfig(b, false)
		require.NoError(t, err)
		_, err = BuildRegistry(cfg, probeEnv(probeNSEnv), nil)
		require.ErrorContains(t, err, `integration "acme": marketing.apiKeyFile: `)
		require.ErrorContains(t, err, "permission denied")
	}
	// A variable set to blanks is not set; a key without its data
	// center is named by its key, never echoed.
	for _, tc := range []struct{ val, msg string }{
		{" \t\n", "environment variable MC_KEY is not set"},
		{"supersecretwithoutdc", "no data center suffix"},
		{"a-b-us6", "no data center suffix"},
	} {
		b := []byte(one(pMC, pNS, ""))
		cfg, err := ParseConfig(b, false)
		require.NoError(t, err)
		env := map[string]string{}
		for k, v := range probeNSEnv {
			env[k] = v
		}
		env["MC_KEY"] = tc.val
		_, err = BuildRegistry(cfg, probeEnv(env), nil)
		require.Error(t, err)
		requireWellFormed(t, b, err)
		require.ErrorContains(t, err, `integration "acme": marketing.apiKeyEnv: `)
		require.ErrorContains(t, err, tc.msg)
		require.NotContains(t, err.Error(), "supersecret")
	}
}

// ---------------------------------------------------------------------
// Problems found. Each test below fails.

// TestProbeFixedTopLevelLinesWithoutKey: a file that is not a block of
// keys, or a top-level key that is empty or not text, is named as
// "configuration".
func TestProbeFixedTopLevelLinesWithoutKey(t *testing.T) {
	for _, y := range []string{
		"hello\n",
		"- integrations: []\n",
		"\"\": 1\n" + one(pMC, pNS, ""),
		"? [a, b]\n: c\n" + one(pMC, pNS, ""),
	} {
		t.Run(y[:min(12, len(y))], func(t *testing.T) {
			b := []byte(y)
			_, err := ParseConfig(b, false)
			require.Error(t, err)
			requireWellFormed(t, b, err)
		})
	}
}

// TestProbeFixedKeyWithNewlineSplitsAProblem: a key holding a line break is
// quoted, so one problem stays one line.
func TestProbeFixedKeyWithNewlineSplitsAProblem(t *testing.T) {
	for _, y := range []string{
		one(pMC, pNS, "    fieldMap: {\"firstName\\nconfiguration ok\": FNAME}\n"),
		one(pMC, pNS, "    \"crmToMarketing\\n\": true\n"),
		"\"ledger\\nx\": {}\n" + one(pMC, pNS, ""),
	} {
		b := []byte(y)
		_, err := ParseConfig(b, false)
		require.Error(t, err)
		var ce *ConfigError
		require.ErrorAs(t, err, &ce)
		for _, p := range ce.Problems {
			require.NotContains(t, p, "\n", "one problem, one line")
		}
	}
}

// TestProbeFixedAliasAmplification: a few kilobytes of YAML aliases of
// aliases are refused at a budget of values, and the problems listed are
// capped, instead of expanding to millions of problems and gigabytes.
func TestProbeFixedAliasAmplification(t *testing.T) {
	var b strings.Builder
	b.WriteString("integrations:\n  - &i {id: acme, marketing: " + pMC + ", crm: " + strings.TrimSuffix(pNS, "}") + ", lists: [")
	b.WriteString(strings.Repeat("x,", 300))
	b.WriteString("]}}\n")
	for range 999 {
		b.WriteString("  - *i\n")
	}
	in := []byte(b.String())
	require.Less(t, len(in), 10_000)
	start := time.Now()
	_, err := ParseConfig(in, false)
	took := time.Since(start)
	require.Error(t, err)
	var ce *ConfigError
	require.ErrorAs(t, err, &ce)
	t.Logf("%d-byte file: %d problems, %d-byte error, %v", len(in), len(ce.Problems), len(err.Error()), took)
	require.Less(t, len(err.Error()), 1<<20, "a %d-byte file must not produce a %d-byte error", len(in), len(err.Error()))
}

// TestProbeFixedNetSuiteCustomFieldKelvinSign: a NetSuite custom field is
// checked as written (ASCII), as the client checks it; lower-casing first
// once let a Kelvin sign pass as a k, accepted at start and refused on
// every run.
func TestProbeFixedNetSuiteCustomFieldKelvinSign(t *testing.T) {
	const kelvin = "custentity_\u212a"
	for _, crm := range []string{
		pNSWith(`cleanedField: "` + kelvin + `"`),
		pNSWith(`optOut: {kind: custom, field: "` + kelvin + `"}`),
	} {
		b := []byte(one(pMC, crm, ""))
		cfg, err := ParseConfig(b, false)
		if err == nil {
			reg, berr := BuildRegistry(cfg, probeEnv(probeNSEnv), nil)
			require.NoError(t, berr)
			in := reg["acme"]
			s := in.Settings
			_, rerr := in.CRM.SetFlag(context.Background(), kelvin, nil)
			_, oerr := in.CRM.SetOptOut(context.Background(), s.OptOut, nil)
			t.Errorf("accepted at start, refused by the connector at run time: SetFlag: %v; SetOptOut: %v", rerr, oerr)
			continue
		}
		requireWellFormed(t, b, err)
	}
}

// TestProbeFixedBaseURLEdges: an API address needs a host name, a port in
// 1-65535 if any, and no query, fragment or space, which every request path
// would otherwise carry.
func TestProbeFixedBaseURLEdges(t *testing.T) {
	for _, u := range []string{
		"https://:443",
		"https://:443/3.0",
		"https://us6.api.mailchimp.com:99999/3.0",
		"https://us6.api.mailchimp.com/3.0#",
		"https://us6.api.mailchimp.com/3.0?",
		"https://us6.api.mailchimp.com/3.0 ",
	} {
		t.Run(u, func(t *testing.T) {
			b := []byte(one(pMCWith(`baseURL: "`+u+`"`), pNS, ""))
			_, err := ParseConfig(b, false)
			require.Error(t, err, "accepted baseURL %q", u)
			requireWellFormed(t, b, err)
			require.ErrorContains(t, err, pAcme+"marketing.baseURL: ")
		})
	}
	b := []byte(one(pMC, `{kind: salesforce, instanceURL: "https://:443", clientIdEnv: A, clientSecretEnv: B}`, ""))
	_, err := ParseConfig(b, false)
	require.Error(t, err, "accepted instanceURL https://:443 (the token request dials this machine)")
}

// TestProbeFixedSalesforceAPIVersionBounds: a Salesforce API version older
// than 42.0, which has no sObject Collections, is refused at start.
func TestProbeFixedSalesforceAPIVersionBounds(t *testing.T) {
	for _, v := range []string{"00.0", "10.0", "v20.0"} {
		t.Run(v, func(t *testing.T) {
			b := []byte(one(pMC, pSFWith(`apiVersion: "`+v+`"`), ""))
			_, err := ParseConfig(b, false)
			require.Error(t, err, "apiVersion %q accepted", v)
		})
	}
}

// TestProbeFixedKindAliasReportedMissing: a kind given through a YAML alias
// is read through it.
func TestProbeFixedKindAliasReportedMissing(t *testing.T) {
	y := "integrations:\n" +
		"  - id: a\n    marketing: {kind: &mc mailchimp, audience: abc, apiKeyEnv: MC_KEY}\n    crm: " + pNS + "\n" +
		"  - id: b\n    marketing: {kind: *mc, audience: abc, apiKeyEnv: MC_KEY}\n    crm: " + pNS + "\n"
	_, err := ParseConfig([]byte(y), false)
	if err != nil {
		require.NotContains(t, err.Error(), `marketing.kind: required`, "the kind is given (through an alias)")
	}
}

// TestProbeFixedLedgerCredentialNamesUnchecked: the ledger names its
// credentials under the same rules as the connectors: a variable name, not
// a value or a "$NAME"; a path without surrounding spaces.
func TestProbeFixedLedgerCredentialNamesUnchecked(t *testing.T) {
	for _, l := range []string{
		`{keyEnv: "$OPTOUT_LEDGER_KEY"}`,
		`{keyEnv: "OPTOUT LEDGER KEY"}`,
		`{driver: postgres, urlEnv: "postgres://u:p@h/db"}`,
		`{keyFile: " /run/secrets/key"}`,
	} {
		t.Run(l, func(t *testing.T) {
			b := []byte("ledger: " + l + "\n" + one(pMC, pNS, ""))
			_, err := ParseConfig(b, false)
			require.Error(t, err, "ledger %s accepted", l)
			requireWellFormed(t, b, err)
		})
	}
}

// FuzzDecodeConfig: DecodeConfig and Validate never panic, and every
// error is a *ConfigError whose every printed line starts with
// `integration "`, a top-level key of the document, or "configuration".
// PROBE_FUZZ_PANIC_ONLY=1 checks only the panic and type properties (to
// fuzz for crashes past the known line-format problems above).
func FuzzDecodeConfig(f *testing.F) {
	example, _ := os.ReadFile(filepath.Join("..", "config.example.yaml"))
	seeds := []string{
		string(example),
		one(pMC, pNS, ""),
		one(pMC, pSF+"}", "    fieldMap: {FirstName: FNAME}\n"),
		"integrations:\n  - &i {id: a, marketing: *m}\n  - *i\n",
		"ledger: {driver: postgres, urlEnv: U}\n" + one(pMC, pNSWith(`optOut: {kind: custom, field: custentity_x}`), ""),
		"integrations: [{<<: {id: a}}]\n",
		"integrations:\n  - id: acme\n    crm: {kind: salesforce, lists: [1, 2], recordTypes: !!binary AAE=}\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	panicOnly := os.Getenv("PROBE_FUZZ_PANIC_ONLY") != ""
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8<<10 {
			return // keep each input fast: alias amplification is its own test
		}
		cfg, err := DecodeConfig(b)
		if err == nil {
			err = cfg.Validate(false)
			if err == nil {
				for i := range cfg.Integrations {
					_ = cfg.Integrations[i].Settings()
					_ = cfg.Integrations[i].Interval()
				}
			}
		}
		if err == nil {
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Fatalf("error of type %T: %v", err, err)
		}
		if len(ce.Problems) == 0 {
			t.Fatalf("a ConfigError with no problem")
		}
		if panicOnly {
			return
		}
		keys := topLevelKeys(b)
		for _, line := range strings.Split(ce.Error(), "\n") {
			if !probeLineOK(line, keys) {
				t.Fatalf("line without its integration or key: %q\ninput: %q", line, b)
			}
		}
	})
}
