package connectorstest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
)

var standard = connectors.OptOutField{Kind: connectors.OptOutStandard}

// A bounce flag is a custom field and never the opt-out: the sync's tests
// rely on the fake to tell the two apart.
func TestSetFlagSetsTheFieldAndNeverTheOptOut(t *testing.T) {
	c := connectorstest.NewCRM()
	ref := c.Add("customer", "cat@example.com", connectorstest.StatusSoftOptIn)
	res, err := c.SetFlag(t.Context(), "custentity_bounced", []connectors.RecordRef{ref})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	got := c.Record(ref)
	require.True(t, got.Custom["custentity_bounced"])
	require.Equal(t, connectorstest.StatusSoftOptIn, got.Status)
	require.False(t, got.OptedOut(standard))
	require.Equal(t, 1, c.Writes())
}

func TestSetOptOutFollowsTheFieldAndKeepsAConfirmedOptOut(t *testing.T) {
	c := connectorstest.NewCRM()
	in := c.Add("customer", "a@example.com", connectorstest.StatusConfirmedOptIn)
	confirmed := c.Add("customer", "b@example.com", connectorstest.StatusConfirmedOptOut)
	optIn := c.Add("contact", "c@example.com", connectorstest.StatusSoftOptIn)
	c.SetCustom(optIn, "custentity_mc", true)

	_, err := c.SetOptOut(t.Context(), standard, []connectors.RecordRef{in, confirmed})
	require.NoError(t, err)
	require.Equal(t, connectorstest.StatusSoftOptOut, c.Record(in).Status)
	require.Equal(t, connectorstest.StatusConfirmedOptOut, c.Record(confirmed).Status)

	inverted := connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "custentity_mc"}
	require.False(t, c.Record(optIn).OptedOut(inverted))
	_, err = c.SetOptOut(t.Context(), inverted, []connectors.RecordRef{optIn})
	require.NoError(t, err)
	require.True(t, c.Record(optIn).OptedOut(inverted))
	require.False(t, c.Record(optIn).OptedOut(standard))
}

func TestRejectedRecordFailsTransientlyAndTheRestAreWritten(t *testing.T) {
	c := connectorstest.NewCRM()
	bad := c.Add("customer", "a@example.com", connectorstest.StatusSoftOptIn)
	good := c.Add("customer", "b@example.com", connectorstest.StatusSoftOptIn)
	c.Reject(bad, true)
	res, err := c.SetOptOut(t.Context(), standard, []connectors.RecordRef{bad, good})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.Len(t, res.Failed, 1)
	require.Equal(t, bad, res.Failed[0].Record)
	require.True(t, res.Failed[0].Retryable)
	require.False(t, c.Record(bad).OptedOut(standard))
}

// Joining a list does not modify the record, yet a read since a watermark
// before the join finds it, as the real CRMs' membership dates allow.
func TestOptedOutFindsARecordThatJoinedAListSinceTheWatermark(t *testing.T) {
	c := connectorstest.NewCRM()
	ref := c.Add("contact", "out@example.com", connectorstest.StatusSoftOptOut)
	q := connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, Lists: []string{"L"}}
	page, err := c.OptedOut(t.Context(), q)
	require.NoError(t, err)
	require.Len(t, page.Records, 1)
	require.False(t, page.Records[0].InLists)

	modified := c.Record(ref).Modified
	q.Since = time.Now()
	time.Sleep(time.Millisecond) // the fake stamps with time.Now: the join must come after the watermark
	c.AddToList(ref, "L")
	page, err = c.OptedOut(t.Context(), q)
	require.NoError(t, err)
	require.Len(t, page.Records, 1)
	require.True(t, page.Records[0].InLists)
	require.Equal(t, modified, c.Record(ref).Modified, "joining does not modify the record")
}

