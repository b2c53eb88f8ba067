package workflows_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/salesforce"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
	"github.com/optoutsync/optoutsync/workflows"
)

// TestIntegrationSalesforceBothWaysScopedToACampaign runs a Salesforce ⇄
// Mailchimp integration, configured exactly like a NetSuite one, with Step
// 1 on and scoped to a Campaign, and checks both sides exactly.
func TestIntegrationSalesforceBothWaysScopedToACampaign(t *testing.T) {
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	// The org's clock, set by hand so that time passes for it without the
	// test sleeping: the seed is dated a minute before the first run.
	clock := emulator.NewClock(time.Now().Add(-time.Minute))
	sf := salesforcetest.NewServer(salesforcetest.Options{Clock: clock.Now})
	t.Cleanup(sf.Close)
	mc.AddList(audience, "Demo audience")
	member := func(email string, st connectors.MemberStatus) {
		require.NoError(t, mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: string(st)}))
	}

	campaign := sf.AddCampaign("Newsletter")
	// Unsubscribed in Mailchimp: a Contact and a Lead share the address.
	member("ann@example.com", connectors.StatusUnsubscribed)
	annContact := sf.AddContact(salesforcetest.Person{LastName: "Ann", Email: "ann@example.com"})
	annLead := sf.AddLead(salesforcetest.Person{LastName: "Ann", Email: "Ann@Example.com"})
	// Unsubscribed in Mailchimp; a person Account.
	member("pat@example.com", connectors.StatusUnsubscribed)
	pat := sf.AddPersonAccount(salesforcetest.Person{LastName: "Pat", Email: "pat@example.com"})
	// Cleaned in Mailchimp: not an opt-out.
	member("cid@example.com", connectors.StatusCleaned)
	cid := sf.AddContact(salesforcetest.Person{LastName: "Cid", Email: "cid@example.com"})
	// Opted out in Salesforce, in the campaign.
	member("eve@example.com", connectors.StatusSubscribed)
	eve := sf.AddLead(salesforcetest.Person{LastName: "Eve", Email: "eve@example.com", OptedOut: true})
	sf.AddCampaignMember(campaign, eve)
	// Opted out in Salesforce, outside the campaign (for now).
	member("out@example.com", connectors.StatusSubscribed)
	out := sf.AddContact(salesforcetest.Person{LastName: "Out", Email: "out@example.com", OptedOut: true})
	// Subscribed everywhere, in the campaign.
	member("sam@example.com", connectors.StatusSubscribed)
	sam := sf.AddContact(salesforcetest.Person{LastName: "Sam", Email: "sam@example.com"})
	sf.AddCampaignMember(campaign, sam)

	s := newSalesforceStack(t, mc, sf, campaign)

	optedOut := func(recordID string) bool {
		rec, ok := sf.Record(recordID)
		require.True(t, ok, recordID)
		if v, ok := rec["HasOptedOutOfEmail"]; ok {
			return v == true
		}
		return rec["PersonHasOptedOutOfEmail"] == true
	}

	// From the first run on, the org's clock stands a minute past the
	// run's start, as an org's clock running ahead would: whatever the
	// run's latency, its own writes and "out" joining the campaign are
	// dated at or after the first run's watermark and the seed before it,
	// so the second run reads those writes again (and must not send them
	// back) and can find "out" only through the campaign.
	clock.Set(time.Now().Add(time.Minute))
	first := s.run(t)
	require.True(t, optedOut(annContact), "Mailchimp unsubscribe → HasOptedOutOfEmail on the Contact")
	require.True(t, optedOut(annLead), "and on the Lead with the same address")
	require.True(t, optedOut(pat), "person Account → PersonHasOptedOutOfEmail")
	require.False(t, optedOut(cid), "a clean is not an opt-out")
	require.False(t, optedOut(sam))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"), "opted out in the campaign → unsubscribed")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "out@example.com"), "outside the campaign: left alone")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "sam@example.com"))
	require.Equal(t, connectors.StatusCleaned, s.status(t, "cid@example.com"))
	require.Equal(t, 3, first.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, 1, first.Counts.CRMToMarketing.Unsubscribed)
	require.Positive(t, first.Counts.CRMToMarketing.OutsideLists)
	require.NotNil(t, first.CRMAPIUsage, "the org's API budget is reported")
	require.Positive(t, first.CRMAPIUsage.Used)

	// "out" joins the campaign; joining does not modify the Contact.
	sf.AddCampaignMember(campaign, out)
	second := s.runAfter(t, first)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "out@example.com"), "picked up after joining the campaign")
	require.Equal(t, 1, second.Counts.CRMToMarketing.Unsubscribed)
	require.Zero(t, second.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "sam@example.com"))
}

