package workflows_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/worker/webhooks"
	"github.com/optoutsync/optoutsync/workflows"
)

const webhookToken = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a59687"

// hookStack is a stack whose Mailchimp emulator delivers webhooks to a
// real receiver over HTTP, which hands them to the integration's
// EventsWorkflow on the real Temporal server.
type hookStack struct {
	*stack
	rcv    *webhooks.Receiver
	hs     *httptest.Server
	hooks  *mailchimp.Client
	tc     *switchClient
	signed string
	clk    *emulator.Clock
	// patience bounds settle's wait; 0 means 2 minutes.
	patience time.Duration
}

// switchClient is the Temporal client with an outage switch: while down,
// signals fail as they do when the frontend is unreachable.
type switchClient struct {
	client.Client
	down atomic.Bool
}

func (c *switchClient) SignalWithStartWorkflow(ctx context.Context, id, signal string, arg any, o client.StartWorkflowOptions, wf any, args ...any) (client.WorkflowRun, error) {
	if c.down.Load() {
		return nil, errors.New("connection refused (test outage)")
	}
	return c.Client.SignalWithStartWorkflow(ctx, id, signal, arg, o, wf, args...)
}

func newHookStack(t testing.TB, secret string, wrap func(http.Handler) http.Handler) *hookStack {
	t.Helper()
	return newHookStackWith(t, hookOptions{secret: secret, wrap: wrap})
}

// hookOptions vary a hookStack: the signing secret, a wrapper around the
// receiver, the emulator's ContactIDFollowsAddress (true is the answer
// under which a poll cannot link an address to the next) and the events
// workflow's first input.
type hookOptions struct {
	secret         string
	wrap           func(http.Handler) http.Handler
	contactFollows bool
	run            workflows.EventsRun
	settings       func(*activities.Settings)
}

func newHookStackWith(t testing.TB, o hookOptions) *hookStack {
	t.Helper()
	secret, wrap, contactFollows := o.secret, o.wrap, o.contactFollows
	if o.run.BatchWindow == 0 {
		o.run.BatchWindow = 50 * time.Millisecond
	}
	clk := emulator.NewClock(time.Now())
	s := newStackWithOptions(t, mailchimptest.Options{Now: clk.Now, ContactIDFollowsAddress: contactFollows, WebhookRetries: []time.Duration{
		50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second, time.Minute,
	}}, o.settings, ledgertest.Open(t, ledger.SQLite))
	h := &hookStack{stack: s, tc: &switchClient{Client: s.c}, signed: secret, clk: clk}
	var err error
	h.hooks, err = mailchimp.New(mailchimp.Options{APIKey: s.mc.APIKey, BaseURL: s.mc.URL,
		Webhook: &mailchimp.WebhookOptions{Audience: audience, Token: webhookToken, SigningSecret: secret}})
	require.NoError(t, err)
	h.rcv = webhooks.New(webhooks.Options{
		Client: h.tc, Ledger: s.ledger, Secrets: s.ledger, TaskQueue: s.id, SignalTimeout: 5 * time.Second,
		Endpoints: []webhooks.Endpoint{{Integration: s.id, Hooks: h.hooks}},
		Run:       o.run,
		Now:       clk.Now,
	})
	var handler http.Handler = h.rcv
	if wrap != nil {
		handler = wrap(handler)
	}
	h.hs = httptest.NewServer(handler)
	t.Cleanup(h.hs.Close)
	require.NoError(t, h.rcv.Register(t.Context(), h.hs.URL))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.c.TerminateWorkflow(ctx, workflows.EventsWorkflowID(s.id), "", "test over")
	})
	return h
}

// eventsStatus queries the events workflow.
func (h *hookStack) eventsStatus(t testing.TB) workflows.EventsStatus {
	t.Helper()
	st, err := h.queryStatus(t.Context())
	require.NoError(t, err)
	return st
}

func (h *hookStack) queryStatus(ctx context.Context) (workflows.EventsStatus, error) {
	var st workflows.EventsStatus
	v, err := h.c.QueryWorkflow(ctx, workflows.EventsWorkflowID(h.id), "", workflows.StatusQuery)
	if err == nil {
		err = v.Get(&st)
	}
	return st, err
}

