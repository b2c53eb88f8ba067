package ledger_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
)

// dialects runs a test on SQLite and on PostgreSQL.
func dialects(t *testing.T, test func(t *testing.T, d ledger.Dialect)) {
	for _, d := range []ledger.Dialect{ledger.SQLite, ledger.Postgres} {
		t.Run(string(d), func(t *testing.T) { test(t, d) })
	}
}

const integ = "demo"

func obs(l ledger.Ledger, email string, kind ledger.Kind, at time.Time) ledger.Observation {
	return ledger.Observation{Integration: integ, System: "mailchimp", Subject: "m-" + email, Person: l.Person(email),
		Kind: kind, OccurredAt: at, WorkflowID: "wf", RunID: "run"}
}

func TestPersonIsAKeyedHashOfTheNormalisedAddress(t *testing.T) {
	l := ledgertest.Open(t, ledger.SQLite)
	p := l.Person("Ann@Example.com ")
	require.Len(t, p, 64)
	require.Equal(t, p, l.Person("ann@example.com"), "one normalisation")
	require.NotContains(t, p, "ann")
	require.Empty(t, l.Person("not an address"))

	other, err := ledger.Open(t.Context(), ledger.Config{DSN: t.TempDir() + "/other.db", Key: []byte("a different key, 32 bytes long!!")})
	require.NoError(t, err)
	defer other.Close()
	require.NotEqual(t, p, other.Person("ann@example.com"), "without the key the hash cannot be recomputed")

	_, err = ledger.Open(t.Context(), ledger.Config{DSN: t.TempDir() + "/x.db", Key: []byte("short")})
	require.ErrorContains(t, err, "at least 16 bytes")

	// A first start: the SQLite file's directory does not exist yet.
	fresh, err := ledger.Open(t.Context(), ledger.Config{DSN: t.TempDir() + "/data/new/ledger.db", Key: ledgertest.TestKey})
	require.NoError(t, err)
	require.NoError(t, fresh.Close())
}

func TestObservationsAreIdempotentAndTheLatestChoiceWins(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		ann := l.Person("ann@example.com")

		at, err := l.Observe(ctx, []ledger.Observation{obs(l, "ann@example.com", ledger.KindUnsubscribe, t0)})
		require.NoError(t, err)
		require.Equal(t, t0, at[0].At)
		require.True(t, at[0].New)
		// The same unsubscribe read again (a watermark overlap) adds nothing.
		_, err = l.Observe(ctx, []ledger.Observation{obs(l, "ann@example.com", ledger.KindUnsubscribe, t0)})
		require.NoError(t, err)
		h, err := l.History(ctx, ann)
		require.NoError(t, err)
		require.Len(t, h, 1)

		people, err := l.People(ctx, integ, []string{ann, l.Person("nobody@example.com")})
		require.NoError(t, err)
		require.Len(t, people, 1, "an unknown person has no state")
		p := people[ann]
		require.True(t, p.OptedOut)
		require.True(t, p.SuppressedByMarketing())
		require.Equal(t, "unsubscribed", p.MarketingStatus)

		// A re-subscribe older than the opt-out changes nothing; a newer one lifts it.
		_, err = l.Observe(ctx, []ledger.Observation{obs(l, "ann@example.com", ledger.KindResubscribe, t0.Add(-time.Hour))})
		require.NoError(t, err)
		people, _ = l.People(ctx, integ, []string{ann})
		require.True(t, people[ann].OptedOut)
		_, err = l.Observe(ctx, []ledger.Observation{obs(l, "ann@example.com", ledger.KindResubscribe, t0.Add(time.Hour))})
		require.NoError(t, err)
		people, _ = l.People(ctx, integ, []string{ann})
		require.False(t, people[ann].OptedOut)
		require.Equal(t, t0.Add(time.Hour), people[ann].ResubscribedAt)
		require.Equal(t, "subscribed", people[ann].MarketingStatus)

		// A CRM opt-out first seen now is newer than the re-subscribe; seen
		// again later, it still counts from its first sighting.
		crm := ledger.Observation{Integration: integ, System: "netsuite", Subject: "customer/7", Person: ann, Kind: ledger.KindCRMOptOut, WorkflowID: "wf", RunID: "r2"}
		first, err := l.Observe(ctx, []ledger.Observation{crm})
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), first[0].At, time.Minute)
		again, err := l.Observe(ctx, []ledger.Observation{crm})
		require.NoError(t, err)
		require.Equal(t, first[0].At, again[0].At)
		require.False(t, again[0].New)
		people, _ = l.People(ctx, integ, []string{ann})
		require.True(t, people[ann].OptedOut)
		require.Equal(t, ledger.KindCRMOptOut, people[ann].OptOutKind)
		require.False(t, people[ann].SuppressedByMarketing())

		// A clean is not an opt-out.
		bob := l.Person("bob@example.com")
		_, err = l.Observe(ctx, []ledger.Observation{obs(l, "bob@example.com", ledger.KindCleaned, t0)})
		require.NoError(t, err)
		people, _ = l.People(ctx, integ, []string{bob})
		require.False(t, people[bob].OptedOut)
		require.Equal(t, "cleaned", people[bob].MarketingStatus)
	})
}

