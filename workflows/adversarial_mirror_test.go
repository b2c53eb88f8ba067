package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/workflows"
)

// Adversarial scenarios for the audience mirror (field-sync:audience and
// field sync on the mirror). Each test ends in the state the product
// promises: no one re-added or re-subscribed, no opt-out lost, no field
// written to an unsubscribed, cleaned or archived member, nothing written
// again and again. Real Temporal, the emulators over HTTP, the ledger on
// SQLite.

// newMirrorStack is newStackWithOptions with the FNAME merge field.
func newMirrorStack(t *testing.T, opts mailchimptest.Options, mutate func(*activities.Settings), led ledger.Ledger) *stack {
	t.Helper()
	s := newStackWithOptions(t, opts, mutate, led)
	s.mc.AddList(audience, "Demo audience", "FNAME")
	return s
}

// fieldMapped is the settings of these tests: one mapped field, and
// crm-to-marketing off so that field sync alone decides what is written.
func fieldMapped(st *activities.Settings) {
	st.CRMToMarketing = false
	st.FieldMap = map[string]string{"firstName": "FNAME"}
}

// seedMember seeds a member of list with FNAME, changed at lc (zero: now).
func seedMember(t *testing.T, s *stack, list, email, status, fname string, lc time.Time) {
	t.Helper()
	require.NoError(t, s.mc.AddMember(list, mailchimptest.MemberSeed{Email: email, Status: status,
		MergeFields: map[string]string{"FNAME": fname}, LastChanged: lc}))
}

// crmPerson adds a customer in the saved search, modified an hour ago.
func crmPerson(t *testing.T, s *stack, key, email, first string) connectors.RecordRef {
	t.Helper()
	ref := connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: email, FirstName: first,
		SubscriptionStatus: "1", LastModified: time.Now().Add(-time.Hour)})}
	s.refs[key] = ref
	s.ns.AddToSavedSearch(search, ref)
	return ref
}

func rename(t *testing.T, s *stack, key, first string) {
	t.Helper()
	ref := s.refs[key]
	require.NoError(t, s.ns.Update(ref.Type, ref.ID, func(e *netsuitetest.Entity) { e.FirstName = first }))
}

func fname(t *testing.T, s *stack, list, email string) string {
	t.Helper()
	m, ok := s.mc.Member(list, email)
	require.True(t, ok, email)
	return m.MergeFields["FNAME"]
}

// fieldReadHook runs fn once, when field sync first reads the CRM's list
// members: after the field-sync:audience phase has mirrored the audience,
// before field sync writes anything.
type fieldReadHook struct {
	connectors.CRM
	once sync.Once
	fn   func()
}

func (h *fieldReadHook) ListMembers(ctx context.Context, q connectors.ListMembersQuery) (connectors.RecordPage, error) {
	if len(q.Fields) > 0 {
		h.once.Do(h.fn)
	}
	return h.CRM.ListMembers(ctx, q)
}

// swapLedger is a ledger the test switches between runs (a restore from
// backup, a failover, a worker pointed at another database).
type swapLedger struct{ ledger.Ledger }

