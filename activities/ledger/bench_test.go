package ledger_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
)

// BenchmarkLedger records opt-outs as marketing-to-crm does (one
// observation and one write each, in batches of 1,000) and reports rows
// written per second and bytes per opt-out, on SQLite and PostgreSQL.
func BenchmarkLedger(b *testing.B) {
	for _, d := range []ledger.Dialect{ledger.SQLite, ledger.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			ctx := b.Context()
			l := ledgertest.Open(b, d)
			before, err := l.SizeBytes(ctx)
			require.NoError(b, err)
			const batch = 1000
			n := 0
			start := time.Now()
			for b.Loop() {
				obs := make([]ledger.Observation, batch)
				ws := make([]ledger.Write, batch)
				for i := range batch {
					email := fmt.Sprintf("p%d@example.com", n+i)
					p := l.Person(email)
					obs[i] = ledger.Observation{Integration: "bench", System: "mailchimp", Subject: fmt.Sprintf("%032x", n+i), Person: p,
						Contact: fmt.Sprintf("%032x", n+i), Kind: ledger.KindUnsubscribe, OccurredAt: start.Add(-time.Duration(n+i) * time.Second),
						PendingFor: "netsuite", WorkflowID: "optout-sync-bench-2026-12-01T00:00:00Z", RunID: "01a2343e-1b57-73f5-8df8-ed9b4c3f9295"}
					ws[i] = ledger.Write{Integration: "bench", System: "netsuite", Target: fmt.Sprintf("customer/%d", n+i), Person: p,
						Action: ledger.ActionCRMOptOut, Result: ledger.ResultWritten, Rule: "a marketing unsubscribe sets the CRM opt-out on every record of the address",
						Cause: obs[i].Subject, WorkflowID: obs[i].WorkflowID, RunID: obs[i].RunID}
				}
				_, err := l.Observe(ctx, obs)
				require.NoError(b, err)
				require.NoError(b, l.RecordWrites(ctx, ws))
				n += batch
			}
			elapsed := time.Since(start)
			after, err := l.SizeBytes(ctx)
			require.NoError(b, err)
			b.ReportMetric(float64(2*n)/elapsed.Seconds(), "rows/s")
			b.ReportMetric(float64(n)/elapsed.Seconds(), "opt-outs/s")
			b.ReportMetric(float64(after-before)/float64(n), "B/opt-out")
		})
	}
}