// Observe answers each person's state after the batch, as People does,
// also when the batch changes nothing (observations already recorded),
// and a batch that changes nothing leaves every state as it was.
func TestObserveAnswersThePersonsStateAfterTheBatch(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		ann, bob := l.Person("ann@example.com"), l.Person("bob@example.com")
		batch := []ledger.Observation{
			obs(l, "ann@example.com", ledger.KindUnsubscribe, t0),
			obs(l, "bob@example.com", ledger.KindUnsubscribe, t0),
			obs(l, "ann@example.com", ledger.KindResubscribe, t0.Add(time.Hour)),
		}
		check := func(seen []ledger.Seen) {
			t.Helper()
			people, err := l.People(ctx, integ, []string{ann, bob})
			require.NoError(t, err)
			for i, o := range batch {
				require.Equal(t, people[o.Person], seen[i].State, "observation %d", i)
			}
			require.False(t, seen[0].State.OptedOut, "the whole batch: ann's later re-subscribe is applied")
			require.Equal(t, seen[0].State, seen[2].State)
			require.True(t, seen[1].State.OptedOut)
			require.Equal(t, t0, seen[1].State.OptOutAt)
		}
		first, err := l.Observe(ctx, batch)
		require.NoError(t, err)
		check(first)
		again, err := l.Observe(ctx, batch)
		require.NoError(t, err)
		require.False(t, again[0].New)
		check(again)
		require.Equal(t, first[1].State, again[1].State, "nothing changed")
	})
}

// A marketing status is kept with the audience it was learnt in: it says
// nothing of another audience, and a status learnt in the integration's
// new audience replaces it whatever their times.
func TestAMarketingStatusBelongsToItsAudience(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		ann, bob := l.Person("ann@example.com"), l.Person("bob@example.com")
		unsub := obs(l, "ann@example.com", ledger.KindUnsubscribe, t0)
		unsub.Audience = "A"
		_, err := l.Observe(ctx, []ledger.Observation{unsub})
		require.NoError(t, err)
		require.NoError(t, l.RecordWrites(ctx, []ledger.Write{{Integration: integ, System: "mailchimp", Target: "h-bob", Person: bob,
			Action: ledger.ActionUnsubscribe, Result: ledger.ResultAbsent, Audience: "A", WorkflowID: "wf", RunID: "run"}}))
		people, err := l.People(ctx, integ, []string{ann, bob})
		require.NoError(t, err)
		require.Equal(t, "unsubscribed", people[ann].StatusIn("A"))
		require.Empty(t, people[ann].StatusIn("B"), "unsubscribed from A says nothing of B")
		require.Equal(t, ledger.MarketingAbsent, people[bob].StatusIn("A"))
		require.Empty(t, people[bob].StatusIn("B"))
		require.True(t, people[ann].OptedOut, "the person's choice is not the audience's")

		// Learnt in B, at an older time than A's: B's now.
		resub := obs(l, "ann@example.com", ledger.KindResubscribe, t0.Add(-time.Hour))
		resub.Audience = "B"
		_, err = l.Observe(ctx, []ledger.Observation{resub})
		require.NoError(t, err)
		require.NoError(t, l.RecordWrites(ctx, []ledger.Write{{Integration: integ, System: "mailchimp", Target: "h-bob", Person: bob,
			Action: ledger.ActionUnsubscribe, Result: ledger.ResultWritten, Audience: "B", WorkflowID: "wf", RunID: "run2"}}))
		people, err = l.People(ctx, integ, []string{ann, bob})
		require.NoError(t, err)
		require.Equal(t, "subscribed", people[ann].StatusIn("B"))
		require.Empty(t, people[ann].StatusIn("A"))
		require.Equal(t, "unsubscribed", people[bob].StatusIn("B"))

		// The proof names the audience of each marketing observation and unsubscribe.
		hist, err := l.History(ctx, bob)
		require.NoError(t, err)
		require.Len(t, hist, 2)
		require.Equal(t, []string{"A", "B"}, []string{hist[0].Audience, hist[1].Audience})
		require.Equal(t, string(ledger.ResultAbsent), hist[0].Result)
		hist, err = l.History(ctx, ann)
		require.NoError(t, err)
		require.Equal(t, "A", hist[0].Audience)

		// A status from before the ledger kept audiences holds for any.
		require.Equal(t, "cleaned", ledger.Person{MarketingStatus: "cleaned"}.StatusIn("B"))
	})
}

