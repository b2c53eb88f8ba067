package activities

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// drainPages runs step from in, call after call as the workflow does,
// until its read is done, and returns each call's result. No call may
// report a failure.
func drainPages(t *testing.T, acts *Activities, step func(context.Context, PageInput) (PageResult, error), in PageInput) []PageResult {
	t.Helper()
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	var out []PageResult
	for {
		require.Less(t, len(out), 100, "the read does not end")
		v, err := env.ExecuteActivity(step, in)
		require.NoError(t, err)
		var res PageResult
		require.NoError(t, v.Get(&res))
		require.Empty(t, res.Failures)
		out = append(out, res)
		if res.Next == "" {
			return out
		}
		in.Cursor = res.Next
	}
}

// sumPages adds up the calls' counts and says whether a call's cursor
// named parts.
func sumPages(rs []PageResult) (Counts, bool) {
	var c Counts
	parts := false
	for _, r := range rs {
		c.Add(r.Counts)
		parts = parts || strings.HasPrefix(r.Next, partsPrefix)
	}
	return c, parts
}

// TestBullhornOptOutsReadInParts: a Bullhorn read of changed opt-outs
// splits after its first page (connectors.CursorSplitter), and the parts,
// carried from one activity call to the next, unsubscribe every opted-out
// candidate once, with a Lead read after them by the last part.
func TestBullhornOptOutsReadInParts(t *testing.T) {
	const n = 3_000
	clock := emulator.NewClock(time.Now().Add(-time.Hour))
	bh := bullhorntest.NewServer(bullhorntest.Options{RequestsPerMinute: -1, Clock: clock.Now})
	t.Cleanup(bh.Close)
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	mc.AddList("aud", "Audience")
	require.NoError(t, mc.Generate("aud", n+1, func(i int) mailchimptest.MemberSeed {
		return mailchimptest.MemberSeed{Email: fmt.Sprintf("p%d@example.com", i), Status: "subscribed"}
	}))
	bh.Seed("Candidate", n, func(i int) bullhorntest.Person {
		clock.Advance(time.Millisecond)
		return bullhorntest.Person{LastName: "P", Email: fmt.Sprintf("p%d@example.com", i), OptedOut: true}
	})
	bh.AddLead(bullhorntest.Person{LastName: "L", Email: fmt.Sprintf("p%d@example.com", n), OptedOut: true})
	crm, err := bullhorn.New(bullhorn.Options{LoginInfoURL: bh.LoginInfoURL(), ClientID: bh.ClientID, ClientSecret: bh.ClientSecret,
		Username: bh.Username, Password: bh.Password, RequestsPerMinute: -1})
	require.NoError(t, err)
	mk, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	s := Settings{IntegrationID: "bh-parts", MarketingKind: "mailchimp", CRMKind: "bullhorn", Audience: "aud", RecordTypes: []string{"Candidate", "Lead"},
		OptOut: connectors.OptOutField{Kind: connectors.OptOutStandard}, CRMToMarketing: true, PageSize: 100, PagesPerActivity: 4}
	acts := New(MapRegistry{s.IntegrationID: {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	mc.ResetCounts()
	c, sawParts := sumPages(drainPages(t, acts, acts.SyncCRMOptOuts, PageInput{IntegrationID: s.IntegrationID, Settings: &s, Since: time.Now().Add(-2 * time.Hour)}))
	require.True(t, sawParts, "the read went on in parts across activity calls")
	require.Equal(t, n+1, c.CRMOptOuts, "every opt-out read once")
	require.Equal(t, n+1, c.Unsubscribed, "every member unsubscribed once")
	for _, m := range mc.Members("aud") {
		require.Equal(t, "unsubscribed", m.Status)
	}
}

// TestMarketingUnsubscribesReadInParts: marketing-to-crm's read of a
// status splits after its first page (connectors.ChangesSplitter), and the
// parts, carried from one activity call to the next, set the opt-out on
// every unsubscribed member's CRM record, each written once.
func TestMarketingUnsubscribesReadInParts(t *testing.T) {
	const n = 3_000
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	mc.AddList("aud", "Audience")
	past := time.Now().Add(-24 * time.Hour)
	require.NoError(t, mc.Generate("aud", n, func(i int) mailchimptest.MemberSeed {
		return mailchimptest.MemberSeed{Email: fmt.Sprintf("u%d@example.com", i), Status: "unsubscribed", LastChanged: past.Add(time.Duration(i) * 7 * time.Second)}
	}))
	crm := connectorstest.NewCRM()
	refs := make([]connectors.RecordRef, n)
	for i := range n {
		refs[i] = crm.Add("customer", fmt.Sprintf("u%d@example.com", i), connectorstest.StatusSoftOptIn)
	}
	mk, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	s := Settings{IntegrationID: "m2c-parts", MarketingKind: "mailchimp", CRMKind: "netsuite", Audience: "aud", RecordTypes: []string{"customer"},
		OptOut: connectors.OptOutField{Kind: connectors.OptOutStandard}, PageSize: 100, PagesPerActivity: 4}
	acts := New(MapRegistry{s.IntegrationID: {Settings: s, Marketing: mk, CRM: crm}}, ledgertest.Open(t, ledger.SQLite), nil)
	mc.ResetCounts()
	c, sawParts := sumPages(drainPages(t, acts, acts.SyncMarketingChanges, PageInput{IntegrationID: s.IntegrationID, Settings: &s, Status: connectors.StatusUnsubscribed}))
	require.True(t, sawParts, "the read went on in parts across activity calls")
	require.Equal(t, n, c.Unsubscribes, "every unsubscribe read once")
	require.Equal(t, n, c.CRMOptedOut, "every record opted out once")
	require.Equal(t, n, crm.Writes(), "each record written once")
	for _, ref := range refs {
		require.Equal(t, connectorstest.StatusSoftOptOut, crm.Record(ref).Status)
	}
	reads := mc.Counts()["GET /lists/{list_id}/members"]
	require.Less(t, reads, n/100+4*pagesInFlight, "the parts read no page twice: %d reads", reads)
}

// mirrorOf is an integration mirroring audience "aud" of mc (with field
// sync on, pages of 100, four a call) and its activities and ledger.
func mirrorOf(t *testing.T, mc *mailchimptest.Server) (Settings, *Activities, *ledger.SQL) {
	t.Helper()
	client, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	s := Settings{IntegrationID: "mirror", MarketingKind: "mailchimp", CRMKind: "netsuite", Audience: "aud", RecordTypes: []string{"customer"},
		FieldMap: map[string]string{"firstName": "FNAME"}, PageSize: 100, PagesPerActivity: 4}
	led := ledgertest.Open(t, ledger.SQLite)
	return s, New(MapRegistry{s.IntegrationID: {Settings: s, Marketing: client, CRM: connectorstest.NewCRM()}}, led, nil), led
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
	s, acts, led := mirrorOf(t, mc)
	mc.ResetCounts()
	c, sawParts := sumPages(drainPages(t, acts, acts.SyncAudience, PageInput{IntegrationID: s.IntegrationID}))
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

// TestBullhornPartsGoOnOnAnotherWorker: the parts of a split Bullhorn
// read, named by the cursor, are read at once by the next call, which may
// run on another worker (or after a restart) whose client has not learnt
// yet that the search takes dates as yyyyMMddHHmmss. Each part's first
// search is refused with 400 and must fall back; none may fail the call
// (a 400 is ErrInvalid, which is final and ends the run before the rest
// of the opt-outs are sent).
func TestBullhornPartsGoOnOnAnotherWorker(t *testing.T) {
	const n = 3_000
	clock := emulator.NewClock(time.Now().Add(-time.Hour))
	bh := bullhorntest.NewServer(bullhorntest.Options{RequestsPerMinute: -1, Clock: clock.Now, SearchDates: bullhorntest.DatesCompact})
	t.Cleanup(bh.Close)
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	mc.AddList("aud", "Audience")
	require.NoError(t, mc.Generate("aud", n, func(i int) mailchimptest.MemberSeed {
		return mailchimptest.MemberSeed{Email: fmt.Sprintf("p%d@example.com", i), Status: "subscribed"}
	}))
	bh.Seed("Candidate", n, func(i int) bullhorntest.Person {
		clock.Advance(time.Millisecond)
		return bullhorntest.Person{LastName: "P", Email: fmt.Sprintf("p%d@example.com", i), OptedOut: true}
	})
	mk, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	s := Settings{IntegrationID: "bh-workers", MarketingKind: "mailchimp", CRMKind: "bullhorn", Audience: "aud", RecordTypes: []string{"Candidate"},
		OptOut: connectors.OptOutField{Kind: connectors.OptOutStandard}, CRMToMarketing: true, PageSize: 100, PagesPerActivity: 4}
	led := ledgertest.Open(t, ledger.SQLite)
	// Each call runs on a worker of its own: a client that has made no
	// search yet.
	worker := func() *Activities {
		crm, err := bullhorn.New(bullhorn.Options{LoginInfoURL: bh.LoginInfoURL(), ClientID: bh.ClientID, ClientSecret: bh.ClientSecret,
			Username: bh.Username, Password: bh.Password, RequestsPerMinute: -1})
		require.NoError(t, err)
		return New(MapRegistry{s.IntegrationID: {Settings: s, Marketing: mk, CRM: crm}}, led, nil)
	}
	var ts testsuite.WorkflowTestSuite
	in := PageInput{IntegrationID: s.IntegrationID, Settings: &s, Since: time.Now().Add(-2 * time.Hour)}
	var c Counts
	sawParts := false
	for calls := 1; ; calls++ {
		require.Less(t, calls, 100)
		acts := worker()
		env := ts.NewTestActivityEnvironment()
		env.RegisterActivity(acts)
		v, err := env.ExecuteActivity(acts.SyncCRMOptOuts, in)
		require.NoError(t, err, "call %d (cursor names parts: %v)", calls, strings.HasPrefix(in.Cursor, partsPrefix))
		var res PageResult
		require.NoError(t, v.Get(&res))
		c.Add(res.Counts)
		sawParts = sawParts || strings.HasPrefix(res.Next, partsPrefix)
		if res.Next == "" {
			break
		}
		in.Cursor = res.Next
	}
	require.True(t, sawParts, "the read went on in parts across activity calls")
	require.Equal(t, n, c.Unsubscribed, "every member unsubscribed once")
}

// TestAudienceStatusesReadInPartsOfTheirOwn: when the audience read is
// split, each later status is read in parts of its own at once (split too
// when large), an empty one is not read at all, and every member is
// mirrored once with its status.
func TestAudienceStatusesReadInPartsOfTheirOwn(t *testing.T) {
	const subscribed, unsubscribed, cleaned = 3_000, 1_500, 3
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	mc.AddList("aud", "Audience", "FNAME")
	past := time.Now().Add(-24 * time.Hour)
	seed := func(prefix, status string, n int) {
		require.NoError(t, mc.Generate("aud", n, func(i int) mailchimptest.MemberSeed {
			return mailchimptest.MemberSeed{Email: fmt.Sprintf("%s%d@example.com", prefix, i), Status: status,
				LastChanged: past.Add(time.Duration(i) * 7 * time.Second)}
		}))
	}
	seed("s", "subscribed", subscribed)
	seed("u", "unsubscribed", unsubscribed)
	seed("c", "cleaned", cleaned)
	s, acts, led := mirrorOf(t, mc)
	calls := drainPages(t, acts, acts.SyncAudience, PageInput{IntegrationID: s.IntegrationID})

	// The first call's cursor names the parts left, by status.
	head, list, ok := strings.Cut(calls[0].Next, partsPrefix)
	require.True(t, ok && head == "", "the first call leaves parts: %q", calls[0].Next)
	var parts []string
	require.NoError(t, json.Unmarshal([]byte(list), &parts))
	byStatus := map[string]int{}
	for _, p := range parts {
		i, part, _, err := splitAudienceCursor(p)
		require.NoError(t, err)
		require.True(t, part, "every part ends with its own: %q", p)
		byStatus[string(audienceStatuses[i])]++
	}
	require.Greater(t, byStatus["subscribed"], 1)
	require.Greater(t, byStatus["unsubscribed"], 1, "a large later status is split too")
	require.Equal(t, 1, byStatus["cleaned"], "a small one is one part")
	for _, st := range []string{"pending", "transactional", "archived"} {
		require.Zero(t, byStatus[st], "%s is empty: not read", st)
	}

	c, _ := sumPages(calls)
	require.Equal(t, subscribed+unsubscribed+cleaned, c.Mirrored, "every member once")
	var persons []string
	want := map[string]string{}
	for prefix, st := range map[string]string{"s": "subscribed", "u": "unsubscribed", "c": "cleaned"} {
		n := map[string]int{"s": subscribed, "u": unsubscribed, "c": cleaned}[prefix]
		for i := range n {
			p := led.Person(fmt.Sprintf("%s%d@example.com", prefix, i))
			persons = append(persons, p)
			want[p] = st
		}
	}
	held, err := led.Members(t.Context(), s.IntegrationID, s.Audience, persons)
	require.NoError(t, err)
	require.Len(t, held, len(persons))
	for p, st := range want {
		require.Equal(t, st, held[p].Status)
	}
}

// TestAudienceMirrorOfAFewMembersReadsNoEmptyStatus: when the first status
// ends within the first page, the later statuses are counted at once, and
// none is read when none has a member: one read and one count per later
// status, where the statuses read one after the other took a round trip
// each.
func TestAudienceMirrorOfAFewMembersReadsNoEmptyStatus(t *testing.T) {
	const n = 50
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	mc.AddList("aud", "Audience", "FNAME")
	past := time.Now().Add(-time.Hour)
	require.NoError(t, mc.Generate("aud", n, func(i int) mailchimptest.MemberSeed {
		return mailchimptest.MemberSeed{Email: fmt.Sprintf("f%d@example.com", i), Status: "subscribed", LastChanged: past.Add(time.Duration(i) * time.Second)}
	}))
	s, acts, _ := mirrorOf(t, mc)
	mc.SetFaults(emulator.Faults{Latency: 50 * time.Millisecond}) // so that requests at once overlap
	mc.ResetCounts()
	calls := drainPages(t, acts, acts.SyncAudience, PageInput{IntegrationID: s.IntegrationID})
	require.Len(t, calls, 1)
	c, _ := sumPages(calls)
	require.Equal(t, n, c.Mirrored)
	require.Equal(t, len(audienceStatuses), mc.Counts()["GET /lists/{list_id}/members"], "the first page, and a count of each later status")
	require.Equal(t, len(audienceStatuses)-1, mc.PeakInFlight(), "the later statuses counted at once")
}
