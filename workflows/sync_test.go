package workflows_test

import (
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/workflows"
)

const id = "acme"

type fixture struct {
	mk       *connectorstest.Marketing
	crm      *connectorstest.CRM
	settings activities.Settings
	led      *ledger.SQL  // one ledger for every run of the test
	log      *slog.Logger // the workflow's logger; nil: warnings to stderr
}

func (f *fixture) ledger(t *testing.T) *ledger.SQL {
	if f.led == nil {
		f.led = ledgertest.Open(t, ledger.SQLite)
	}
	return f.led
}

func newFixture() *fixture {
	return &fixture{
		mk:  connectorstest.NewMarketing(),
		crm: connectorstest.NewCRM(),
		settings: activities.Settings{
			IntegrationID: id, MarketingKind: "mailchimp", CRMKind: "netsuite", Audience: "aud1", RecordTypes: []string{"customer", "contact"},
			OptOut: connectors.OptOutField{Kind: connectors.OptOutStandard}, StatusIfNew: connectors.StatusSubscribed,
			PageSize: 1000, PagesPerActivity: 10,
		},
	}
}

// run executes one SyncWorkflow run in the SDK's test environment with the
// real activities over the shared in-memory fakes.
func (f *fixture) run(t *testing.T, in workflows.SyncInput, last *workflows.SyncResult) (workflows.SyncResult, error) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	logger := f.log
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s.SetLogger(log.NewStructuredLogger(logger))
	env := s.NewTestWorkflowEnvironment()
	reg := activities.MapRegistry{id: {Settings: f.settings, Marketing: f.mk, CRM: f.crm}}
	env.RegisterActivity(activities.New(reg, f.ledger(t), nil))
	env.RegisterWorkflow(workflows.SyncWorkflow)
	if last != nil {
		env.SetLastCompletionResult(*last)
	}
	if in.IntegrationID == "" {
		in.IntegrationID = id
	}
	env.ExecuteWorkflow(workflows.SyncWorkflow, in)
	require.True(t, env.IsWorkflowCompleted())
	if err := env.GetWorkflowError(); err != nil {
		return workflows.SyncResult{}, err
	}
	var res workflows.SyncResult
	require.NoError(t, env.GetWorkflowResult(&res))
	var st workflows.Status
	q, err := env.QueryWorkflow(workflows.StatusQuery)
	require.NoError(t, err)
	require.NoError(t, q.Get(&st))
	require.Equal(t, workflows.PhaseDone, st.Phase)
	require.Equal(t, res.Counts, st.Counts)
	return res, nil
}

func (f *fixture) mustRun(t *testing.T, in workflows.SyncInput, last *workflows.SyncResult) workflows.SyncResult {
	t.Helper()
	res, err := f.run(t, in, last)
	require.NoError(t, err)
	return res
}

func TestMarketingToCRMSetsStandardOptOutOnEveryDuplicate(t *testing.T) {
	f := newFixture()
	f.mk.Add("ann@example.com", connectors.StatusUnsubscribed)
	f.mk.Add("bob@example.com", connectors.StatusSubscribed)
	f.mk.Add("cat@example.com", connectors.StatusCleaned)
	f.mk.Add("dan@example.com", connectors.StatusSubscribed)
	annCustomer := f.crm.Add("customer", "ann@example.com", "1")
	annContact := f.crm.Add("contact", "Ann@Example.com", "3")
	bob := f.crm.Add("customer", "bob@example.com", "1")
	cat := f.crm.Add("customer", "cat@example.com", "1")
	dan := f.crm.Add("customer", "dan@example.com", "2") // opted out in the CRM; crm-to-marketing is off

	res := f.mustRun(t, workflows.SyncInput{}, nil)

	require.Equal(t, "2", f.crm.Record(annCustomer).Status)
	require.Equal(t, "2", f.crm.Record(annContact).Status)
	require.Equal(t, "1", f.crm.Record(bob).Status)
	require.Equal(t, "1", f.crm.Record(cat).Status, "a clean is a bounce, not an opt-out")
	require.Equal(t, "2", f.crm.Record(dan).Status)
	require.Equal(t, connectors.StatusSubscribed, f.mk.Member("dan@example.com").Status, "crm-to-marketing off: CRM opt-outs stay in the CRM")
	m := res.Counts.MarketingToCRM
	require.Equal(t, 1, m.Unsubscribes)
	require.Equal(t, 2, m.CRMOptedOut)
	require.Equal(t, 1, m.DuplicateRecords)
	require.Equal(t, 1, m.Cleaned)
	require.Zero(t, res.Counts.CRMToMarketing)
	require.Contains(t, res.Notes, "crm-to-marketing is off (crmToMarketing: false): CRM opt-outs were not sent to the audience.")
	require.False(t, res.Next.Unsubscribed.IsZero())
	require.True(t, res.Next.CRMOptOuts.IsZero(), "a step that is off keeps its watermark")
}

