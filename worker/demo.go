package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
)

// The demo's fixed names. The emulators keep their state in memory, so a
// restart seeds them again; the Temporal data (schedules, histories,
// watermarks) persists in the dev server's SQLite file.
const (
	demoNetSuiteAudience   = "demo-netsuite"
	demoSalesforceAudience = "demo-salesforce"
	demoAccountID          = "DEMO001"
	demoSavedSearch        = "customsearch_demo_sync"
	demoCleanedField       = "custentity_mc_bounced"
	demoSchedule           = "2m"
)

// DemoConfig is the built-in demo: NetSuite ⇄ Mailchimp scoped to a saved
// search and Salesforce ⇄ Mailchimp scoped to a campaign, both with Step 1
// on and a field mapping, all against the emulators ("emulator" base URLs,
// resolved by Emulators.Resolve). The Salesforce campaign id is filled in
// once the emulator has created it.
func DemoConfig() *Config {
	return &Config{Integrations: []Integration{
		{
			ID:        "demo",
			Schedule:  demoSchedule,
			Marketing: MarketingConfig{Kind: "mailchimp", Audience: demoNetSuiteAudience, BaseURL: emulatorURL},
			CRM: CRMConfig{
				Kind: "netsuite", AccountID: demoAccountID, BaseURL: emulatorURL,
				Lists: []string{demoSavedSearch}, CleanedField: demoCleanedField,
			},
			CRMToMarketing: true,
			FieldMap:       map[string]string{"firstName": "FNAME", "lastName": "LNAME"},
		},
		{
			ID:             "demo-salesforce",
			Schedule:       demoSchedule,
			Marketing:      MarketingConfig{Kind: "mailchimp", Audience: demoSalesforceAudience, BaseURL: emulatorURL},
			CRM:            CRMConfig{Kind: "salesforce", BaseURL: emulatorURL, Lists: []string{demoCampaignPlaceholder}},
			CRMToMarketing: true,
			FieldMap:       map[string]string{"FirstName": "FNAME", "LastName": "LNAME"},
		},
	}}
}

// demoCampaignPlaceholder stands for the demo campaign's id in a
// configuration whose Salesforce is the emulator.
const demoCampaignPlaceholder = "demo-campaign"

// Emulators are the in-process vendor emulators of dev mode, started only
// for the systems a configuration points at "emulator", each seeded with
// the demo data.
type Emulators struct {
	Mailchimp  *mailchimptest.Server
	NetSuite   *netsuitetest.Server
	Salesforce *salesforcetest.Server
	// CampaignID is the demo Salesforce campaign.
	CampaignID string
	// Env holds the emulators' credentials under the variable names the
	// resolved configuration refers to.
	Env map[string]string
}

// StartEmulators starts the emulators cfg refers to (before validation:
// the demo configuration still has its placeholders).
func StartEmulators(cfg *Config) *Emulators {
	e := &Emulators{Env: map[string]string{}}
	for _, in := range cfg.Integrations {
		if in.Marketing.BaseURL == emulatorURL && e.Mailchimp == nil {
			e.Mailchimp = mailchimptest.NewServer(mailchimptest.Options{})
			seedMailchimp(e.Mailchimp)
		}
		if in.CRM.BaseURL != emulatorURL {
			continue
		}
		switch {
		case in.CRM.Kind == "netsuite" && e.NetSuite == nil:
			account := in.CRM.AccountID
			if account == "" {
				account = demoAccountID
			}
			e.NetSuite = netsuitetest.NewServer(netsuitetest.Options{AccountID: account, CustomFields: []string{demoCleanedField}})
			seedNetSuite(e.NetSuite)
		case in.CRM.Kind == "salesforce" && e.Salesforce == nil:
			e.Salesforce = salesforcetest.NewServer(salesforcetest.Options{})
			e.CampaignID = seedSalesforce(e.Salesforce)
		}
	}
	return e
}

// Close stops the emulators.
func (e *Emulators) Close() {
	for _, c := range []interface{ Close() }{e.Mailchimp, e.NetSuite, e.Salesforce} {
		if c != nil && !isNil(c) {
			c.Close()
		}
	}
}

func isNil(c interface{ Close() }) bool {
	switch v := c.(type) {
	case *mailchimptest.Server:
		return v == nil
	case *netsuitetest.Server:
		return v == nil
	case *salesforcetest.Server:
		return v == nil
	}
	return false
}