// 1. A member who unsubscribes, bounces or is archived after the audience
// phase mirrored them as subscribed, and before field sync writes, gets
// no field update (the per-member GET this replaces read the status right
// before writing). A member permanently deleted in that window is not
// added back.
func TestMirrorMemberBlockedAfterTheAudiencePhaseGetsNoFields(t *testing.T) {
	s := newStack(t, fieldMapped)
	s.mc.AddList(audience, "Demo audience", "FNAME")
	hourAgo := time.Now().Add(-time.Hour)
	for _, e := range []string{"bob", "cid", "amy", "dan"} {
		seedMember(t, s, audience, e+"@example.com", "subscribed", "Old", hourAgo)
		crmPerson(t, s, e, e+"@example.com", "New-"+e)
	}
	s.reg.mu.Lock()
	s.reg.in.CRM = &fieldReadHook{CRM: s.reg.in.CRM, fn: func() {
		// Between the two phases of field sync, in Mailchimp:
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "bob@example.com", Status: "unsubscribed"}))
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "cid@example.com", Status: "cleaned"}))
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "amy@example.com", Status: "archived"}))
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "dan@example.com", Forgotten: true}))
	}}
	s.reg.mu.Unlock()

	r := s.run(t)
	f := r.Counts.FieldSync
	assert.Equal(t, "Old", fname(t, s, audience, "bob@example.com"), "bob unsubscribed before field sync: no field update (updated=%d blocked=%d)", f.FieldsUpdated, f.SkippedBlocked)
	assert.Equal(t, "Old", fname(t, s, audience, "cid@example.com"), "cid bounced before field sync: no field update")
	assert.Equal(t, "Old", fname(t, s, audience, "amy@example.com"), "amy was archived before field sync: no field update")
	assert.Equal(t, connectors.StatusUnsubscribed, s.status(t, "bob@example.com"))
	assert.Equal(t, connectors.StatusCleaned, s.status(t, "cid@example.com"))
	assert.Equal(t, connectors.StatusArchived, s.status(t, "amy@example.com"))
	dan, _ := s.mc.Member(audience, "dan@example.com")
	assert.True(t, dan.Forgotten, "a permanently deleted member is not added back")
}

// 2. The integration is pointed at another audience. The mirror is keyed
// by integration and person only, and keeps a row unless the row read is
// newer: the new audience's state of a person, read from the beginning,
// is older than the old audience's row and is dropped, so field sync
// takes an unsubscribed member of the new audience for subscribed.
func TestMirrorAudienceSwitchDoesNotTrustTheOldAudiencesRows(t *testing.T) {
	const other = "aud-other"
	s := newStack(t, fieldMapped)
	s.mc.AddList(audience, "Demo audience", "FNAME")
	s.mc.AddList(other, "Other audience", "FNAME")
	seedMember(t, s, audience, "xav@example.com", "subscribed", "Xavier", time.Now().Add(-time.Hour))
	seedMember(t, s, other, "xav@example.com", "unsubscribed", "Old", time.Now().Add(-3*time.Hour))
	crmPerson(t, s, "xav", "xav@example.com", "Xavier")
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.FieldSync.FieldsUnchanged)

	s.reg.configure(func(st *activities.Settings) { st.Audience = other })
	rename(t, s, "xav", "Xavi")
	r2 := s.runAfter(t, r1)
	f := r2.Counts.FieldSync
	m, ok := s.mc.Member(other, "xav@example.com")
	require.True(t, ok)
	require.Equal(t, "unsubscribed", m.Status)
	assert.Equal(t, "Old", m.MergeFields["FNAME"], "xav is unsubscribed in the new audience: no field update (updated=%d blocked=%d mirrored=%d)",
		f.FieldsUpdated, f.SkippedBlocked, f.Mirrored)
	assert.Equal(t, 1, f.SkippedBlocked)
}

// 3. The mirror lives in the ledger, its watermark in the workflow's
// result. A ledger that missed polls (restored from a backup, a lagging
// replica after failover, a worker pointed at another database for a
// while) keeps rows the watermark says are fresh: here Bob's unsubscribe
// was mirrored only in the other ledger, and field sync, back on the
// first, writes his fields.
func TestMirrorLedgerThatMissedPollsIsNotTrusted(t *testing.T) {
	a, b := ledgertest.Open(t, ledger.SQLite), ledgertest.Open(t, ledger.SQLite)
	led := &swapLedger{a}
	s := newStackWith(t, fieldMapped, led)
	s.mc.AddList(audience, "Demo audience", "FNAME")
	seedMember(t, s, audience, "bob@example.com", "subscribed", "Bob", time.Now().Add(-time.Hour))
	crmPerson(t, s, "bob", "bob@example.com", "Bob")
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.FieldSync.FieldsUnchanged)

	time.Sleep(s.settings.Overlap + time.Second)
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "bob@example.com", Status: "unsubscribed"}))
	time.Sleep(s.settings.Overlap + time.Second) // the next run's watermark passes the unsubscribe
	led.Ledger = b
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.Unsubscribes)

	led.Ledger = a
	rename(t, s, "bob", "Robert")
	r3 := s.runAfter(t, r2)
	f := r3.Counts.FieldSync
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "bob@example.com"))
	assert.Equal(t, "Bob", fname(t, s, audience, "bob@example.com"), "bob is unsubscribed: no field update (updated=%d blocked=%d)", f.FieldsUpdated, f.SkippedBlocked)
}