func TestAContactsOptOutSuppressesItsEarlierAddresses(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		old, cur := l.Person("old@example.com"), l.Person("new@example.com")
		// Seen once at the old address (a field sync lookup).
		require.NoError(t, l.LinkContacts(ctx, integ, "mailchimp", map[string]string{old: "c1"}))
		// The member changed address and then unsubscribed.
		o := obs(l, "new@example.com", ledger.KindUnsubscribe, time.Now())
		o.Contact = "c1"
		_, err := l.Observe(ctx, []ledger.Observation{o})
		require.NoError(t, err)
		people, err := l.People(ctx, integ, []string{old, cur})
		require.NoError(t, err)
		require.True(t, people[cur].OptedOut)
		require.True(t, people[old].OptedOut, "the earlier address of the same contact")
		require.Equal(t, "contact", people[old].Via)
		h, err := l.History(ctx, old)
		require.NoError(t, err)
		require.Len(t, h, 1)
		require.Equal(t, "contact", h[0].Via)
	})
}

func TestPendingOptOutsSettleOnlyWhenEveryWriteSettles(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		_, ok, err := l.OldestPending(ctx, integ)
		require.NoError(t, err)
		require.False(t, ok)

		o := obs(l, "ann@example.com", ledger.KindUnsubscribe, time.Now().Add(-time.Hour))
		o.PendingFor = "netsuite"
		_, err = l.Observe(ctx, []ledger.Observation{o})
		require.NoError(t, err)
		since, ok, err := l.OldestPending(ctx, integ)
		require.NoError(t, err)
		require.True(t, ok)
		require.WithinDuration(t, time.Now(), since, time.Minute, "counted from when it was first seen")

		w := func(target string, r ledger.Result, run string) ledger.Write {
			return ledger.Write{Integration: integ, System: "netsuite", Target: target, Person: o.Person,
				Action: ledger.ActionCRMOptOut, Result: r, Rule: "test", Cause: o.Subject, WorkflowID: "wf", RunID: run}
		}
		// Two records of one address: one written, one failed: still pending.
		require.NoError(t, l.RecordWrites(ctx, []ledger.Write{w("customer/1", ledger.ResultWritten, "r1"), w("contact/2", ledger.ResultFailed, "r1")}))
		again, ok, err := l.OldestPending(ctx, integ)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, since, again, "the first sighting is kept")
		// The retried activity records the same writes again: no duplicate rows.
		require.NoError(t, l.RecordWrites(ctx, []ledger.Write{w("customer/1", ledger.ResultWritten, "r1"), w("contact/2", ledger.ResultFailed, "r1")}))
		h, err := l.History(ctx, o.Person)
		require.NoError(t, err)
		require.Len(t, h, 3)
		// The next run writes the other one.
		require.NoError(t, l.RecordWrites(ctx, []ledger.Write{w("contact/2", ledger.ResultWritten, "r2")}))
		_, ok, err = l.OldestPending(ctx, integ)
		require.NoError(t, err)
		require.False(t, ok)

		written, err := l.Written(ctx, integ, "netsuite", ledger.ActionCRMOptOut, []string{"customer/1", "contact/2", "customer/3"}, ledger.ResultWritten)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"customer/1", "contact/2"}, slices.Collect(maps.Keys(written)))
		hist, err := l.Records(ctx, integ, "netsuite", []string{"customer/1", "customer/3"})
		require.NoError(t, err)
		require.True(t, hist["customer/1"].Echo(), "we wrote it and never saw it cleared")
		require.False(t, hist["customer/3"].Echo())
	})
}

