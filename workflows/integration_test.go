package workflows_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/workflows"
)

// temporalServer is one real Temporal server (in-process, SQLite in
// memory) shared by the integration tests of this package; each test has
// its own task queue and integration id.
var temporalServer *temporaltest.TestServer

func TestMain(m *testing.M) {
	temporalServer = temporaltest.NewServer()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := temporalServer.GetDefaultClient().OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace:        temporalServer.GetDefaultNamespace(),
		SearchAttributes: map[string]enumspb.IndexedValueType{workflows.IntegrationKey.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD},
	})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "registering the search attribute:", err)
		os.Exit(1)
	}
	code := m.Run()
	temporalServer.Stop()
	os.Exit(code)
}

const (
	audience = "aud-demo"
	search   = "customsearch_mc_sync"
)

// stack is one integration running for real: both emulators over HTTP, the
// real connectors, the real activities and SyncWorkflow on a real Temporal
// server.
type stack struct {
	id       string
	mc       *mailchimptest.Server
	ns       *netsuitetest.Server
	settings activities.Settings
	reg      *settingsRegistry
	ledger   *ledger.SQL
	c        client.Client
	refs     map[string]connectors.RecordRef
	// lastScheduledRun is the workflow id of the last run triggerAndWait saw.
	lastScheduledRun string
}

func newStack(t testing.TB, mutate func(*activities.Settings)) *stack {
	t.Helper()
	return newStackWith(t, mutate, ledgertest.Open(t, ledger.SQLite))
}

// newStackWith is newStack over a given ledger; stack.ledger is set when
// it is a SQL one.
func newStackWith(t testing.TB, mutate func(*activities.Settings), led ledger.Ledger) *stack {
	t.Helper()
	return newStackWithOptions(t, mailchimptest.Options{}, mutate, led)
}