// 4. A brand-new ledger under old watermarks mirrors only recent changes;
// every other member is looked up, so an archived or unsubscribed member
// changed long ago is still left alone.
func TestMirrorNewLedgerUnderOldWatermarksLooksTheRestUp(t *testing.T) {
	led := &swapLedger{ledgertest.Open(t, ledger.SQLite)}
	s := newStackWith(t, fieldMapped, led)
	s.mc.AddList(audience, "Demo audience", "FNAME")
	hourAgo := time.Now().Add(-time.Hour)
	seedMember(t, s, audience, "cat@example.com", "archived", "Cat", hourAgo)
	seedMember(t, s, audience, "uma@example.com", "unsubscribed", "Uma", hourAgo)
	seedMember(t, s, audience, "ann@example.com", "subscribed", "Ann", hourAgo)
	for _, k := range []string{"cat", "uma", "ann"} {
		crmPerson(t, s, k, k+"@example.com", strings.ToUpper(k[:1])+k[1:])
	}
	r1 := s.run(t)

	led.Ledger = ledgertest.Open(t, ledger.SQLite)
	for _, k := range []string{"cat", "uma", "ann"} {
		rename(t, s, k, "New")
	}
	s.mc.ResetCounts()
	r2 := s.runAfter(t, r1)
	f := r2.Counts.FieldSync
	require.Zero(t, f.Mirrored, "nothing changed in the audience since the watermark")
	require.Equal(t, 3, s.mc.Counts()[memberGET], "members the new mirror lacks are looked up")
	require.Equal(t, 2, f.SkippedBlocked)
	require.Equal(t, "Cat", fname(t, s, audience, "cat@example.com"))
	require.Equal(t, "archived", string(s.status(t, "cat@example.com")))
	require.Equal(t, "Uma", fname(t, s, audience, "uma@example.com"))
	require.Equal(t, "New", fname(t, s, audience, "ann@example.com"))
	require.Zero(t, f.MembersAdded)
}

// 5. Default emulator (contact_id survives an address change). A member
// changes address in Mailchimp; the CRM keeps the old one. The audience
// phase reads the new address with the contact and deletes the old
// address's mirror row; field sync then finds the old address nowhere
// and PUTs it as a new subscribed member. When the person later
// unsubscribes (at the address they use now), the address the product
// created stays subscribed: the person opted out and is still mailed.
func TestMirrorRenamedMembersOldAddressIsNotReAdded(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.FieldMap = map[string]string{"firstName": "FNAME"} })
	s.mc.AddList(audience, "Demo audience", "FNAME")
	seedMember(t, s, audience, "old@example.com", "subscribed", "Olga", time.Now().Add(-time.Hour))
	crmPerson(t, s, "old", "old@example.com", "Olga")
	r1 := s.run(t)

	require.NoError(t, s.mc.ChangeEmail(audience, "old@example.com", "new@example.com"))
	rename(t, s, "old", "Olga B.")
	r2 := s.runAfter(t, r1)
	_, readded := s.mc.Member(audience, "old@example.com")
	assert.False(t, readded, "the address the member left is not added back (added=%d)", r2.Counts.FieldSync.MembersAdded)

	// Later the person unsubscribes, at the address they use now.
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "new@example.com", Status: "unsubscribed", LastChanged: time.Now().Add(time.Second)}))
	afterResubscribe()
	r3 := s.runAfter(t, r2)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "new@example.com"))
	if m, ok := s.mc.Member(audience, "old@example.com"); ok {
		assert.NotEqual(t, "subscribed", m.Status, "the person opted out: no address of theirs stays subscribed (crm old=%s, unsubscribes=%d late=%d)",
			s.subscription(t, "old"), r3.Counts.MarketingToCRM.Unsubscribes, r3.Counts.MarketingToCRM.LateOptedOut)
	}
}