func TestTwoRunsAtOnceNeitherDuplicateNorLose(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		dsn := ledgertest.DSN(t, d)
		// Two workers, two connections to one database.
		open := func() *ledger.SQL {
			l, err := ledger.Open(ctx, ledger.Config{Dialect: d, DSN: dsn, Key: ledgertest.TestKey})
			require.NoError(t, err)
			t.Cleanup(func() { _ = l.Close() })
			return l
		}
		ls := []*ledger.SQL{open(), open()}
		const n = 200
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		var wg sync.WaitGroup
		errs := make(chan error, 2*n)
		for w, l := range ls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range n {
					o := obs(l, fmt.Sprintf("p%d@example.com", i), ledger.KindUnsubscribe, t0)
					o.RunID = fmt.Sprintf("run-%d", w)
					if _, err := l.Observe(ctx, []ledger.Observation{o}); err != nil {
						errs <- err
					}
					// Each run records its own write of the same record.
					if err := l.RecordWrites(ctx, []ledger.Write{{Integration: integ, System: "netsuite", Target: fmt.Sprintf("customer/%d", i),
						Person: o.Person, Action: ledger.ActionCRMOptOut, Result: ledger.ResultWritten, WorkflowID: "wf", RunID: o.RunID}}); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		for i := range n {
			h, err := ls[0].History(ctx, ls[0].Person(fmt.Sprintf("p%d@example.com", i)))
			require.NoError(t, err)
			// One observation (the same unsubscribe seen by both), and one write per run.
			require.Len(t, h, 3, "person %d", i)
		}
	})
}

func TestTheLedgerSurvivesARestartAndMigratesOnce(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := context.Background()
		dsn := ledgertest.DSN(t, d)
		l, err := ledger.Open(ctx, ledger.Config{Dialect: d, DSN: dsn, Key: ledgertest.TestKey})
		require.NoError(t, err)
		_, err = l.Observe(ctx, []ledger.Observation{obs(l, "ann@example.com", ledger.KindUnsubscribe, time.Now())})
		require.NoError(t, err)
		require.NoError(t, l.Close())

		l, err = ledger.Open(ctx, ledger.Config{Dialect: d, DSN: dsn, Key: ledgertest.TestKey})
		require.NoError(t, err)
		defer l.Close()
		require.NoError(t, l.Ping(ctx))
		people, err := l.People(ctx, integ, []string{l.Person("ann@example.com")})
		require.NoError(t, err)
		require.True(t, people[l.Person("ann@example.com")].OptedOut)
	})
}

// TestWorkersStartingAtOnceMigrateANewLedger: several workers started
// together on a new database (TestCluster's two, a compose file scaled up)
// all open the ledger; the migrations run once.
func TestWorkersStartingAtOnceMigrateANewLedger(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := context.Background()
		dsn := ledgertest.DSN(t, d)
		const workers = 8
		errs := make(chan error, workers)
		var start sync.WaitGroup
		start.Add(1)
		for range workers {
			go func() {
				start.Wait()
				l, err := ledger.Open(ctx, ledger.Config{Dialect: d, DSN: dsn, Key: ledgertest.TestKey})
				if err == nil {
					err = l.Close()
				}
				errs <- err
			}()
		}
		start.Done()
		for range workers {
			require.NoError(t, <-errs)
		}
		l, err := ledger.Open(ctx, ledger.Config{Dialect: d, DSN: dsn, Key: ledgertest.TestKey})
		require.NoError(t, err)
		defer l.Close()
		_, err = l.Observe(ctx, []ledger.Observation{obs(l, "ann@example.com", ledger.KindUnsubscribe, time.Now())})
		require.NoError(t, err)
	})
}

// TestMembersMirrorTheLatestStateRead: the audience mirror keeps, per
// member, the newest state read, whatever the order the reads come in.
func TestMembersMirrorTheLatestStateRead(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		l := ledgertest.Open(t, d)
		ctx := t.Context()
		ann, bob := l.Person("ann@example.com"), l.Person("bob@example.com")
		t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", []ledger.MemberState{
			{Person: ann, Status: "subscribed", Fields: "f1", Changed: t0},
			{Person: bob, Status: "subscribed", Fields: "f1", Changed: t0},
		}))
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", []ledger.MemberState{
			{Person: ann, Status: "unsubscribed", Fields: "f1", Changed: t0.Add(time.Minute)},
			{Person: bob, Status: "cleaned", Fields: "f2", Changed: t0.Add(-time.Minute)}, // older: ignored
		}))
		got, err := l.Members(ctx, "acme", "aud1", []string{ann, bob, l.Person("cat@example.com")})
		require.NoError(t, err)
		require.Len(t, got, 2, "an unknown member is absent")
		require.Equal(t, "unsubscribed", got[ann].Status)
		require.Equal(t, "subscribed", got[bob].Status)
		require.Equal(t, "f1", got[bob].Fields)
		other, err := l.Members(ctx, "other", "aud1", []string{ann})
		require.NoError(t, err)
		require.Empty(t, other, "integrations do not share a mirror")
		elsewhere, err := l.Members(ctx, "acme", "aud2", []string{ann})
		require.NoError(t, err)
		require.Empty(t, elsewhere, "nor do audiences")
	})
}