func TestCustomAndInvertedOptOutFieldsReplaceTheStandardOne(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind connectors.OptOutKind
		want bool
	}{
		{"custom", connectors.OptOutCustom, true},
		{"inverted", connectors.OptOutInverted, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			f.settings.OptOut = connectors.OptOutField{Kind: tc.kind, Field: "custentity_mc"}
			f.mk.Add("ann@example.com", connectors.StatusUnsubscribed)
			r := f.crm.Add("customer", "ann@example.com", "1")
			if tc.kind == connectors.OptOutInverted {
				f.crm.SetCustom(r, "custentity_mc", true) // opted in
			}
			res := f.mustRun(t, workflows.SyncInput{}, nil)
			got := f.crm.Record(r)
			require.Equal(t, tc.want, got.Custom["custentity_mc"])
			require.Equal(t, "1", got.Status, "the standard field is left alone")
			require.Equal(t, 1, res.Counts.MarketingToCRM.CRMOptedOut)
		})
	}
}

func TestCleanedMembersAreRecordedInTheMappedField(t *testing.T) {
	f := newFixture()
	f.settings.CleanedField = "custentity_bounced"
	f.mk.Add("cat@example.com", connectors.StatusCleaned)
	r := f.crm.Add("customer", "cat@example.com", "1")
	res := f.mustRun(t, workflows.SyncInput{}, nil)
	got := f.crm.Record(r)
	require.True(t, got.Custom["custentity_bounced"])
	require.Equal(t, "1", got.Status)
	require.Equal(t, 1, res.Counts.MarketingToCRM.CleanedRecorded)
}

func TestCRMToMarketingIsScopedToListsAndPicksUpARecordAddedLater(t *testing.T) {
	f := newFixture()
	f.settings.CRMToMarketing = true
	f.settings.Lists = []string{"customsearch_mc"}
	for _, e := range []string{"in@example.com", "out@example.com", "gone@example.com"} {
		f.mk.Add(e, connectors.StatusSubscribed)
	}
	f.crm.Add("customer", "in@example.com", "2", "customsearch_mc")
	out := f.crm.Add("contact", "out@example.com", "4")
	f.crm.Add("customer", "", "2", "customsearch_mc") // bad record: reported, skipped

	first := f.mustRun(t, workflows.SyncInput{}, nil)
	require.Equal(t, connectors.StatusUnsubscribed, f.mk.Member("in@example.com").Status)
	require.Equal(t, connectors.StatusSubscribed, f.mk.Member("out@example.com").Status, "outside the lists: left alone")
	k := first.Counts.CRMToMarketing
	require.Equal(t, 1, k.Unsubscribed)
	require.Equal(t, 1, k.OutsideLists)
	require.Equal(t, 1, k.InvalidEmails)
	require.Contains(t, notesText(first), "1 opted-out CRM record(s) were left alone because they are outside the integration's lists")

	f.crm.AddToList(out, "customsearch_mc")
	second := f.mustRun(t, workflows.SyncInput{}, &first)
	require.Equal(t, connectors.StatusUnsubscribed, f.mk.Member("out@example.com").Status, "picked up after joining the list")
	require.Equal(t, 1, second.Counts.CRMToMarketing.Unsubscribed)
	require.Zero(t, second.Counts.CRMToMarketing.OutsideLists)
}