// 6. ContactIDFollowsAddress: the new address gets a new contact_id, so
// nothing links it to the old one. A member changes address and then
// unsubscribes; the CRM keeps the old address, and its record is edited.
func renamedWithNewContactID(t *testing.T) (*stack, workflows.SyncResult) {
	s := newMirrorStack(t, mailchimptest.Options{ContactIDFollowsAddress: true},
		func(st *activities.Settings) { st.FieldMap = map[string]string{"firstName": "FNAME"} }, ledgertest.Open(t, ledger.SQLite))
	seedMember(t, s, audience, "old@example.com", "subscribed", "Olga", time.Now().Add(-time.Hour))
	crmPerson(t, s, "old", "old@example.com", "Olga")
	r1 := s.run(t)

	require.NoError(t, s.mc.ChangeEmail(audience, "old@example.com", "new@example.com"))
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "new@example.com", Status: "unsubscribed", LastChanged: time.Now().Add(time.Second)}))
	rename(t, s, "old", "Olga B.")
	return s, s.runAfter(t, r1)
}

// 6a. The old address's mirror row is stale (nothing deletes it), so field
// sync PATCHes it (404, final) instead of adding it back. Before the
// mirror, the lookup answered 404 and the address was PUT as a new
// subscribed member: this guards the fix.
func TestMirrorRenamedMemberWithNewContactIDOldAddressIsNotReAdded(t *testing.T) {
	s, r2 := renamedWithNewContactID(t)
	_, readded := s.mc.Member(audience, "old@example.com")
	require.False(t, readded, "the old address of an unsubscribed member is not added back (added=%d)", r2.Counts.FieldSync.MembersAdded)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "new@example.com"))
}

// 7. More than 1000 members changed in one second (a bulk import), in an
// order Mailchimp does not keep between requests: the mirror holds every
// one, so field sync looks up only the members it writes and writes none
// of the unsubscribed.
func TestMirrorBulkSecondOfMoreThan1000MembersIsComplete(t *testing.T) {
	s := newMirrorStack(t, mailchimptest.Options{ShuffleEqualTimes: true}, fieldMapped, ledgertest.Open(t, ledger.SQLite))
	const n = 1500
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	require.NoError(t, s.mc.Generate(audience, n, func(i int) mailchimptest.MemberSeed {
		st := "subscribed"
		if i%3 == 0 {
			st = "unsubscribed"
		}
		return mailchimptest.MemberSeed{Email: fmt.Sprintf("bulk%d@example.com", i), Status: st,
			MergeFields: map[string]string{"FNAME": "Old"}, LastChanged: t0, TimestampOpt: t0}
	}))
	picked := []int{0, 1, 2, 3, 700, 701, 1497, 1498, 1499}
	subscribed := 0
	for _, i := range picked {
		crmPerson(t, s, fmt.Sprint(i), fmt.Sprintf("bulk%d@example.com", i), "New")
		if i%3 != 0 {
			subscribed++
		}
	}
	s.mc.ResetCounts()
	r := s.run(t)
	f := r.Counts.FieldSync
	require.Equal(t, n, f.Mirrored)
	counts := s.mc.Counts()
	require.Zero(t, counts[memberPUT], "every member is in the mirror: %v", counts)
	require.Equal(t, subscribed, counts[memberPATCH])
	require.Equal(t, subscribed, counts[memberGET], "only the members written are looked up, just before: %v", counts)
	require.Equal(t, len(picked)-subscribed, f.SkippedBlocked)
	for _, i := range picked {
		want := "New"
		if i%3 == 0 {
			want = "Old"
		}
		require.Equal(t, want, fname(t, s, audience, fmt.Sprintf("bulk%d@example.com", i)), i)
	}
}

