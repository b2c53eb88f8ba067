package workflows_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/connectors"
)

// failBatches answers 503 to the batch subscribe calls numbered from
// first to last (counted from 1) while on.
func failBatches(first, last int64, on *atomic.Bool) func(http.Handler) http.Handler {
	var n atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if on.Load() && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/lists/"+audience) {
				if k := n.Add(1); k >= first && k <= last {
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}
}

// More joins than one batch in a page: the first batch is unsubscribed,
// the second fails and the activity is retried. The members of the first
// batch are unsubscribed by us; the ledger must know it, so that a
// member's re-subscribe after that is consent, not another join.
func TestIntegrationJoinsPastABatchWrittenBeforeAFailureAreRecorded(t *testing.T) {
	const n = 501 // one more than a batch
	var on atomic.Bool
	s := newStack(t, func(st *activities.Settings) { st.SkipAbsent = true })
	s.throughMailchimp(t, failBatches(2, 5, &on))
	var refs []connectors.RecordRef
	emails := make([]string, n)
	for i := range n {
		emails[i] = fmt.Sprintf("j%03d@example.com", i)
		refs = append(refs, s.customer(t, emails[i], emails[i], "2"))
	}
	s.ns.AddSavedSearch(search, refs...)
	r1 := s.run(t)
	require.Equal(t, n, r1.Counts.CRMToMarketing.AbsentNotAdded)

	for _, e := range emails {
		s.member(t, e, connectors.StatusSubscribed)
	}
	on.Store(true)
	r2 := s.runAfter(t, r1)
	on.Store(false)
	for _, e := range emails {
		require.Equal(t, connectors.StatusUnsubscribed, s.status(t, e), e)
	}
	// The person of the first address re-subscribes: that is consent.
	afterResubscribe()
	s.resubscribe(t, emails[0])
	afterResubscribe()
	r3 := s.runAfter(t, r2)
	require.Zero(t, r3.Counts.MarketingToCRM.JoinedUnsub, "a re-subscribe after our unsubscribe is not a join")
	require.Equal(t, 1, r3.Counts.MarketingToCRM.Resubscribes)
	require.Equal(t, connectors.StatusSubscribed, s.status(t, emails[0]), "the later choice stands")
	people, err := s.ledger.People(t.Context(), s.id, []string{s.ledger.Person(emails[1])})
	require.NoError(t, err)
	require.NotEqual(t, ledger.MarketingAbsent, people[s.ledger.Person(emails[1])].MarketingStatus)
}
