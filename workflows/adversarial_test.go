package workflows_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// Adversarial scenarios: each test ends in the state the product promises
// and fails where the change loses or undoes an opt-out.

func setStatus(t *testing.T, s *stack, key, status string) {
	t.Helper()
	ref := s.refs[key]
	require.NoError(t, s.ns.Update(ref.Type, ref.ID, func(e *netsuitetest.Entity) { e.SubscriptionStatus = status }))
}

// Ann unsubscribes in Mailchimp; the sync opts her NetSuite record out.
// She re-subscribes through a form (her later choice: left alone). Later
// still she tells her account manager to stop every email: the record is
// set to Confirmed Opt-Out in NetSuite. That is a new CRM opt-out, newer
// than the re-subscribe, and the crm-to-marketing step must send it. The echo rule treats any
// record the product ever wrote as its own echo forever, so it never is.
func TestAdversarialNewCRMOptOutOnARecordTheProductOnceWroteIsNotAnEcho(t *testing.T) {
	s := newStack(t, nil)
	s.member(t, "ann@example.com", connectors.StatusUnsubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "1")
	s.ns.AddSavedSearch(search, ann)

	r1 := s.run(t)
	require.Equal(t, "2", s.subscription(t, "ann"))

	s.resubscribe(t, "ann@example.com")
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.Resubscribes)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "ann@example.com"), "the later choice stands")

	afterResubscribe()
	setStatus(t, s, "ann", "1") // the account manager clears the old opt-out...
	r3 := s.runAfter(t, r2)
	setStatus(t, s, "ann", "4") // ...and later Ann asks for no email at all
	r4 := s.runAfter(t, r3)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"),
		"a CRM opt-out made after the re-subscribe is a new opt-out, not our echo (echoSkipped=%d)", r4.Counts.CRMToMarketing.EchoSkipped)
}

// Eve opts out in NetSuite; the crm-to-marketing step unsubscribes her. She re-subscribes in
// Mailchimp. The CRM record is set back to subscribed, and later she opts
// out again in NetSuite, on the same record. The ledger keys a CRM opt-out
// by record with no time, so the second opt-out is "the same observation"
// dated at the first sighting, older than the re-subscribe: later consent.
func TestAdversarialSecondCRMOptOutOfTheSameRecordAfterAResubscribeIsSent(t *testing.T) {
	s := newStack(t, nil)
	s.member(t, "eve@example.com", connectors.StatusSubscribed)
	eve := s.customer(t, "eve", "eve@example.com", "2")
	s.ns.AddSavedSearch(search, eve)

	r1 := s.run(t)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"))

	s.resubscribe(t, "eve@example.com")
	r2 := s.runAfter(t, r1)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "eve@example.com"), "the later choice stands")

	afterResubscribe()
	setStatus(t, s, "eve", "1")
	r3 := s.runAfter(t, r2)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "eve@example.com"))

	setStatus(t, s, "eve", "2") // a new opt-out, after the re-subscribe
	r4 := s.runAfter(t, r3)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"),
		"the new CRM opt-out is newer than the re-subscribe (laterConsent=%d)", r4.Counts.CRMToMarketing.LaterConsent)
}

// A member bounces (cleaned), then signs up again through a form
// (cleaned → subscribed). The re-subscribe rule only knows members the
// ledger holds as unsubscribed, so the ledger keeps "cleaned" for good,
// and every later CRM opt-out of the person is skipped as "already
// unsubscribed or cleaned" while the member is subscribed.
func TestAdversarialCleanedMemberWhoSignsUpAgainStillGetsTheirCRMOptOut(t *testing.T) {
	s := newStack(t, nil)
	s.member(t, "cid@example.com", connectors.StatusCleaned)
	cid := s.customer(t, "cid", "cid@example.com", "1")
	s.ns.AddSavedSearch(search, cid)

	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.MarketingToCRM.Cleaned)

	s.resubscribe(t, "cid@example.com") // a signup form re-adds a cleaned address
	r2 := s.runAfter(t, r1)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "cid@example.com"))

	afterResubscribe()
	setStatus(t, s, "cid", "2") // then the person opts out in NetSuite
	r3 := s.runAfter(t, r2)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "cid@example.com"),
		"a CRM opt-out of a subscribed member is sent (alreadyUnsubscribed=%d)", r3.Counts.CRMToMarketing.AlreadyUnsub)
}

