package activities

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
)

// slowSecondPageCRM answers a first page of one opted-out record; the
// read of the next page is still under way (it ends only when cancelled)
// when the first page is handled.
type slowSecondPageCRM struct{ connectors.CRM }

func (slowSecondPageCRM) OptedOut(ctx context.Context, q connectors.OptOutQuery) (connectors.RecordPage, error) {
	if q.Cursor == "" {
		return connectors.RecordPage{Next: "2", Records: []connectors.Record{{Ref: connectors.RecordRef{Type: "customer", ID: "1"},
			Email: "ann@example.com", OptedOut: true, InLists: true}}}, nil
	}
	<-ctx.Done()
	return connectors.RecordPage{}, ctx.Err()
}

// rejectingMarketing rejects every unsubscribe as invalid: a final answer.
type rejectingMarketing struct{ connectors.Marketing }

func (rejectingMarketing) Unsubscribe(context.Context, string, []string) (connectors.BatchResult, error) {
	return connectors.BatchResult{}, fmt.Errorf("audience rejected the request: %w", connectors.ErrInvalid)
}

func (rejectingMarketing) MaxBatch() int { return 500 }

// TestPagingPageErrorIsNotMaskedByTheCancelledReadAhead: a page's final
// (non-retryable) error is what the activity returns, not the
// cancellation its own error caused in the read of the next page.
func TestPagingPageErrorIsNotMaskedByTheCancelledReadAhead(t *testing.T) {
	s := Settings{IntegrationID: "x", MarketingKind: "mailchimp", CRMKind: "netsuite", CRMToMarketing: true, PageSize: 10, PagesPerActivity: 5}
	acts := New(MapRegistry{"x": {Settings: s, Marketing: rejectingMarketing{}, CRM: slowSecondPageCRM{}}}, ledgertest.Open(t, ledger.SQLite), nil)
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivity(acts)
	_, err := env.ExecuteActivity(acts.SyncCRMOptOuts, PageInput{IntegrationID: "x", Settings: &s})
	require.Error(t, err)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app), "an application error: %v", err)
	require.Equal(t, ErrTypeInvalid, app.Type(), "the page's own error: %v", err)
	require.True(t, app.NonRetryable(), "final, not retried: %v", err)
}

// TestPagingNoTurnStartsBeforeAnEarlierOneEnds: when a page fails and
// cancels the activity, a later page must not run its turn (claim its
// people, reading the earlier pages' claims) while an earlier page is
// still in its own turn.
func TestPagingNoTurnStartsBeforeAnEarlierOneEnds(t *testing.T) {
	// Go picks among ready select cases at random: 40 tries.
	for range 40 {
		ctx, cancel := context.WithCancel(t.Context())
		p1 := newWork(nil, "")
		p2 := newWork(p1, "")
		p3 := newWork(p2, "")
		inTurn1, release1 := make(chan struct{}), make(chan struct{})
		var turn1Over, overlapped atomic.Bool
		go func() {
			defer close(p1.done)
			p1.err = p1.claim(ctx, func() ([]string, error) {
				close(inTurn1)
				<-release1 // e.g. withEarlierAddresses' vendor lookup
				turn1Over.Store(true)
				return []string{"ann"}, nil
			})
			p1.finish(ctx)
		}()
		<-inTurn1
		cancel() // a page before these, past its turn, failed
		// Page 2 gives up waiting for its turn.
		p2.err = p2.claim(ctx, func() ([]string, error) { return []string{"bob"}, nil })
		require.Error(t, p2.err)
		p2.finish(ctx)
		close(p2.done)
		p3.err = p3.claim(ctx, func() ([]string, error) {
			if !turn1Over.Load() {
				overlapped.Store(true)
			}
			return []string{"cy"}, nil
		})
		close(release1)
		<-p1.done
		require.False(t, overlapped.Load(), "page 3 took its turn while page 1 was still in its own")
	}
}
