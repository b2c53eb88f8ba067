package workflows_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/worker"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/workflows"
)

// TestIntegrationDynamicsBothWaysScopedToAStaticList runs a Dynamics 365 ⇄
// Mailchimp integration with Step 1 on, scoped to a static Marketing List,
// and checks both sides exactly: after a first run, after a quiet run
// (whose calls are counted), and after a record joins the list.
func TestIntegrationDynamicsBothWaysScopedToAStaticList(t *testing.T) {
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	// The environment's clock, set by hand so that time passes for it
	// without the test sleeping: the seed is dated a minute before the
	// first run.
	clock := emulator.NewClock(time.Now().Add(-time.Minute))
	dyn := dynamicstest.NewServer(dynamicstest.Options{Clock: clock.Now})
	t.Cleanup(dyn.Close)
	mc.AddList(audience, "Demo audience")
	member := func(email string, st connectors.MemberStatus) {
		require.NoError(t, mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: string(st)}))
	}

	list := dyn.AddStaticList("Newsletter", "contact")
	// Unsubscribed in Mailchimp: a contact (in the list) and a lead share
	// the address, in another case.
	member("ann@example.com", connectors.StatusUnsubscribed)
	annContact := dyn.AddContact(dynamicstest.Person{LastName: "Ann", Email: "ann@example.com"})
	annLead := dyn.AddLead(dynamicstest.Person{LastName: "Ann", Email: "Ann@Example.com", Company: "Acme"})
	dyn.AddListMember(list, annContact)
	// Cleaned in Mailchimp: a bounce, not an opt-out.
	member("cid@example.com", connectors.StatusCleaned)
	cid := dyn.AddContact(dynamicstest.Person{LastName: "Cid", Email: "cid@example.com"})
	dyn.AddListMember(list, cid)
	// Opted out in Dynamics, in the list.
	member("eve@example.com", connectors.StatusSubscribed)
	eve := dyn.AddContact(dynamicstest.Person{LastName: "Eve", Email: "eve@example.com", OptedOut: true})
	dyn.AddListMember(list, eve)
	// Opted out in Dynamics, outside the list (for now).
	member("out@example.com", connectors.StatusSubscribed)
	out := dyn.AddContact(dynamicstest.Person{LastName: "Out", Email: "out@example.com", OptedOut: true})
	// Subscribed everywhere, in the list.
	member("sam@example.com", connectors.StatusSubscribed)
	sam := dyn.AddContact(dynamicstest.Person{LastName: "Sam", Email: "sam@example.com"})
	dyn.AddListMember(list, sam)

	s := newDynamicsStack(t, mc, dyn, list)
	optedOut := func(id string) bool {
		rec, ok := dyn.Record(id)
		require.True(t, ok, id)
		return rec["donotbulkemail"] == true
	}
	requireSynced := func(outStatus connectors.MemberStatus) {
		t.Helper()
		require.True(t, optedOut(annContact), "Mailchimp unsubscribe → donotbulkemail on the contact")
		require.True(t, optedOut(annLead), "and on the lead with the same address")
		require.False(t, optedOut(cid), "a clean is not an opt-out")
		require.True(t, optedOut(eve))
		require.True(t, optedOut(out))
		require.False(t, optedOut(sam))
		require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"))
		require.Equal(t, connectors.StatusCleaned, s.status(t, "cid@example.com"))
		require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"), "opted out in the list → unsubscribed")
		require.Equal(t, outStatus, s.status(t, "out@example.com"))
		require.Equal(t, connectors.StatusSubscribed, s.status(t, "sam@example.com"))
	}

	// From the first run on, the environment's clock stands a minute past
	// the run's start, as a clock running ahead would: the run's own
	// writes are dated after its watermark, so the next run reads them
	// again (and must not send them back).
	clock.Set(time.Now().Add(time.Minute))
	first := s.run(t)
	requireSynced(connectors.StatusSubscribed)
	require.Equal(t, 2, first.Counts.MarketingToCRM.CRMOptedOut, "Ann's contact and lead")
	require.Equal(t, 1, first.Counts.MarketingToCRM.Cleaned)
	require.Equal(t, 1, first.Counts.CRMToMarketing.Unsubscribed, "Eve")
	require.Positive(t, first.Counts.CRMToMarketing.OutsideLists, "Out, left alone and counted")
	require.Equal(t, 2, dyn.Middleware.Counts()["POST /api/data/v9.2/$batch"],
		"one $batch looked the changed members up (a GET part per record type), one wrote Ann's two records: %v", dyn.Middleware.Counts())
	require.Equal(t, 2, dyn.BatchWrites(), "Ann's two records written, nothing else")

	// A quiet run: nothing new on either side.
	mc.ResetCounts()
	dyn.Middleware.ResetCounts()
	writes := dyn.BatchWrites()
	second := s.runAfter(t, first)
	requireSynced(connectors.StatusSubscribed)
	require.Zero(t, second.Counts.MarketingToCRM.CRMOptedOut)
	require.Zero(t, second.Counts.CRMToMarketing.Unsubscribed)
	mcCalls, dynCalls := mc.Middleware.Total(), dyn.Middleware.Total()
	t.Logf("quiet run: %d Mailchimp calls %v, %d Dynamics calls %v", mcCalls, mc.Counts(), dynCalls, dyn.Middleware.Counts())
	require.Equal(t, writes, dyn.BatchWrites(), "nothing written")
	require.Equal(t, 1, dyn.TokensIssued(), "the token is reused across runs")
	require.LessOrEqual(t, mcCalls, 4)
	require.LessOrEqual(t, dynCalls, 8)

	// "out" joins the list; joining does not touch the contact.
	dyn.AddListMember(list, out)
	third := s.runAfter(t, second)
	requireSynced(connectors.StatusUnsubscribed)
	require.Equal(t, 1, third.Counts.CRMToMarketing.Unsubscribed, "picked up after joining the list")
	require.Zero(t, third.Counts.MarketingToCRM.CRMOptedOut)
}

