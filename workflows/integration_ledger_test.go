package workflows_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
)

// The tests of this file each reproduce one way the sync, with only
// watermarks to remember, lost or undid an opt-out, and check that the
// consent ledger closes it: real in-process Temporal, the emulators over
// HTTP, the ledger on SQLite, exact final states on both sides.

func (s *stack) member(t *testing.T, email string, st connectors.MemberStatus) {
	t.Helper()
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: string(st)}))
}

func (s *stack) customer(t *testing.T, key, email, status string) connectors.RecordRef {
	t.Helper()
	ref := connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: email, SubscriptionStatus: status})}
	s.refs[key] = ref
	return ref
}

func (s *stack) contact(t *testing.T, key, email, status string) connectors.RecordRef {
	t.Helper()
	ref := connectors.RecordRef{Type: "contact", ID: s.ns.AddContact(netsuitetest.Entity{Email: email, SubscriptionStatus: status})}
	s.refs[key] = ref
	return ref
}

// resubscribe is the person signing up again through a form, after t.
func (s *stack) resubscribe(t *testing.T, email string) {
	t.Helper()
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: "subscribed", LastChanged: time.Now().Add(2 * time.Second)}))
}

// afterResubscribe waits until a change made now is newer than the
// re-subscribe s.resubscribe seeded (two seconds in the future).
func afterResubscribe() { time.Sleep(3 * time.Second) }

// 1. More records than a batch behind one batch of addresses.
func TestIntegrationDuplicatesPastABatchComplete(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.CRMToMarketing = false })
	const n = 150 // 150 addresses × (customer + contact) = 300 records > MaxBatch 200
	for i := range n {
		e := fmt.Sprintf("dup%d@example.com", i)
		s.member(t, e, connectors.StatusUnsubscribed)
		s.customer(t, "c"+e, e, "1")
		s.contact(t, "k"+e, strings.ToUpper(e), "1")
	}
	res := s.run(t)
	m := res.Counts.MarketingToCRM
	require.Equal(t, n, m.Unsubscribes)
	require.Equal(t, 2*n, m.CRMOptedOut)
	require.Equal(t, n, m.DuplicateRecords)
	require.Zero(t, m.Failed)
	for i := range n {
		e := fmt.Sprintf("dup%d@example.com", i)
		require.Equal(t, "2", s.subscription(t, "c"+e), e)
		require.Equal(t, "2", s.subscription(t, "k"+e), e)
	}
	require.Equal(t, res.StartedAt.Add(-s.settings.Overlap), res.Next.Unsubscribed, "the watermark moved")
}

func TestIntegrationSalesforceContactAndLeadPastABatchComplete(t *testing.T) {
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	sf := salesforcetest.NewServer(salesforcetest.Options{})
	t.Cleanup(sf.Close)
	mc.AddList(audience, "Demo audience")
	var ids []string
	for i := range 120 { // 240 records > the 200 of one composite call
		e := fmt.Sprintf("p%d@example.com", i)
		require.NoError(t, mc.AddMember(audience, mailchimptest.MemberSeed{Email: e, Status: "unsubscribed"}))
		ids = append(ids, sf.AddContact(salesforcetest.Person{LastName: "C", Email: e}), sf.AddLead(salesforcetest.Person{LastName: "L", Email: e}))
	}
	s := newSalesforceStack(t, mc, sf, sf.AddCampaign("C"))
	res := s.run(t)
	require.Equal(t, 240, res.Counts.MarketingToCRM.CRMOptedOut)
	for _, id := range ids {
		rec, ok := sf.Record(id)
		require.True(t, ok)
		require.Equal(t, true, rec["HasOptedOutOfEmail"], id)
	}
}