// newStackWithOptions is newStackWith with the Mailchimp emulator's
// options chosen by the test (ContactIDFollowsAddress, ShuffleEqualTimes).
func newStackWithOptions(t testing.TB, opts mailchimptest.Options, mutate func(*activities.Settings), led ledger.Ledger) *stack {
	t.Helper()
	s := &stack{
		id:   strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		mc:   mailchimptest.NewServer(opts),
		ns:   netsuitetest.NewServer(netsuitetest.Options{}),
		c:    temporalServer.GetDefaultClient(),
		refs: map[string]connectors.RecordRef{},
	}
	s.ledger, _ = led.(*ledger.SQL)
	t.Cleanup(s.mc.Close)
	t.Cleanup(s.ns.Close)
	s.mc.AddList(audience, "Demo audience")
	s.settings = activities.Settings{
		IntegrationID: s.id, MarketingKind: "mailchimp", CRMKind: "netsuite", Audience: audience,
		RecordTypes: []string{"customer", "contact"}, Lists: []string{search}, CRMToMarketing: true,
		OptOut:      connectors.OptOutField{Kind: connectors.OptOutStandard},
		StatusIfNew: connectors.StatusSubscribed, Overlap: 2 * time.Second, PageSize: 1000, PagesPerActivity: 10,
	}
	if mutate != nil {
		mutate(&s.settings)
	}
	mk, err := mailchimp.New(mailchimp.Options{APIKey: s.mc.APIKey, BaseURL: s.mc.URL, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	require.NoError(t, err)
	crm, err := netsuite.New(netsuite.Options{
		AccountID: s.ns.AccountID, BaseURL: s.ns.URL,
		TBA:          netsuite.TBA{ConsumerKey: s.ns.ConsumerKey, ConsumerSecret: s.ns.ConsumerSecret, TokenID: s.ns.TokenID, TokenSecret: s.ns.TokenSecret},
		RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond, ListCacheTTL: time.Nanosecond,
	})
	require.NoError(t, err)
	s.reg = &settingsRegistry{in: activities.Integration{Settings: s.settings, Marketing: mk, CRM: crm}}
	temporalServer.NewWorker(s.id, func(r worker.Registry) {
		r.RegisterWorkflow(workflows.SyncWorkflow)
		r.RegisterWorkflow(workflows.EventsWorkflow)
		r.RegisterActivity(activities.New(s.reg, led, nil))
	})
	return s
}

// settingsRegistry is the worker's registry of one integration whose
// settings a test changes between runs, as an operator edits the
// configuration file.
type settingsRegistry struct {
	mu sync.Mutex
	in activities.Integration
}

func (r *settingsRegistry) Integration(id string) (*activities.Integration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id != r.in.Settings.IntegrationID {
		return nil, fmt.Errorf("integration %q is not configured", id)
	}
	in := r.in
	return &in, nil
}

// configure changes the integration's settings for the next run.
func (r *settingsRegistry) configure(change func(*activities.Settings)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	change(&r.in.Settings)
}

// seedDemo seeds the cases the product must get right, in both systems.
func (s *stack) seedDemo(t *testing.T) {
	t.Helper()
	member := func(email string, st connectors.MemberStatus) {
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: string(st)}))
	}
	customer := func(key, email, status string) connectors.RecordRef {
		ref := connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: email, SubscriptionStatus: status})}
		s.refs[key] = ref
		return ref
	}
	contact := func(key, email, status string) connectors.RecordRef {
		ref := connectors.RecordRef{Type: "contact", ID: s.ns.AddContact(netsuitetest.Entity{Email: email, SubscriptionStatus: status})}
		s.refs[key] = ref
		return ref
	}
	// Unsubscribed in Mailchimp; two CRM records share the address.
	member("ann@example.com", connectors.StatusUnsubscribed)
	customer("ann-customer", "ann@example.com", "1")
	contact("ann-contact", "ANN@example.com", "3")
	// Cleaned in Mailchimp: a bounce, not an opt-out.
	member("cid@example.com", connectors.StatusCleaned)
	customer("cid", "cid@example.com", "1")
	// Opted out in NetSuite, inside the saved search.
	member("eve@example.com", connectors.StatusSubscribed)
	inSearch := customer("eve", "eve@example.com", "2")
	// Opted out in NetSuite (Confirmed), outside the saved search.
	member("out@example.com", connectors.StatusSubscribed)
	contact("out", "out@example.com", "4")
	// Subscribed everywhere.
	member("sam@example.com", connectors.StatusSubscribed)
	stay := customer("sam", "sam@example.com", "1")
	s.ns.AddSavedSearch(search, inSearch, stay)
}

func (s *stack) run(t testing.TB) workflows.SyncResult {
	t.Helper()
	return s.start(t, workflows.SyncInput{IntegrationID: s.id})
}

// runAfter runs the sync from the watermarks a previous run handed on, as a
// scheduled run does through its last completion result.
func (s *stack) runAfter(t testing.TB, prev workflows.SyncResult) workflows.SyncResult {
	t.Helper()
	return s.start(t, workflows.SyncInput{IntegrationID: s.id, Since: &prev.Next, Fingerprints: prev.Fingerprints})
}

func (s *stack) start(t testing.TB, in workflows.SyncInput) workflows.SyncResult {
	t.Helper()
	run, err := s.c.ExecuteWorkflow(t.Context(), client.StartWorkflowOptions{
		ID: workflows.WorkflowID(s.id), TaskQueue: s.id, WorkflowExecutionTimeout: 10 * time.Minute,
		TypedSearchAttributes: temporal.NewSearchAttributes(workflows.IntegrationKey.ValueSet(s.id)),
	}, workflows.SyncWorkflow, in)
	require.NoError(t, err)
	var res workflows.SyncResult
	require.NoError(t, run.Get(t.Context(), &res))
	return res
}

func (s *stack) status(t *testing.T, email string) connectors.MemberStatus {
	t.Helper()
	m, ok := s.mc.Member(audience, email)
	require.True(t, ok, email)
	return connectors.MemberStatus(m.Status)
}

func (s *stack) subscription(t *testing.T, key string) string {
	t.Helper()
	ref := s.refs[key]
	e, ok := s.ns.Entity(ref.Type, ref.ID)
	require.True(t, ok, key)
	return e.SubscriptionStatus
}

