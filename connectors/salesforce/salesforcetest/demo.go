package salesforcetest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/optoutsync/optoutsync/connectors/salesforce"
)

// DemoCampaign stands, in a configuration pointed at the emulator, for the
// demo campaign, whose id is known once the emulator has created it.
const DemoCampaign = "demo-campaign"

// The variables the dev mode hands the emulator's client credentials in.
const (
	DemoClientIDEnv     = "OPTOUT_DEV_SALESFORCE_CLIENT_ID"
	DemoClientSecretEnv = "OPTOUT_DEV_SALESFORCE_CLIENT_SECRET"
)

// DemoServer is the emulator seeded with the demo org.
type DemoServer struct {
	*Server
	// CampaignID is the demo campaign.
	CampaignID string
}

// Demo starts an emulator seeded with the demo org: contacts and leads in
// and out of the demo campaign, to pair with the Mailchimp emulator's demo
// audience.
func Demo() *DemoServer {
	s := NewServer(Options{})
	camp := s.AddCampaign("Demo newsletter")
	member := func(id string) { s.AddCampaignMember(camp, id) }
	s.AddLead(Person{FirstName: "Judy", LastName: "Jones", Email: "judy@example.com", Company: "Demo"})
	member(s.AddContact(Person{FirstName: "Ken", LastName: "King", Email: "ken@example.com"}))
	s.AddLead(Person{FirstName: "Ken", LastName: "King (lead)", Email: "ken@example.com", Company: "Demo"})
	s.AddContact(Person{FirstName: "Leo", LastName: "Lopez", Email: "leo@example.com", OptedOut: true})
	member(s.AddContact(Person{FirstName: "Mallory", LastName: "Moore", Email: "mallory@example.com", OptedOut: true}))
	member(s.AddContact(Person{FirstName: "Niaj", LastName: "Nash", Email: "niaj@example.com"}))
	member(s.AddLead(Person{FirstName: "Olivia", LastName: "Owens", Email: "olivia@example.com", Company: "Demo", OptedOut: true}))
	return &DemoServer{Server: s, CampaignID: camp}
}

// Emulate points a salesforce configuration at the emulator: its URL, its
// client credentials under the Demo…Env variables in env, and the demo
// campaign's id in place of DemoCampaign. The scope is kept.
func (s *DemoServer) Emulate(cfg any, env map[string]string) error {
	c, ok := cfg.(*salesforce.Config)
	if !ok {
		return fmt.Errorf("salesforcetest: cannot emulate a %T", cfg)
	}
	scope := c.CRMScope
	scope.Lists = slices.Clone(scope.Lists)
	for i, l := range scope.Lists {
		if l == DemoCampaign {
			scope.Lists[i] = s.CampaignID
		}
	}
	*c = salesforce.Config{BaseURL: s.URL, ClientIDEnv: DemoClientIDEnv, ClientSecretEnv: DemoClientSecretEnv, MaxInFlight: c.MaxInFlight, CRMScope: scope}
	env[DemoClientIDEnv], env[DemoClientSecretEnv] = s.ClientID, s.ClientSecret
	return nil
}

// Describe says where the emulator listens and how to sign in.
func (s *DemoServer) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Salesforce REST  %s (My Domain and instance_url)\n  client id %s\n  client secret %s\n  JWT username %s\n  campaign  %s\n",
		s.URL, s.ClientID, s.ClientSecret, s.Username, s.CampaignID)
	fmt.Fprintf(&b, "  try: curl -d grant_type=client_credentials -d client_id=%s -d client_secret=%s %s/services/oauth2/token\n",
		s.ClientID, s.ClientSecret, s.URL)
	return b.String()
}
