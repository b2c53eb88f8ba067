package workflows_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/workflows"
)

// TestIntegrationBullhornBothWaysScopedToATearsheet runs a Bullhorn ⇄
// Mailchimp integration with crm-to-marketing on and scoped to a
// Tearsheet, on the real Temporal server, both emulators over HTTP, and
// checks both sides exactly; then a record joins the tearsheet, and a
// quiet run's calls are counted.
func TestIntegrationBullhornBothWaysScopedToATearsheet(t *testing.T) {
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	clock := emulator.NewClock(time.Now().Add(-time.Minute))
	bh := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now})
	t.Cleanup(bh.Close)
	mc.AddList(audience, "Demo audience")
	member := func(email string, st connectors.MemberStatus) {
		require.NoError(t, mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: string(st)}))
	}
	ts := bh.AddTearsheet("Newsletter")
	// Unsubscribed in Mailchimp: a Candidate and a ClientContact share the address.
	member("ann@example.com", connectors.StatusUnsubscribed)
	annCand := bh.AddCandidate(bullhorntest.Person{LastName: "Ann", Email: "ann@example.com"})
	annCC := bh.AddClientContact(bullhorntest.Person{LastName: "Ann", Email: "Ann@Example.com"})
	// Unsubscribed in Mailchimp; a Lead.
	member("lee@example.com", connectors.StatusUnsubscribed)
	lee := bh.AddLead(bullhorntest.Person{LastName: "Lee", Email: "lee@example.com"})
	// Cleaned in Mailchimp: not an opt-out.
	member("cid@example.com", connectors.StatusCleaned)
	cid := bh.AddCandidate(bullhorntest.Person{LastName: "Cid", Email: "cid@example.com"})
	// Opted out in Bullhorn, in the tearsheet.
	member("eve@example.com", connectors.StatusSubscribed)
	eve := bh.AddClientContact(bullhorntest.Person{LastName: "Eve", Email: "eve@example.com", OptedOut: true})
	bh.AddToTearsheet(ts, eve)
	// Opted out in Bullhorn, outside the tearsheet (for now).
	member("out@example.com", connectors.StatusSubscribed)
	out := bh.AddCandidate(bullhorntest.Person{LastName: "Out", Email: "out@example.com", OptedOut: true})
	// Subscribed everywhere, in the tearsheet.
	member("sam@example.com", connectors.StatusSubscribed)
	sam := bh.AddCandidate(bullhorntest.Person{LastName: "Sam", Email: "sam@example.com"})
	bh.AddToTearsheet(ts, sam, annCand)

	s := newBullhornStack(t, mc, bh, strconv.FormatInt(ts, 10))

	// The corporation's clock runs a minute ahead of the run's start (see
	// the Salesforce test): the product's own writes are dated after the
	// first watermark, so the next run reads them again and must not send
	// them back; "out" can only be found through the tearsheet.
	clock.Set(time.Now().Add(time.Minute))
	first := s.run(t)
	require.True(t, bh.OptedOut(annCand), "Mailchimp unsubscribe → massMailOptOut on the Candidate")
	require.True(t, bh.OptedOut(annCC), "and on the ClientContact with the same address")
	require.True(t, bh.OptedOut(lee), "and on a Lead")
	require.False(t, bh.OptedOut(cid), "a clean is not an opt-out")
	require.False(t, bh.OptedOut(sam))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"), "opted out in the tearsheet → unsubscribed")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "out@example.com"), "outside the tearsheet: left alone")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "sam@example.com"))
	require.Equal(t, connectors.StatusCleaned, s.status(t, "cid@example.com"))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"))
	require.Equal(t, 3, first.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, 1, first.Counts.CRMToMarketing.Unsubscribed)
	// Outside the tearsheet and opted out: "out", and the ClientContact and
	// the Lead this run opted out (read back, dated after the watermark).
	require.Equal(t, 3, first.Counts.CRMToMarketing.OutsideLists, "counted and explained")
	require.True(t, strings.Contains(strings.Join(first.Notes, "\n"), "outside"), "%v", first.Notes)

	// "out" joins the tearsheet; joining does not modify the Candidate.
	bh.AddToTearsheet(ts, out)
	second := s.runAfter(t, first)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "out@example.com"), "picked up after joining the tearsheet")
	require.Equal(t, 1, second.Counts.CRMToMarketing.Unsubscribed)
	require.Zero(t, second.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "sam@example.com"))

	// A quiet run: nothing new on either side. Its calls, counted.
	bh.Middleware.ResetCounts()
	mc.Middleware.ResetCounts()
	third := s.runAfter(t, second)
	require.Zero(t, third.Counts.MarketingToCRM.CRMOptedOut)
	require.Zero(t, third.Counts.CRMToMarketing.Unsubscribed)
	require.Empty(t, third.Failures)
	t.Logf("quiet run: Bullhorn %v, Mailchimp %v", bh.Middleware.Counts(), mc.Middleware.Counts())
	for endpoint := range bh.Middleware.Counts() {
		require.False(t, strings.HasPrefix(endpoint, "POST entity/"), "a quiet run writes nothing to Bullhorn (%s)", endpoint)
	}
	// Every call of the quiet run, each for one thing:
	//   - search/{entity} ×3 each: (1) marketing-to-crm:unsubscribed looks
	//     up, by address, the CRM records of the members unsubscribed since
	//     the watermark: always at least "out", whose unsubscribe the
	//     previous run wrote after its start (Mailchimp's window starts one
	//     second early, so the members of that second come back too); the
	//     ledger then finds them all handled and nothing is written. One
	//     search per entity holds every address. (2) late-records reads the
	//     records changed since its watermark. (3) crm-to-marketing reads the
	//     opted-out records changed since its watermark, outside the
	//     tearsheet. The two change reads are separate steps with their own
	//     watermarks (a failure holds back one, not the other), and the
	//     second must see what the first wrote: they are not shared.
	//   - the tearsheet's candidates and clientContacts, once a run (the
	//     membership is cached for the run: RunStart).
	//   - entity/Candidate/{ids} and entity/ClientContact/{ids}: the
	//     tearsheet's members read by id, all in one call each.
	// The cleaned and re-subscribe steps make no Bullhorn call (no cleaned
	// field is mapped), and field sync is off.
	want := map[string]int{
		"GET entity/Tearsheet/{id}/candidates":     1,
		"GET entity/Tearsheet/{id}/clientContacts": 1,
		"GET entity/Candidate/{id}":                1,
		"GET entity/ClientContact/{id}":            1,
	}
	for _, e := range bullhorn.RecordTypes {
		want["GET search/"+e] = 3
	}
	require.Equal(t, want, bh.Middleware.Counts())
	// Mailchimp: one read each of the unsubscribed, cleaned and subscribed
	// members changed since the watermarks; no write.
	require.Equal(t, map[string]int{"GET /lists/{list_id}/members": 3}, mc.Middleware.Counts())
	require.Equal(t, 1, bh.Stats().Authorizations, "one password sign-in for the three runs")
	require.Equal(t, 1, bh.Stats().Logins, "one session for the three runs")
}

