package activities

import (
	"context"
	"fmt"
	"strings"
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

// TestAudienceMirrorReadsInParts: the audience read is split into parts
// read at once after its first page, and the parts, carried from one
// activity call to the next in the cursor, mirror every member once; the
// statuses after the split one are read too.
func TestAudienceMirrorReadsInParts(t *testing.T) {
	const n = 3_000
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	mc.AddList("aud", "Audience", "FNAME")
	past := time.Now().Add(-24 * time.Hour)
	require.NoError(t, mc.Generate("aud", n, func(i int) mailchimptest.MemberSeed {
		return mailchimptest.MemberSeed{Email: fmt.Sprintf("m%d@example.com", i), Status: "subscribed",
			MergeFields: map[string]string{"FNAME": fmt.Sprint(i)}, LastChanged: past.Add(time.Duration(i) * 7 * time.Second)}
	}))
	require.NoError(t, mc.AddMember("aud", mailchimptest.MemberSeed{Email: "gone@example.com", Status: "unsubscribed", LastChanged: past}))
	client, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	s := Settings{IntegrationID: "mirror", MarketingKind: "mailchimp", CRMKind: "netsuite", Audience: "aud", RecordTypes: []string{"customer"},
		FieldMap: map[string]string{"firstName": "FNAME"}, PageSize: 100, PagesPerActivity: 4}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	led := ledgertest.Open(t, ledger.SQLite)
	acts := New(MapRegistry{s.IntegrationID: {Settings: s, Marketing: client, CRM: connectorstest.NewCRM()}}, led, nil)
	env.RegisterActivity(acts)
	mc.ResetCounts()
	in := PageInput{IntegrationID: s.IntegrationID}
	var c Counts
	calls, sawParts := 0, false
	for {
		calls++
		require.Less(t, calls, 100)
		v, err := env.ExecuteActivity(acts.SyncAudience, in)
		require.NoError(t, err)
		var res PageResult
		require.NoError(t, v.Get(&res))
		c.Add(res.Counts)
		if strings.HasPrefix(res.Next, partsPrefix) {
			sawParts = true
		}
		if res.Next == "" {
			break
		}
		in.Cursor = res.Next
	}
	require.True(t, sawParts, "the read went on in parts across activity calls")
	require.Equal(t, n+1, c.Mirrored, "every member once")
	persons := []string{led.Person("gone@example.com")}
	for i := range n {
		persons = append(persons, led.Person(fmt.Sprintf("m%d@example.com", i)))
	}
	held, err := led.Members(t.Context(), s.IntegrationID, s.Audience, persons)
	require.NoError(t, err)
	require.Len(t, held, n+1)
	require.Equal(t, "unsubscribed", held[led.Person("gone@example.com")].Status)
	reads := mc.Counts()["GET /lists/{list_id}/members"]
	require.Less(t, reads, n/100+len(audienceStatuses)+2*pagesInFlight, "the parts read no page twice: %d reads", reads)
}