// TestAMemberSavedWithItsContactMovesItsEarlierAddress: after an address
// change, the mirror holds the old address as moved (it left the audience
// with the person), so field sync neither updates nor re-adds it.
func TestAMemberSavedWithItsContactMovesItsEarlierAddress(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		l := ledgertest.Open(t, d)
		ctx := t.Context()
		old, cur, other := l.Person("old@example.com"), l.Person("new@example.com"), l.Person("bob@example.com")
		t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
		require.NoError(t, l.LinkContacts(ctx, "acme", "mailchimp", map[string]string{old: "c1", other: "c2"}))
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", []ledger.MemberState{
			{Person: old, Contact: "c1", Status: "subscribed", Changed: t0},
			{Person: other, Contact: "c2", Status: "subscribed", Changed: t0},
		}))
		require.NoError(t, l.LinkContacts(ctx, "acme", "mailchimp", map[string]string{cur: "c1"}))
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", []ledger.MemberState{{Person: cur, Contact: "c1", Status: "unsubscribed", Changed: t0.Add(time.Minute)}}))
		got, err := l.Members(ctx, "acme", "aud1", []string{old, cur, other})
		require.NoError(t, err)
		require.Equal(t, ledger.StatusMoved, got[old].Status, "the earlier address left the audience")
		require.Equal(t, "unsubscribed", got[cur].Status)
		require.Equal(t, "subscribed", got[other].Status, "another contact is untouched")

		// Two addresses of one contact saved together: neither is moved
		// by the other.
		a, b := l.Person("a@example.com"), l.Person("b@example.com")
		require.NoError(t, l.LinkContacts(ctx, "acme", "mailchimp", map[string]string{a: "c3", b: "c3"}))
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", []ledger.MemberState{
			{Person: a, Contact: "c3", Status: "archived", Changed: t0},
			{Person: b, Contact: "c3", Status: "subscribed", Changed: t0},
		}))
		got, err = l.Members(ctx, "acme", "aud1", []string{a, b})
		require.NoError(t, err)
		require.Equal(t, "archived", got[a].Status)
		require.Equal(t, "subscribed", got[b].Status)

		// The later address saved before the earlier one (parts of the
		// audience read at once): the earlier one does not move it.
		later, earlier := l.Person("later@example.com"), l.Person("earlier@example.com")
		require.NoError(t, l.LinkContacts(ctx, "acme", "mailchimp", map[string]string{later: "c4", earlier: "c4"}))
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", []ledger.MemberState{{Person: later, Contact: "c4", Status: "subscribed", Changed: t0.Add(time.Hour)}}))
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", []ledger.MemberState{{Person: earlier, Contact: "c4", Status: "subscribed", Changed: t0}}))
		got, err = l.Members(ctx, "acme", "aud1", []string{later})
		require.NoError(t, err)
		require.Equal(t, "subscribed", got[later].Status)

		// More addresses of one contact than one statement takes (PostgreSQL
		// marks in chunks): none of those saved together is moved.
		var many []ledger.MemberState
		links := map[string]string{}
		for i := range 700 {
			p := l.Person(fmt.Sprintf("many%d@example.com", i))
			links[p] = "c5"
			many = append(many, ledger.MemberState{Person: p, Contact: "c5", Status: "subscribed", Changed: t0})
		}
		require.NoError(t, l.LinkContacts(ctx, "acme", "mailchimp", links))
		require.NoError(t, l.SaveMembers(ctx, "acme", "aud1", many))
		ps := make([]string, len(many))
		for i, m := range many {
			ps[i] = m.Person
		}
		got, err = l.Members(ctx, "acme", "aud1", ps)
		require.NoError(t, err)
		for _, p := range ps {
			require.Equal(t, "subscribed", got[p].Status)
		}
	})
}