// newDynamicsStack runs a Dynamics ⇄ Mailchimp integration on the real
// Temporal server: crm-to-marketing on, scoped to list, contacts and leads.
func newDynamicsStack(t *testing.T, mc *mailchimptest.Server, dyn *dynamicstest.Server, list string) *stack {
	t.Helper()
	id := "dyn-" + strings.ToLower(t.Name())
	settings := activities.Settings{
		IntegrationID: id, MarketingKind: "mailchimp", CRMKind: "dynamics", Audience: audience,
		RecordTypes: []string{"contact", "lead"}, Lists: []string{list}, CRMToMarketing: true,
		OptOut: connectors.OptOutField{Kind: connectors.OptOutStandard},
		// No overlap, and the seed older than the first run: a later run
		// must find "out" through its list membership, not through a
		// modification inside the overlap.
		StatusIfNew: connectors.StatusSubscribed, Overlap: 0, PageSize: 1000, PagesPerActivity: 10,
	}
	mk, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	crm, err := dynamics.New(dynamics.Options{OrgURL: dyn.URL, AuthorityURL: dyn.URL, TenantID: dyn.TenantID, ClientID: dyn.ClientID, ClientSecret: dyn.ClientSecret})
	require.NoError(t, err)
	reg := &settingsRegistry{in: activities.Integration{Settings: settings, Marketing: mk, CRM: crm}}
	led := ledgertest.Open(t, ledger.SQLite)
	temporalServer.NewWorker(id, func(r worker.Registry) {
		r.RegisterWorkflow(workflows.SyncWorkflow)
		r.RegisterActivity(activities.New(reg, led, nil))
	})
	return &stack{id: id, mc: mc, c: temporalServer.GetDefaultClient(), ledger: led, settings: settings, reg: reg}
}