func TestFieldSyncSkipsBlockedMembersAndNeverResubscribes(t *testing.T) {
	f := newFixture()
	f.settings.FieldMap = map[string]string{"firstname": "FNAME"}
	f.settings.Lists = []string{"L"}
	f.mk.Add("sub@example.com", connectors.StatusSubscribed)
	f.mk.Add("uns@example.com", connectors.StatusUnsubscribed)
	f.mk.Add("cln@example.com", connectors.StatusCleaned)
	f.mk.Add("arc@example.com", connectors.StatusArchived)
	for _, e := range []string{"sub@example.com", "uns@example.com", "cln@example.com", "arc@example.com", "new@example.com"} {
		r := f.crm.Add("customer", e, "1", "L")
		f.crm.SetField(r, "firstname", "N-"+e[:3])
	}
	f.crm.Add("customer", "optout@example.com", "2", "L")

	res := f.mustRun(t, workflows.SyncInput{}, nil)

	require.Equal(t, "N-sub", f.mk.Member("sub@example.com").Fields["FNAME"])
	require.Equal(t, connectors.StatusSubscribed, f.mk.Member("sub@example.com").Status)
	for _, e := range []string{"uns@example.com", "cln@example.com", "arc@example.com"} {
		require.Empty(t, f.mk.Member(e).Fields, e)
	}
	require.Equal(t, connectors.StatusArchived, f.mk.Member("arc@example.com").Status, "an archived member is not re-added")
	require.Equal(t, connectors.StatusUnsubscribed, f.mk.Member("uns@example.com").Status)
	require.Equal(t, connectors.StatusCleaned, f.mk.Member("cln@example.com").Status)
	require.Equal(t, connectors.StatusSubscribed, f.mk.Member("new@example.com").Status)
	require.Equal(t, "N-new", f.mk.Member("new@example.com").Fields["FNAME"])
	require.Equal(t, connectors.StatusNotFound, f.mk.Member("optout@example.com").Status, "an opted-out record is never added")
	fs := res.Counts.FieldSync
	require.Equal(t, 1, fs.FieldsUpdated)
	require.Equal(t, 1, fs.MembersAdded)
	require.Equal(t, 3, fs.SkippedBlocked)
	require.Equal(t, 1, fs.SkippedOptOut)
}

func TestComplianceAnswerIsRecordedNotRetriedNotAFailure(t *testing.T) {
	f := newFixture()
	f.settings.CRMToMarketing = true
	f.mk.Add("forgot@example.com", connectors.StatusSubscribed)
	f.mk.Forget("forgot@example.com")
	f.crm.Add("customer", "forgot@example.com", "2")

	res := f.mustRun(t, workflows.SyncInput{}, nil)
	require.Equal(t, 1, res.Counts.CRMToMarketing.ComplianceHeld)
	require.Zero(t, res.Counts.CRMToMarketing.Failed)
	require.Len(t, res.Failures, 1)
	require.True(t, res.Failures[0].Compliance)
	require.Equal(t, connectors.AddressHash("forgot@example.com"), res.Failures[0].AddressHash)
	require.Equal(t, 1, f.mk.Calls("Unsubscribe"), "not retried")
	require.False(t, res.Next.CRMOptOuts.IsZero(), "a compliance answer does not hold the watermark")
}

func TestRejectedRecordIsReportedAndRetriedByTheNextRun(t *testing.T) {
	f := newFixture()
	f.mk.Add("ann@example.com", connectors.StatusUnsubscribed)
	f.mk.Add("bob@example.com", connectors.StatusUnsubscribed)
	bad := f.crm.Add("customer", "ann@example.com", "1")
	f.crm.Reject(bad, true)
	good := f.crm.Add("customer", "bob@example.com", "1")

	first := f.mustRun(t, workflows.SyncInput{}, nil)
	require.Equal(t, "2", f.crm.Record(good).Status, "the rest of the run goes on")
	require.Equal(t, 1, first.Counts.MarketingToCRM.Failed)
	require.Len(t, first.Failures, 1)
	require.Equal(t, "customer/"+bad.ID, first.Failures[0].Record)
	require.Equal(t, connectors.AddressHash("ann@example.com"), first.Failures[0].AddressHash)
	require.True(t, first.Next.Unsubscribed.IsZero(), "the failed step keeps its watermark")

	f.crm.Reject(bad, false)
	second := f.mustRun(t, workflows.SyncInput{}, &first)
	require.Equal(t, "2", f.crm.Record(bad).Status, "retried by the next run")
	require.Equal(t, 1, second.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, 1, second.Counts.MarketingToCRM.CRMAlreadyOut)
	require.False(t, second.Next.Unsubscribed.IsZero())
}

func TestSecondRunReadsOnlyNewChanges(t *testing.T) {
	f := newFixture()
	f.mk.Add("ann@example.com", connectors.StatusUnsubscribed)
	f.crm.Add("customer", "ann@example.com", "1")
	first := f.mustRun(t, workflows.SyncInput{}, nil)
	require.Equal(t, 1, first.Counts.MarketingToCRM.Unsubscribes)

	writes := f.crm.Writes()
	second := f.mustRun(t, workflows.SyncInput{}, &first)
	require.Zero(t, second.Counts.MarketingToCRM.Unsubscribes)
	require.Equal(t, writes, f.crm.Writes())

	f.mk.Add("bob@example.com", connectors.StatusUnsubscribed)
	f.crm.Add("contact", "bob@example.com", "1")
	third := f.mustRun(t, workflows.SyncInput{}, &second)
	require.Equal(t, 1, third.Counts.MarketingToCRM.Unsubscribes)
	require.Equal(t, 1, third.Counts.MarketingToCRM.CRMOptedOut)
}