// settle waits for the emulator's deliveries, then for the events
// workflow to have nothing pending and to have applied at least applied
// events.
func (h *hookStack) settle(t testing.TB, applied int) workflows.EventsStatus {
	t.Helper()
	wait := h.patience
	if wait == 0 {
		wait = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	if err := h.mc.WaitDeliveries(ctx); err != nil {
		t.Fatalf("deliveries not done: %v; %+v", err, h.mc.WebhookStats())
	}
	for {
		// A query can time out while the worker is busy (-race, a large
		// batch): asked again until settle's own deadline.
		st, err := h.queryStatus(ctx)
		if err == nil && st.Pending == 0 && st.Counts.Events >= applied {
			return st
		}
		if ctx.Err() != nil {
			t.Fatalf("events not applied: %+v (%v); deliveries %+v", st, err, h.mc.WebhookStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *hookStack) member(t *testing.T, email string) {
	t.Helper()
	require.NoError(t, h.mc.AddMember(audience, mailchimptest.MemberSeed{Email: email, Status: "subscribed"}))
}

func (h *hookStack) customer(key, email string) {
	h.refs[key] = connectors.RecordRef{Type: "customer", ID: h.ns.AddCustomer(netsuitetest.Entity{Email: email, SubscriptionStatus: "1"})}
}

func (h *hookStack) contact(key, email string) {
	h.refs[key] = connectors.RecordRef{Type: "contact", ID: h.ns.AddContact(netsuitetest.Entity{Email: email, SubscriptionStatus: "1"})}
}

// A member who unsubscribes and is archived before any poll: the poll
// would never see the unsubscribe (archived members are not listed as
// unsubscribed), the webhook does, and every CRM record of the address is
// opted out; the archive itself (the account's act) changes nothing.
func TestWebhookUnsubscribeThenArchiveBeforeAnyPoll(t *testing.T) {
	h := newHookStack(t, "", nil)
	h.member(t, "ann@example.com")
	h.member(t, "bo@example.com")
	h.customer("ann-customer", "ann@example.com")
	h.contact("ann-contact", "Ann@Example.com")
	h.customer("bo", "bo@example.com")
	h.ns.AddSavedSearch(search, h.refs["bo"])

	require.NoError(t, h.mc.Act(audience, "ann@example.com", "unsubscribe", mailchimptest.SourceUser))
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "archive", mailchimptest.SourceAdmin))
	// The account archives a subscribed member: not the person's opt-out.
	require.NoError(t, h.mc.Act(audience, "bo@example.com", "archive", mailchimptest.SourceAdmin))
	st := h.settle(t, 3)

	require.Equal(t, "2", h.subscription(t, "ann-customer"))
	require.Equal(t, "2", h.subscription(t, "ann-contact"), "every record of the address")
	require.Equal(t, "1", h.subscription(t, "bo"), "an archive by the account is not an opt-out")
	require.Equal(t, 3, st.Counts.Events)
	require.Equal(t, 2, st.Counts.EventsIgnored, "ann's and bo's archives")
	require.Equal(t, 2, st.Counts.CRMOptedOut)
	require.Equal(t, 3, st.Received)
	require.Zero(t, st.Duplicates)

	// The events workflow's history holds no address and no token: the
	// addresses travel sealed.
	raw := h.historyOf(t, workflows.EventsWorkflowID(h.id))
	var decoded strings.Builder
	for _, m := range regexp.MustCompile(`"data":\s*"([^"]*)"`).FindAllSubmatch(raw, -1) {
		b, err := base64.StdEncoding.DecodeString(string(m[1]))
		require.NoError(t, err)
		decoded.Write(b)
	}
	require.Contains(t, decoded.String(), h.id, "payloads were decoded")
	for _, secret := range []string{"ann@example.com", "bo@example.com", "example.com", webhookToken, h.mc.APIKey} {
		require.NotContains(t, string(raw)+decoded.String(), secret)
	}
	if os.Getenv("UPDATE_HISTORIES") != "" {
		require.NoError(t, os.WriteFile("testdata/events-inbox-history.json", raw, 0o644))
	}

	// The poll, run afterwards, finds nothing left to do.
	res := h.run(t)
	require.Zero(t, res.Counts.MarketingToCRM.CRMOptedOut)
	require.Equal(t, "2", h.subscription(t, "ann-customer"))
}

// A member who changes address and then unsubscribes: the CRM records of
// the old address are opted out with the new one's, and field sync never
// adds the old address back. The emulator gives the new address a new
// contact_id, so nothing but the upemail links the two.
func TestWebhookAddressChangeThenUnsubscribe(t *testing.T) {
	h := newHookStackWith(t, hookOptions{contactFollows: true})
	h.member(t, "old@example.com")
	h.customer("old", "old@example.com")
	h.contact("new", "new@example.com")
	h.customer("other", "other@example.com")
	h.ns.AddSavedSearch(search, h.refs["old"], h.refs["new"])

	require.NoError(t, h.mc.ChangeEmailAs(audience, "old@example.com", "new@example.com", mailchimptest.SourceUser))
	st := h.settle(t, 1)
	require.Equal(t, 1, st.Counts.AddressChanges)
	require.NoError(t, h.mc.Act(audience, "new@example.com", "unsubscribe", mailchimptest.SourceUser))
	st = h.settle(t, 2)

	require.Equal(t, "2", h.subscription(t, "new"))
	require.Equal(t, "2", h.subscription(t, "old"), "the old address's record follows the person's opt-out")
	require.Equal(t, "1", h.subscription(t, "other"))

	// Field sync over the saved search (which still holds the old
	// address's record) does not add the old address back.
	h.reg.configure(func(s *activities.Settings) { s.FieldMap = map[string]string{"firstName": "FNAME"} })
	h.run(t)
	_, back := h.mc.Member(audience, "old@example.com")
	require.False(t, back, "the old address is not re-added")
	require.Equal(t, connectors.StatusUnsubscribed, h.status(t, "new@example.com"))
}

// A delivery while Temporal is unreachable is answered 503; the emulator
// retries it, and once Temporal is back it is applied once.
func TestWebhookDeliveryDuringATemporalOutageIsRetriedAndAppliedOnce(t *testing.T) {
	h := newHookStack(t, "", nil)
	h.member(t, "ann@example.com")
	h.customer("ann", "ann@example.com")
	h.tc.down.Store(true)
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "unsubscribe", mailchimptest.SourceUser))
	require.Eventually(t, func() bool { return h.mc.WebhookStats().Attempts >= 2 }, time.Minute, 10*time.Millisecond)
	require.Equal(t, "1", h.subscription(t, "ann"), "nothing applied during the outage")
	h.tc.down.Store(false)
	st := h.settle(t, 1)

	require.Equal(t, "2", h.subscription(t, "ann"))
	require.Equal(t, 1, st.Counts.Events)
	require.Equal(t, 1, st.Counts.CRMOptedOut)
	var refused, taken int
	for _, d := range h.mc.Deliveries() {
		switch d.Status {
		case http.StatusServiceUnavailable:
			refused++
		case http.StatusOK:
			taken++
		}
	}
	require.GreaterOrEqual(t, refused, 2)
	require.Equal(t, 1, taken)
	require.Equal(t, 1, h.ns.Middleware.Counts()["PATCH /services/rest/record/v1/{type}/{id}"], "one write")
}

