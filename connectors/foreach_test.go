package connectors_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
)

// TestForEachRunsEveryItemWithinItsWorkers: every index runs once, never
// more than the workers at a time; workers < 1 runs all at once.
func TestForEachRunsEveryItemWithinItsWorkers(t *testing.T) {
	for _, tc := range []struct{ workers, n, most int }{{3, 50, 3}, {0, 7, 7}, {8, 2, 2}, {4, 0, 0}} {
		var running, peak atomic.Int32
		ran := make([]atomic.Int32, tc.n)
		all := make(chan struct{})
		var started atomic.Int32
		err := connectors.ForEach(t.Context(), tc.workers, tc.n, func(ctx context.Context, i int) error {
			now := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
			}
			// The first batch waits until all of its workers are busy, so
			// the peak is the cap, not an accident of scheduling.
			if started.Add(1) == int32(tc.most) {
				close(all)
			}
			<-all
			ran[i].Add(1)
			return nil
		})
		require.NoError(t, err)
		for i := range ran {
			require.Equal(t, int32(1), ran[i].Load(), "item %d of %+v", i, tc)
		}
		require.Equal(t, int32(tc.most), peak.Load(), "%+v", tc)
	}
}

// TestForEachStopsAtTheFirstError: the error is returned, the others'
// context is cancelled, and no item starts after it.
func TestForEachStopsAtTheFirstError(t *testing.T) {
	boom := errors.New("credentials refused")
	var after atomic.Int32
	var failed atomic.Bool
	err := connectors.ForEach(t.Context(), 2, 100, func(ctx context.Context, i int) error {
		if failed.Load() {
			after.Add(1)
		}
		switch i {
		case 0:
			<-ctx.Done() // held until the failure cancels it
			return ctx.Err()
		case 1:
			failed.Store(true)
			return boom
		}
		return nil
	})
	require.ErrorIs(t, err, boom)
	require.Zero(t, after.Load(), "items started after the failure")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, connectors.ForEach(ctx, 2, 5, func(context.Context, int) error { return nil }), context.Canceled)
}

// TestWriteEachCountsEachRecordAndStopsOnCredentials: a record written is
// counted, a record refused is a Failure naming it (final for an invalid
// request, retryable for a 5xx or a network error), and rejected
// credentials end the call with that error.
func TestWriteEachCountsEachRecordAndStopsOnCredentials(t *testing.T) {
	refs := []connectors.RecordRef{{Type: "customer", ID: "1"}, {Type: "customer", ID: "2"}, {Type: "customer", ID: "3"}, {Type: "contact", ID: "4"}}
	answers := map[string]error{
		"customer/2": &connectors.APIError{System: "netsuite", Status: 400, Kind: connectors.ErrInvalid, Code: "INVALID_FLD_VALUE", Detail: "bad field"},
		"customer/3": &connectors.APIError{System: "netsuite", Status: 503, Kind: connectors.ErrServer, Code: "503"},
		"contact/4":  errors.New("connection reset"),
	}
	res, err := connectors.WriteEach(t.Context(), 2, refs, func(_ context.Context, ref connectors.RecordRef) error { return answers[ref.String()] })
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	byRef := map[string]connectors.Failure{}
	for _, f := range res.Failed {
		byRef[f.Record.String()] = f
	}
	require.Len(t, byRef, 3)
	require.Equal(t, connectors.Failure{Record: refs[1], Code: "INVALID_FLD_VALUE", Message: "bad field"}, byRef["customer/2"])
	require.True(t, byRef["customer/3"].Retryable)
	require.Equal(t, "503", byRef["customer/3"].Code)
	require.Equal(t, connectors.Failure{Record: refs[3], Message: "connection reset", Retryable: true}, byRef["contact/4"])

	denied := &connectors.APIError{System: "netsuite", Status: 401, Kind: connectors.ErrUnauthorized, Code: "INVALID_LOGIN"}
	var after atomic.Int32
	_, err = connectors.WriteEach(t.Context(), 1, refs, func(_ context.Context, ref connectors.RecordRef) error {
		if ref.ID != "1" {
			after.Add(1)
		}
		if ref.ID == "1" {
			return denied
		}
		return nil
	})
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.Zero(t, after.Load(), "records written after the credentials were rejected")
}