func TestContinueAsNewCarriesCursorCountsAndWatermarks(t *testing.T) {
	f := newFixture()
	f.settings.PageSize, f.settings.PagesPerActivity = 2, 1
	for _, e := range []string{"a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"} {
		f.mk.Add(e, connectors.StatusUnsubscribed)
		f.crm.Add("customer", e, "1")
	}
	since := workflows.Watermarks{Unsubscribed: time.Now().Add(-time.Hour)}
	in := workflows.SyncInput{IntegrationID: id, Since: &since, ContinueAfter: 2}
	var res workflows.SyncResult
	hops := 0
	for {
		var err error
		res, err = f.run(t, in, nil)
		var can *workflow.ContinueAsNewError
		if !errors.As(err, &can) {
			require.NoError(t, err)
			break
		}
		hops++
		require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &in))
		require.NotNil(t, in.State)
		require.Equal(t, since.Unsubscribed.UTC(), in.State.Since.Unsubscribed.UTC(), "the watermark is carried over")
		require.Equal(t, hops, in.State.Continued)
		require.Less(t, hops, 10)
	}
	require.GreaterOrEqual(t, hops, 1)
	require.Equal(t, 5, res.Counts.MarketingToCRM.Unsubscribes)
	require.Equal(t, 5, res.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, 8, res.Counts.MarketingToCRM.Pages, "3 pages of unsubscribes, 1 of cleans, 1 of re-subscribes, 3 of CRM records changed since")
}

func TestRejectedCredentialsFailTheRunWithoutRetrying(t *testing.T) {
	f := newFixture()
	f.mk.FailWith(&connectors.APIError{System: "mailchimp", Status: 401, Kind: connectors.ErrUnauthorized, Code: "API Key Invalid"})
	_, err := f.run(t, workflows.SyncInput{}, nil)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	require.Equal(t, activities.ErrTypeUnauthorized, appErr.Type())
	require.True(t, appErr.NonRetryable())
	require.Equal(t, 1, f.mk.Calls("ChangedMembers"), "a rejected key is not retried")
}

func TestLastCompletionResultSetsTheWatermark(t *testing.T) {
	f := newFixture()
	f.mk.Add("old@example.com", connectors.StatusUnsubscribed)
	f.crm.Add("customer", "old@example.com", "1")
	last := f.mustRun(t, workflows.SyncInput{}, nil)
	last.Next.Unsubscribed = time.Now().Add(time.Minute)
	res := f.mustRun(t, workflows.SyncInput{}, &last)
	require.Zero(t, res.Counts.MarketingToCRM.Unsubscribes, "changes before the last run's watermark are not read again")
}

func TestARunAfterOneWithoutTheLedgerReadsFromTheBeginningOnce(t *testing.T) {
	f := newFixture()
	f.mk.Add("old@example.com", connectors.StatusUnsubscribed)
	f.crm.Add("customer", "old@example.com", "1")
	// The result of a run from before the ledger: watermarks, no fingerprints.
	last := workflows.SyncResult{Next: workflows.Watermarks{Unsubscribed: time.Now().Add(time.Minute), Cleaned: time.Now()}}
	res := f.mustRun(t, workflows.SyncInput{}, &last)
	require.Equal(t, 1, res.Counts.MarketingToCRM.Unsubscribes, "read again, to fill the ledger")
	require.Contains(t, notesText(res), "marketing-to-crm (unsubscribes) reads from the beginning once: the last completed run predates the consent ledger")
	again := f.mustRun(t, workflows.SyncInput{}, &res)
	require.NotContains(t, notesText(again), "from the beginning")
}

func TestAChangedSettingReadsItsStepFromTheBeginningOnce(t *testing.T) {
	f := newFixture()
	f.settings.CRMToMarketing = true
	first := f.mustRun(t, workflows.SyncInput{}, nil)
	f.crm.Add("customer", "eve@example.com", "2")
	f.mk.Add("eve@example.com", connectors.StatusSubscribed)
	first.Next.CRMOptOuts = time.Now().Add(time.Hour) // eve's opt-out is behind the watermark
	f.settings.RecordTypes = []string{"customer", "contact", "partner"}
	second := f.mustRun(t, workflows.SyncInput{}, &first)
	require.Equal(t, connectors.StatusUnsubscribed, f.mk.Member("eve@example.com").Status)
	require.Contains(t, notesText(second), "crm-to-marketing reads from the beginning once: its settings (audience, record types, lists, opt-out field or addAbsentAsUnsubscribed) changed since the last completed run.")
	require.NotContains(t, notesText(second), "Re-subscribes reads", "the audience did not change")
}

