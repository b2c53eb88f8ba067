package workflows_test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// The Mailchimp endpoints field sync may call per member.
const (
	memberGET   = "GET /lists/{list_id}/members/{subscriber_hash}"
	memberPUT   = "PUT /lists/{list_id}/members/{subscriber_hash}"
	memberPATCH = "PATCH /lists/{list_id}/members/{subscriber_hash}"
	batchPOST   = "POST /lists/{list_id}"
)

// TestIntegrationFieldSyncLooksMembersUpInTheMirror: field sync reads the
// audience into the ledger first and then makes no call for a member
// whose fields already hold the CRM's values, a lookup and a PATCH for a
// member whose fields differ (never a status change, never a creation),
// none for an archived one, and a lookup and a batch add only for an
// address the audience does not hold. A member who unsubscribes between two runs is
// mirrored as unsubscribed and gets no update, whatever the CRM says.
func TestIntegrationFieldSyncLooksMembersUpInTheMirror(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) {
		st.CRMToMarketing = false
		st.FieldMap = map[string]string{"firstName": "FNAME"}
	})
	s.mc.AddList(audience, "Demo audience", "FNAME")
	seed := func(email, status, fname string) {
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: status, MergeFields: map[string]string{"FNAME": fname},
			LastChanged: time.Now().Add(-time.Hour)}))
	}
	seed("ann@example.com", "subscribed", "Ann")
	seed("bob@example.com", "subscribed", "Old")
	seed("cat@example.com", "archived", "Cat")
	var refs []connectors.RecordRef
	for _, p := range []struct{ key, email, first string }{
		{"ann", "ann@example.com", "Ann"}, {"bob", "bob@example.com", "Bob"},
		{"cat", "cat@example.com", "Cat"}, {"dan", "dan@example.com", "Dan"},
	} {
		ref := connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: p.email, FirstName: p.first, SubscriptionStatus: "1",
			LastModified: time.Now().Add(-time.Hour)})}
		s.refs[p.key] = ref
		refs = append(refs, ref)
	}
	s.ns.AddSavedSearch(search, refs...)

	s.mc.ResetCounts()
	r1 := s.run(t)
	if os.Getenv("UPDATE_HISTORIES") != "" {
		s.saveHistory(t, "testdata/sync-fields-mirror-history.json")
	}
	f := r1.Counts.FieldSync
	require.Equal(t, 3, f.Mirrored, "the whole audience, archived members included")
	require.Equal(t, 1, f.FieldsUnchanged, "ann already holds the CRM's value")
	require.Equal(t, 1, f.FieldsUpdated, "bob's name differs")
	require.Equal(t, 1, f.MembersAdded, "dan is new")
	require.Equal(t, 1, f.SkippedBlocked, "cat is archived")
	counts := s.mc.Counts()
	require.Equal(t, 2, counts[memberGET], "only dan, whom the mirror lacks, and bob, just before his update, are looked up: %v", counts)
	require.Equal(t, 1, counts[memberPATCH], "%v", counts)
	require.Zero(t, counts[memberPUT], "%v", counts)
	require.Equal(t, 1, counts[batchPOST], "dan is added by the batch call: %v", counts)
	bob, _ := s.mc.Member(audience, "bob@example.com")
	require.Equal(t, "Bob", bob.MergeFields["FNAME"])
	cat, _ := s.mc.Member(audience, "cat@example.com")
	require.Equal(t, "archived", cat.Status, "an archived member is not re-added")

	// Between the runs: bob unsubscribes; the CRM renames him and touches ann.
	require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "bob@example.com", Status: "unsubscribed",
		MergeFields: map[string]string{"FNAME": "Bob"}, LastChanged: time.Now().Add(time.Second)}))
	require.NoError(t, s.ns.Update("customer", s.refs["bob"].ID, func(e *netsuitetest.Entity) { e.FirstName = "Robert" }))
	require.NoError(t, s.ns.Update("customer", s.refs["ann"].ID, func(e *netsuitetest.Entity) { e.LastName = "Adams" }))
	time.Sleep(s.settings.Overlap + time.Second) // the first run's own writes fall out of the overlap
	s.mc.ResetCounts()
	r2 := s.runAfter(t, r1)
	f = r2.Counts.FieldSync
	require.Equal(t, 1, f.FieldsUnchanged, "ann's mapped field did not change")
	require.Equal(t, 1, f.SkippedBlocked, "bob is unsubscribed now")
	require.Zero(t, f.FieldsUpdated+f.MembersAdded)
	counts = s.mc.Counts()
	require.Zero(t, counts[memberGET]+counts[memberPATCH]+counts[memberPUT]+counts[batchPOST], "no call per member: %v", counts)
	bob, _ = s.mc.Member(audience, "bob@example.com")
	require.Equal(t, "unsubscribed", bob.Status)
	require.Equal(t, "Bob", bob.MergeFields["FNAME"], "an unsubscribed member gets no update")
}