// 2. A CRM record that appears (or gets the address) after the unsubscribe.
func TestIntegrationCRMRecordCreatedAfterTheUnsubscribeIsOptedOut(t *testing.T) {
	s := newStack(t, nil)
	// Unsubscribed days ago: the second run's watermark is past them, so
	// only the ledger remembers them.
	for _, e := range []string{"late@example.com", "edit@example.com"} {
		days := time.Now().AddDate(0, 0, -3)
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: e, Status: "unsubscribed", LastChanged: days, UnsubscribedAt: days}))
	}
	other := s.customer(t, "other", "someone@example.com", "1")
	s.ns.AddSavedSearch(search)
	first := s.run(t)
	require.Equal(t, 2, first.Counts.MarketingToCRM.NotInCRM)

	// A web-store order creates the customer; an existing record's email is
	// edited to the other address.
	s.customer(t, "late", "Late@Example.com", "1")
	require.NoError(t, s.ns.Update(other.Type, other.ID, func(e *netsuitetest.Entity) { e.Email = "edit@example.com" }))
	s.customer(t, "bystander", "new-customer@example.com", "1")

	second := s.runAfter(t, first)
	require.Equal(t, "2", s.subscription(t, "late"), "created after the unsubscribe: opted out")
	require.Equal(t, "2", s.subscription(t, "other"), "changed to an unsubscribed address: opted out")
	require.Equal(t, "1", s.subscription(t, "bystander"))
	require.Equal(t, 2, second.Counts.MarketingToCRM.LateOptedOut)
	require.Zero(t, second.Counts.MarketingToCRM.Unsubscribes, "the unsubscribes themselves were not read again")
	require.Contains(t, notesText(second), "created or given an address after its marketing unsubscribe")

	third := s.runAfter(t, second)
	require.Zero(t, third.Counts.MarketingToCRM.LateOptedOut, "nothing is written twice")
}

// 3a. A campaign added to the lists after its opted-out members were
// counted outside them.
func TestIntegrationSalesforceCampaignAddedToTheListsIsReadFromTheBeginning(t *testing.T) {
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	sf := salesforcetest.NewServer(salesforcetest.Options{})
	t.Cleanup(sf.Close)
	mc.AddList(audience, "Demo audience")
	first, second := sf.AddCampaign("First"), sf.AddCampaign("Second")
	require.NoError(t, mc.AddMember(audience, mailchimptest.MemberSeed{Email: "out@example.com", Status: "subscribed"}))
	out := sf.AddContact(salesforcetest.Person{LastName: "Out", Email: "out@example.com", OptedOut: true})
	sf.AddCampaignMember(second, out)
	s := newSalesforceStack(t, mc, sf, first)
	time.Sleep(1100 * time.Millisecond) // the seed is older than the watermark

	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.OutsideLists)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "out@example.com"))

	s.reg.configure(func(st *activities.Settings) { st.Lists = []string{first, second} })
	r2 := s.runAfter(t, r1)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "out@example.com"), "the promise of the note is kept")
	require.Equal(t, 1, r2.Counts.CRMToMarketing.Unsubscribed)
	require.Contains(t, notesText(r2), "crm-to-marketing reads from the beginning once: its settings (audience, record types, lists, opt-out field or addAbsentAsUnsubscribed) changed")

	r3 := s.runAfter(t, r2)
	require.NotContains(t, notesText(r3), "reads from the beginning", "once")
}

// 3b. The opt-out field switched from the standard one to a custom one.
func TestIntegrationOptOutFieldSwitchedReadsBothDirectionsAgain(t *testing.T) {
	s := newStack(t, nil)
	s.member(t, "ann@example.com", connectors.StatusUnsubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "1")
	s.member(t, "eve@example.com", connectors.StatusSubscribed)
	// Opted out in the custom field only; the field exists on every record
	// once it is seeded on one.
	eve := connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: "eve@example.com",
		SubscriptionStatus: "1", Custom: map[string]any{"custentity_optout": true}})}
	s.refs["eve"] = eve
	s.ns.AddSavedSearch(search, ann, eve)
	r1 := s.run(t)
	require.Equal(t, "2", s.subscription(t, "ann"), "standard field first")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "eve@example.com"), "the custom field is not the opt-out yet")

	s.reg.configure(func(st *activities.Settings) {
		st.OptOut = connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "custentity_optout"}
	})
	r2 := s.runAfter(t, r1)
	e, ok := s.ns.Entity(ann.Type, ann.ID)
	require.True(t, ok)
	require.Equal(t, true, e.Custom["custentity_optout"], "the earlier unsubscribe reaches the new field")
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"), "the earlier custom opt-out reaches the audience")
	require.Contains(t, notesText(r2), "marketing-to-crm (unsubscribes) reads from the beginning once")
}