// Resolve points every "emulator" base URL of cfg at the running emulator
// and its credentials at e.Env, in place, then validates cfg.
func (e *Emulators) Resolve(cfg *Config) error {
	set := func(name, value string) string {
		e.Env[name] = value
		return name
	}
	for i := range cfg.Integrations {
		in := &cfg.Integrations[i]
		if in.Marketing.BaseURL == emulatorURL && e.Mailchimp != nil {
			in.Marketing = MarketingConfig{
				Kind: in.Marketing.Kind, Audience: in.Marketing.Audience, BaseURL: e.Mailchimp.URL,
				APIKeyEnv: set("OPTOUT_DEV_MAILCHIMP_API_KEY", e.Mailchimp.APIKey),
			}
			e.Mailchimp.AddList(in.Marketing.Audience, "Demo audience ("+in.ID+")")
		}
		c := &in.CRM
		if c.BaseURL != emulatorURL {
			continue
		}
		keep := CRMConfig{Kind: c.Kind, RecordTypes: c.RecordTypes, Lists: c.Lists, OptOut: c.OptOut, CleanedField: c.CleanedField}
		switch {
		case c.Kind == "netsuite" && e.NetSuite != nil:
			// The emulator reads and writes SuiteQL dates in UTC.
			keep.BaseURL, keep.AccountID, keep.TimeZone = e.NetSuite.URL, e.NetSuite.AccountID, "UTC"
			keep.ConsumerKeyEnv = set("OPTOUT_DEV_NETSUITE_CONSUMER_KEY", e.NetSuite.ConsumerKey)
			keep.ConsumerSecretEnv = set("OPTOUT_DEV_NETSUITE_CONSUMER_SECRET", e.NetSuite.ConsumerSecret)
			keep.TokenIDEnv = set("OPTOUT_DEV_NETSUITE_TOKEN_ID", e.NetSuite.TokenID)
			keep.TokenSecretEnv = set("OPTOUT_DEV_NETSUITE_TOKEN_SECRET", e.NetSuite.TokenSecret)
		case c.Kind == "salesforce" && e.Salesforce != nil:
			keep.BaseURL, keep.InstanceURL = e.Salesforce.URL, e.Salesforce.URL
			keep.ClientIDEnv = set("OPTOUT_DEV_SALESFORCE_CLIENT_ID", e.Salesforce.ClientID)
			keep.ClientSecretEnv = set("OPTOUT_DEV_SALESFORCE_CLIENT_SECRET", e.Salesforce.ClientSecret)
			for j, l := range keep.Lists {
				if l == demoCampaignPlaceholder {
					keep.Lists[j] = e.CampaignID
				}
			}
		}
		*c = keep
	}
	return cfg.Validate(true)
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

// seedMailchimp seeds both demo audiences. Each case is named after what
// the first run should do with it.
func seedMailchimp(s *mailchimptest.Server) {
	s.AddList(demoNetSuiteAudience, "Demo audience (NetSuite)")
	s.AddList(demoSalesforceAudience, "Demo audience (Salesforce)")
	must := func(list, email, status string) {
		if err := s.AddMember(list, mailchimptest.MemberSeed{Email: email, Status: status, Reason: reasonFor(status)}); err != nil {
			panic(err) // the seed is fixed: an error is a bug
		}
	}
	// NetSuite audience.
	must(demoNetSuiteAudience, "alice@example.com", "unsubscribed") // → opt-out set on her customer record
	must(demoNetSuiteAudience, "bob@example.com", "subscribed")     // opted out in NetSuite → unsubscribed here
	must(demoNetSuiteAudience, "carol@example.com", "unsubscribed") // two NetSuite records share the address → both opted out
	must(demoNetSuiteAudience, "dave@example.com", "subscribed")    // opted out in NetSuite but outside the saved search → left alone
	must(demoNetSuiteAudience, "erin@example.com", "cleaned")       // a bounce: recorded in custentity_mc_bounced, no opt-out
	must(demoNetSuiteAudience, "heidi@example.com", "unsubscribed") // not in NetSuite → counted as not in the CRM
	must(demoNetSuiteAudience, "ivy@example.com", "subscribed")     // in the saved search → merge fields updated
	// Salesforce audience.
	must(demoSalesforceAudience, "judy@example.com", "unsubscribed")  // → Lead opted out
	must(demoSalesforceAudience, "ken@example.com", "unsubscribed")   // Contact and Lead share the address → both
	must(demoSalesforceAudience, "leo@example.com", "subscribed")     // opted out in Salesforce, outside the campaign → left alone
	must(demoSalesforceAudience, "mallory@example.com", "subscribed") // campaign member opted out in Salesforce → unsubscribed
	must(demoSalesforceAudience, "niaj@example.com", "subscribed")    // campaign member → merge fields updated
}

func reasonFor(status string) string {
	if status == "unsubscribed" {
		return "N/A (Unsubscribed by demo seed)"
	}
	return ""
}

func seedNetSuite(s *netsuitetest.Server) {
	cust := func(e netsuitetest.Entity) connectors.RecordRef {
		return connectors.RecordRef{Type: "customer", ID: s.AddCustomer(e)}
	}
	var inSearch []connectors.RecordRef
	inSearch = append(inSearch,
		cust(netsuitetest.Entity{Email: "alice@example.com", FirstName: "Alice", LastName: "Adams"}),
		cust(netsuitetest.Entity{Email: "bob@example.com", FirstName: "Bob", LastName: "Brown", SubscriptionStatus: "2"}),
		cust(netsuitetest.Entity{Email: "carol@example.com", FirstName: "Carol", LastName: "Clark"}),
		connectors.RecordRef{Type: "contact", ID: s.AddContact(netsuitetest.Entity{Email: "Carol@Example.com", FirstName: "Carol", LastName: "Clark (contact)"})},
		cust(netsuitetest.Entity{Email: "erin@example.com", FirstName: "Erin", LastName: "Evans"}),
		cust(netsuitetest.Entity{Email: "frank@example.com", FirstName: "Frank", LastName: "Fischer"}),                        // not in Mailchimp → added as subscribed
		cust(netsuitetest.Entity{Email: "grace@example.com", FirstName: "Grace", LastName: "Green", SubscriptionStatus: "2"}), // opted out, not in Mailchimp → added as unsubscribed
		cust(netsuitetest.Entity{Email: "ivy@example.com", FirstName: "Ivy", LastName: "Irwin"}),
	)
	// Outside the saved search: an opt-out that must not reach Mailchimp.
	cust(netsuitetest.Entity{Email: "dave@example.com", FirstName: "Dave", LastName: "Davis", SubscriptionStatus: "2"})
	s.AddSavedSearch(demoSavedSearch, inSearch...)
}

// seedSalesforce seeds the demo org and returns the campaign id.
func seedSalesforce(s *salesforcetest.Server) string {
	camp := s.AddCampaign("Demo newsletter")
	member := func(id string) { s.AddCampaignMember(camp, id) }
	s.AddLead(salesforcetest.Person{FirstName: "Judy", LastName: "Jones", Email: "judy@example.com", Company: "Demo"})
	member(s.AddContact(salesforcetest.Person{FirstName: "Ken", LastName: "King", Email: "ken@example.com"}))
	s.AddLead(salesforcetest.Person{FirstName: "Ken", LastName: "King (lead)", Email: "ken@example.com", Company: "Demo"})
	s.AddContact(salesforcetest.Person{FirstName: "Leo", LastName: "Lopez", Email: "leo@example.com", OptedOut: true})
	member(s.AddContact(salesforcetest.Person{FirstName: "Mallory", LastName: "Moore", Email: "mallory@example.com", OptedOut: true}))
	member(s.AddContact(salesforcetest.Person{FirstName: "Niaj", LastName: "Nash", Email: "niaj@example.com"}))
	member(s.AddLead(salesforcetest.Person{FirstName: "Olivia", LastName: "Owens", Email: "olivia@example.com", Company: "Demo", OptedOut: true}))
	return camp
}

// printBanner tells the person running -dev where everything is.
func printBanner(w io.Writer, frontend, ui string, cfg *Config, e *Emulators) {
	var b strings.Builder
	fmt.Fprintf(&b, "\noptout-sync dev mode\n")
	fmt.Fprintf(&b, "  Temporal frontend  %s\n", frontend)
	fmt.Fprintf(&b, "  Temporal Web UI    %s\n", ui)
	if e != nil {
		if e.Mailchimp != nil {
			fmt.Fprintf(&b, "  Mailchimp emulator %s  (audiences %s, %s)\n", e.Mailchimp.URL, demoNetSuiteAudience, demoSalesforceAudience)
		}
		if e.NetSuite != nil {
			fmt.Fprintf(&b, "  NetSuite emulator  %s  (account %s, saved search %s)\n", e.NetSuite.URL, e.NetSuite.AccountID, demoSavedSearch)
		}
		if e.Salesforce != nil {
			fmt.Fprintf(&b, "  Salesforce emulator %s  (campaign %s)\n", e.Salesforce.URL, e.CampaignID)
		}
	}
	fmt.Fprintf(&b, "  Integrations:\n")
	for _, in := range cfg.Integrations {
		fmt.Fprintf(&b, "    %-18s %s ⇄ %s every %s (schedule optout-sync-%s)\n", in.ID, in.CRM.Kind, in.Marketing.Kind, in.Interval(), in.ID)
	}
	id := cfg.Integrations[0].ID
	fmt.Fprintf(&b, "\nTry:\n")
	fmt.Fprintf(&b, "  go run ./starter run %s\n", id)
	fmt.Fprintf(&b, "  go run ./starter status %s\n", id)
	fmt.Fprintf(&b, "  go run ./starter schedules\n")
	fmt.Fprintf(&b, "  temporal schedule trigger --schedule-id optout-sync-%s\n", id)
	fmt.Fprintf(&b, "  temporal workflow list --query 'OptOutIntegration=\"%s\"'\n", id)
	fmt.Fprintf(&b, "  temporal workflow query --workflow-id <id from the list> --type status\n\n")
	fmt.Fprint(w, b.String())
}
