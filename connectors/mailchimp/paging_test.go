package mailchimp_test

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

const listMembers = "GET /lists/{list_id}/members"

// bulk seeds n members unsubscribed in the same second, at, as an admin's
// bulk unsubscribe does, with opt-in times from opt(i), and returns their
// contact_ids.
func bulk(t *testing.T, s *mailchimptest.Server, n int, at time.Time, opt func(i int) mailchimptest.MemberSeed) map[string]bool {
	t.Helper()
	require.NoError(t, s.Generate("L1", n, func(i int) mailchimptest.MemberSeed {
		seed := opt(i)
		seed.Email, seed.Status, seed.LastChanged = fmt.Sprintf("bulk%04d@example.com", i), "unsubscribed", at
		return seed
	}))
	ids := map[string]bool{}
	for i := range n {
		m, ok := s.Member("L1", fmt.Sprintf("bulk%04d@example.com", i))
		require.True(t, ok)
		ids[m.ContactID] = true
	}
	return ids
}

// optSpread gives the members opt-in times over some hours, several per
// second, as people who signed up over time have.
func optSpread(i int) mailchimptest.MemberSeed {
	return mailchimptest.MemberSeed{TimestampOpt: t0.Add(-72 * time.Hour).Add(time.Duration(i/3) * time.Second)}
}

// optSame gives them all one opt-in time, as one import does.
func optSame(int) mailchimptest.MemberSeed {
	return mailchimptest.MemberSeed{TimestampOpt: t0.Add(-72 * time.Hour)}
}

func contactIDs(ms []connectors.Member) map[string]int {
	out := map[string]int{}
	for _, m := range ms {
		out[m.ContactID]++
	}
	return out
}

// requireAll checks that every member of want was returned.
func requireAll(t *testing.T, want map[string]bool, got []connectors.Member) {
	t.Helper()
	seen := contactIDs(got)
	missing := 0
	for id := range want {
		if seen[id] == 0 {
			missing++
		}
	}
	require.Zero(t, missing, "members skipped")
}

func TestChangedMembersBulkSecond(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opt      func(int) mailchimptest.MemberSeed
		pageSize int
		shuffle  []bool
		// maxReads bounds the GETs of the members collection for one poll.
		maxReads int
	}{
		{"spread opt-in/page 1000", optSpread, 1000, []bool{false, true}, 12},
		{"spread opt-in/page 7", optSpread, 7, []bool{false, true}, 2*(2500/7) + 12},
		// One import: the second cannot be split by opt-in time and is
		// read whole by offset on every page, pass after pass when the
		// order changes between reads (so the smaller page size runs
		// without the shuffle only, to keep the test short).
		{"same opt-in/page 1000", optSame, 1000, []bool{false, true}, 3 * 3 * 40},
		{"same opt-in/page 250", optSame, 250, []bool{false}, 10 * 8},
	} {
		for _, shuffle := range tc.shuffle {
			t.Run(fmt.Sprintf("%s/shuffle=%v", tc.name, shuffle), func(t *testing.T) {
				t.Parallel()
				s, clk, c := newEnv(t, mailchimptest.Options{ShuffleEqualTimes: shuffle, ShuffleSeed: 7})
				// Members either side of the bulk second, so that pages
				// cross into and out of it.
				for i := range 5 {
					require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: fmt.Sprintf("before%d@example.com", i), Status: "unsubscribed", LastChanged: t0.Add(-time.Second)}))
					require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: fmt.Sprintf("after%d@example.com", i), Status: "unsubscribed", LastChanged: t0.Add(time.Second)}))
				}
				want := bulk(t, s, 2500, t0, tc.opt)
				for _, m := range s.Members("L1") {
					want[m.ContactID] = true
				}
				clk.Set(t0.Add(time.Hour))
				s.ResetCounts()

				got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute), PageSize: tc.pageSize}, nil)
				requireAll(t, want, got)
				// Nothing changed and the position orders every member:
				// each comes exactly once.
				require.Len(t, got, len(want))
				for i := 1; i < len(got); i++ {
					require.False(t, got[i].LastChanged.Before(got[i-1].LastChanged), "oldest change first")
				}
				require.LessOrEqual(t, s.Counts()[listMembers], tc.maxReads)
			})
		}
	}
}