// 4. An address change in Mailchimp, then an unsubscribe.
func TestIntegrationAddressChangedThenUnsubscribedIsNeverReAdded(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) {
		st.FieldMap = map[string]string{"firstName": "FNAME"}
	})
	s.member(t, "old@example.com", connectors.StatusSubscribed)
	old := s.customer(t, "old", "old@example.com", "1")
	s.ns.AddSavedSearch(search, old)
	r1 := s.run(t) // field sync looks the member up: the ledger learns its contact

	require.NoError(t, s.mc.ChangeEmail(audience, "old@example.com", "new@example.com"))
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "new@example.com", Status: "unsubscribed", LastChanged: time.Now().Add(time.Second)}))
	// The CRM record is edited (the name), so field sync reads it again.
	require.NoError(t, s.ns.Update(old.Type, old.ID, func(e *netsuitetest.Entity) { e.FirstName = "Olga" }))

	r2 := s.runAfter(t, r1)
	_, readded := s.mc.Member(audience, "old@example.com")
	require.False(t, readded, "the old address of an unsubscribed member is not added back")
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "new@example.com"))
	// The edited record of the old address is a late record of the same
	// person: it gets the opt-out, and field sync then leaves it out (the
	// audience mirror holds the old address as moved with its contact).
	require.Equal(t, 1, r2.Counts.MarketingToCRM.LateOptedOut)
	require.Equal(t, "2", s.subscription(t, "old"), "the CRM record of the old address gets the opt-out")
	require.Equal(t, 1, r2.Counts.FieldSync.SkippedBlocked)
	require.Zero(t, r2.Counts.FieldSync.FieldsUpdated+r2.Counts.FieldSync.MembersAdded)
	people, err := s.ledger.People(t.Context(), s.id, []string{s.ledger.Person("old@example.com")})
	require.NoError(t, err)
	require.True(t, people[s.ledger.Person("old@example.com")].OptedOut, "the ledger suppresses the earlier address")
	require.Equal(t, "contact", people[s.ledger.Person("old@example.com")].Via)
}

// 5. A person's later choice is not overridden, and our own writes do not echo.
func TestIntegrationLaterResubscribeIsNotRevertedAndOwnWritesDoNotEcho(t *testing.T) {
	s := newStack(t, nil)
	s.member(t, "ann@example.com", connectors.StatusUnsubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "1")
	s.member(t, "eve@example.com", connectors.StatusSubscribed)
	eve := s.customer(t, "eve", "eve@example.com", "2")
	s.ns.AddSavedSearch(search, ann, eve)

	r1 := s.run(t)
	require.Equal(t, "2", s.subscription(t, "ann"))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"))
	k := r1.Counts.CRMToMarketing
	require.Equal(t, 1, k.Unsubscribed, "eve only")
	require.Equal(t, 1, k.EchoSkipped, "ann's opt-out came from Mailchimp: not sent back")

	// Both re-subscribe through a form.
	s.resubscribe(t, "ann@example.com")
	s.resubscribe(t, "eve@example.com")
	r2 := s.runAfter(t, r1)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "ann@example.com"), "the later choice stands")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "eve@example.com"), "the later choice stands")
	require.Equal(t, "2", s.subscription(t, "ann"), "the CRM field is left as it is")
	require.Equal(t, "2", s.subscription(t, "eve"))
	require.Equal(t, 2, r2.Counts.MarketingToCRM.Resubscribes)
	require.Equal(t, 1, r2.Counts.CRMToMarketing.LaterConsent)
	require.Zero(t, r2.Counts.CRMToMarketing.Unsubscribed)
	require.Contains(t, notesText(r2), connectors.AddressHash("eve@example.com"), "named by address hash")

	r3 := s.runAfter(t, r2)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "eve@example.com"), "and on every later run")
	require.Zero(t, r3.Counts.CRMToMarketing.Unsubscribed)

	// A new opt-out in the CRM after the re-subscribe is sent.
	afterResubscribe()
	require.NoError(t, s.ns.Update(eve.Type, eve.ID, func(e *netsuitetest.Entity) { e.SubscriptionStatus = "1" }))
	s.contact(t, "eve2", "eve@example.com", "4")
	s.ns.AddToSavedSearch(search, s.refs["eve2"])
	r4 := s.runAfter(t, r3)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"), "a newer opt-out wins")
	require.Equal(t, 1, r4.Counts.CRMToMarketing.Unsubscribed)
}