// Forged, replayed, stale, oversized and malformed deliveries change
// nothing; a genuine delivery sent twice is applied once.
func TestWebhookForgedAndMalformedDeliveriesChangeNothing(t *testing.T) {
	const secret = "whsec-test-secret"
	h := newHookStack(t, secret, nil)
	h.member(t, "ann@example.com")
	h.customer("ann", "ann@example.com")
	base := h.hs.URL + webhooks.PathPrefix + h.id + "/"
	now := h.clk.Now()
	body := func(list, email string) []byte {
		v := url.Values{}
		v.Set("type", "unsubscribe")
		v.Set("fired_at", now.UTC().Format("2006-01-02 15:04:05"))
		v.Set("data[list_id]", list)
		v.Set("data[email]", email)
		v.Set("data[action]", "unsub")
		return []byte(v.Encode())
	}
	sig := func(b []byte, at time.Time, key string) string {
		return "t=" + strconv.FormatInt(at.Unix(), 10) + ",v1=" + mailchimp.Sign(key, at.Unix(), b)
	}
	post := func(u string, b []byte, ctype, signature string) int {
		req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(string(b)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", ctype)
		if signature != "" {
			req.Header.Set(mailchimp.SignatureHeader, signature)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	form := "application/x-www-form-urlencoded"
	good := body(audience, "ann@example.com")
	for name, tc := range map[string]struct {
		url, ctype, sig string
		body            []byte
		want            int
	}{
		"wrong token":       {h.hs.URL + webhooks.PathPrefix + h.id + "/" + strings.Repeat("0", 48), form, sig(good, now, secret), good, 404},
		"unknown endpoint":  {h.hs.URL + webhooks.PathPrefix + "nobody/" + webhookToken, form, sig(good, now, secret), good, 404},
		"unsigned":          {base + webhookToken, form, "", good, 400},
		"forged signature":  {base + webhookToken, form, sig(good, now, "guess"), good, 400},
		"stale (replayed)":  {base + webhookToken, form, sig(good, now.Add(-10*time.Minute), secret), good, 400},
		"other audience":    {base + webhookToken, form, sig(body("other", "ann@example.com"), now, secret), body("other", "ann@example.com"), 400},
		"wrong type":        {base + webhookToken, "application/json", sig(good, now, secret), good, 400},
		"malformed":         {base + webhookToken, form, sig([]byte("type=unsubscribe&%zz"), now, secret), []byte("type=unsubscribe&%zz"), 400},
		"oversized":         {base + webhookToken, form, "", append(append([]byte{}, good...), ("&x=" + strings.Repeat("a", webhooks.MaxBody))...), 413},
		"no address":        {base + webhookToken, form, sig(body(audience, ""), now, secret), body(audience, ""), 400},
		"validation is GET": {base + webhookToken, form, sig(good, now, secret), nil, 0},
	} {
		if tc.body == nil {
			resp, err := http.Get(tc.url)
			require.NoError(t, err)
			_ = resp.Body.Close()
			require.Equal(t, 200, resp.StatusCode, name)
			continue
		}
		require.Equal(t, tc.want, post(tc.url, tc.body, tc.ctype, tc.sig), name)
	}
	// Nothing was taken: no events workflow exists, the record is as it was.
	_, err := h.c.DescribeWorkflowExecution(t.Context(), workflows.EventsWorkflowID(h.id), "")
	require.Error(t, err, "no delivery reached Temporal")
	require.Equal(t, "1", h.subscription(t, "ann"))

	// The genuine delivery, sent twice (a retry whose first answer was
	// lost), is applied once.
	require.Equal(t, 200, post(base+webhookToken, good, form, sig(good, now, secret)))
	require.Equal(t, 200, post(base+webhookToken, good, form, sig(good, now.Add(time.Second), secret)))
	var st workflows.EventsStatus
	require.Eventually(t, func() bool {
		var err error
		st, err = h.queryStatus(t.Context())
		return err == nil && st.Received == 2 && st.Pending == 0 && st.Batches > 0
	}, time.Minute, 20*time.Millisecond)
	require.Equal(t, 1, st.Duplicates)
	require.Equal(t, 1, st.Counts.Events)
	require.Equal(t, "2", h.subscription(t, "ann"))
	require.Equal(t, 1, h.ns.Middleware.Counts()["PATCH /services/rest/record/v1/{type}/{id}"])
}

// An unsubscribe and a re-subscribe of one person close together: the
// later choice stands, whichever order the deliveries arrive in.
func TestWebhookKeepsThePersonsLatestChoice(t *testing.T) {
	h := newHookStack(t, "", nil)
	h.member(t, "ann@example.com")
	h.customer("ann", "ann@example.com")
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "unsubscribe", mailchimptest.SourceUser))
	h.clk.Advance(time.Second)
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "resubscribe", mailchimptest.SourceUser))
	h.settle(t, 1)
	st := h.eventsStatus(t)
	require.Equal(t, "1", h.subscription(t, "ann"), "the re-subscribe is the later choice: no opt-out written")
	require.Equal(t, 2, st.Received)
	require.Equal(t, 1, st.Superseded+st.Counts.LaterConsent, "the older unsubscribe is dropped or found superseded")
	require.Equal(t, connectors.StatusSubscribed, h.status(t, "ann@example.com"))
}