func TestChangedMembersBulkSecondWhileChanging(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opt      func(int) mailchimptest.MemberSeed
		pageSize int
	}{{"spread opt-in/page 7", optSpread, 7}, {"spread opt-in/page 1000", optSpread, 1000}, {"same opt-in/page 1000", optSame, 1000}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, clk, c := newEnv(t, mailchimptest.Options{ShuffleEqualTimes: true, ShuffleSeed: uint64(tc.pageSize)})
			want := bulk(t, s, 2500, t0, tc.opt)
			now := t0.Add(time.Hour)
			clk.Set(now)
			rng := rand.New(rand.NewPCG(uint64(tc.pageSize), 3))
			pages, renamed := 0, 0
			s.ResetCounts()
			got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute), PageSize: tc.pageSize},
				func(page int, ms []connectors.Member) {
					pages++
					if page%3 == 0 {
						now = now.Add(time.Second)
						clk.Set(now)
					}
					// Edit members anywhere in the bulk second (read or
					// not), sometimes several in the present second,
					// change an address now and then, and add new
					// unsubscribes.
					for range 1 + rng.IntN(4) {
						e := fmt.Sprintf("bulk%04d@example.com", rng.IntN(2500))
						if _, ok := s.Member("L1", e); !ok {
							continue // renamed earlier
						}
						if rng.IntN(10) == 0 {
							renamed++
							require.NoError(t, s.ChangeEmail("L1", e, fmt.Sprintf("renamed%d@example.com", renamed)))
							continue
						}
						require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "unsubscribed", MergeFields: map[string]string{"FNAME": fmt.Sprint(rng.Int())}}))
					}
					require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: fmt.Sprintf("new%d@example.com", page), Status: "unsubscribed"}))
				})
			// Every member there when the poll began is returned, an
			// address change or not (contact_id survives it).
			requireAll(t, want, got)
			require.Positive(t, renamed)
			require.LessOrEqual(t, s.Counts()[listMembers], 40*pages+40)
		})
	}
}

// A second of more than 1000 members, some of whom never opted in (no
// timestamp_opt, which no opt-in filter selects): they are read too.
func TestChangedMembersBulkSecondWithoutOptIn(t *testing.T) {
	for _, shuffle := range []bool{false, true} {
		t.Run(fmt.Sprint(shuffle), func(t *testing.T) {
			t.Parallel()
			s, clk, c := newEnv(t, mailchimptest.Options{ShuffleEqualTimes: shuffle, ShuffleSeed: 5})
			want := bulk(t, s, 1300, t0, func(i int) mailchimptest.MemberSeed {
				if i%4 == 0 {
					return mailchimptest.MemberSeed{NoTimestampOpt: true}
				}
				return optSpread(i)
			})
			clk.Set(t0.Add(time.Hour))
			got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute), PageSize: 100}, nil)
			requireAll(t, want, got)
			require.Len(t, got, len(want))
		})
	}
}

// Pages of many seconds with a few members each, shuffled: every member
// once, in order.
func TestChangedMembersShuffledSmallSeconds(t *testing.T) {
	s, clk, c := newEnv(t, mailchimptest.Options{ShuffleEqualTimes: true, ShuffleSeed: 9})
	want := map[string]bool{}
	for i := range 300 {
		e := fmt.Sprintf("s%03d@example.com", i)
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "cleaned", LastChanged: t0.Add(time.Duration(i/17) * time.Second)}))
		m, _ := s.Member("L1", e)
		want[m.ContactID] = true
	}
	clk.Set(t0.Add(time.Hour))
	for _, size := range []int{1, 5, 16, 17, 18, 1000} {
		s.ResetCounts()
		got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusCleaned, Since: t0.Add(-time.Minute), PageSize: size}, nil)
		requireAll(t, want, got)
		require.Len(t, got, 300, "page size %d", size)
		// A page may end at a second's end: at most about two pages per
		// second more than the page size asks for.
		require.LessOrEqual(t, s.Counts()[listMembers], 2*(300/size+18)+4, "page size %d", size)
	}
}

