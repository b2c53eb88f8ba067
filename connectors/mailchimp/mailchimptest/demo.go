package mailchimptest

import (
	"fmt"
	"strings"

	"github.com/optoutsync/optoutsync/connectors/mailchimp"
)

// The demo's audiences, one per demo CRM.
const (
	DemoNetSuiteAudience   = "demo-netsuite"
	DemoSalesforceAudience = "demo-salesforce"
	// DemoDynamicsAudience and DemoBullhornAudience pair with the
	// Dynamics and Bullhorn emulators' demo seeds (their DemoAudience).
	DemoDynamicsAudience = "demo-dynamics"
	DemoBullhornAudience = "demo-bullhorn"
	// DemoAPIKeyEnv is the variable the dev mode hands the emulator's key in.
	DemoAPIKeyEnv = "OPTOUT_DEV_MAILCHIMP_API_KEY"
	// DemoWebhookTokenEnv is the variable that, named by a demo
	// integration's webhookTokenEnv, gets a fresh webhook path token.
	DemoWebhookTokenEnv = "OPTOUT_DEV_MAILCHIMP_WEBHOOK_TOKEN"
)

// Demo starts an emulator seeded with the demo audiences. Each member is
// named after what the first run should do with it.
func Demo() *Server {
	s := NewServer(Options{})
	s.AddList(DemoNetSuiteAudience, "Demo audience (NetSuite)")
	s.AddList(DemoSalesforceAudience, "Demo audience (Salesforce)")
	s.AddList(DemoDynamicsAudience, "Demo audience (Dynamics 365)")
	s.AddList(DemoBullhornAudience, "Demo audience (Bullhorn)")
	must := func(list, email, status string) {
		seed := MemberSeed{Email: email, Status: status}
		if status == "unsubscribed" {
			seed.Reason = "N/A (Unsubscribed by demo seed)"
		}
		if err := s.AddMember(list, seed); err != nil {
			panic(err) // the seed is fixed: an error is a bug
		}
	}
	// NetSuite audience.
	must(DemoNetSuiteAudience, "alice@example.com", "unsubscribed") // → opt-out set on her customer record
	must(DemoNetSuiteAudience, "bob@example.com", "subscribed")     // opted out in NetSuite → unsubscribed here
	must(DemoNetSuiteAudience, "carol@example.com", "unsubscribed") // two NetSuite records share the address → both opted out
	must(DemoNetSuiteAudience, "dave@example.com", "subscribed")    // opted out in NetSuite but outside the saved search → left alone
	must(DemoNetSuiteAudience, "erin@example.com", "cleaned")       // a bounce: recorded in the cleaned field, no opt-out
	must(DemoNetSuiteAudience, "heidi@example.com", "unsubscribed") // not in NetSuite → counted as not in the CRM
	must(DemoNetSuiteAudience, "ivy@example.com", "subscribed")     // in the saved search → merge fields updated
	// Salesforce audience.
	must(DemoSalesforceAudience, "judy@example.com", "unsubscribed")  // → Lead opted out
	must(DemoSalesforceAudience, "ken@example.com", "unsubscribed")   // Contact and Lead share the address → both
	must(DemoSalesforceAudience, "leo@example.com", "subscribed")     // opted out in Salesforce, outside the campaign → left alone
	must(DemoSalesforceAudience, "mallory@example.com", "subscribed") // campaign member opted out in Salesforce → unsubscribed
	must(DemoSalesforceAudience, "niaj@example.com", "subscribed")    // campaign member → merge fields updated
	// Dynamics 365 audience.
	must(DemoDynamicsAudience, "quinn@example.com", "unsubscribed") // a contact and a lead share the address → both opted out
	must(DemoDynamicsAudience, "sven@example.com", "subscribed")    // opted out in the static list → unsubscribed
	must(DemoDynamicsAudience, "rita@example.com", "subscribed")    // opted out outside every list → left alone
	must(DemoDynamicsAudience, "tara@example.com", "subscribed")    // in the list → merge fields updated
	// Bullhorn audience.
	must(DemoBullhornAudience, "quinn@example.com", "unsubscribed") // → Candidate opted out
	must(DemoBullhornAudience, "rosa@example.com", "subscribed")    // opted out in the tearsheet → unsubscribed
	must(DemoBullhornAudience, "sven@example.com", "subscribed")    // opted out outside the tearsheet → left alone
	must(DemoBullhornAudience, "tara@example.com", "subscribed")    // in the tearsheet → merge fields updated
	return s
}

// Emulate points a mailchimp configuration at the emulator: its URL, and
// its key under DemoAPIKeyEnv in env. The configuration's audience is
// created when the seed lacks it.
func (s *Server) Emulate(cfg any, env map[string]string) error {
	c, ok := cfg.(*mailchimp.Config)
	if !ok {
		return fmt.Errorf("mailchimptest: cannot emulate a %T", cfg)
	}
	hook := c.WebhookTokenEnv
	*c = mailchimp.Config{AudienceID: c.AudienceID, BaseURL: s.URL, APIKeyEnv: DemoAPIKeyEnv, MaxInFlight: c.MaxInFlight}
	env[DemoAPIKeyEnv] = s.APIKey
	if hook == DemoWebhookTokenEnv {
		c.WebhookTokenEnv = hook
		if env[hook] == "" {
			env[hook] = randomHex(16)
		}
	}
	s.AddList(c.AudienceID, "Dev audience "+c.AudienceID)
	return nil
}

// Describe says where the emulator listens and how to sign in; printing
// its own generated key is the point.
func (s *Server) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Mailchimp Marketing API  %s\n  API key (HTTP Basic password or Bearer)  %s\n  audiences  %s, %s\n",
		s.URL, s.APIKey, DemoNetSuiteAudience, DemoSalesforceAudience)
	fmt.Fprintf(&b, "  try: curl -u any:%s '%s/lists/%s/members?status=unsubscribed'\n", s.APIKey, s.URL, DemoNetSuiteAudience)
	fmt.Fprintf(&b, "  a person unsubscribes (webhook): curl -d email=ivy@example.com -d action=unsubscribe %s/emulator/lists/%s/act\n",
		strings.TrimSuffix(s.URL, "/3.0"), DemoNetSuiteAudience)
	return b.String()
}