// failFirstUnsubscribe answers the first unsubscribe delivery 503 without
// taking it, so that Mailchimp re-delivers it after what came next.
func failFirstUnsubscribe(next http.Handler) http.Handler {
	var once atomic.Bool
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			if strings.Contains(string(b), "type=unsubscribe") && once.CompareAndSwap(false, true) {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// An unsubscribe whose delivery fails, re-delivered after the person's
// later re-subscribe was applied, is not applied: the re-subscribe is the
// person's latest choice.
func TestWebhookLateUnsubscribeDoesNotOverrideALaterResubscribe(t *testing.T) {
	h := newHookStack(t, "", failFirstUnsubscribe)
	h.member(t, "ann@example.com")
	h.customer("ann", "ann@example.com")
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "unsubscribe", mailchimptest.SourceUser))
	h.clk.Advance(time.Second)
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "resubscribe", mailchimptest.SourceUser))
	st := h.settle(t, 1)
	require.Eventually(t, func() bool {
		var err error
		st, err = h.queryStatus(t.Context())
		return err == nil && st.Received == 2 && st.Pending == 0
	}, time.Minute, 20*time.Millisecond)
	require.Equal(t, "1", h.subscription(t, "ann"), "the later re-subscribe stands")
	require.Equal(t, connectors.StatusSubscribed, h.status(t, "ann@example.com"))
}