func TestChangedMembersOldCursor(t *testing.T) {
	s, clk, c := newEnv(t, mailchimptest.Options{})
	for i := range 10 {
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: fmt.Sprintf("o%d@example.com", i), Status: "cleaned", LastChanged: t0}))
	}
	clk.Set(t0.Add(time.Hour))
	// A cursor of the offset-and-anchor kind, from before the position
	// cursor: its boundary second is read again from its start.
	old := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"w":0,"s":%d,"o":4,"a":"0123456789abcdef0123456789abcdef"}`, t0.Unix()-1))
	got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusCleaned, Cursor: old, PageSize: 3}, nil)
	require.Len(t, got, 10)
}

// TestSplitChangesPartsReadWhatTheReadWould: after a first page, the rest
// of a read split into parts gives, part by part, every member the read
// would, each once when nothing changes, and still every member when
// members change while the parts are read; every part but the last ends,
// and a cursor inside a second, or of a part, is not split again.
func TestSplitChangesPartsReadWhatTheReadWould(t *testing.T) {
	for _, edits := range []bool{false, true} {
		t.Run(fmt.Sprint("edits=", edits), func(t *testing.T) {
			s, clk, c := newEnv(t, mailchimptest.Options{})
			rng := rand.New(rand.NewPCG(7, 11))
			var want []string
			for i := range 300 {
				e := fmt.Sprintf("s%03d@example.com", i)
				want = append(want, e)
				require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "subscribed", LastChanged: t0.Add(time.Duration(rng.IntN(120)) * time.Second)}))
			}
			now := t0.Add(time.Hour)
			clk.Set(now)
			req := connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusSubscribed, Since: t0.Add(-time.Minute), PageSize: 20}
			first, err := c.ChangedMembers(t.Context(), req)
			require.NoError(t, err)
			require.NotEmpty(t, first.Next)
			req.Cursor = first.Next
			parts, err := c.SplitChanges(t.Context(), req, 4)
			require.NoError(t, err)
			require.Len(t, parts, 4, "300 members in pages of 20 make four parts")
			got := slices.Clone(first.Members)
			for _, p := range parts {
				r := req
				r.Cursor = p
				got = append(got, changed(t, c, r, func(int, []connectors.Member) {
					if !edits {
						return
					}
					now = now.Add(time.Second)
					clk.Set(now)
					e := want[rng.IntN(len(want))]
					require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "subscribed", MergeFields: map[string]string{"FNAME": fmt.Sprint(rng.Int())}}))
				})...)
			}
			if !edits {
				require.Len(t, got, len(want), "each member once")
			}
			require.Equal(t, want, emails(got))

			// Not split again: a part, or a read with too little left.
			r := req
			r.Cursor = parts[0]
			again, err := c.SplitChanges(t.Context(), r, 4)
			require.NoError(t, err)
			require.Nil(t, again)
			r.PageSize = 1000
			r.Cursor = first.Next
			again, err = c.SplitChanges(t.Context(), r, 4)
			require.NoError(t, err)
			require.Nil(t, again, "fewer than two pages left")
		})
	}
}

// TestSplitChangesOfAWholeRead: a read not yet begun (no cursor) splits
// into parts that give every member the read would, each once; a read
// that finds no member splits into no part, and a small one is not split.
func TestSplitChangesOfAWholeRead(t *testing.T) {
	s, clk, c := newEnv(t, mailchimptest.Options{})
	rng := rand.New(rand.NewPCG(3, 5))
	var want []string
	for i := range 300 {
		e := fmt.Sprintf("w%03d@example.com", i)
		want = append(want, e)
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "subscribed", LastChanged: t0.Add(time.Duration(rng.IntN(120)) * time.Second)}))
	}
	for i := range 5 {
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: fmt.Sprintf("u%d@example.com", i), Status: "unsubscribed", LastChanged: t0}))
	}
	clk.Set(t0.Add(time.Hour))
	req := connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusSubscribed, Since: t0.Add(-time.Minute), PageSize: 20}
	parts, err := c.SplitChanges(t.Context(), req, 4)
	require.NoError(t, err)
	require.Len(t, parts, 4)
	var got []connectors.Member
	for _, p := range parts {
		r := req
		r.Cursor = p
		got = append(got, changed(t, c, r, nil)...)
	}
	require.Len(t, got, len(want), "each member once")
	require.Equal(t, want, emails(got))

	for _, st := range []connectors.MemberStatus{connectors.StatusCleaned, connectors.StatusPending} {
		none, err := c.SplitChanges(t.Context(), connectors.ChangesRequest{Audience: "L1", Status: st, Since: t0.Add(-time.Minute), PageSize: 20}, 4)
		require.NoError(t, err)
		require.NotNil(t, none, "%s: nothing to read", st)
		require.Empty(t, none, st)
	}
	small, err := c.SplitChanges(t.Context(), connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute), PageSize: 20}, 4)
	require.NoError(t, err)
	require.Nil(t, small, "five members: read in one part")
}
