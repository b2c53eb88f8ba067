package activities

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
	"github.com/optoutsync/optoutsync/connectors"
)

// pagedMarketing serves unsubscribed members m0..m(n-1) in pages of two,
// with the offset as the cursor, and records the cursors it was asked for.
type pagedMarketing struct {
	connectors.Marketing
	n       int
	cursors []string
}

func (p *pagedMarketing) ChangedMembers(_ context.Context, req connectors.ChangesRequest) (connectors.MemberPage, error) {
	p.cursors = append(p.cursors, req.Cursor)
	off, _ := strconv.Atoi(req.Cursor)
	var page connectors.MemberPage
	for i := off; i < min(off+2, p.n); i++ {
		page.Members = append(page.Members, connectors.Member{Email: fmt.Sprintf("m%d@example.com", i), Status: connectors.StatusUnsubscribed})
	}
	if off+2 < p.n {
		page.Next = strconv.Itoa(off + 2)
	}
	return page, nil
}

// everyoneInCRM has one record per address and opts out whatever it is
// asked to, called at once from several pages as a connector may be.
type everyoneInCRM struct {
	connectors.CRM
	written atomic.Int64
}

func (c *everyoneInCRM) FindByEmail(_ context.Context, _ []string, _ connectors.OptOutField, emails []string) ([]connectors.Record, error) {
	var out []connectors.Record
	for _, e := range emails {
		out = append(out, connectors.Record{Ref: connectors.RecordRef{Type: "customer", ID: e}, Email: e})
	}
	return out, nil
}

func (c *everyoneInCRM) SetOptOut(_ context.Context, _ connectors.OptOutField, refs []connectors.RecordRef) (connectors.BatchResult, error) {
	c.written.Add(int64(len(refs)))
	return connectors.BatchResult{Written: len(refs)}, nil
}

func (c *everyoneInCRM) MaxBatch() int { return 200 }

func setup(t *testing.T, n, pagesPerActivity int) (*testsuite.TestActivityEnvironment, *Activities, *pagedMarketing, *everyoneInCRM) {
	mk, crm := &pagedMarketing{n: n}, &everyoneInCRM{}
	reg := MapRegistry{"x": {Settings: Settings{IntegrationID: "x", MarketingKind: "mailchimp", CRMKind: "netsuite", PagesPerActivity: pagesPerActivity}, Marketing: mk, CRM: crm}}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	acts := New(reg, ledgertest.Open(t, ledger.SQLite), nil)
	env.RegisterActivity(acts)
	return env, acts, mk, crm
}

func TestPagingActivityResumesFromItsHeartbeatedCursor(t *testing.T) {
	env, acts, mk, crm := setup(t, 5, 10)
	// A previous attempt finished the first page (two members) and died.
	env.SetHeartbeatDetails(heartbeat{Cursor: "2", Partial: PageResult{Counts: Counts{Pages: 1, Read: 2, Unsubscribes: 2, CRMOptedOut: 2}}})
	val, err := env.ExecuteActivity(acts.SyncMarketingChanges, PageInput{IntegrationID: "x", Status: connectors.StatusUnsubscribed})
	require.NoError(t, err)
	var res PageResult
	require.NoError(t, val.Get(&res))
	require.Equal(t, []string{"2", "4"}, mk.cursors, "resumed after the last whole page")
	require.EqualValues(t, 3, crm.written.Load(), "the first page was not written again")
	require.Equal(t, 5, res.Counts.Unsubscribes, "the heartbeated counts carry over")
	require.Equal(t, 5, res.Counts.CRMOptedOut)
	require.Empty(t, res.Next)
}