// An address a person left and someone else then joined with is not
// opted out by the first person's later unsubscribe.
func TestWebhookAnAddressTakenAgainIsLeftAlone(t *testing.T) {
	h := newHookStack(t, "", nil)
	h.member(t, "a@example.com")
	h.customer("x-old", "a@example.com")
	h.contact("x-new", "b@example.com")
	require.NoError(t, h.mc.ChangeEmailAs(audience, "a@example.com", "b@example.com", mailchimptest.SourceUser))
	h.settle(t, 1)
	// Someone else joins with a@ (the API: not delivered to the webhook).
	h.member(t, "a@example.com")
	require.NoError(t, h.mc.Act(audience, "b@example.com", "unsubscribe", mailchimptest.SourceUser))
	h.settle(t, 2)
	require.Equal(t, "2", h.subscription(t, "x-new"))
	require.Equal(t, "1", h.subscription(t, "x-old"), "a@ belongs to a subscribed member again")
}

// A spam complaint (Mailchimp cleans the address with reason abuse) is an
// opt-out as well as a bounce.
func TestWebhookASpamComplaintIsAnOptOut(t *testing.T) {
	h := newHookStack(t, "", nil)
	h.member(t, "ann@example.com")
	h.customer("ann", "ann@example.com")
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "complain", mailchimptest.SourceUser))
	st := h.settle(t, 1)
	require.Equal(t, "2", h.subscription(t, "ann"))
	require.Equal(t, 1, st.Counts.Cleaned)
	require.Equal(t, 1, st.Counts.CRMOptedOut)
}