// newSalesforceStack runs a Salesforce ⇄ Mailchimp integration on the real
// Temporal server: crm-to-marketing on, scoped to campaign, Contacts, Leads and person
// Accounts.
func newSalesforceStack(t *testing.T, mc *mailchimptest.Server, sf *salesforcetest.Server, campaign string) *stack {
	t.Helper()
	id := "sf-" + strings.ToLower(t.Name())
	settings := activities.Settings{
		IntegrationID: id, MarketingKind: "mailchimp", CRMKind: "salesforce", Audience: audience,
		RecordTypes: []string{"Contact", "Lead", "Account"}, Lists: []string{campaign}, CRMToMarketing: true,
		OptOut: connectors.OptOutField{Kind: connectors.OptOutStandard},
		// No overlap, and the seed older than the first run: the second
		// run must then find "out" through its campaign membership, not
		// through a modification inside the overlap.
		StatusIfNew: connectors.StatusSubscribed, Overlap: 0, PageSize: 1000, PagesPerActivity: 10,
	}
	mk, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL})
	require.NoError(t, err)
	crm, err := salesforce.New(salesforce.Options{LoginURL: sf.URL, ClientID: sf.ClientID, ClientSecret: sf.ClientSecret})
	require.NoError(t, err)
	reg := &settingsRegistry{in: activities.Integration{Settings: settings, Marketing: mk, CRM: crm}}
	led := ledgertest.Open(t, ledger.SQLite)
	temporalServer.NewWorker(id, func(r worker.Registry) {
		r.RegisterWorkflow(workflows.SyncWorkflow)
		r.RegisterActivity(activities.New(reg, led, nil))
	})
	return &stack{id: id, mc: mc, c: temporalServer.GetDefaultClient(), ledger: led, settings: settings, reg: reg}
}

// TestIntegrationSalesforceBudgetSpentStopsTheRun checks that a spent daily
// API budget stops the run at once with a clear, non-retryable error,
// rather than burning retries against REQUEST_LIMIT_EXCEEDED.
func TestIntegrationSalesforceBudgetSpentStopsTheRun(t *testing.T) {
	mc := mailchimptest.NewServer(mailchimptest.Options{})
	t.Cleanup(mc.Close)
	sf := salesforcetest.NewServer(salesforcetest.Options{DailyLimit: 100})
	t.Cleanup(sf.Close)
	mc.AddList(audience, "Demo audience")
	require.NoError(t, mc.AddMember(audience, mailchimptest.MemberSeed{Email: "ann@example.com", Status: "unsubscribed"}))
	sf.AddContact(salesforcetest.Person{LastName: "Ann", Email: "ann@example.com"})
	s := newSalesforceStack(t, mc, sf, sf.AddCampaign("C"))
	sf.SetAPIUsage(100, 100)

	run, err := s.c.ExecuteWorkflow(t.Context(), client.StartWorkflowOptions{ID: workflows.WorkflowID(s.id), TaskQueue: s.id},
		workflows.SyncWorkflow, workflows.SyncInput{IntegrationID: s.id})
	require.NoError(t, err)
	err = run.Get(t.Context(), nil)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	require.Equal(t, activities.ErrTypeQuotaExceeded, appErr.Type())
	require.True(t, appErr.NonRetryable())
	require.Contains(t, appErr.Error(), "budget")
	// One login and the first lookup, one query per record type sent
	// together, which met the limit: no retry was burnt.
	require.Equal(t, 1+len(s.settings.RecordTypes), sf.Middleware.Total(), "%v", sf.Middleware.Counts())

	v, err := s.c.QueryWorkflow(t.Context(), run.GetID(), run.GetRunID(), workflows.StatusQuery)
	require.NoError(t, err)
	var st workflows.Status
	require.NoError(t, v.Get(&st))
	require.Equal(t, workflows.PhaseFailed, st.Phase)
	require.Contains(t, st.LastError, "budget")
}