// newBullhornStack runs a Bullhorn ⇄ Mailchimp integration on the real
// Temporal server: crm-to-marketing on, scoped to tearsheet, Candidates,
// ClientContacts and Leads.
func newBullhornStack(t *testing.T, mc *mailchimptest.Server, bh *bullhorntest.Server, tearsheet string) *stack {
	t.Helper()
	id := "bh-" + strings.ToLower(t.Name())
	settings := activities.Settings{
		IntegrationID: id, MarketingKind: "mailchimp", CRMKind: "bullhorn", Audience: audience,
		RecordTypes: bullhorn.RecordTypes, Lists: []string{tearsheet}, CRMToMarketing: true,
		OptOut:      connectors.OptOutField{Kind: connectors.OptOutStandard},
		StatusIfNew: connectors.StatusSubscribed, Overlap: 0, PageSize: 1000, PagesPerActivity: 10,
	}
	mk, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	led := ledgertest.Open(t, ledger.SQLite)
	crm, err := bullhorn.New(bullhorn.Options{LoginInfoURL: bh.LoginInfoURL(), ClientID: bh.ClientID, ClientSecret: bh.ClientSecret,
		Username: bh.Username, Password: bh.Password, Integration: id, Tokens: led, RequestsPerMinute: -1,
		RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	require.NoError(t, err)
	reg := &settingsRegistry{in: activities.Integration{Settings: settings, Marketing: mk, CRM: crm}}
	temporalServer.NewWorker(id, func(r worker.Registry) {
		r.RegisterWorkflow(workflows.SyncWorkflow)
		r.RegisterActivity(activities.New(reg, led, nil))
	})
	return &stack{id: id, mc: mc, c: temporalServer.GetDefaultClient(), ledger: led, settings: settings, reg: reg}
}
