package workflows_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

// forEachLedger runs test on a SQLite ledger and on a PostgreSQL one
// (skipped without $OPTOUT_TEST_POSTGRES_URL).
func forEachLedger(t *testing.T, test func(*testing.T, ledger.Ledger)) {
	for _, d := range []ledger.Dialect{ledger.SQLite, ledger.Postgres} {
		t.Run(string(d), func(t *testing.T) { test(t, ledgertest.Open(t, d)) })
	}
}

// An address the ledger knew subscribed as of less than a minute before
// (a re-subscribe read), archived since, then opted out in the CRM: the
// lookup finds it archived, and the ledger must remember it as absent,
// or its restoring later is not caught and the opt-out, read once (no
// lists), is lost.
func TestIntegrationAbsentAfterARecentResubscribeIsRemembered(t *testing.T) {
	forEachLedger(t, testAbsentAfterARecentResubscribeIsRemembered)
}

func testAbsentAfterARecentResubscribeIsRemembered(t *testing.T, led ledger.Ledger) {
	s := newStackWith(t, func(st *activities.Settings) { st.SkipAbsent, st.Lists = true, nil }, led)
	s.member(t, "ann@example.com", connectors.StatusUnsubscribed)
	r1 := s.run(t)
	require.Equal(t, 1, r1.Counts.MarketingToCRM.Unsubscribes)

	s.resubscribe(t, "ann@example.com")
	afterResubscribe()
	r2 := s.runAfter(t, r1)
	require.Equal(t, 1, r2.Counts.MarketingToCRM.Resubscribes)

	// The account archives her; then she opts out in the CRM.
	require.NoError(t, s.mc.Act(audience, "ann@example.com", "archive", mailchimptest.SourceAdmin))
	s.customer(t, "ann", "ann@example.com", "2")
	time.Sleep(3 * time.Second) // past the overlap: the next run but one does not read it again
	r3 := s.runAfter(t, r2)
	require.Equal(t, 1, r3.Counts.CRMToMarketing.AbsentNotAdded)
	require.Equal(t, connectors.StatusArchived, s.status(t, "ann@example.com"))

	// An account user restores her: the join must not stand.
	time.Sleep(time.Second)
	require.NoError(t, s.mc.Act(audience, "ann@example.com", "resubscribe", mailchimptest.SourceAdmin))
	r4 := s.runAfter(t, r3)
	require.Zero(t, r4.Counts.CRMToMarketing.CRMOptOuts, "the opt-out is not read again")
	require.Equal(t, 1, r4.Counts.MarketingToCRM.JoinedUnsub)
	require.Equal(t, connectors.StatusUnsubscribed, s.status(t, "ann@example.com"))
}
