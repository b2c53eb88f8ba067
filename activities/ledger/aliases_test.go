package ledger_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities/ledger"
	"github.com/optoutsync/optoutsync/activities/ledger/ledgertest"
)

func TestAddressChangesLeadFromTheNewestAddressToEveryEarlierOne(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		a, b, c := "a@example.com", "b@example.com", "c@example.com"
		seal := func(e string) string {
			s, err := l.Seal(e)
			require.NoError(t, err)
			return s
		}
		// a → b, then b → c: c's earlier addresses are b and a.
		require.NoError(t, l.AddAliases(ctx, integ, []ledger.Alias{{Person: l.Person(b), Alias: l.Person(a), Sealed: seal(a), Changed: t0}}))
		require.NoError(t, l.AddAliases(ctx, integ, []ledger.Alias{{Person: l.Person(c), Alias: l.Person(b), Sealed: seal(b), Changed: t0.Add(time.Hour)}}))
		// The same change delivered again adds nothing.
		require.NoError(t, l.AddAliases(ctx, integ, []ledger.Alias{{Person: l.Person(c), Alias: l.Person(b), Sealed: seal(b), Changed: t0.Add(time.Hour)}}))
		got, err := l.Aliases(ctx, integ, []string{l.Person(c), l.Person(b), l.Person(a)})
		require.NoError(t, err)
		require.Len(t, got, 2, "a changed to nothing")
		require.Len(t, got[l.Person(b)], 1)
		var earlier []string
		for _, x := range got[l.Person(c)] {
			e, err := l.Unseal(x.Sealed)
			require.NoError(t, err)
			earlier = append(earlier, e)
		}
		require.ElementsMatch(t, []string{a, b}, earlier)
		// Another integration knows none of it.
		other, err := l.Aliases(ctx, "other", []string{l.Person(c)})
		require.NoError(t, err)
		require.Empty(t, other)
	})
}

func TestAnAddressChangeRecordedLateStillExtendsTheChain(t *testing.T) {
	dialects(t, func(t *testing.T, d ledger.Dialect) {
		ctx := t.Context()
		l := ledgertest.Open(t, d)
		t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		a, b, c, e := "a@example.com", "b@example.com", "c@example.com", "e@example.com"
		seal := func(e string) string {
			s, err := l.Seal(e)
			require.NoError(t, err)
			return s
		}
		change := func(from, to string, at time.Time) {
			require.NoError(t, l.AddAliases(ctx, integ, []ledger.Alias{{Person: l.Person(to), Alias: l.Person(from), Sealed: seal(from), Changed: at}}))
		}
		earlier := func(of string) []string {
			got, err := l.Aliases(ctx, integ, []string{l.Person(of)})
			require.NoError(t, err)
			var out []string
			for _, x := range got[l.Person(of)] {
				e, err := l.Unseal(x.Sealed)
				require.NoError(t, err)
				out = append(out, e)
			}
			return out
		}
		// b → c arrives first, then e → a and a → b (each delivered late):
		// c's earlier addresses are b, a and e all the same.
		change(b, c, t0.Add(2*time.Hour))
		change(e, a, t0)
		change(a, b, t0.Add(time.Hour))
		require.ElementsMatch(t, []string{a, b, e}, earlier(c))
		require.ElementsMatch(t, []string{a, e}, earlier(b))
		// A change back (c → a) makes no address its own alias.
		change(c, a, t0.Add(3*time.Hour))
		require.NotContains(t, earlier(a), a)
		require.NotContains(t, earlier(c), c)
		require.Contains(t, earlier(a), c)
	})
}