// 6. An address the marketing platform refuses for good.
func TestIntegrationFinalRefusalDoesNotHoldTheWatermark(t *testing.T) {
	s := newStack(t, nil)
	bad := s.customer(t, "bad", "bad@example.c", "2") // Mailchimp: "looks fake or invalid"
	good := s.customer(t, "good", "good@example.com", "2")
	s.ns.AddSavedSearch(search, bad, good)
	r1 := s.run(t)
	k := r1.Counts.CRMToMarketing
	require.Equal(t, 1, k.Refused)
	require.Zero(t, k.Failed)
	require.Equal(t, r1.StartedAt.Add(-s.settings.Overlap), r1.Next.CRMOptOuts, "a final answer does not hold the watermark")
	require.Len(t, r1.Failures, 1)
	require.True(t, r1.Failures[0].Final)
	require.False(t, r1.Failures[0].HoldsWatermark)
	require.Equal(t, connectors.AddressHash("bad@example.c"), r1.Failures[0].AddressHash)
	require.Contains(t, notesText(r1), "refused for good")
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "good@example.com"))

	s.mc.ResetCounts()
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.CRMToMarketing.KnownRefused, "not asked again")
	require.Zero(t, s.mc.Counts()["POST /lists/{list_id}"], "no unsubscribe call at all: good is known unsubscribed, bad known refused")
}

// 7. Counts that tell the truth.
func TestIntegrationCountsTellChangedFromAlreadyFromAdded(t *testing.T) {
	s := newStack(t, nil)
	s.member(t, "sub@example.com", connectors.StatusSubscribed)
	sub := s.customer(t, "sub", "sub@example.com", "2")
	s.member(t, "uns@example.com", connectors.StatusUnsubscribed)
	uns := s.customer(t, "uns", "uns@example.com", "4") // opted out on both sides already
	abs := s.customer(t, "abs", "absent@example.com", "2")
	s.ns.AddSavedSearch(search, sub, uns, abs)

	r1 := s.run(t)
	k := r1.Counts.CRMToMarketing
	require.Equal(t, 1, k.Unsubscribed, "sub changed")
	require.Equal(t, 1, k.AddedUnsub, "absent was added as unsubscribed")
	require.Equal(t, 1, k.AlreadyUnsub, "uns already was")
	require.Contains(t, notesText(r1), "1 member(s) changed to unsubscribed, 1 address(es) not in the audience added as unsubscribed, 1 already unsubscribed")

	// The saved search is read again every run: nothing is counted as done twice.
	r2 := s.runAfter(t, r1)
	require.Zero(t, r2.Counts.CRMToMarketing.Unsubscribed)
	require.Equal(t, 3, r2.Counts.CRMToMarketing.AlreadyUnsub)
	// The unsubscribes the first run wrote, read back by marketing-to-crm,
	// find their CRM records already opted out: nothing is written.
	require.Zero(t, r2.Counts.MarketingToCRM.CRMOptedOut)
}