// requireDemoSynced checks the exact final state of both systems after the
// demo data was synced with crm-to-marketing on and before "out" joined the search.
func (s *stack) requireDemoSynced(t *testing.T) {
	t.Helper()
	require.Equal(t, "2", s.subscription(t, "ann-customer"), "Mailchimp unsubscribe → Soft Opt-Out")
	require.Equal(t, "2", s.subscription(t, "ann-contact"), "every record with the address")
	require.Equal(t, "1", s.subscription(t, "cid"), "a clean is not an opt-out")
	require.Equal(t, "2", s.subscription(t, "eve"))
	require.Equal(t, "4", s.subscription(t, "out"), "Confirmed Opt-Out is never downgraded")
	require.Equal(t, "1", s.subscription(t, "sam"))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"))
	require.Equal(t, connectors.StatusCleaned, s.status(t, "cid@example.com"))
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "eve@example.com"), "CRM opt-out in the saved search → unsubscribed")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "out@example.com"), "outside the saved search: left alone")
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "sam@example.com"))
}

func totals(m *emulator.Middleware) int { return m.Total() }

// saveHistory writes the last run's history as JSON, for the replay test
// (run the tests with UPDATE_HISTORIES=1 after a deliberate workflow change).
func (s *stack) saveHistory(t *testing.T, path string) {
	t.Helper()
	require.NoError(t, os.MkdirAll("testdata", 0o755))
	require.NoError(t, os.WriteFile(path, s.history(t), 0o644))
}

// history returns the last run's history as JSON, payloads decoded.
func (s *stack) history(t *testing.T) []byte {
	t.Helper()
	return s.historyOf(t, workflows.WorkflowID(s.id))
}

// historyOf returns the current run of a workflow's history as JSON.
func (s *stack) historyOf(t *testing.T, workflowID string) []byte {
	t.Helper()
	iter := s.c.GetWorkflowHistory(t.Context(), workflowID, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	hist := &historypb.History{}
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(t, err)
		hist.Events = append(hist.Events, ev)
	}
	b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(hist)
	require.NoError(t, err)
	return b
}

// requireNoSecretOrAddress checks that no credential and no email address
// reached the run's history: inputs carry the integration id, results
// carry counts and address hashes.
func (s *stack) requireNoSecretOrAddress(t *testing.T) {
	t.Helper()
	raw := s.history(t)
	var decoded strings.Builder
	for _, m := range regexp.MustCompile(`"data":\s*"([^"]*)"`).FindAllSubmatch(raw, -1) {
		b, err := base64.StdEncoding.DecodeString(string(m[1]))
		require.NoError(t, err)
		decoded.Write(b)
	}
	text := string(raw) + decoded.String()
	require.Contains(t, decoded.String(), s.id, "payloads were decoded")
	for _, secret := range []string{s.mc.APIKey, s.ns.ConsumerSecret, s.ns.TokenSecret, s.ns.ConsumerKey, s.ns.TokenID} {
		require.NotContains(t, text, secret)
	}
	require.NotRegexp(t, `[a-z0-9*]+@example\.com`, text)
}

func TestIntegrationFullRunThenQuietRun(t *testing.T) {
	s := newStack(t, nil)
	s.seedDemo(t)

	first := s.run(t)
	s.requireDemoSynced(t)
	s.requireNoSecretOrAddress(t)
	if os.Getenv("UPDATE_HISTORIES") != "" {
		s.saveHistory(t, "testdata/sync-netsuite-history.json")
	}
	m := first.Counts.MarketingToCRM
	require.Equal(t, 1, m.Unsubscribes)
	require.Equal(t, 2, m.CRMOptedOut)
	require.Equal(t, 1, m.DuplicateRecords)
	require.Equal(t, 1, m.Cleaned)
	k := first.Counts.CRMToMarketing
	require.Equal(t, 1, k.Unsubscribed)
	// "out", plus Ann's two records, which this run opted out from her
	// Mailchimp unsubscribe and which sit outside the saved search too.
	require.Equal(t, 3, k.OutsideLists)

	// A run with nothing new costs a handful of calls, whatever the size.
	s.mc.ResetCounts()
	s.ns.Middleware.ResetCounts()
	second := s.runAfter(t, first)
	s.requireDemoSynced(t)
	require.Zero(t, second.Counts.MarketingToCRM.CRMOptedOut)
	mcCalls, nsCalls := totals(s.mc.Middleware), totals(s.ns.Middleware)
	t.Logf("quiet run: %d Mailchimp calls %v, %d NetSuite calls %v", mcCalls, s.mc.Counts(), nsCalls, s.ns.Middleware.Counts())
	require.LessOrEqual(t, mcCalls, 4)
	require.LessOrEqual(t, nsCalls, 8)
}

