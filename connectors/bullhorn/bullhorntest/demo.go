package bullhorntest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/optoutsync/optoutsync/connectors/bullhorn"
)

// DemoAudience is the demo's Mailchimp audience for Bullhorn (created
// empty by the Mailchimp emulator when the demo points at it).
const DemoAudience = "demo-bullhorn"

// DemoTearsheet stands, in a configuration pointed at the emulator, for the
// demo tearsheet, whose id is known once the emulator has created it.
const DemoTearsheet = "demo-tearsheet"

// The variables the dev mode hands the emulator's credentials in.
const (
	DemoClientIDEnv     = "OPTOUT_DEV_BULLHORN_CLIENT_ID"
	DemoClientSecretEnv = "OPTOUT_DEV_BULLHORN_CLIENT_SECRET"
	DemoUsernameEnv     = "OPTOUT_DEV_BULLHORN_USERNAME"
	DemoPasswordEnv     = "OPTOUT_DEV_BULLHORN_PASSWORD"
)

// DemoServer is the emulator seeded with the demo corporation.
type DemoServer struct {
	*Server
	// TearsheetID is the demo tearsheet.
	TearsheetID int64
}

// Demo starts an emulator seeded with the demo corporation: candidates and
// client contacts in and out of the demo tearsheet, one address on a
// Candidate and a ClientContact, and a Lead.
func Demo() *DemoServer {
	s := NewServer(Options{})
	ts := s.AddTearsheet("Demo newsletter")
	in := func(id int64) { s.AddToTearsheet(ts, id) }
	in(s.AddCandidate(Person{FirstName: "Quinn", LastName: "Quick", Email: "quinn@example.com"}))
	in(s.AddCandidate(Person{FirstName: "Rosa", LastName: "Reed", Email: "rosa@example.com", OptedOut: true}))               // → unsubscribed
	in(s.AddClientContact(Person{FirstName: "Rosa", LastName: "Reed (contact)", Email: "rosa@example.com", OptedOut: true})) // same address
	s.AddCandidate(Person{FirstName: "Sven", LastName: "Stone", Email: "sven@example.com", OptedOut: true})                  // outside: left alone
	in(s.AddClientContact(Person{FirstName: "Tara", LastName: "Teague", Email: "tara@example.com"}))
	s.AddLead(Person{FirstName: "Uma", LastName: "Ulm", Email: "uma@example.com"})
	return &DemoServer{Server: s, TearsheetID: ts}
}

// Emulate points a bullhorn configuration at the emulator: its URL, its
// credentials under the Demo…Env variables in env, and the demo
// tearsheet's id in place of DemoTearsheet. The scope is kept.
func (s *DemoServer) Emulate(cfg any, env map[string]string) error {
	c, ok := cfg.(*bullhorn.Config)
	if !ok {
		return fmt.Errorf("bullhorntest: cannot emulate a %T", cfg)
	}
	scope := c.CRMScope
	scope.Lists = slices.Clone(scope.Lists)
	for i, l := range scope.Lists {
		if l == DemoTearsheet {
			scope.Lists[i] = strconv.FormatInt(s.TearsheetID, 10)
		}
	}
	*c = bullhorn.Config{BaseURL: s.LoginInfoURL(), ClientIDEnv: DemoClientIDEnv, ClientSecretEnv: DemoClientSecretEnv,
		UsernameEnv: DemoUsernameEnv, PasswordEnv: DemoPasswordEnv, EmailFields: c.EmailFields,
		MaxInFlight: c.MaxInFlight, RequestsPerMinute: c.RequestsPerMinute, CRMScope: scope}
	env[DemoClientIDEnv], env[DemoClientSecretEnv] = s.ClientID, s.ClientSecret
	env[DemoUsernameEnv], env[DemoPasswordEnv] = s.Username, s.Password
	return nil
}

// Describe says where the emulator listens and how to sign in.
func (s *DemoServer) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Bullhorn REST  %s/loginInfo (REST %s)\n  client id %s\n  client secret %s\n  API user %s / %s\n  tearsheet %d\n",
		s.LoginInfoURL(), s.RestURL(), s.ClientID, s.ClientSecret, s.Username, s.Password, s.TearsheetID)
	fmt.Fprintf(&b, "  try: curl -si '%s/oauth/authorize?client_id=%s&response_type=code&action=Login&username=%s&password=%s' | grep Location\n",
		s.URL, s.ClientID, s.Username, s.Password)
	return b.String()
}