// Propagation age: an opt-out that cannot be written yet is pending, with
// its age in the status and the result, until a later run writes it.
func TestIntegrationPropagationAgeOfAnOptOutNotYetWritten(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.CRMToMarketing = false })
	s.member(t, "ann@example.com", connectors.StatusUnsubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "1")
	// NetSuite refuses the record for now (a server error: transient).
	s.ns.FailWrites(ann, true)
	time.Sleep(1100 * time.Millisecond) // the record is older than the run
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.MarketingToCRM.Failed)
	require.NotNil(t, r1.OldestPending)
	require.True(t, r1.Next.Unsubscribed.IsZero(), "held")
	require.Contains(t, notesText(r1), "The oldest opt-out not yet written to its other side was first seen")

	s.ns.FailWrites(ann, false)
	r2 := s.runAfter(t, r1)
	require.Equal(t, "2", s.subscription(t, "ann"))
	require.Nil(t, r2.OldestPending)
	require.Zero(t, r2.PropagationAgeSeconds)

	h, err := s.ledger.History(t.Context(), s.ledger.Person("ann@example.com"))
	require.NoError(t, err)
	var results []string
	for _, e := range h {
		results = append(results, e.Type+":"+e.Kind+":"+e.Result)
	}
	require.Contains(t, results, "wrote:crm-opt-out:failed")
	require.Contains(t, results, "wrote:crm-opt-out:written")
}

// With addAbsentAsUnsubscribed off, a CRM opt-out whose address the
// audience lacks (or holds archived) adds no billed member; the ledger
// remembers it, so a list read again looks nobody up again, and an
// import of the address later is unsubscribed, while the person's own
// re-subscribe after that stands.
func TestIntegrationAbsentOptOutIsNotAddedAndIsUnsubscribedWhenItJoins(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	s.member(t, "sub@example.com", connectors.StatusSubscribed)
	sub := s.customer(t, "sub", "sub@example.com", "2")
	abs := s.customer(t, "abs", "absent@example.com", "2")
	s.member(t, "arc@example.com", connectors.StatusArchived)
	arc := s.customer(t, "arc", "arc@example.com", "2")
	s.ns.AddSavedSearch(search, sub, abs, arc)

	r1 := s.run(t)
	k := r1.Counts.CRMToMarketing
	require.Equal(t, 1, k.Unsubscribed, "sub changed")
	require.Zero(t, k.AddedUnsub, "nothing added")
	require.Equal(t, 2, k.AbsentNotAdded, "absent and archived")
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "sub@example.com"))
	_, ok := s.mc.Member(audience, "absent@example.com")
	require.False(t, ok, "an absent address is not added")
	require.Equal(t, connectors.StatusArchived, s.status(t, "arc@example.com"), "an archived member stays archived (free)")
	require.Contains(t, notesText(r1), "2 opted-out address(es) are not in the audience (or are archived there) and were not added")
	require.Equal(t, 3, s.mc.Counts()[memberGET], "each address looked up once")
	require.Equal(t, 1, s.mc.Counts()["POST /lists/{list_id}"], "one unsubscribe call, for sub alone")

	// The saved search is read again: the ledger knows both as absent.
	s.mc.ResetCounts()
	r2 := s.runAfter(t, r1)
	require.Equal(t, 2, r2.Counts.CRMToMarketing.AbsentNotAdded)
	require.Zero(t, s.mc.Counts()[memberGET], "not looked up again")
	require.Zero(t, s.mc.Counts()["POST /lists/{list_id}"])

	// Someone imports the absent address: joining is not the person's consent.
	s.member(t, "absent@example.com", connectors.StatusSubscribed)
	r3 := s.runAfter(t, r2)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "absent@example.com"), "the opt-out wins over the import")
	require.Equal(t, 1, r3.Counts.MarketingToCRM.JoinedUnsub)
	require.Zero(t, r3.Counts.MarketingToCRM.Resubscribes, "a join is not a re-subscribe")
	require.Contains(t, notesText(r3), "1 member(s) joined the audience after a CRM opt-out")
	require.Equal(t, "2", s.subscription(t, "abs"), "the CRM record is left opted out")

	// The person then re-subscribes through a form: that is consent.
	afterResubscribe()
	s.resubscribe(t, "absent@example.com")
	r4 := s.runAfter(t, r3)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "absent@example.com"), "the later choice stands")
	require.Equal(t, 1, r4.Counts.MarketingToCRM.Resubscribes)
	require.Zero(t, r4.Counts.MarketingToCRM.JoinedUnsub)
	r5 := s.runAfter(t, r4)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "absent@example.com"), "and on every later run")
	require.Equal(t, 1, r5.Counts.CRMToMarketing.LaterConsent)

	// Turning the setting back on reads the step from the beginning and
	// adds the archived address as an unsubscribed member.
	s.reg.configure(func(st *activities.Settings) { st.SkipAbsent = false })
	r6 := s.runAfter(t, r5)
	require.Contains(t, notesText(r6), "crm-to-marketing reads from the beginning once")
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "arc@example.com"))
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "absent@example.com"), "the re-subscribe still stands")
}