func TestIntegrationScheduleRerunAfterListChange(t *testing.T) {
	s := newStack(t, nil)
	s.seedDemo(t)
	ctx := t.Context()
	sched, err := s.c.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:      workflows.ScheduleID(s.id),
		Spec:    client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: time.Hour}}},
		Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_SKIP,
		Paused:  true, // runs only when triggered, as a person rerunning it would
		Action: &client.ScheduleWorkflowAction{
			ID: workflows.ScheduleID(s.id), Workflow: workflows.SyncWorkflow, TaskQueue: s.id,
			Args:                  []any{workflows.SyncInput{IntegrationID: s.id}},
			TypedSearchAttributes: temporal.NewSearchAttributes(workflows.IntegrationKey.ValueSet(s.id)),
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sched.Delete(context.Background()) })

	first := s.triggerAndWait(t, sched, 1)
	s.requireDemoSynced(t)
	require.Equal(t, 3, first.Counts.CRMToMarketing.OutsideLists)

	// The record outside the saved search is added to it; it is not modified.
	s.ns.AddToSavedSearch(search, s.refs["out"])
	second := s.triggerAndWait(t, sched, 2)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "out@example.com"), "picked up by the rerun after the list change")
	// "out"; "eve" is read again (a saved search has no "added at" time)
	// but the ledger knows she is unsubscribed already: not sent again.
	require.Equal(t, 1, second.Counts.CRMToMarketing.Unsubscribed)
	require.Equal(t, 1, second.Counts.CRMToMarketing.AlreadyUnsub)
	require.Zero(t, second.Counts.CRMToMarketing.OutsideLists-2, "only Ann's two records are still outside")
	require.True(t, second.StartedAt.After(first.StartedAt))
	require.Zero(t, second.Counts.MarketingToCRM.CRMOptedOut)
	var st workflows.Status
	v, err := s.c.QueryWorkflow(ctx, s.lastScheduledRun, "", workflows.StatusQuery)
	require.NoError(t, err)
	require.NoError(t, v.Get(&st))
	require.Equal(t, first.Next.Unsubscribed.UTC(), st.Watermarks.Unsubscribed.UTC(), "the rerun started from the first run's watermarks")
	require.Equal(t, first.Next.CRMOptOuts.UTC(), st.Watermarks.CRMOptOuts.UTC())

	// The runs are found by their search attribute, as in the Web UI.
	require.Eventually(t, func() bool {
		resp, err := s.c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("%s = %q", workflows.IntegrationKey.GetName(), s.id),
		})
		return err == nil && len(resp.GetExecutions()) == 2
	}, 10*time.Second, 100*time.Millisecond)
}

// triggerAndWait triggers the schedule and returns the result of its n-th run.
func (s *stack) triggerAndWait(t *testing.T, sched client.ScheduleHandle, n int) workflows.SyncResult {
	t.Helper()
	require.NoError(t, sched.Trigger(t.Context(), client.ScheduleTriggerOptions{}))
	var wfID string
	require.Eventually(t, func() bool {
		desc, err := sched.Describe(t.Context())
		if err != nil || len(desc.Info.RecentActions) < n {
			return false
		}
		wfID = desc.Info.RecentActions[n-1].StartWorkflowResult.WorkflowID
		return true
	}, 10*time.Second, 50*time.Millisecond)
	var res workflows.SyncResult
	require.NoError(t, s.c.GetWorkflow(t.Context(), wfID, "").Get(t.Context(), &res))
	s.lastScheduledRun = wfID
	return res
}

