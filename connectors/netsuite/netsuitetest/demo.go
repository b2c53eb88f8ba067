package netsuitetest

import (
	"fmt"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
)

// The demo account.
const (
	DemoAccountID    = "DEMO001"
	DemoSavedSearch  = "customsearch_demo_sync"
	DemoCleanedField = "custentity_mc_bounced"
)

// The variables the dev mode hands the emulator's TBA secrets in.
const (
	DemoConsumerKeyEnv    = "OPTOUT_DEV_NETSUITE_CONSUMER_KEY"
	DemoConsumerSecretEnv = "OPTOUT_DEV_NETSUITE_CONSUMER_SECRET"
	DemoTokenIDEnv        = "OPTOUT_DEV_NETSUITE_TOKEN_ID"
	DemoTokenSecretEnv    = "OPTOUT_DEV_NETSUITE_TOKEN_SECRET"
)

// Demo starts an emulator of the demo account, seeded with customers and
// a contact inside the demo saved search and one opted-out customer
// outside it, to pair with the Mailchimp emulator's demo audience.
func Demo() *Server {
	s := NewServer(Options{AccountID: DemoAccountID, CustomFields: []string{DemoCleanedField}})
	cust := func(e Entity) connectors.RecordRef {
		return connectors.RecordRef{Type: "customer", ID: s.AddCustomer(e)}
	}
	var inSearch []connectors.RecordRef
	inSearch = append(inSearch,
		cust(Entity{Email: "alice@example.com", FirstName: "Alice", LastName: "Adams"}),
		cust(Entity{Email: "bob@example.com", FirstName: "Bob", LastName: "Brown", SubscriptionStatus: "2"}),
		cust(Entity{Email: "carol@example.com", FirstName: "Carol", LastName: "Clark"}),
		connectors.RecordRef{Type: "contact", ID: s.AddContact(Entity{Email: "Carol@Example.com", FirstName: "Carol", LastName: "Clark (contact)"})},
		cust(Entity{Email: "erin@example.com", FirstName: "Erin", LastName: "Evans"}),
		cust(Entity{Email: "frank@example.com", FirstName: "Frank", LastName: "Fischer"}),                        // not in Mailchimp → added as subscribed
		cust(Entity{Email: "grace@example.com", FirstName: "Grace", LastName: "Green", SubscriptionStatus: "2"}), // opted out, not in Mailchimp → added as unsubscribed
		cust(Entity{Email: "ivy@example.com", FirstName: "Ivy", LastName: "Irwin"}),
	)
	// Outside the saved search: an opt-out that must not reach Mailchimp.
	cust(Entity{Email: "dave@example.com", FirstName: "Dave", LastName: "Davis", SubscriptionStatus: "2"})
	s.AddSavedSearch(DemoSavedSearch, inSearch...)
	return s
}

// Emulate points a netsuite configuration at the emulator: its URL and
// account, UTC (the emulator's SuiteQL dates), and its TBA secrets under
// the Demo…Env variables in env. The scope is kept.
func (s *Server) Emulate(cfg any, env map[string]string) error {
	c, ok := cfg.(*netsuite.Config)
	if !ok {
		return fmt.Errorf("netsuitetest: cannot emulate a %T", cfg)
	}
	*c = netsuite.Config{
		AccountID: s.AccountID, BaseURL: s.URL, TimeZone: "UTC", Concurrency: c.Concurrency,
		ConsumerKeyEnv: DemoConsumerKeyEnv, ConsumerSecretEnv: DemoConsumerSecretEnv,
		TokenIDEnv: DemoTokenIDEnv, TokenSecretEnv: DemoTokenSecretEnv,
		CRMScope: c.CRMScope,
	}
	env[DemoConsumerKeyEnv], env[DemoConsumerSecretEnv] = s.ConsumerKey, s.ConsumerSecret
	env[DemoTokenIDEnv], env[DemoTokenSecretEnv] = s.TokenID, s.TokenSecret
	return nil
}

// Describe says where the emulator listens and how to sign in.
func (s *Server) Describe() string {
	return fmt.Sprintf("NetSuite SuiteTalk REST  %s\n  account (OAuth realm)  %s\n  TBA consumer key %s\n      consumer secret %s\n      token id %s\n      token secret %s\n  saved search  %s\n",
		s.URL, s.AccountID, s.ConsumerKey, s.ConsumerSecret, s.TokenID, s.TokenSecret, DemoSavedSearch)
}