// flakyMarketing fails one audience read (nth ChangedMembers call) and
// loses the answer of the first field update after it was applied: an
// activity retried after partial progress.
type flakyMarketing struct {
	connectors.Marketing
	mu            sync.Mutex
	reads, failAt int
	updateLost    bool
}

func (f *flakyMarketing) ChangedMembers(ctx context.Context, req connectors.ChangesRequest) (connectors.MemberPage, error) {
	f.mu.Lock()
	f.reads++
	fail := req.MergeFields && f.reads == f.failAt
	f.mu.Unlock()
	if fail {
		return connectors.MemberPage{}, errors.New("connection reset by peer")
	}
	return f.Marketing.ChangedMembers(ctx, req)
}

func (f *flakyMarketing) UpdateMembers(ctx context.Context, aud string, ms []connectors.MemberFields) (connectors.BatchResult, error) {
	out, err := f.Marketing.UpdateMembers(ctx, aud, ms)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && !f.updateLost {
		f.updateLost = true
		return connectors.BatchResult{}, errors.New("connection reset by peer")
	}
	return out, err
}

// 8. Small pages, continue-as-new after every activity, an audience read
// that fails mid-phase and a field update whose answer is lost: the
// mirror is complete, every subscribed member gets the fields, no blocked
// member does, nothing is looked up or created.
func TestMirrorSurvivesContinueAsNewAndRetriesAfterPartialProgress(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) {
		fieldMapped(st)
		st.PageSize, st.PagesPerActivity = 3, 1
	})
	s.mc.AddList(audience, "Demo audience", "FNAME")
	base := time.Now().Add(-time.Hour)
	statuses := []string{"subscribed", "unsubscribed", "subscribed", "cleaned", "subscribed", "archived",
		"subscribed", "unsubscribed", "subscribed", "cleaned", "unsubscribed", "archived", "subscribed"}
	for i, st := range statuses {
		e := fmt.Sprintf("p%d@example.com", i)
		seedMember(t, s, audience, e, st, "Old", base.Add(time.Duration(i/2)*time.Second))
		crmPerson(t, s, fmt.Sprint(i), e, "New")
	}
	s.reg.mu.Lock()
	s.reg.in.Marketing = &flakyMarketing{Marketing: s.reg.in.Marketing, failAt: 3}
	s.reg.mu.Unlock()
	s.mc.ResetCounts()
	r := s.start(t, workflows.SyncInput{IntegrationID: s.id, ContinueAfter: 1})
	f := r.Counts.FieldSync
	require.Equal(t, len(statuses), f.Mirrored)
	counts := s.mc.Counts()
	require.Zero(t, counts[memberPUT], "%v", counts)
	require.Equal(t, counts[memberPATCH], counts[memberGET], "only the members written are looked up, just before: %v", counts)
	for i, st := range statuses {
		want := "New"
		if st != "subscribed" {
			want = "Old"
		}
		e := fmt.Sprintf("p%d@example.com", i)
		require.Equal(t, want, fname(t, s, audience, e), e)
		require.Equal(t, st, string(s.status(t, e)), e)
	}
}