func TestPagingActivityWhoseLastPageWasHeartbeatedDoesNotStartOver(t *testing.T) {
	env, acts, mk, crm := setup(t, 5, 10)
	env.SetHeartbeatDetails(heartbeat{Cursor: "", Done: true, Partial: PageResult{Counts: Counts{Pages: 3, Unsubscribes: 5}}})
	val, err := env.ExecuteActivity(acts.SyncMarketingChanges, PageInput{IntegrationID: "x", Status: connectors.StatusUnsubscribed})
	require.NoError(t, err)
	var res PageResult
	require.NoError(t, val.Get(&res))
	require.Empty(t, mk.cursors)
	require.Zero(t, crm.written.Load())
	require.Equal(t, 5, res.Counts.Unsubscribes)
}

func TestPagingActivityStopsAfterPagesPerActivityAndReturnsItsCursor(t *testing.T) {
	env, acts, mk, _ := setup(t, 9, 10)
	val, err := env.ExecuteActivity(acts.SyncMarketingChanges, PageInput{IntegrationID: "x", Status: connectors.StatusUnsubscribed})
	require.NoError(t, err)
	var res PageResult
	require.NoError(t, val.Get(&res))
	require.Len(t, mk.cursors, 5)
	require.Empty(t, res.Next)

	env, acts, _, _ = setup(t, 9, 2)
	val, err = env.ExecuteActivity(acts.SyncMarketingChanges, PageInput{IntegrationID: "x", Status: connectors.StatusUnsubscribed})
	require.NoError(t, err)
	require.NoError(t, val.Get(&res))
	require.Equal(t, "4", res.Next)
}

func TestFailureReasonsNameNoAddress(t *testing.T) {
	for in, want := range map[string]string{
		"ann.lee@example.com is in a compliance state due to unsubscribe": "<address> is in a compliance state due to unsubscribe",
		"a***@example.com was permanently deleted":                        "<address> was permanently deleted",
		"Invalid value for email: 'bob%40x.org'.":                         "Invalid value for email: '<address>'.",
		"Record does not exist.":                                          "Record does not exist.",
	} {
		require.Equal(t, want, scrubAddresses(in))
	}
	var r PageResult
	r.recordFailures(CRMToMarketing, []connectors.Failure{{Email: "ann@example.com", Code: "Member In Compliance State", Message: "ann@example.com is in a compliance state", Compliance: true}}, nil)
	require.Equal(t, connectors.AddressHash("ann@example.com"), r.Failures[0].AddressHash)
	require.Equal(t, "<address> is in a compliance state", r.Failures[0].Reason)
	require.Equal(t, 1, r.Counts.ComplianceHeld)
	require.False(t, r.HoldWatermark, "a compliance answer is final")
}

// TestPipelined: calls overlap up to callsAhead, answers are applied in
// order one at a time, and the first error stops the rest.
func TestPipelined(t *testing.T) {
	items := make([]int, 100)
	for i := range items {
		items[i] = i
	}
	var inFlight, peak atomic.Int32
	release := make(chan struct{})
	go func() {
		// Hold the first calls until callsAhead of them are in flight.
		for peak.Load() < callsAhead {
			time.Sleep(time.Millisecond)
		}
		close(release)
	}()
	var applied []int
	err := pipelined(t.Context(), items, 3, func(_ context.Context, batch []int) (int, error) {
		n := inFlight.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		inFlight.Add(-1)
		return batch[0], nil
	}, func(batch []int, first int) error {
		require.Equal(t, batch[0], first)
		applied = append(applied, first)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, int32(callsAhead), peak.Load(), "never more than callsAhead calls at once, and that many")
	require.Len(t, applied, 34)
	for i, first := range applied {
		require.Equal(t, 3*i, first, "applied in order")
	}

	boom := errors.New("boom")
	var after []int
	err = pipelined(t.Context(), items, 1, func(ctx context.Context, batch []int) (int, error) {
		if batch[0] == 5 {
			return 0, boom
		}
		return batch[0], nil
	}, func(batch []int, _ int) error {
		after = append(after, batch[0])
		return nil
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, []int{0, 1, 2, 3, 4}, after, "nothing is applied after the first error")
}