func TestIntegrationStatusQueryAnswersWhileARunIsUnderWay(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.PageSize, st.PagesPerActivity = 2, 1 })
	s.seedDemo(t)
	for i := range 6 {
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: fmt.Sprintf("u%d@example.com", i), Status: "unsubscribed"}))
	}
	s.mc.SetFaults(emulator.Faults{Latency: 150 * time.Millisecond})
	run, err := s.c.ExecuteWorkflow(t.Context(), client.StartWorkflowOptions{ID: workflows.WorkflowID(s.id), TaskQueue: s.id},
		workflows.SyncWorkflow, workflows.SyncInput{IntegrationID: s.id})
	require.NoError(t, err)
	var mid workflows.Status
	require.Eventually(t, func() bool {
		v, err := s.c.QueryWorkflow(t.Context(), run.GetID(), run.GetRunID(), workflows.StatusQuery)
		if err != nil || v.Get(&mid) != nil {
			return false
		}
		return mid.Phase == workflows.PhaseUnsubscribes && mid.Counts.MarketingToCRM.Unsubscribes > 0
	}, 30*time.Second, 20*time.Millisecond, "the query answers mid-run with the phase and the counts so far")
	require.Equal(t, s.id, mid.IntegrationID)
	require.Less(t, mid.Counts.MarketingToCRM.Unsubscribes, 7)
	var res workflows.SyncResult
	require.NoError(t, run.Get(t.Context(), &res))
	require.Equal(t, 7, res.Counts.MarketingToCRM.Unsubscribes)
	v, err := s.c.QueryWorkflow(t.Context(), run.GetID(), run.GetRunID(), workflows.StatusQuery)
	require.NoError(t, err)
	var done workflows.Status
	require.NoError(t, v.Get(&done))
	require.Equal(t, workflows.PhaseDone, done.Phase)
	require.Equal(t, res.Counts, done.Counts)
}

func TestIntegrationExactStatesUnderInjectedFaults(t *testing.T) {
	// Small pages, so that there are many calls for the faults to hit.
	s := newStack(t, func(st *activities.Settings) { st.PageSize = 5 })
	s.seedDemo(t)
	// Many more opt-outs each way, so that the faults land in the middle.
	var mcOnly, nsOnly []string
	for i := range 40 {
		e := fmt.Sprintf("mc%d@example.com", i)
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: e, Status: "unsubscribed"}))
		s.refs[e] = connectors.RecordRef{Type: "customer", ID: s.ns.AddCustomer(netsuitetest.Entity{Email: e, SubscriptionStatus: "1"})}
		mcOnly = append(mcOnly, e)
		e = fmt.Sprintf("ns%d@example.com", i)
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: e, Status: "subscribed"}))
		ref := connectors.RecordRef{Type: "contact", ID: s.ns.AddContact(netsuitetest.Entity{Email: e, SubscriptionStatus: "2"})}
		s.ns.AddToSavedSearch(search, ref)
		nsOnly = append(nsOnly, e)
	}
	faults := emulator.Faults{Rate429: 0.1, Rate5xx: 0.1, RateReset: 0.05}
	s.mc.SetFaults(faults)
	s.ns.Middleware.SetFaults(faults)

	s.run(t)

	s.mc.SetFaults(emulator.Faults{})
	s.ns.Middleware.SetFaults(emulator.Faults{})
	t.Logf("faults injected: Mailchimp %v, NetSuite %v", s.mc.Faulted(), s.ns.Middleware.Faulted())
	require.Positive(t, s.mc.Faulted()["429"]+s.mc.Faulted()["5xx"]+s.mc.Faulted()["reset"])
	require.Positive(t, s.ns.Middleware.Faulted()["429"]+s.ns.Middleware.Faulted()["5xx"]+s.ns.Middleware.Faulted()["reset"])
	s.requireDemoSynced(t)
	for _, e := range mcOnly {
		require.Equal(t, "2", s.subscription(t, e), e)
	}
	for _, e := range nsOnly {
		require.Equal(t, connectors.StatusUnsubscribed, s.status(t, e), e)
	}
}
