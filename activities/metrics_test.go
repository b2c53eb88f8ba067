package activities

import (
	"context"

	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/metrics"
)

// TestAStoppingWorkerEndsTheCallAfterItsPage: when the worker is told to
// stop, a paging activity finishes the page under way, reads no further,
// and returns that page's cursor for another worker to go on from; what
// it did is counted in the product series once.
func TestAStoppingWorkerEndsTheCallAfterItsPage(t *testing.T) {
	env, acts, mk, crm := setup(t, 6, 10)
	stop := make(chan struct{})
	close(stop)
	env.SetWorkerStopChannel(stop)
	dir := string(MarketingToCRM)
	observed := testutil.ToFloat64(metrics.OptOutsObserved.WithLabelValues("x", dir))
	written := testutil.ToFloat64(metrics.OptOutsWritten.WithLabelValues("x", dir))

	val, err := env.ExecuteActivity(acts.SyncMarketingChanges, PageInput{IntegrationID: "x", Status: connectors.StatusUnsubscribed})
	require.NoError(t, err)
	var res PageResult
	require.NoError(t, val.Get(&res))
	require.Equal(t, []string{""}, mk.cursors, "one page read, none ahead")
	require.Equal(t, "2", res.Next, "the next page is left to the next call")
	require.EqualValues(t, 2, crm.written.Load(), "the page under way was written in full")
	require.Equal(t, 2, res.Counts.CRMOptedOut)

	require.EqualValues(t, 2, testutil.ToFloat64(metrics.OptOutsObserved.WithLabelValues("x", dir))-observed)
	require.EqualValues(t, 2, testutil.ToFloat64(metrics.OptOutsWritten.WithLabelValues("x", dir))-written)
}

// TestFailuresAreCountedByKind: items by the kind their answer gives
// them, activity errors by what classify makes of them; a cancelled
// context is nobody's failure.
func TestFailuresAreCountedByKind(t *testing.T) {
	const integ = "failures-by-kind"
	// The counters are the process's: each is read before and after, so
	// that the test also holds when run again (-count).
	item := func(kind string) float64 {
		return testutil.ToFloat64(metrics.ItemFailures.WithLabelValues(integ, string(CRMToMarketing), kind))
	}
	observed := func() float64 {
		return testutil.ToFloat64(metrics.OptOutsObserved.WithLabelValues(integ, string(CRMToMarketing)))
	}
	written := func() float64 {
		return testutil.ToFloat64(metrics.OptOutsWritten.WithLabelValues(integ, string(CRMToMarketing)))
	}
	call := func(kind string) float64 {
		return testutil.ToFloat64(metrics.ActivityFailures.WithLabelValues(integ, kind))
	}
	kinds := []string{metrics.KindTransient, metrics.KindFinal, metrics.KindCompliance}
	before := map[string]float64{"observed": observed(), "written": written()}
	for _, k := range kinds {
		before["item "+k], before["call "+k] = item(k), call(k)
	}
	observe(integ, CRMToMarketing, Counts{Failed: 3, Refused: 2, ComplianceHeld: 1, CRMOptOuts: 7, Unsubscribed: 4, AddedUnsub: 1})
	require.EqualValues(t, 3, item(metrics.KindTransient)-before["item "+metrics.KindTransient])
	require.EqualValues(t, 2, item(metrics.KindFinal)-before["item "+metrics.KindFinal])
	require.EqualValues(t, 1, item(metrics.KindCompliance)-before["item "+metrics.KindCompliance])
	require.EqualValues(t, 7, observed()-before["observed"])
	require.EqualValues(t, 5, written()-before["written"])

	_ = classify(&connectors.APIError{System: "mailchimp", Status: 401, Kind: connectors.ErrUnauthorized}, integ, "reading")
	_ = classify(&connectors.APIError{System: "mailchimp", Status: 429, Kind: connectors.ErrRateLimited}, integ, "reading")
	_ = classify(&connectors.APIError{System: "mailchimp", Status: 503, Kind: connectors.ErrServer}, integ, "reading")
	_ = classify(context.Canceled, integ, "reading")
	require.EqualValues(t, 1, call(metrics.KindFinal)-before["call "+metrics.KindFinal])
	require.EqualValues(t, 2, call(metrics.KindTransient)-before["call "+metrics.KindTransient])
	require.EqualValues(t, 0, call(metrics.KindCompliance)-before["call "+metrics.KindCompliance])
}
