package workflows_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// addAbsentAsUnsubscribed off (Settings.SkipAbsent): a join unsubscribed
// once, seen again, is still not the person's consent.

// A pushed join of an address whose CRM opt-out was not added is
// unsubscribed; when its batch of events is applied again (another
// event of it failed transiently), the same join, seen again, is still
// not the person's consent: the opt-out stands in the ledger.
func TestWebhookAJoinSeenAgainWhenItsBatchIsAppliedAgainIsNotConsent(t *testing.T) {
	h := newHookStackWith(t, hookOptions{settings: func(st *activities.Settings) { st.SkipAbsent = true }})
	h.member(t, "ann@example.com")
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "archive", mailchimptest.SourceAdmin))
	h.member(t, "bo@example.com")
	h.customer("bo", "bo@example.com")
	h.settle(t, 1)
	h.holdAbsent(t, "ann", "ann@example.com")

	// Bo's opt-out cannot be written to the CRM for now: the batch waits.
	h.ns.FailWrites(h.refs["bo"], true)
	// The platform's clock is ours, a second on.
	time.Sleep(time.Second)
	h.clk.Set(time.Now())
	require.NoError(t, h.mc.Act(audience, "bo@example.com", "unsubscribe", mailchimptest.SourceUser))
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "resubscribe", mailchimptest.SourceUser))
	require.Eventually(t, func() bool {
		m, ok := h.mc.Member(audience, "ann@example.com")
		return ok && m.Status == string(connectors.StatusUnsubscribed)
	}, time.Minute, 20*time.Millisecond, "the join is unsubscribed")

	h.ns.FailWrites(h.refs["bo"], false)
	h.settle(t, 2)
	require.Equal(t, "2", h.subscription(t, "bo"))
	require.Equal(t, connectors.StatusUnsubscribed, h.status(t, "ann@example.com"))
	person := h.ledger.Person("ann@example.com")
	p, err := h.ledger.People(t.Context(), h.id, []string{person})
	require.NoError(t, err)
	require.True(t, p[person].OptedOut, "the join, applied again, is still not a re-subscribe")
	require.Zero(t, h.eventsStatus(t).Counts.Resubscribes)

	// The person's own re-subscribe after that is consent.
	time.Sleep(time.Second)
	h.clk.Set(time.Now())
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "resubscribe", mailchimptest.SourceUser))
	st := h.settle(t, 4)
	require.Equal(t, 1, st.Counts.Resubscribes)
	require.Equal(t, connectors.StatusSubscribed, h.status(t, "ann@example.com"))
	p, err = h.ledger.People(t.Context(), h.id, []string{person})
	require.NoError(t, err)
	require.False(t, p[person].OptedOut)
}

// The same join read by the scheduled re-subscribes read (and
// unsubscribed) before its pushed subscribe is delivered: the late push
// is the same join, not the person's consent.
func TestWebhookAJoinPushedAfterThePollUnsubscribedItIsNotConsent(t *testing.T) {
	var hold atomic.Bool
	hold.Store(true)
	h := newHookStackWith(t, hookOptions{settings: func(st *activities.Settings) { st.SkipAbsent = true },
		wrap: holdDeliveries("type=subscribe", &hold)})
	h.member(t, "ann@example.com")
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "archive", mailchimptest.SourceAdmin))
	h.settle(t, 1)
	r1 := h.holdAbsent(t, "ann", "ann@example.com")

	time.Sleep(time.Second)
	h.clk.Set(time.Now())
	require.NoError(t, h.mc.Act(audience, "ann@example.com", "resubscribe", mailchimptest.SourceUser))
	h.clk.Set(time.Now().Add(time.Second))
	r2 := h.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.JoinedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, h.status(t, "ann@example.com"))

	hold.Store(false)
	st := h.settle(t, 2)
	require.Zero(t, st.Counts.Resubscribes)
	require.Equal(t, connectors.StatusUnsubscribed, h.status(t, "ann@example.com"))
	person := h.ledger.Person("ann@example.com")
	p, err := h.ledger.People(t.Context(), h.id, []string{person})
	require.NoError(t, err)
	require.True(t, p[person].OptedOut, "the late push of the join is not a re-subscribe")
	r3 := h.runAfter(t, r2)
	require.Zero(t, r3.Counts.CRMToMarketing.LaterConsent)
}
