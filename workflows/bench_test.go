package workflows_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
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

// BenchmarkLedgerCost measures what the consent ledger adds to a run that
// reads 10,000 unsubscribes and opts out their 10,000 CRM records: the same
// run with no ledger (every ledger call a no-op), with the SQLite ledger,
// and with the PostgreSQL one.
func BenchmarkLedgerCost(b *testing.B) {
	for _, kind := range []string{"none", "sqlite", "postgres"} {
		b.Run(kind, func(b *testing.B) {
			var led ledger.Ledger
			switch kind {
			case "none":
				led = nopLedger{ledgertest.Open(b, ledger.SQLite)}
			case "sqlite":
				led = ledgertest.Open(b, ledger.SQLite)
			case "postgres":
				led = ledgertest.Open(b, ledger.Postgres)
			}
			s := newStackWith(b, func(st *activities.Settings) { st.CRMToMarketing = false }, led)
			const n = 10_000
			now := time.Now()
			require.NoError(b, s.mc.Generate(audience, n, func(i int) mailchimptest.MemberSeed {
				return mailchimptest.MemberSeed{Email: fmt.Sprintf("u%d@example.com", i), Status: "unsubscribed",
					LastChanged: now.Add(-time.Duration(n-i) * time.Second)}
			}))
			for i := range n {
				id := s.ns.AddCustomer(netsuitetest.Entity{Email: fmt.Sprintf("u%d@example.com", i), SubscriptionStatus: "1"})
				s.refs[id] = connectors.RecordRef{Type: "customer", ID: id}
			}
			var res workflows.SyncResult
			for b.Loop() {
				b.StopTimer()
				for _, ref := range s.refs {
					require.NoError(b, s.ns.Update(ref.Type, ref.ID, func(e *netsuitetest.Entity) { e.SubscriptionStatus = "1" }))
				}
				b.StartTimer()
				res = s.run(b)
			}
			require.Equal(b, n, res.Counts.MarketingToCRM.CRMOptedOut)
			b.ReportMetric(float64(n), "opt-outs/run")
		})
	}
}

// nopLedger is the "no ledger" baseline of BenchmarkLedgerCost: it names
// people as the real one does and records nothing.
type nopLedger struct{ *ledger.SQL }

func (nopLedger) Observe(_ context.Context, obs []ledger.Observation) ([]ledger.Seen, error) {
	return make([]ledger.Seen, len(obs)), nil
}
func (nopLedger) RecordWrites(context.Context, []ledger.Write) error { return nil }
func (nopLedger) People(context.Context, string, []string) (map[string]ledger.Person, error) {
	return nil, nil
}
func (nopLedger) Written(context.Context, string, string, ledger.Action, []string, ...ledger.Result) (map[string]time.Time, error) {
	return nil, nil
}
func (nopLedger) Records(context.Context, string, string, []string) (map[string]ledger.RecordHistory, error) {
	return nil, nil
}
func (nopLedger) Settle(context.Context, string, string, []string) error { return nil }
func (nopLedger) Attempted(context.Context, string, string, ledger.Action, string, []string) (map[string]bool, error) {
	return nil, nil
}
func (nopLedger) LinkContacts(context.Context, string, string, map[string]string) error { return nil }
func (nopLedger) AddAliases(context.Context, string, []ledger.Alias) error              { return nil }
func (nopLedger) Aliases(context.Context, string, []string) (map[string][]ledger.Alias, error) {
	return nil, nil
}
func (nopLedger) OldestPending(context.Context, string) (time.Time, bool, error) {
	return time.Time{}, false, nil
}
func (nopLedger) RecordRun(context.Context, ledger.Run) error { return nil }
func (nopLedger) LastRuns(context.Context) (map[string]ledger.Run, error) {
	return nil, nil
}
