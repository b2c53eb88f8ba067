package activities

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/temporal"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
)

// CurrentStateInput asks where one address stands now in an integration's
// two systems. The address is sealed with the ledger's key (ledger.Seal),
// so the workflow history that carries it never holds it in the clear.
type CurrentStateInput struct {
	IntegrationID string `json:"integrationId"`
	Sealed        string `json:"sealed"`
}

// RecordState is one CRM record of the address, as the CRM has it now.
type RecordState struct {
	Record   string `json:"record"`
	OptedOut bool   `json:"optedOut"`
}

// CurrentState is where an address stands now, named by hash and record
// ids only.
type CurrentState struct {
	IntegrationID string `json:"integrationId"`
	AddressHash   string `json:"addressHash"`
	Marketing     string `json:"marketing"`
	Audience      string `json:"audience"`
	// MemberStatus is the member's status; "" when not in the audience.
	MemberStatus connectors.MemberStatus `json:"memberStatus"`
	CRM          string                  `json:"crm"`
	Records      []RecordState           `json:"records"`
	// Ledger is what the ledger holds as the person's standing state.
	Ledger *ledger.Person `json:"ledger,omitempty"`
}

// CurrentState looks the sealed address up in the integration's marketing
// platform and CRM, with the worker's credentials.
func (a *Activities) CurrentState(ctx context.Context, in CurrentStateInput) (CurrentState, error) {
	integ, err := a.reg.Integration(in.IntegrationID)
	if err != nil {
		return CurrentState{}, err
	}
	sealed, err := a.ledger.Unseal(in.Sealed)
	if err != nil {
		return CurrentState{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("integration %q: %v (is the starter using the worker's ledger key?)", in.IntegrationID, err), ErrTypeConfig, nil)
	}
	email, ok := validEmail(sealed)
	if !ok {
		return CurrentState{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("integration %q: the sealed value is not an email address", in.IntegrationID), ErrTypeInvalid, nil)
	}
	s := integ.Settings
	out := CurrentState{IntegrationID: s.IntegrationID, AddressHash: connectors.AddressHash(email),
		Marketing: s.MarketingKind, Audience: s.Audience, CRM: s.CRMKind}
	members, err := integ.Marketing.Members(ctx, s.Audience, []string{email})
	if err != nil {
		return CurrentState{}, classify(err, integ.Settings.IntegrationID, "looking the address up in audience "+s.Audience)
	}
	out.MemberStatus = members[email].Status
	records, err := integ.CRM.FindByEmail(ctx, s.RecordTypes, s.OptOut, []string{email})
	if err != nil {
		return CurrentState{}, classify(err, integ.Settings.IntegrationID, "finding CRM records by address")
	}
	for _, r := range records {
		out.Records = append(out.Records, RecordState{Record: r.Ref.String(), OptedOut: r.OptedOut})
	}
	person := a.ledger.Person(email)
	people, err := a.ledger.People(ctx, s.IntegrationID, []string{person})
	if err != nil {
		return CurrentState{}, err
	}
	if p, ok := people[person]; ok {
		out.Ledger = &p
	}
	return out, nil
}
