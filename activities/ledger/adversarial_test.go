package ledger_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
)

// Two runs of one integration at once (a scheduled run beside a manual
// one, several workers on PostgreSQL) observe the same person: one an
// unsubscribe at t0+2h, the other an older re-subscribe at t0+1h. Whatever
// the interleaving, the latest choice is the opt-out. apply reads the
// person's row and writes the whole row back, so under READ COMMITTED the
// second writer overwrites the first with a state computed without it: the
// opt-out is undone in the ledger (OptedOut false), and the field-sync step and the
// late-record rule then treat the person as not opted out.
func TestAdversarialConcurrentObservationsOfOnePersonLoseNoOptOut(t *testing.T) {
	// SQLite is not affected (one connection, immediate transactions).
	t.Run("postgres", func(t *testing.T) {
		ctx := t.Context()
		l := ledgertest.Open(t, ledger.Postgres)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		const rounds, filler = 12, 150
		var lost []int
		for r := range rounds {
			email := fmt.Sprintf("p%d@example.com", r)
			// Each run's batch also carries other people, so that its
			// transaction stays open while the other one reads.
			batch := func(kind ledger.Kind, at time.Time, side string) []ledger.Observation {
				out := []ledger.Observation{obs(l, email, kind, at)}
				for i := range filler {
					out = append(out, obs(l, fmt.Sprintf("%s-%d-%d@example.com", side, r, i), ledger.KindUnsubscribe, at))
				}
				return out
			}
			a := batch(ledger.KindUnsubscribe, t0.Add(2*time.Hour), "a")
			b := batch(ledger.KindResubscribe, t0.Add(time.Hour), "b")
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, 2)
			for i, o := range [][]ledger.Observation{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, errs[i] = l.Observe(ctx, o)
				}()
			}
			close(start)
			wg.Wait()
			require.NoError(t, errs[0])
			require.NoError(t, errs[1])
			p := l.Person(email)
			people, err := l.People(ctx, integ, []string{p})
			require.NoError(t, err)
			if !people[p].OptedOut {
				lost = append(lost, r)
			}
		}
		require.Empty(t, lost, "rounds whose later opt-out was undone by a concurrent older re-subscribe")
	})
}
