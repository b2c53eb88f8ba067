package dynamics_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// TestOptedOutBatchesRandomisedNoLoss: small server batches, many records
// to a second, one to three address columns, several tables, a static list
// or none, page sizes at and around the columns' multiples, pages read by
// one client (the batch kept) or by another (the batch read again after
// the last row returned), and records modified between the pages: every
// record opted out and not modified during the read is returned.
func TestOptedOutBatchesRandomisedNoLoss(t *testing.T) {
	connectorstest.Randomised(t, 8, 11, batchFuzz)
}

func batchFuzz(t *testing.T, rng *rand.Rand) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	maxPage := []int{0, 7, 13, 50}[rng.IntN(4)]
	srv := newEnv(t, dynamicstest.Options{Clock: clock.Now, RequestLimit: -1, MaxPageSize: maxPage, FractionalSeconds: rng.IntN(2) == 0})
	since := clock.Now()
	sets := map[string]string{"contact": "contacts", "lead": "leads", "account": "accounts"}
	types := []string{"contact", "lead", "account"}[:1+rng.IntN(3)]
	var ids []string
	for i := range 400 + rng.IntN(400) {
		if rng.IntN(5) == 0 {
			clock.Advance(time.Duration(rng.IntN(1500)) * time.Millisecond)
		}
		p := dynamicstest.Person{LastName: "P", Email: fmt.Sprintf("a%d@example.com", i), OptedOut: rng.IntN(3) != 0}
		if rng.IntN(2) == 0 {
			p.Email2 = fmt.Sprintf("b%d@example.com", i)
		}
		if rng.IntN(3) == 0 {
			p.Email3 = fmt.Sprintf("c%d@example.com", i)
		}
		tp := types[rng.IntN(len(types))]
		ids = append(ids, srv.Seed(sets[tp], 1, func(int) dynamicstest.Person { return p })...)
	}
	cols := [][]string{{"emailaddress1"}, {"emailaddress1", "emailaddress2"}, {"emailaddress1", "emailaddress2", "emailaddress3"}}[rng.IntN(3)]
	var lists []string
	if rng.IntN(3) == 0 && types[0] == "contact" {
		l := srv.AddStaticList("L", "contact")
		for _, id := range ids {
			if r, _ := srv.Record(id); r["contactid"] != nil && rng.IntN(4) == 0 {
				srv.AddListMember(l, id)
			}
		}
		lists = []string{l}
	}
	clients := []*dynamics.Client{
		clientFor(t, srv, func(o *dynamics.Options) { o.EmailColumns = cols }),
		clientFor(t, srv, func(o *dynamics.Options) { o.EmailColumns = cols }),
	}
	size := []int{1, 2, 3, 4, 5, 6, 10, 11, 100}[rng.IntN(9)]
	q := connectors.OptOutQuery{Types: types, Field: standard, Since: since, Lists: lists, PageSize: size}
	got := map[string]int{}
	modified := map[string]bool{}
	for i := 0; ; i++ {
		require.Less(t, i, 100000, "the read does not end")
		page, err := clients[rng.IntN(2)].OptedOut(t.Context(), q)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Records), max(size, len(cols)), "page size") // a row's addresses come together
		for _, r := range page.Records {
			got[r.Ref.ID]++
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
		if rng.IntN(10) == 0 {
			clock.Advance(time.Second)
			for range 1 + rng.IntN(4) {
				id := ids[rng.IntN(len(ids))]
				require.NoError(t, srv.Update(id, map[string]any{"donotbulkemail": rng.IntN(3) != 0}))
				modified[strings.ToLower(id)] = true
			}
		}
	}
	t.Logf("maxPage %d types %v cols %d size %d lists %d", maxPage, types, len(cols), size, len(lists))
	for _, id := range ids {
		r, ok := srv.Record(id)
		require.True(t, ok)
		lid := strings.ToLower(id)
		if out, _ := r["donotbulkemail"].(bool); !out || modified[lid] {
			continue
		}
		require.GreaterOrEqual(t, got[lid], 1, "%s lost", id)
	}
}