// Ann unsubscribed in Mailchimp days ago; one of her NetSuite records is
// also opted out in NetSuite (first seen by the crm-to-marketing step after the unsubscribe,
// so the ledger's "opt-out kind" becomes crm-opt-out). A web-store order
// then creates a new customer with her address. The late-record rule only
// acts on persons whose *latest* opt-out is a marketing one, so the new
// record stays subscribed although her Mailchimp unsubscribe still stands.
func TestAdversarialLateRecordIsOptedOutEvenWhenTheAddressAlsoHasACRMOptOut(t *testing.T) {
	s := newStack(t, nil)
	days := time.Now().AddDate(0, 0, -3)
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "ann@example.com", Status: "unsubscribed", LastChanged: days, UnsubscribedAt: days}))
	ann := s.customer(t, "ann", "ann@example.com", "4")
	s.ns.AddSavedSearch(search, ann)

	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.MarketingToCRM.CRMAlreadyOut)

	s.customer(t, "ann-order", "ann@example.com", "1") // a web-store order
	r2 := s.runAfter(t, r1)
	require.Equal(t, "2", s.subscription(t, "ann-order"),
		"a record created after the unsubscribe gets the opt-out (lateOptedOut=%d)", r2.Counts.MarketingToCRM.LateOptedOut)
}

// An address permanently deleted ("forgotten") in Mailchimp refuses the
// unsubscribe of its CRM opt-out: final, recorded as refused. The person
// then signs up again through a form (Mailchimp's own answer says they
// may), and afterwards opts out again in NetSuite on a new record. The
// refusal is kept per address for ever, so the new opt-out is never sent.
func TestAdversarialForgottenAddressThatSignsUpAgainGetsItsNewCRMOptOut(t *testing.T) {
	s := newStack(t, nil)
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "gone@example.com", Forgotten: true}))
	first := s.customer(t, "gone", "gone@example.com", "2")
	s.ns.AddSavedSearch(search, first)

	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.ComplianceHeld, "refused: permanently deleted")

	s.resubscribe(t, "gone@example.com") // signs up again
	r2 := s.runAfter(t, r1)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "gone@example.com"))

	afterResubscribe()
	again := s.contact(t, "gone-again", "gone@example.com", "2") // a new opt-out, after the sign-up
	s.ns.AddToSavedSearch(search, again)
	r3 := s.runAfter(t, r2)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "gone@example.com"),
		"a new CRM opt-out after the sign-up is sent (knownRefused=%d)", r3.Counts.CRMToMarketing.KnownRefused)
}

// An unsubscribe cannot be written to its NetSuite record for now (a
// transient failure): it is pending, and the run's propagation age counts
// from it. Before the next run the record's email is corrected to someone
// else's address, so nothing of Ann is left in the CRM: the next run reads
// her unsubscribe again (the watermark was held), finds no record and has
// nothing to write. The pending row is only ever cleared by a write, so the
// propagation age of an opt-out with nothing left to propagate grows for
// ever, in every later run's status and result.
func TestAdversarialPendingOptOutWithNothingLeftToWriteDoesNotAgeForever(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.CRMToMarketing = false })
	s.member(t, "ann@example.com", connectors.StatusUnsubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "1")
	s.ns.FailWrites(ann, true)
	time.Sleep(1100 * time.Millisecond)
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.MarketingToCRM.Failed)
	require.NotNil(t, r1.OldestPending)

	s.ns.FailWrites(ann, false)
	require.NoError(t, s.ns.Update(ann.Type, ann.ID, func(e *netsuitetest.Entity) { e.Email = "someone-else@example.com" }))
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.NotInCRM, "Ann's unsubscribe was read again and has no record left")
	r3 := s.runAfter(t, r2)
	require.Nil(t, r3.OldestPending, "nothing is left to write: no opt-out is pending (age %ds)", r3.PropagationAgeSeconds)
}
