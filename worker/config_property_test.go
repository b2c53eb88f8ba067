package main

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
)

// TestAcceptedConfigurationsAreAcceptedByTheirConnectors is a property
// test: configurations are drawn at random from values a connector takes
// and values it refuses (record types, lists, opt-out and cleaned fields,
// mapped fields, concurrency); each one the worker accepts is pointed at
// the emulators, built, and used for every call a run makes with its
// settings. The connector may answer with the vendor's error (an unknown
// saved search is the account's business), but it must never refuse the
// settings themselves: that refusal would come at run time, after the
// worker had started, on every run.
func TestAcceptedConfigurationsAreAcceptedByTheirConnectors(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 42))
	// Pools list what the connector takes first and what it refuses after
	// the "|"; three draws in four come from the first part, so that most
	// configurations get through and the rest probe the rules.
	pick := func(pool []string) string {
		bar := slices.Index(pool, "|")
		if bar > 0 && rng.IntN(4) > 0 {
			return pool[rng.IntN(bar)]
		}
		v := pool[rng.IntN(len(pool))]
		for v == "|" {
			v = pool[rng.IntN(len(pool))]
		}
		return v
	}
	some := func(pool []string) []string {
		var out []string
		for range rng.IntN(3) {
			out = append(out, pick(pool))
		}
		return out
	}
	quoted := func(vs []string) string {
		q := make([]string, len(vs))
		for i, v := range vs {
			q[i] = fmt.Sprintf("%q", v)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	type pools struct{ types, lists, fields, mapped []string }
	kinds := map[string]pools{
		"netsuite": {
			types:  []string{"customer", "contact", "|", "partner", "vendor", "Customer", "lead"},
			lists:  []string{"customsearch_demo_sync", "123", "|", "my search", "../x", "customsearch_a'b"},
			fields: []string{"custentity_mc_bounced", "custentity_x", "custentity_mc_optout", "|", "mc_optout", "custentity_x' OR 1=1", "Opt_Out__c"},
			mapped: []string{"firstName", "lastName", "email", "custentity_x", "|", "first'Name", "Name FROM customer--"},
		},
		"bullhorn": {
			types:  []string{"Candidate", "ClientContact", "Lead", "|", "candidate", "Contact"},
			lists:  []string{"demo-tearsheet", "12", "4567", "|", "news", "0", "12'3"},
			fields: []string{"customText1", "customInt2", "customTextBlock3", "|", "massMailOptOut", "custom1", "customText1'"},
			mapped: []string{"firstName", "lastName", "customText3", "|", "first name", "first'Name"},
		},
		"dynamics": {
			types:  []string{"contact", "lead", "account", "|", "Contact", "incident"},
			lists:  []string{"demo-list", "demo-lead-list", "8d2c7a4e-0000-4000-a000-000000000001", "|", "list-1", "8d2c7a4e'0000-4000-a000-000000000001"},
			fields: []string{"new_optout", "new_bounced", "donotemail", "|", "optout", "donotbulkemail", "new_opt'in"},
			mapped: []string{"firstname", "lastname", "jobtitle", "|", "FirstName", "first'name"},
		},
		"salesforce": {
			types:  []string{"Contact", "Lead", "Account", "|", "contact", "Opportunity"},
			lists:  []string{"demo-campaign", "701000000000001AAA", "701000000000001", "|", "001000000000001AAA", "campaign-1", "701'000000000001"},
			fields: []string{"Opt_Out__c", "Bounced__c", "Opt_Out__pc", "|", "Marketing_Opt_Out", "Opt'In__c", "HasOptedOutOfEmail"},
			mapped: []string{"FirstName", "LastName", "Email", "Title__c", "|", "First'Name", "Name FROM Lead--"},
		},
	}
	tags := []string{"FNAME", "LNAME", "TITLE", "|", "fname", "EMAIL", "TOOLONGTAG123"}
	optOutKinds := []string{"standard", "custom", "inverted", "", "|", "soft"}

	accepted := 0
	for i := range 300 {
		kind := pick([]string{"netsuite", "salesforce", "dynamics", "bullhorn"})
		p := kinds[kind]
		crm := fmt.Sprintf("{kind: %s, baseURL: emulator", kind)
		if ts := some(p.types); len(ts) > 0 {
			crm += ", recordTypes: " + quoted(ts)
		}
		lists := some(p.lists)
		if rng.IntN(20) == 0 && kind == "salesforce" {
			lists = nil
			for j := range 301 {
				lists = append(lists, fmt.Sprintf("701%012d", j))
			}
		}
		if len(lists) > 0 {
			crm += ", lists: " + quoted(lists)
		}
		if k := pick(optOutKinds); k != "" {
			crm += fmt.Sprintf(", optOut: {kind: %q", k)
			if k == "custom" || k == "inverted" || rng.IntN(8) == 0 {
				crm += fmt.Sprintf(", field: %q", pick(p.fields))
			}
			crm += "}"
		}
		if rng.IntN(3) == 0 {
			crm += fmt.Sprintf(", cleanedField: %q", pick(p.fields))
		}
		if kind == "netsuite" && rng.IntN(2) == 0 {
			crm += fmt.Sprintf(", concurrency: %d", []int{1, 5, 50, 100, 1, 5, 101, -1}[rng.IntN(8)])
		}
		crm += "}"
		extra := ""
		if m := some(p.mapped); len(m) > 0 {
			extra = "    fieldMap: {"
			for j, f := range m {
				if j > 0 {
					extra += ", "
				}
				extra += fmt.Sprintf("%q: %q", f, pick(tags))
			}
			extra += "}\n"
		}
		yml := one(`{kind: mailchimp, audience: demo-netsuite, baseURL: emulator}`, crm, extra)

		cfg, err := DecodeConfig([]byte(yml))
		if err != nil {
			continue // a key given twice by the draw: refused before the connectors see it
		}
		e := NewEmulators()
		require.NoError(t, e.Resolve(cfg))
		if cfg.Validate(true) != nil {
			e.Close()
			continue
		}
		accepted++
		reg, err := BuildRegistry(cfg, e.Lookup(func(string) (string, bool) { return "", false }), nil)
		require.NoError(t, err, "case %d:\n%s", i, yml)
		in := reg["acme"]
		s := in.Settings
		fields := slices.Sorted(maps.Keys(s.FieldMap))
		ctx := t.Context()
		vendorOnly := func(what string, err error) {
			t.Helper()
			var api *connectors.APIError
			if err != nil && !errors.As(err, &api) {
				t.Fatalf("case %d: the connector refused the settings the worker accepted (%s): %v\n%s", i, what, err, yml)
			}
		}
		_, err = in.CRM.OptedOut(ctx, connectors.OptOutQuery{Types: s.RecordTypes, Field: s.OptOut, Lists: s.Lists, PageSize: s.PageSize})
		vendorOnly("OptedOut", err)
		_, err = in.CRM.FindByEmail(ctx, s.RecordTypes, s.OptOut, []string{"alice@example.com"})
		vendorOnly("FindByEmail", err)
		_, err = in.CRM.ListMembers(ctx, connectors.ListMembersQuery{Types: s.RecordTypes, Lists: s.Lists, Fields: fields, Field: s.OptOut, PageSize: s.PageSize})
		vendorOnly("ListMembers", err)
		_, err = in.CRM.SetOptOut(ctx, s.OptOut, nil)
		vendorOnly("SetOptOut", err)
		if s.CleanedField != "" {
			_, err = in.CRM.FindByEmail(ctx, s.RecordTypes, connectors.OptOutField{Kind: connectors.OptOutCustom, Field: s.CleanedField}, []string{"erin@example.com"})
			vendorOnly("FindByEmail (cleaned field)", err)
			_, err = in.CRM.SetFlag(ctx, s.CleanedField, nil)
			vendorOnly("SetFlag", err)
		}
		_, err = in.Marketing.Members(ctx, s.Audience, []string{"alice@example.com"})
		vendorOnly("Members", err)
		e.Close()
	}
	t.Logf("%d of 300 drawn configurations accepted and exercised", accepted)
	require.Greater(t, accepted, 30, "the draw must reach the connectors often enough to mean something")
}