// holdDeliveries answers 503, without taking it, every delivery whose body
// contains match while hold is set, so that the platform re-delivers it
// after what came next.
func holdDeliveries(match string, hold *atomic.Bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && hold.Load() {
				b, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(b))
				if strings.Contains(string(b), match) {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// An address change delivered only after the new address's unsubscribe
// was applied (its first delivery failed): the opt-out reaches the old
// address's record as soon as the change arrives, not at a later poll.
func TestWebhookAddressChangeDeliveredAfterTheUnsubscribe(t *testing.T) {
	var hold atomic.Bool
	hold.Store(true)
	h := newHookStackWith(t, hookOptions{contactFollows: true, wrap: holdDeliveries("type=upemail", &hold)})
	h.member(t, "old@example.com")
	h.customer("old", "old@example.com")
	h.contact("new", "new@example.com")

	require.NoError(t, h.mc.ChangeEmailAs(audience, "old@example.com", "new@example.com", mailchimptest.SourceUser))
	h.clk.Advance(time.Second)
	require.NoError(t, h.mc.Act(audience, "new@example.com", "unsubscribe", mailchimptest.SourceUser))
	require.Eventually(t, func() bool { return h.subscription(t, "new") == "2" }, 2*time.Minute, 20*time.Millisecond)
	require.Equal(t, "1", h.subscription(t, "old"), "nothing links the old address yet")

	hold.Store(false)
	st := h.settle(t, 2)
	require.Equal(t, 1, st.Counts.AddressChanges)
	require.Equal(t, "2", h.subscription(t, "old"), "the late address change carries the standing opt-out back")
	require.Equal(t, "2", h.subscription(t, "new"))
}

// A CRM outage under heavy traffic: the events wait in the ledger's
// inbox, not in the workflow, whose continue-as-new input stays small
// however many wait; once the CRM is back every one is applied once.
func TestWebhookCRMOutageKeepsEventsInTheInboxNotInTheWorkflow(t *testing.T) {
	const n = 1500
	h := newHookStackWith(t, hookOptions{run: workflows.EventsRun{ContinueAfter: 200}})
	h.patience = 10 * time.Minute
	emails, ids := seedPeople(t, h, n)
	h.ns.Middleware.SetFaults(emulator.Faults{Rate5xx: 1})

	for _, e := range emails {
		require.NoError(t, h.mc.Act(audience, e, "unsubscribe", mailchimptest.SourceUser))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	require.NoError(t, h.mc.WaitDeliveries(ctx))
	var st workflows.EventsStatus
	require.Eventually(t, func() bool {
		var err error
		st, err = h.queryStatus(t.Context())
		return err == nil && st.Received == n && st.Continued > 0 && st.LastError != ""
	}, 5*time.Minute, 50*time.Millisecond)
	require.Equal(t, n, st.Pending, "nothing applied during the outage")
	_, waiting, err := h.ledger.Inbox(t.Context(), h.id, 0)
	require.NoError(t, err)
	require.Equal(t, n, waiting, "every event waits in the ledger")

	// The run's input (what continue-as-new carried) holds counts, not
	// the events: a fraction of one event's size per waiting event.
	desc, err := h.c.DescribeWorkflowExecution(t.Context(), workflows.EventsWorkflowID(h.id), "")
	require.NoError(t, err)
	iter := h.c.GetWorkflowHistory(t.Context(), workflows.EventsWorkflowID(h.id), desc.GetWorkflowExecutionInfo().GetExecution().GetRunId(), false, 0)
	first, err := iter.Next()
	require.NoError(t, err)
	input := first.GetWorkflowExecutionStartedEventAttributes().GetInput()
	require.NotNil(t, input)
	var carried workflows.EventsRun
	require.NoError(t, json.Unmarshal(input.GetPayloads()[0].GetData(), &carried))
	require.Positive(t, carried.Continued, "a continued run")
	require.Less(t, len(carried.Pending), 50, "the events are in the inbox, not carried")
	require.Less(t, input.Size(), 32<<10, "the carried state does not grow with the events waiting")

	h.ns.Middleware.SetFaults(emulator.Faults{})
	st = h.settle(t, n)
	require.Equal(t, n, st.Counts.CRMOptedOut)
	require.Equal(t, n, h.ns.Middleware.Counts()["PATCH /services/rest/record/v1/{type}/{id}"], "each record written once")
	for i, id := range ids {
		e, ok := h.ns.Entity("customer", id)
		require.True(t, ok)
		require.Equal(t, "2", e.SubscriptionStatus, emails[i])
	}
}

// holdAbsent opts key's new CRM record with email out, inside the lists,
// and runs the sync once: the audience lacks the address (or holds it
// archived), so with addAbsentAsUnsubscribed off the opt-out is held.
func (h *hookStack) holdAbsent(t *testing.T, key, email string) workflows.SyncResult {
	t.Helper()
	ref := connectors.RecordRef{Type: "customer", ID: h.ns.AddCustomer(netsuitetest.Entity{Email: email, SubscriptionStatus: "2"})}
	h.refs[key] = ref
	h.ns.AddSavedSearch(search, ref)
	r := h.run(t)
	require.Equal(t, 1, r.Counts.CRMToMarketing.AbsentNotAdded)
	return r
}

// A member archived by the account whose CRM opt-out was therefore not
// added (addAbsentAsUnsubscribed off), then subscribed again through a
// form: the pushed subscribe is a join after the opt-out, so the member is
// unsubscribed and the join is not remembered as the person's choice.
func TestWebhookAJoinAfterAnOptOutNotAddedIsUnsubscribed(t *testing.T) {
	h := newHookStackWith(t, hookOptions{settings: func(st *activities.Settings) { st.SkipAbsent = true }})
	h.member(t, "ann@example.com")
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "archive", mailchimptest.SourceAdmin))
	h.settle(t, 1)
	h.holdAbsent(t, "ann", "ann@example.com")
	require.Equal(t, connectors.StatusArchived, h.status(t, "ann@example.com"))

	h.clk.Advance(time.Second)
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "resubscribe", mailchimptest.SourceUser))
	st := h.settle(t, 2)
	require.Equal(t, 1, st.Counts.JoinedUnsub)
	require.Zero(t, st.Counts.Resubscribes)
	require.Equal(t, connectors.StatusUnsubscribed, h.status(t, "ann@example.com"))
	p, err := h.ledger.People(t.Context(), h.id, []string{h.ledger.Person("ann@example.com")})
	require.NoError(t, err)
	require.True(t, p[h.ledger.Person("ann@example.com")].OptedOut, "the join is not recorded as a re-subscribe")
	require.Equal(t, string(connectors.StatusUnsubscribed), p[h.ledger.Person("ann@example.com")].MarketingStatus)
}