// The integration is pointed at another audience. What the ledger knows of
// the old audience's members (unsubscribed there, absent from it) is not
// taken for the new audience's: the CRM opt-outs, read again from the
// beginning, reach the new audience.
func TestIntegrationAudienceSwitchSendsCRMOptOutsToTheNewAudience(t *testing.T) {
	const other = "aud-other"
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	s.mc.AddList(other, "Other audience")
	s.member(t, "bob@example.com", connectors.StatusUnsubscribed)
	bob := s.customer(t, "bob", "bob@example.com", "2") // the CRM's own opt-out
	cat := s.customer(t, "cat", "cat@example.com", "2") // not in the first audience
	s.member(t, "ann@example.com", connectors.StatusUnsubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "1") // opted out by the product, from the first audience
	for _, e := range []string{"ann@example.com", "bob@example.com", "cat@example.com"} {
		require.NoError(t, s.mc.AddMember(other, mailchimptest.MemberSeed{Email: e, Status: "subscribed"}))
	}
	s.ns.AddSavedSearch(search, ann, bob, cat)
	r1 := s.run(t)
	require.Equal(t, "2", s.subscription(t, "ann"))
	require.Equal(t, 1, r1.Counts.CRMToMarketing.EchoSkipped, "ann")
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AlreadyUnsub, "bob")
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AbsentNotAdded, "cat")

	s.reg.configure(func(st *activities.Settings) { st.Audience = other })
	r2 := s.runAfter(t, r1)
	require.Contains(t, notesText(r2), "crm-to-marketing reads from the beginning once")
	for _, e := range []string{"ann@example.com", "bob@example.com", "cat@example.com"} {
		m, ok := s.mc.Member(other, e)
		require.True(t, ok)
		require.Equal(t, "unsubscribed", m.Status, "%s's CRM opt-out reaches the new audience", e)
	}
	require.Equal(t, 3, r2.Counts.CRMToMarketing.Unsubscribed, "ann's opt-out came from the old audience: no echo in the new one")

	// The next run knows all three as unsubscribed in the new audience.
	s.mc.ResetCounts()
	r3 := s.runAfter(t, r2)
	require.Equal(t, 1, r3.Counts.CRMToMarketing.EchoSkipped, "ann")
	require.Equal(t, 2, r3.Counts.CRMToMarketing.AlreadyUnsub, "bob and cat")
	require.Zero(t, s.mc.Counts()["POST /lists/{list_id}"])
}

// An opt-out held back as absent while crm-to-marketing was on is still
// sent when its address joins, even with crm-to-marketing turned off since:
// the hold stands for an unsubscribe that was due, and turning the step
// back on reads no unchanged record again to send it then.
func TestIntegrationAbsentJoinIsUnsubscribedAfterCRMToMarketingIsTurnedOff(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	abs := s.customer(t, "abs", "absent@example.com", "2")
	s.ns.AddSavedSearch(search, abs)
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.CRMToMarketing.AbsentNotAdded)

	s.reg.configure(func(st *activities.Settings) { st.CRMToMarketing = false })
	s.member(t, "absent@example.com", connectors.StatusSubscribed)
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.JoinedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "absent@example.com"))
}
