package activities

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// joinsMeanwhile is the Mailchimp client, with join run once just before
// the first AddMembers call: members who join the audience between field
// sync's lookup and its batch add.
type joinsMeanwhile struct {
	connectors.Marketing
	once sync.Once
	join func()
}

func (j *joinsMeanwhile) AddMembers(ctx context.Context, audience string, members []connectors.MemberFields, status connectors.MemberStatus) (connectors.BatchResult, error) {
	j.once.Do(j.join)
	return j.Marketing.AddMembers(ctx, audience, members, status)
}

// TestFieldSyncAddsNewMembersInBatches: CRM list members the audience
// lacks are added with one batch call per 500, not one PUT each, and
// members who joined between the lookup and the batch are written as
// existing members: the subscribed one gets its fields by PUT, which
// never sends a status, and the unsubscribed one gets nothing.
func TestFieldSyncAddsNewMembersInBatches(t *testing.T) {
	const newcomers = 700
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	mc.AddList("aud", "Audience", "FNAME")
	client, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	mk := &joinsMeanwhile{Marketing: client, join: func() {
		require.NoError(t, mc.AddMember("aud", mailchimptest.MemberSeed{Email: "late-sub@example.com", Status: "subscribed", MergeFields: map[string]string{"FNAME": "Old"}}))
		require.NoError(t, mc.AddMember("aud", mailchimptest.MemberSeed{Email: "late-unsub@example.com", Status: "unsubscribed", MergeFields: map[string]string{"FNAME": "Old"}}))
	}}
	crm := connectorstest.NewCRM()
	add := func(email, first string) {
		ref := crm.Add("customer", email, connectorstest.StatusSoftOptIn, "list")
		crm.SetField(ref, "firstName", first)
	}
	for i := range newcomers {
		add(fmt.Sprintf("n%d@example.com", i), fmt.Sprintf("N%d", i))
	}
	add("late-sub@example.com", "Late")
	add("late-unsub@example.com", "Late")

	s := Settings{IntegrationID: "fields", MarketingKind: "mailchimp", CRMKind: "netsuite", Audience: "aud", RecordTypes: []string{"customer"},
		Lists: []string{"list"}, FieldMap: map[string]string{"firstName": "FNAME"}, StatusIfNew: connectors.StatusSubscribed,
		PageSize: 1000, PagesPerActivity: 10}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	acts := New(MapRegistry{s.IntegrationID: {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	env.RegisterActivity(acts)
	mc.ResetCounts()
	v, err := env.ExecuteActivity(acts.SyncFields, PageInput{IntegrationID: s.IntegrationID, Since: time.Time{}})
	require.NoError(t, err)
	var res PageResult
	require.NoError(t, v.Get(&res))

	require.Empty(t, res.Failures)
	require.Equal(t, newcomers, res.Counts.MembersAdded)
	require.Equal(t, 1, res.Counts.FieldsUpdated, "late-sub, written as an existing member")
	require.Equal(t, 1, res.Counts.SkippedBlocked, "late-unsub")
	counts := mc.Counts()
	require.Equal(t, 2, counts["POST /lists/{list_id}"], "700 newcomers in batches of 500: %v", counts)
	require.Equal(t, 1, counts["PUT /lists/{list_id}/members/{subscriber_hash}"], "only late-sub: %v", counts)
	for e, want := range map[string][2]string{
		"n0@example.com": {"subscribed", "N0"}, "n699@example.com": {"subscribed", "N699"},
		"late-sub@example.com": {"subscribed", "Late"}, "late-unsub@example.com": {"unsubscribed", "Old"},
	} {
		m, ok := mc.Member("aud", e)
		require.True(t, ok, e)
		require.Equal(t, want[0], m.Status, e)
		require.Equal(t, want[1], m.MergeFields["FNAME"], e)
	}
}
