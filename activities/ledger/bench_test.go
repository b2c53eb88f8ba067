package ledger_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
)

// cpuTime is the process's user and system time so far: on a shared
// machine the CPU an opt-out costs is steadier than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLedger records opt-outs in batches of 1,000, as the steps do,
// and reports opt-outs per second (wall clock and per CPU second of the
// process, which on SQLite is the database itself) and bytes per opt-out,
// on SQLite and PostgreSQL:
//
//   - marketing-to-crm: one observation and one write each (Observe, RecordWrites);
//   - crm-to-marketing: the calls SyncCRMOptOuts makes per page (Records,
//     Observe, Written, RecordWrites).
func BenchmarkLedger(b *testing.B) {
	for _, d := range []ledger.Dialect{ledger.SQLite, ledger.Postgres} {
		b.Run(string(d)+"/marketing-to-crm", func(b *testing.B) {
			benchLedger(b, d, func(b *testing.B, l *ledger.SQL, n int, start time.Time) {
				ctx := b.Context()
				obs := make([]ledger.Observation, ledgerBatch)
				ws := make([]ledger.Write, ledgerBatch)
				for i := range ledgerBatch {
					email := fmt.Sprintf("p%d@example.com", n+i)
					p := l.Person(email)
					obs[i] = ledger.Observation{Integration: "bench", System: "mailchimp", Subject: fmt.Sprintf("%032x", n+i), Person: p,
						Contact: fmt.Sprintf("%032x", n+i), Kind: ledger.KindUnsubscribe, OccurredAt: start.Add(-time.Duration(n+i) * time.Second),
						PendingFor: "netsuite", WorkflowID: benchWorkflow, RunID: benchRun}
					ws[i] = ledger.Write{Integration: "bench", System: "netsuite", Target: fmt.Sprintf("customer/%d", n+i), Person: p,
						Action: ledger.ActionCRMOptOut, Result: ledger.ResultWritten, Rule: "a marketing unsubscribe sets the CRM opt-out on every record of the address",
						Cause: obs[i].Subject, WorkflowID: benchWorkflow, RunID: benchRun}
				}
				_, err := l.Observe(ctx, obs)
				require.NoError(b, err)
				require.NoError(b, l.RecordWrites(ctx, ws))
			})
		})
		b.Run(string(d)+"/crm-to-marketing", func(b *testing.B) {
			benchLedger(b, d, func(b *testing.B, l *ledger.SQL, n int, _ time.Time) {
				ctx := b.Context()
				refs := make([]string, ledgerBatch)
				persons := make([]string, ledgerBatch)
				hashes := make([]string, ledgerBatch)
				for i := range ledgerBatch {
					refs[i] = fmt.Sprintf("customer/%d", n+i)
					persons[i] = l.Person(fmt.Sprintf("p%d@example.com", n+i))
					hashes[i] = fmt.Sprintf("%032x", n+i)
				}
				hist, err := l.Records(ctx, "bench", "netsuite", refs)
				require.NoError(b, err)
				obs := make([]ledger.Observation, ledgerBatch)
				for i := range ledgerBatch {
					obs[i] = ledger.Observation{Integration: "bench", System: "netsuite", Subject: refs[i], Person: persons[i],
						Kind: ledger.KindCRMOptOut, Episode: hist[refs[i]].LastCleared, WorkflowID: benchWorkflow, RunID: benchRun}
				}
				seen, err := l.Observe(ctx, obs)
				require.NoError(b, err)
				require.True(b, seen[0].State.OptedOut)
				_, err = l.Written(ctx, "bench", "mailchimp", ledger.ActionUnsubscribe, hashes, ledger.ResultRefused)
				require.NoError(b, err)
				ws := make([]ledger.Write, ledgerBatch)
				for i := range ledgerBatch {
					ws[i] = ledger.Write{Integration: "bench", System: "mailchimp", Target: hashes[i], Person: persons[i],
						Action: ledger.ActionUnsubscribe, Result: ledger.ResultWritten, Rule: "a CRM opt-out inside the lists unsubscribes the address",
						Cause: refs[i], WorkflowID: benchWorkflow, RunID: benchRun}
				}
				require.NoError(b, l.RecordWrites(ctx, ws))
			})
		})
	}
}

const (
	ledgerBatch   = 1000
	benchWorkflow = "optout-sync-bench-2026-12-01T00:00:00Z"
	benchRun      = "01a2343e-1b57-73f5-8df8-ed9b4c3f9295"
)

// benchLedger runs batch on a fresh ledger once per iteration, each time
// on the next 1,000 people, and reports the rates.
func benchLedger(b *testing.B, d ledger.Dialect, batch func(b *testing.B, l *ledger.SQL, n int, start time.Time)) {
	ctx := b.Context()
	l := ledgertest.Open(b, d)
	before, err := l.SizeBytes(ctx)
	require.NoError(b, err)
	n := 0
	start, cpu := time.Now(), cpuTime()
	for b.Loop() {
		batch(b, l, n, start)
		n += ledgerBatch
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu
	after, err := l.SizeBytes(ctx)
	require.NoError(b, err)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "opt-outs/s")
	b.ReportMetric(float64(n)/cpu.Seconds(), "opt-outs/cpu-s")
	b.ReportMetric(float64(after-before)/float64(n), "B/opt-out")
}