// 9. Field map changes between runs, field sync turned off and on: a new
// tag is read from the beginning, what already holds the CRM's value is
// not written, the product's own writes are mirrored so the next run does
// not write them again, and an unsubscribe made while field sync was off
// is seen when it comes back on.
func TestMirrorFieldMapChangesNeitherRewriteForeverNorMissAnUnsubscribe(t *testing.T) {
	s := newStack(t, fieldMapped)
	s.mc.AddList(audience, "Demo audience", "FNAME")
	hourAgo := time.Now().Add(-time.Hour)
	for _, p := range []struct{ email, first, last, mcLast string }{
		{"ann@example.com", "Ann", "Adams", "Adams"}, {"bob@example.com", "Bob", "Builder", "Old"},
	} {
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: p.email, Status: "subscribed",
			MergeFields: map[string]string{"FNAME": p.first, "LNAME": p.mcLast}, LastChanged: hourAgo}))
		ref := connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: p.email, FirstName: p.first, LastName: p.last,
			SubscriptionStatus: "1", LastModified: hourAgo})}
		s.refs[p.email[:3]] = ref
		s.ns.AddToSavedSearch(search, ref)
	}
	r1 := s.run(t)
	require.Equal(t, 2, r1.Counts.FieldSync.FieldsUnchanged)

	both := map[string]string{"firstName": "FNAME", "lastName": "LNAME"}
	s.reg.configure(func(st *activities.Settings) { st.FieldMap = both })
	s.mc.ResetCounts()
	r2 := s.runAfter(t, r1)
	require.Equal(t, 2, r2.Counts.FieldSync.Mirrored, "a new tag: the audience is read again")
	require.Equal(t, 1, r2.Counts.FieldSync.FieldsUnchanged, "ann's last name already matches")
	require.Equal(t, 1, s.mc.Counts()[memberPATCH], "bob's differs")
	m, _ := s.mc.Member(audience, "bob@example.com")
	require.Equal(t, "Builder", m.MergeFields["LNAME"])

	// Both records are touched (an unmapped field): nothing to write.
	time.Sleep(s.settings.Overlap + time.Second)
	for _, k := range []string{"ann", "bob"} {
		ref := s.refs[k]
		require.NoError(t, s.ns.Update(ref.Type, ref.ID, func(e *netsuitetest.Entity) { e.CompanyName = "Acme" }))
	}
	s.mc.ResetCounts()
	r3 := s.runAfter(t, r2)
	require.Equal(t, 2, r3.Counts.FieldSync.FieldsUnchanged, "the product's own write was mirrored")
	require.Zero(t, s.mc.Counts()[memberPATCH]+s.mc.Counts()[memberPUT])

	// Field sync off; bob unsubscribes; field sync back on, same tags.
	s.reg.configure(func(st *activities.Settings) { st.FieldMap = nil })
	r4 := s.runAfter(t, r3)
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "bob@example.com", Status: "unsubscribed", LastChanged: time.Now().Add(time.Second)}))
	time.Sleep(s.settings.Overlap + 2*time.Second)
	r5 := s.runAfter(t, r4) // still off
	s.reg.configure(func(st *activities.Settings) { st.FieldMap = both })
	rename(t, s, "bob", "Robert")
	r6 := s.runAfter(t, r5)
	require.Equal(t, 1, r6.Counts.FieldSync.SkippedBlocked, "bob unsubscribed while field sync was off")
	require.Equal(t, "Bob", fname(t, s, audience, "bob@example.com"))
}

// 10. One address on several CRM records, on different pages of field
// sync, one of them opted out; the address is not in the audience: it
// is not added.
func TestMirrorAddressOnSeveralRecordsOneOptedOutIsNotAdded(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) {
		fieldMapped(st)
		st.PageSize = 1
	})
	s.mc.AddList(audience, "Demo audience", "FNAME")
	seedMember(t, s, audience, "someone@example.com", "subscribed", "Some", time.Now().Add(-time.Hour))
	crmPerson(t, s, "a", "dup@example.com", "Dup")
	ref := connectors.RecordRef{Type: "contact", ID: s.ns.AddContact(netsuitetest.Entity{Email: "DUP@example.com", FirstName: "Dup",
		SubscriptionStatus: "2", LastModified: time.Now().Add(-time.Hour)})}
	s.ns.AddToSavedSearch(search, ref)
	r := s.run(t)
	_, added := s.mc.Member(audience, "dup@example.com")
	require.False(t, added, "one record of the address is opted out (skippedOptOut=%d added=%d)", r.Counts.FieldSync.SkippedOptOut, r.Counts.FieldSync.MembersAdded)
}