func TestMarketingKeepsMailchimpsComplianceRules(t *testing.T) {
	m := connectorstest.NewMarketing()
	m.Add("cln@example.com", connectors.StatusCleaned)
	m.Add("gone@example.com", connectors.StatusSubscribed)
	m.Forget("gone@example.com")
	m.Add("Sub@Example.com", connectors.StatusSubscribed)
	res, err := m.Unsubscribe(t.Context(), "a", []string{"cln@example.com", "gone@example.com", "sub@example.com", "new@example.com"})
	require.NoError(t, err)
	require.Equal(t, 2, res.Written)
	require.Equal(t, 1, res.Added)
	require.Len(t, res.Failed, 2)
	for _, f := range res.Failed {
		require.True(t, f.Compliance, f.Email)
	}
	require.Equal(t, connectors.StatusUnsubscribed, m.Member("SUB@example.com").Status)
	require.Equal(t, connectors.StatusUnsubscribed, m.Member("new@example.com").Status)

	res, err = m.UpsertMembers(t.Context(), "a", []connectors.MemberFields{{Email: "sub@example.com", Fields: map[string]string{"FNAME": "S"}}}, connectors.StatusSubscribed)
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.Equal(t, connectors.StatusUnsubscribed, m.Member("sub@example.com").Status, "an upsert never changes a status")
	require.Equal(t, "S", m.Member("sub@example.com").Fields["FNAME"])
	require.Equal(t, connectors.StatusNotFound, m.Member("nobody@example.com").Status)

	res, err = m.UpdateMembers(t.Context(), "a", []connectors.MemberFields{
		{Email: "sub@example.com", Fields: map[string]string{"FNAME": "T"}},
		{Email: "nobody@example.com", Fields: map[string]string{"FNAME": "N"}},
		{Email: "gone@example.com", Fields: map[string]string{"FNAME": "G"}},
	})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.Zero(t, res.Added)
	require.Len(t, res.Failed, 2)
	for _, f := range res.Failed {
		require.False(t, f.Retryable || f.Compliance, "a member who left is a final failure: %s", f.Email)
	}
	require.Equal(t, 1, m.Calls("UpdateMembers"))
	require.Equal(t, "T", m.Member("sub@example.com").Fields["FNAME"])
	require.Equal(t, connectors.StatusNotFound, m.Member("nobody@example.com").Status, "an update never adds a member")
}

func TestMarketingPagesChangesOldestFirstAndFailsOnDemand(t *testing.T) {
	m := connectorstest.NewMarketing()
	for _, e := range []string{"a@x.io", "b@x.io", "c@x.io"} {
		m.Add(e, connectors.StatusUnsubscribed)
	}
	var got []string
	req := connectors.ChangesRequest{Status: connectors.StatusUnsubscribed, PageSize: 2}
	for {
		page, err := m.ChangedMembers(t.Context(), req)
		require.NoError(t, err)
		for _, mb := range page.Members {
			got = append(got, mb.Email)
		}
		if page.Next == "" {
			break
		}
		req.Cursor = page.Next
	}
	require.ElementsMatch(t, []string{"a@x.io", "b@x.io", "c@x.io"}, got)
	require.Equal(t, 2, m.Calls("ChangedMembers"))

	// Merge fields come back only when asked for.
	_, err := m.UpsertMembers(t.Context(), "a", []connectors.MemberFields{{Email: "a@x.io", Fields: map[string]string{"FNAME": "A"}}}, connectors.StatusSubscribed)
	require.NoError(t, err)
	page, err := m.ChangedMembers(t.Context(), connectors.ChangesRequest{Status: connectors.StatusUnsubscribed})
	require.NoError(t, err)
	require.Nil(t, page.Members[0].Fields)
	page, err = m.ChangedMembers(t.Context(), connectors.ChangesRequest{Status: connectors.StatusUnsubscribed, MergeFields: true})
	require.NoError(t, err)
	require.Equal(t, map[string]string{"FNAME": "A"}, page.Members[2].Fields, "the upsert made a@x.io the latest change")

	boom := errors.New("boom")
	m.FailWith(boom)
	_, err = m.Members(t.Context(), "a", []string{"a@x.io"})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 1, m.Calls("Members"))
}
