package workflows_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// Second round of adversarial scenarios: each test ends in the state the
// product promises and fails where the current code loses an opt-out.

// hookCRM runs a side effect the first time the crm-to-marketing step reads CRM opt-outs: a
// person acting in Mailchimp while a run is under way.
type hookCRM struct {
	connectors.CRM
	once sync.Once
	fn   func()
}

func (h *hookCRM) OptedOut(ctx context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	h.once.Do(h.fn)
	return h.CRM.OptedOut(ctx, q)
}

// Ann's account manager opts her customer record out in NetSuite; she has
// a second record (a contact, outside the saved search) still subscribed.
// While the run is under way, after marketing-to-crm has read the
// unsubscribes, Ann herself clicks "unsubscribe" in a Mailchimp email.
// The crm-to-marketing step then sends its unsubscribe (Mailchimp answers: unsubscribed) and
// the ledger records it as our write. The next run reads Ann's own
// unsubscribe; its last_changed is before our write, so it is dropped as
// "our echo": her Mailchimp unsubscribe never reaches her other record.
func TestAdversarial2GenuineUnsubscribeDuringARunIsNotDroppedAsOurEcho(t *testing.T) {
	s := newStack(t, nil)
	s.member(t, "ann@example.com", connectors.StatusSubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "2")
	s.contact(t, "ann-contact", "ann@example.com", "1")
	s.ns.AddSavedSearch(search, ann)

	s.reg.mu.Lock()
	s.reg.in.CRM = &hookCRM{CRM: s.reg.in.CRM, fn: func() {
		// Ann's own unsubscribe, in Mailchimp, mid-run.
		require.NoError(t, s.mc.AddMember(audience, mailchimptest.MemberSeed{Email: "ann@example.com", Status: "unsubscribed"}))
	}}
	s.reg.mu.Unlock()

	r1 := s.run(t)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"))

	r2 := s.runAfter(t, r1)
	require.Equal(t, "2", s.subscription(t, "ann-contact"),
		"Ann's own Mailchimp unsubscribe reaches every CRM record of her address (unsubscribes=%d echoSkipped=%d)",
		r2.Counts.MarketingToCRM.Unsubscribes, r2.Counts.MarketingToCRM.EchoSkipped)
}

// Mailchimp's clock is a second behind the worker's and keeps whole
// seconds. The crm-to-marketing step unsubscribes Ann from a CRM opt-out; a moment later she
// re-subscribes through a form. Her re-subscribe's last_changed must still
// read as newer than our write, or the ledger holds her as unsubscribed for
// good and a later, new CRM opt-out of hers is skipped as "already
// unsubscribed" while she is subscribed. (A larger skew is not modelled:
// within it, a CRM opt-out and a re-subscribe are a tie, which the opt-out
// wins.)
func TestAdversarial2ResubscribeJustAfterOurWriteIsSeenAndLaterCRMOptOutSent(t *testing.T) {
	s := newStack(t, func(st *activities.Settings) { st.Overlap = 2 * time.Minute })
	mc := mailchimptest.NewServer(mailchimptest.Options{Now: func() time.Time { return time.Now().Add(-time.Second) }})
	t.Cleanup(mc.Close)
	mc.AddList(audience, "Demo audience")
	mk, err := mailchimp.New(mailchimp.Options{APIKey: mc.APIKey, BaseURL: mc.URL, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond})
	require.NoError(t, err)
	s.mc = mc
	s.reg.mu.Lock()
	s.reg.in.Marketing = mk
	s.reg.mu.Unlock()

	s.member(t, "ann@example.com", connectors.StatusSubscribed)
	ann := s.customer(t, "ann", "ann@example.com", "2")
	s.ns.AddSavedSearch(search, ann)

	r1 := s.run(t)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"))

	time.Sleep(2 * time.Second)
	s.member(t, "ann@example.com", connectors.StatusSubscribed) // she signs up again through a form
	r2 := s.runAfter(t, r1)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, "ann@example.com"), "the later choice stands")

	time.Sleep(2 * time.Second)
	again := s.contact(t, "ann-again", "ann@example.com", "2") // a new CRM opt-out, after the re-subscribe
	s.ns.AddToSavedSearch(search, again)
	r3 := s.runAfter(t, r2)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"),
		"a CRM opt-out newer than the re-subscribe is sent (resubscribes seen=%d, alreadyUnsubscribed=%d)",
		r2.Counts.MarketingToCRM.Resubscribes, r3.Counts.CRMToMarketing.AlreadyUnsub)
}
