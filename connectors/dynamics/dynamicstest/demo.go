package dynamicstest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/optoutsync/optoutsync/connectors/dynamics"
)

// The placeholders that, in a configuration pointed at the emulator, stand
// for the demo's marketing lists, whose ids are known once the emulator
// has created them.
const (
	DemoList     = "demo-list"      // static list of contacts
	DemoLeadList = "demo-lead-list" // dynamic list of leads
)

// DemoAudience is the Mailchimp audience the demo integration syncs with
// (the Mailchimp emulator creates it empty when a configuration names it).
const DemoAudience = "demo-dynamics"

// The variables the dev mode hands the emulator's credentials in.
const (
	DemoClientIDEnv     = "OPTOUT_DEV_DYNAMICS_CLIENT_ID"
	DemoClientSecretEnv = "OPTOUT_DEV_DYNAMICS_CLIENT_SECRET"
)

// demoLeadQuery is the dynamic list's FetchXML: the leads of company "Demo".
const demoLeadQuery = `<fetch><entity name="lead"><attribute name="leadid"/><filter type="and"><condition attribute="companyname" operator="eq" value="Demo"/></filter></entity></fetch>`

// DemoServer is the emulator seeded with the demo environment.
type DemoServer struct {
	*Server
	// ListID is the static contact list; LeadListID the dynamic lead list.
	ListID, LeadListID string
}

// Demo starts an emulator seeded with the demo environment: contacts in
// and out of a static marketing list, leads in and out of a dynamic one,
// to pair with the Mailchimp emulator's audience "demo-dynamics".
func Demo() *DemoServer {
	s := NewServer(Options{})
	list := s.AddStaticList("Demo newsletter", "contact")
	leads := s.AddDynamicList("Demo leads", "lead", demoLeadQuery)
	s.AddListMember(list, s.AddContact(Person{FirstName: "Quinn", LastName: "Quade", Email: "quinn@example.com"}))
	s.AddLead(Person{FirstName: "Quinn", LastName: "Quade (lead)", Email: "Quinn@Example.com", Company: "Demo"})
	s.AddContact(Person{FirstName: "Rita", LastName: "Reyes", Email: "rita@example.com", OptedOut: true})
	s.AddListMember(list, s.AddContact(Person{FirstName: "Sven", LastName: "Stone", Email: "sven@example.com", OptedOut: true}))
	s.AddListMember(list, s.AddContact(Person{FirstName: "Tara", LastName: "Trent", Email: "tara@example.com"}))
	s.AddLead(Person{FirstName: "Uma", LastName: "Underhill", Email: "uma@example.com", Company: "Demo", OptedOut: true})
	s.AddLead(Person{FirstName: "Vic", LastName: "Vance", Email: "vic@example.com", Company: "Elsewhere", OptedOut: true})
	return &DemoServer{Server: s, ListID: list, LeadListID: leads}
}

// Emulate points a dynamics configuration at the emulator: its URL (the
// environment and the authority), its tenant, its client credentials under
// the Demo…Env variables in env, and the demo lists' ids in place of
// DemoList and DemoLeadList. The scope is kept.
func (s *DemoServer) Emulate(cfg any, env map[string]string) error {
	c, ok := cfg.(*dynamics.Config)
	if !ok {
		return fmt.Errorf("dynamicstest: cannot emulate a %T", cfg)
	}
	scope := c.CRMScope
	scope.Lists = slices.Clone(scope.Lists)
	for i, l := range scope.Lists {
		switch l {
		case DemoList:
			scope.Lists[i] = s.ListID
		case DemoLeadList:
			scope.Lists[i] = s.LeadListID
		}
	}
	*c = dynamics.Config{BaseURL: s.URL, TenantID: s.TenantID, ClientIDEnv: DemoClientIDEnv, ClientSecretEnv: DemoClientSecretEnv,
		EmailColumns: c.EmailColumns, MaxInFlight: c.MaxInFlight, CRMScope: scope}
	env[DemoClientIDEnv], env[DemoClientSecretEnv] = s.ClientID, s.ClientSecret
	return nil
}

// Describe says where the emulator listens and how to sign in.
func (s *DemoServer) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Dynamics 365 Web API  %s%s (and the Entra authority)\n  tenant %s\n  client id %s\n  client secret %s\n  static list  %s\n  dynamic list %s\n",
		s.URL, APIPath, s.TenantID, s.ClientID, s.ClientSecret, s.ListID, s.LeadListID)
	fmt.Fprintf(&b, "  try: curl -d grant_type=client_credentials -d client_id=%s -d client_secret=%s -d scope=%s/.default %s/%s/oauth2/v2.0/token\n",
		s.ClientID, s.ClientSecret, s.URL, s.URL, s.TenantID)
	return b.String()
}
