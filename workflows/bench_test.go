package workflows_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
	"github.com/optoutsync/optoutsync/workflows"
)

// benchStack is a 1,000,000-member audience, 1% of it unsubscribed over
// the past year, and a CRM holding a record for each of 5,000 of those
// addresses, all on the real Temporal server through the real connectors.
func benchStack(b *testing.B) *stack {
	const members, unsubEvery, inCRM = 1_000_000, 100, 5_000
	s := newStack(b, nil)
	now := time.Now()
	start := time.Now()
	require.NoError(b, s.mc.Generate(audience, members, func(i int) mailchimptest.MemberSeed {
		seed := mailchimptest.MemberSeed{Email: fmt.Sprintf("m%d@example.com", i), Status: "subscribed",
			LastChanged: now.Add(-time.Duration(members-i) * 30 * time.Second)}
		if i%unsubEvery == 0 {
			seed.Status = "unsubscribed"
		}
		return seed
	}))
	s.ns.AddSavedSearch(search)
	for i := 0; i < inCRM*unsubEvery; i += unsubEvery {
		id := s.ns.AddCustomer(netsuitetest.Entity{Email: fmt.Sprintf("m%d@example.com", i), SubscriptionStatus: "1"})
		s.refs[id] = connectors.RecordRef{Type: "customer", ID: id}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.Logf("seeded %d members and %d CRM records in %s; heap %d MB", members, inCRM, time.Since(start).Round(time.Millisecond), ms.HeapAlloc>>20)
	return s
}

// BenchmarkSyncFirstRun measures a first (full) run over the large
// audience: 10,000 unsubscribes read, 5,000 CRM records opted out.
func BenchmarkSyncFirstRun(b *testing.B) {
	s := benchStack(b)
	var res workflows.SyncResult
	for b.Loop() {
		b.StopTimer()
		for _, ref := range s.refs { // undo the previous iteration's opt-outs
			require.NoError(b, s.ns.Update(ref.Type, ref.ID, func(e *netsuitetest.Entity) { e.SubscriptionStatus = "1" }))
		}
		s.mc.ResetCounts()
		s.ns.Middleware.ResetCounts()
		b.StartTimer()
		res = s.run(b)
	}
	require.Equal(b, 5_000, res.Counts.MarketingToCRM.CRMOptedOut)
	m := res.Counts.MarketingToCRM
	b.ReportMetric(float64(m.Unsubscribes), "unsubscribes/run")
	b.ReportMetric(float64(s.mc.Total()), "mailchimp-calls/run")
	b.ReportMetric(float64(s.ns.Middleware.Total()), "netsuite-calls/run")
}

// BenchmarkSyncQuietRun measures a run with nothing new over the large
// audience: its cost must not grow with the audience.
func BenchmarkSyncQuietRun(b *testing.B) {
	s := benchStack(b)
	last := s.run(b)
	// Let the first run's own writes fall out of the watermark's overlap,
	// as they do between scheduled runs minutes apart.
	time.Sleep(s.settings.Overlap + time.Second)
	last = s.runAfter(b, last)
	for b.Loop() {
		b.StopTimer()
		s.mc.ResetCounts()
		s.ns.Middleware.ResetCounts()
		b.StartTimer()
		last = s.runAfter(b, last)
	}
	b.ReportMetric(float64(s.mc.Total()), "mailchimp-calls/run")
	b.ReportMetric(float64(s.ns.Middleware.Total()), "netsuite-calls/run")
	b.ReportMetric(float64(last.Counts.MarketingToCRM.Read+last.Counts.CRMToMarketing.Read), "records-read/run")
	b.Logf("quiet run calls: Mailchimp %v, NetSuite %v", s.mc.Counts(), s.ns.Middleware.Counts())
}
