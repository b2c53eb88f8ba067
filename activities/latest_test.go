package activities_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/activities"
	"github.com/optoutsync/optoutsync/connectors"
)

// Only a later subscribe hides an opt-out; a clean, an address change or
// the account's deletion never does, and an opt-out wins a tie.
func TestLatestPerPersonKeepsTheLatestChoice(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ev := func(typ connectors.EventType, sec int, action, reason string) activities.Event {
		return activities.Event{Type: typ, Person: "p", FiredAt: t0.Add(time.Duration(sec) * time.Second), Action: action, Reason: reason}
	}
	unsub, sub, clean := connectors.EventUnsubscribe, connectors.EventSubscribe, connectors.EventCleaned
	for name, tc := range map[string]struct {
		in   []activities.Event
		kept []int
	}{
		"subscribe after":        {[]activities.Event{ev(unsub, 0, "unsub", ""), ev(sub, 1, "", "")}, []int{1}},
		"unsubscribe after":      {[]activities.Event{ev(sub, 0, "", ""), ev(unsub, 1, "unsub", "")}, []int{1}},
		"tie: the opt-out wins":  {[]activities.Event{ev(unsub, 0, "unsub", ""), ev(sub, 0, "", "")}, []int{0}},
		"tie, other order":       {[]activities.Event{ev(sub, 0, "", ""), ev(unsub, 0, "unsub", "")}, []int{1}},
		"a clean hides nothing":  {[]activities.Event{ev(unsub, 0, "unsub", "abuse"), ev(clean, 0, "", "hard")}, []int{0, 1}},
		"a later clean":          {[]activities.Event{ev(unsub, 0, "unsub", ""), ev(clean, 5, "", "hard")}, []int{0, 1}},
		"complaint beats resub":  {[]activities.Event{ev(sub, 0, "", ""), ev(clean, 1, "", "abuse")}, []int{1}},
		"deletion hides nothing": {[]activities.Event{ev(unsub, 0, "unsub", ""), ev(unsub, 1, "delete", "manual")}, []int{0, 1}},
	} {
		got, dropped := activities.LatestPerPerson(tc.in)
		var want []activities.Event
		for _, i := range tc.kept {
			want = append(want, tc.in[i])
		}
		require.Equal(t, want, got, name)
		require.Equal(t, len(tc.in)-len(tc.kept), dropped, name)
	}
}