func notesText(r workflows.SyncResult) string {
	s := ""
	for _, n := range r.Notes {
		s += n + "\n"
	}
	return s
}

func TestFieldSyncNeverAddsAPersonWithAnyOptedOutRecord(t *testing.T) {
	f := newFixture()
	f.settings.FieldMap = map[string]string{"firstname": "FNAME"}
	f.settings.Lists = []string{"L"}
	f.settings.OptOut = connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "custentity_mc"}
	// Ann's customer record is in the list and opted in; her contact record,
	// outside the list, is opted out.
	f.crm.Add("customer", "ann@example.com", "1", "L")
	f.crm.SetCustom(f.crm.Add("contact", "ann@example.com", "1"), "custentity_mc", true)
	// Bob's record uses the custom field, but the CRM's standard opt-out is set.
	f.crm.Add("customer", "bob@example.com", "2", "L")
	// Two records of Cid in the list, the second opted out.
	f.crm.Add("customer", "cid@example.com", "1", "L")
	f.crm.SetCustom(f.crm.Add("contact", "cid@example.com", "1", "L"), "custentity_mc", true)
	f.crm.Add("customer", "dee@example.com", "1", "L")

	res := f.mustRun(t, workflows.SyncInput{}, nil)
	for _, e := range []string{"ann@example.com", "bob@example.com", "cid@example.com"} {
		require.Equal(t, connectors.StatusNotFound, f.mk.Member(e).Status, e)
	}
	require.Equal(t, connectors.StatusSubscribed, f.mk.Member("dee@example.com").Status)
	require.Equal(t, 3, res.Counts.FieldSync.SkippedOptOut)
	require.Equal(t, 1, res.Counts.FieldSync.MembersAdded)
}

func TestNextWatermarkIsTheRunStartLessTheOverlap(t *testing.T) {
	f := newFixture()
	f.settings.Overlap = 5 * time.Minute
	f.settings.CRMToMarketing = true
	res := f.mustRun(t, workflows.SyncInput{}, nil)
	want := res.StartedAt.Add(-5 * time.Minute)
	require.Equal(t, want, res.Next.Unsubscribed)
	require.Equal(t, want, res.Next.Cleaned)
	require.Equal(t, want, res.Next.CRMOptOuts)
	require.True(t, res.Next.Fields.IsZero(), "field sync is off: its watermark stays")
}

func TestFieldSyncNeverAddsAnAddressTheLedgerHoldsAsOptedOut(t *testing.T) {
	f := newFixture()
	f.settings.FieldMap = map[string]string{"firstname": "FNAME"}
	led := f.ledger(t)
	// An earlier run saw Old's address unsubscribe (the member was later
	// archived away), and New's member, contact c1, unsubscribe after Eve's
	// address, known to belong to c1, changed to New's.
	_, err := led.Observe(t.Context(), []ledger.Observation{{Integration: id, System: "mailchimp", Subject: "m-old",
		Person: led.Person("old@example.com"), Kind: ledger.KindUnsubscribe, OccurredAt: time.Now().Add(-time.Hour), WorkflowID: "w", RunID: "r"}})
	require.NoError(t, err)
	require.NoError(t, led.LinkContacts(t.Context(), id, "mailchimp", map[string]string{led.Person("eve@example.com"): "c1"}))
	_, err = led.Observe(t.Context(), []ledger.Observation{{Integration: id, System: "mailchimp", Subject: "c1", Contact: "c1",
		Person: led.Person("new@example.com"), Kind: ledger.KindUnsubscribe, OccurredAt: time.Now().Add(-time.Hour), WorkflowID: "w", RunID: "r"}})
	require.NoError(t, err)
	for _, e := range []string{"old@example.com", "eve@example.com", "dee@example.com"} {
		f.crm.Add("customer", e, "1")
	}

	res := f.mustRun(t, workflows.SyncInput{}, nil)
	require.Equal(t, connectors.StatusNotFound, f.mk.Member("old@example.com").Status, "suppressed: not added")
	require.Equal(t, connectors.StatusNotFound, f.mk.Member("eve@example.com").Status, "an earlier address of an opted-out member: not added")
	require.Equal(t, connectors.StatusSubscribed, f.mk.Member("dee@example.com").Status)
	require.Equal(t, 2, res.Counts.FieldSync.SkippedSuppressed)
	require.Equal(t, 1, res.Counts.FieldSync.MembersAdded)
}
