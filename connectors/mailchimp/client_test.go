package mailchimp_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/mailchimp"
	"github.com/optoutsync/optoutsync/connectors/mailchimp/mailchimptest"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newEnv(t *testing.T, opts mailchimptest.Options) (*mailchimptest.Server, *emulator.Clock, *mailchimp.Client) {
	t.Helper()
	clk := emulator.NewClock(t0)
	opts.Now = clk.Now
	s := mailchimptest.NewServer(opts)
	t.Cleanup(s.Close)
	s.AddList("L1", "Newsletter")
	return s, clk, newClient(t, s, 0)
}

func newClient(t *testing.T, s *mailchimptest.Server, retryMax int) *mailchimp.Client {
	t.Helper()
	c, err := mailchimp.New(mailchimp.Options{
		APIKey: s.APIKey, BaseURL: s.URL, RetryMax: retryMax,
		RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
	})
	require.NoError(t, err)
	return c
}

func TestNewValidatesConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  mailchimp.Options
		want string
	}{
		{mailchimp.Options{}, "Options.APIKey or Options.OAuthToken is required"},
		{mailchimp.Options{APIKey: "0123456789abcdef"}, "Options.APIKey has no data center"},
		{mailchimp.Options{APIKey: "0123-us6-x"}, "Options.APIKey has no data center"},
		{mailchimp.Options{APIKey: "0123-us6", DC: "us1"}, "Options.DC"},
		{mailchimp.Options{APIKey: "0123-us6", OAuthToken: "t"}, "only one of"},
		{mailchimp.Options{OAuthToken: "secret-token"}, "Options.DC is required"},
		{mailchimp.Options{OAuthToken: "secret-token", DC: "https://x"}, "Options.DC"},
		{mailchimp.Options{APIKey: "0123-us6", BaseURL: "nohost"}, "Options.BaseURL"},
		{mailchimp.Options{APIKey: "0123-us6", MaxInFlight: -1}, "Options.MaxInFlight"},
	} {
		_, err := mailchimp.New(tc.cfg)
		require.ErrorContains(t, err, tc.want)
		require.NotContains(t, err.Error(), "0123")
		require.NotContains(t, err.Error(), "secret-token")
	}
	_, err := mailchimp.New(mailchimp.Options{OAuthToken: "t", DC: "us19"})
	require.NoError(t, err)
	_, err = mailchimp.New(mailchimp.Options{APIKey: "0123-us6"})
	require.NoError(t, err)
	require.Equal(t, "62eeb292278cc15f5817cb78f7790b08", connectors.AddressHash("Urist.McVankab@freddiesjokes.com"))
}

func TestPingAndCredentials(t *testing.T) {
	s, _, c := newEnv(t, mailchimptest.Options{OAuthTokens: []string{"tok"}})
	require.NoError(t, c.Ping(t.Context()))

	oc, err := mailchimp.New(mailchimp.Options{OAuthToken: "tok", DC: "us6", BaseURL: s.URL})
	require.NoError(t, err)
	require.NoError(t, oc.Ping(t.Context()))

	// A wrong key is final: no retry.
	s.ResetCounts()
	bad, err := mailchimp.New(mailchimp.Options{APIKey: "ffff-us6", BaseURL: s.URL, RetryWaitMin: time.Millisecond})
	require.NoError(t, err)
	err = bad.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	var ae *connectors.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, "API Key Invalid", ae.Code)
	require.True(t, connectors.Permanent(err))
	require.Equal(t, 1, s.Counts()["GET /ping"])
}

func TestRetries(t *testing.T) {
	s, _, _ := newEnv(t, mailchimptest.Options{})
	c := newClient(t, s, 10)

	// Half the requests get a 429: every call still succeeds, by retrying.
	s.SetFaults(emulator.Faults{Rate429: 0.5})
	for range 20 {
		require.NoError(t, c.Ping(t.Context()))
	}
	require.Positive(t, s.Faulted()["429"])
	require.Equal(t, 20+s.Faulted()["429"], s.Counts()["GET /ping"])

	// Always 429: retried RetryMax times, then a retryable typed error.
	s.ResetCounts()
	s.SetFaults(emulator.Faults{Rate429: 1})
	err := newClient(t, s, 2).Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrRateLimited)
	require.False(t, connectors.Permanent(err))
	var ae *connectors.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, "TooManyRequests", ae.Code)
	require.Equal(t, 3, s.Counts()["GET /ping"])

	s.ResetCounts()
	s.SetFaults(emulator.Faults{Rate5xx: 1})
	err = newClient(t, s, 1).Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrServer)
	require.Equal(t, 2, s.Counts()["GET /ping"])

	// A reset connection is retried too.
	s.ResetCounts()
	s.SetFaults(emulator.Faults{RateReset: 0.5})
	for range 10 {
		require.NoError(t, c.Ping(t.Context()))
	}
}

// changed reads all pages of a ChangedMembers poll, calling between after
// each page.
func changed(t *testing.T, c *mailchimp.Client, req connectors.ChangesRequest, between func(page int, ms []connectors.Member)) []connectors.Member {
	t.Helper()
	var all []connectors.Member
	for page := 0; ; page++ {
		require.Less(t, page, 1000, "paging does not end")
		p, err := c.ChangedMembers(t.Context(), req)
		require.NoError(t, err)
		require.LessOrEqual(t, len(p.Members), max(req.PageSize, 1))
		all = append(all, p.Members...)
		if p.Next == "" {
			return all
		}
		if between != nil {
			between(page, p.Members)
		}
		req.Cursor = p.Next
	}
}

func emails(ms []connectors.Member) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if !slices.Contains(out, m.Email) {
			out = append(out, m.Email)
		}
	}
	slices.Sort(out)
	return out
}

func TestChangedMembersPagesWithoutSkipping(t *testing.T) {
	s, clk, c := newEnv(t, mailchimptest.Options{})
	var want []string
	for i := range 30 {
		e := fmt.Sprintf("u%02d@example.com", i)
		want = append(want, e)
		// Three members per second, so pages end inside a second.
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "unsubscribed", LastChanged: t0.Add(time.Duration(i/3) * time.Second)}))
	}
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "sub@example.com", LastChanged: t0}))
	clk.Set(t0.Add(time.Hour))
	edit := func(e string) {
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "unsubscribed", MergeFields: map[string]string{"FNAME": "edited"}}))
	}

	// Unchanged audience: every member once, in last_changed order.
	got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute), PageSize: 4}, nil)
	require.Len(t, got, 30)
	require.True(t, slices.IsSortedFunc(got, func(a, b connectors.Member) int { return a.LastChanged.Compare(b.LastChanged) }))
	require.Equal(t, want, emails(got))

	// Members edited while we page (the first of each page, which plain
	// offset paging would turn into a skipped member) are all still seen.
	got = changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute), PageSize: 4},
		func(page int, ms []connectors.Member) {
			if page < 4 {
				edit(ms[0].Email)
			}
		})
	require.Equal(t, want, emails(got))
}

func TestChangedMembersBoundarySecondShift(t *testing.T) {
	s, clk, c := newEnv(t, mailchimptest.Options{})
	var want []string
	for i := range 10 {
		e := fmt.Sprintf("same%d@example.com", i)
		want = append(want, e)
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "cleaned", LastChanged: t0}))
	}
	clk.Set(t0.Add(time.Hour))
	// All ten share one second. After the first page, the first of them
	// changes: those left at that second shift one place forward.
	got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusCleaned, Since: t0.Add(-time.Minute), PageSize: 3},
		func(page int, ms []connectors.Member) {
			if page == 0 {
				require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: ms[0].Email, Status: "cleaned", MergeFields: map[string]string{"LNAME": "x"}}))
			}
		})
	require.Equal(t, want, emails(got))
}

func TestChangedMembersRandomEdits(t *testing.T) {
	connectorstest.Randomised(t, 6, 11, randomEdits)
}

// randomEdits pages through an audience while members change between
// pages, many in the very second the pages are at.
func randomEdits(t *testing.T, rng *rand.Rand) {
	s, clk, c := newEnv(t, mailchimptest.Options{})
	var want []string
	for i := range 200 {
		e := fmt.Sprintf("r%03d@example.com", i)
		want = append(want, e)
		require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "unsubscribed", LastChanged: t0.Add(time.Duration(rng.IntN(20)) * time.Second)}))
	}
	// The clock is past every seeded change: last_changed is never in
	// the server's future.
	now := t0.Add(time.Hour)
	clk.Set(now)
	got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: t0.Add(-time.Minute), PageSize: 7},
		func(page int, ms []connectors.Member) {
			if page > 40 {
				return
			}
			// Edit a few members anywhere, some in the same second.
			if rng.IntN(2) == 0 {
				now = now.Add(time.Second)
				clk.Set(now)
			}
			for range rng.IntN(3) {
				e := want[rng.IntN(len(want))]
				require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: e, Status: "unsubscribed", MergeFields: map[string]string{"FNAME": fmt.Sprint(rng.Int())}}))
			}
		})
	require.Equal(t, want, emails(got))
}

func TestChangedMembersSkipsKnownUnsubscribes(t *testing.T) {
	s, clk, c := newEnv(t, mailchimptest.Options{})
	watermark := t0.Add(-24 * time.Hour)
	// Unsubscribed ten days before the watermark, merge fields edited since.
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "known@example.com", Status: "unsubscribed",
		UnsubscribedAt: watermark.Add(-240 * time.Hour), LastChanged: watermark.Add(-240 * time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "bounced@example.com", Status: "cleaned", LastChanged: watermark.Add(-240 * time.Hour)}))
	clk.Set(watermark.Add(time.Hour))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "known@example.com", Status: "unsubscribed",
		UnsubscribedAt: watermark.Add(-240 * time.Hour), MergeFields: map[string]string{"FNAME": "edited"}}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "bounced@example.com", Status: "cleaned", MergeFields: map[string]string{"FNAME": "edited"}}))
	// A real new unsubscribe, in the watermark's own second.
	clk.Set(watermark)
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "fresh@example.com", Status: "unsubscribed"}))

	got := changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Since: watermark}, nil)
	require.Equal(t, []string{"fresh@example.com"}, emails(got))
	require.Equal(t, connectors.StatusUnsubscribed, got[0].Status)
	require.Equal(t, watermark, got[0].LastChanged)

	// Cleaned has no such filter: the edited bounce comes back (documented).
	got = changed(t, c, connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusCleaned, Since: watermark}, nil)
	require.Equal(t, []string{"bounced@example.com"}, emails(got))

	_, err := c.ChangedMembers(t.Context(), connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, Cursor: "garbage!"})
	require.ErrorContains(t, err, "Cursor")
	_, err = c.ChangedMembers(t.Context(), connectors.ChangesRequest{Audience: "L1", Status: connectors.StatusUnsubscribed, PageSize: 1001})
	require.ErrorContains(t, err, "PageSize")
	_, err = c.ChangedMembers(t.Context(), connectors.ChangesRequest{Audience: "NOPE", Status: connectors.StatusUnsubscribed})
	require.ErrorIs(t, err, connectors.ErrNotFound)
}

func TestUnsubscribeBatch(t *testing.T) {
	s, _, c := newEnv(t, mailchimptest.Options{})
	require.Equal(t, 500, c.MaxBatch())
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "sub@example.com"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "already@example.com", Status: "unsubscribed"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "bounce@example.com", Status: "cleaned"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "gone@example.com", Forgotten: true}))

	res, err := c.Unsubscribe(t.Context(), "L1", []string{
		"sub@example.com", "Already@Example.com", "fresh@example.com", "bounce@example.com", "gone@example.com", "not an address", "SUB@example.com",
	})
	require.NoError(t, err)
	require.Equal(t, 3, res.Written)
	require.Equal(t, 1, res.Added, "fresh@example.com was not in the audience")
	require.Len(t, res.Failed, 3)
	byKey := map[string]connectors.Failure{}
	for _, f := range res.Failed {
		byKey[f.Email] = f
	}
	require.True(t, byKey["bounce@example.com"].Compliance)
	require.Equal(t, "Member In Compliance State", byKey["bounce@example.com"].Code)
	require.True(t, byKey["gone@example.com"].Compliance)
	require.Equal(t, "Forgotten Email Not Subscribed", byKey["gone@example.com"].Code)
	require.NotContains(t, byKey["gone@example.com"].Message, "gone@example.com")
	require.False(t, byKey["not an address"].Compliance)
	require.Equal(t, "invalid_email", byKey["not an address"].Code)

	for _, e := range []string{"sub@example.com", "already@example.com", "fresh@example.com"} {
		m, ok := s.Member("L1", e)
		require.True(t, ok, e)
		require.Equal(t, "unsubscribed", m.Status, e)
	}
	m, _ := s.Member("L1", "bounce@example.com")
	require.Equal(t, "cleaned", m.Status)
	require.Equal(t, 1, s.Counts()["POST /lists/{list_id}"])

	_, err = c.Unsubscribe(t.Context(), "L1", make([]string, 501))
	require.ErrorContains(t, err, "MaxBatch")
	_, err = c.Unsubscribe(t.Context(), "NOPE", []string{"a@example.com"})
	require.ErrorIs(t, err, connectors.ErrNotFound)
}

func TestUpsertNeverChangesStatus(t *testing.T) {
	s, _, c := newEnv(t, mailchimptest.Options{})
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "unsub@example.com", Status: "unsubscribed", LastChanged: t0.Add(-time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "sub@example.com", MergeFields: map[string]string{"FNAME": "Old"}, LastChanged: t0.Add(-time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "pend@example.com", Status: "pending", LastChanged: t0.Add(-time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "gone@example.com", Forgotten: true}))

	res, err := c.UpsertMembers(t.Context(), "L1", []connectors.MemberFields{
		{Email: "unsub@example.com", Fields: map[string]string{"FNAME": "Una"}},
		{Email: "sub@example.com", Fields: map[string]string{"FNAME": "New"}},
		{Email: "pend@example.com", Fields: map[string]string{"LNAME": "P"}},
		{Email: "new1@example.com", Fields: map[string]string{"FNAME": "N1"}},
		{Email: "New2@example.com"},
		{Email: "gone@example.com", Fields: map[string]string{"FNAME": "G"}},
		{Email: "bogus"},
	}, connectors.StatusSubscribed)
	require.NoError(t, err)
	require.Equal(t, 5, res.Written)
	require.Equal(t, 2, res.Added)
	require.Len(t, res.Failed, 2)
	for _, f := range res.Failed {
		switch f.Email {
		case "gone@example.com":
			require.True(t, f.Compliance)
			require.Equal(t, "Forgotten Email Not Subscribed", f.Code)
		case "bogus":
			require.False(t, f.Compliance)
		default:
			t.Fatalf("unexpected failure %+v", f)
		}
	}
	for e, st := range map[string]string{"unsub@example.com": "unsubscribed", "sub@example.com": "subscribed", "pend@example.com": "pending", "new1@example.com": "subscribed", "new2@example.com": "subscribed"} {
		m, ok := s.Member("L1", e)
		require.True(t, ok, e)
		require.Equal(t, st, m.Status, e)
	}
	m, _ := s.Member("L1", "unsub@example.com")
	require.Equal(t, "Una", m.MergeFields["FNAME"])
	m, _ = s.Member("L1", "sub@example.com")
	require.Equal(t, "New", m.MergeFields["FNAME"])
	g, _ := s.Member("L1", "gone@example.com")
	require.True(t, g.Forgotten)

	// Written again unchanged: nothing is added the second time.
	res, err = c.UpsertMembers(t.Context(), "L1", []connectors.MemberFields{{Email: "sub@example.com", Fields: map[string]string{"FNAME": "New"}}}, connectors.StatusSubscribed)
	require.NoError(t, err)
	require.Equal(t, connectors.BatchResult{Written: 1}, res)

	_, err = c.UpsertMembers(t.Context(), "L1", nil, connectors.StatusCleaned)
	require.ErrorContains(t, err, "statusIfNew")
	_, err = c.UpsertMembers(t.Context(), "NOPE", []connectors.MemberFields{{Email: "a@example.com"}}, connectors.StatusSubscribed)
	require.ErrorIs(t, err, connectors.ErrNotFound)
}

func TestMembers(t *testing.T) {
	s, clk, c := newEnv(t, mailchimptest.Options{})
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "Sub@Example.com", LastChanged: t0.Add(-time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "un@example.com", Status: "unsubscribed"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "cl@example.com", Status: "cleaned"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "ar@example.com", Status: "archived"}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "gone@example.com", Forgotten: true}))
	s.ResetCounts()
	got, err := c.Members(t.Context(), "L1", []string{"sub@example.com", "un@example.com", "cl@example.com", "ar@example.com", "gone@example.com", "nobody@example.com"})
	require.NoError(t, err)
	contact := func(e string) string {
		m, ok := s.Member("L1", e)
		require.True(t, ok, e)
		require.Len(t, m.ContactID, 32)
		return m.ContactID
	}
	require.Equal(t, map[string]connectors.Member{
		// Keyed by the address as given, holding it as Mailchimp has it.
		"sub@example.com": {Email: "Sub@Example.com", Status: connectors.StatusSubscribed, LastChanged: t0.Add(-time.Hour), ContactID: contact("sub@example.com")},
		"un@example.com":  {Email: "un@example.com", Status: connectors.StatusUnsubscribed, LastChanged: t0, ContactID: contact("un@example.com")},
		"cl@example.com":  {Email: "cl@example.com", Status: connectors.StatusCleaned, LastChanged: t0, ContactID: contact("cl@example.com")},
		"ar@example.com":  {Email: "ar@example.com", Status: connectors.StatusArchived, LastChanged: t0, ContactID: contact("ar@example.com")},
		// Not in the audience (permanently deleted included): the zero Member.
		"gone@example.com": {}, "nobody@example.com": {},
	}, got)
	require.Equal(t, connectors.StatusNotFound, got["nobody@example.com"].Status)
	// One lookup per address, plus one check that the audience exists.
	require.Equal(t, 6, s.Counts()["GET /lists/{list_id}/members/{subscriber_hash}"])
	require.Equal(t, 1, s.Counts()["GET /lists/{list_id}"])

	// After an address change the old address is not found and the new
	// one has the same contact_id.
	before := contact("un@example.com")
	clk.Advance(time.Minute)
	require.NoError(t, s.ChangeEmail("L1", "un@example.com", "un.new@example.com"))
	got, err = c.Members(t.Context(), "L1", []string{"un@example.com", "un.new@example.com"})
	require.NoError(t, err)
	require.Equal(t, connectors.Member{}, got["un@example.com"])
	require.Equal(t, connectors.Member{Email: "un.new@example.com", Status: connectors.StatusUnsubscribed, LastChanged: t0.Add(time.Minute), ContactID: before}, got["un.new@example.com"])

	_, err = c.Members(t.Context(), "NOPE", []string{"sub@example.com"})
	require.ErrorIs(t, err, connectors.ErrNotFound)
	_, err = c.Members(t.Context(), "L1", []string{"not an address"})
	require.ErrorContains(t, err, "not an email address")
	_, err = c.Members(t.Context(), "L1", make([]string, 501))
	require.ErrorContains(t, err, "MaxBatch")
}

func TestSharedLimiterAcrossClients(t *testing.T) {
	// No cap in the emulator, so its peak shows what the clients really sent.
	s, _, c1 := newEnv(t, mailchimptest.Options{MaxConnections: -1})
	c2 := newClient(t, s, 0)
	s.SetFaults(emulator.Faults{Latency: 2 * time.Millisecond})
	var addrs []string
	for i := range 300 {
		addrs = append(addrs, fmt.Sprintf("m%d@example.com", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		c := c1
		if g%2 == 1 {
			c = c2
		}
		wg.Go(func() {
			if g < 4 {
				_, err := c.Members(t.Context(), "L1", addrs)
				errs <- err
				return
			}
			fields := make([]connectors.MemberFields, 0, 100)
			for _, a := range addrs[g*10 : g*10+100] {
				fields = append(fields, connectors.MemberFields{Email: a, Fields: map[string]string{"FNAME": "x"}})
			}
			_, err := c.UpsertMembers(t.Context(), "L1", fields, connectors.StatusSubscribed)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.LessOrEqual(t, s.PeakInFlight(), 10)
	require.GreaterOrEqual(t, s.PeakInFlight(), 2)
	require.Zero(t, s.Faulted()["over-limit"])
}

func TestErrorsRedactAddresses(t *testing.T) {
	s, _, _ := newEnv(t, mailchimptest.Options{})
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "private.person@example.com", Status: "unsubscribed"}))
	s.SetFaults(emulator.Faults{Rate5xx: 1})
	_, err := newClient(t, s, -1).Members(t.Context(), "L1", []string{"private.person@example.com"})
	require.ErrorIs(t, err, connectors.ErrServer)
	require.False(t, strings.Contains(err.Error(), "private.person"), err.Error())
	require.False(t, errors.Is(err, connectors.ErrNotFound))
}

// TestChangedMembersWithMergeFields: merge fields come only when asked,
// as text, so that a mirror of the audience can tell what changed.
func TestChangedMembersWithMergeFields(t *testing.T) {
	s := mailchimptest.NewServer(mailchimptest.Options{})
	defer s.Close()
	s.AddList("l1", "List", "FNAME", "LNAME")
	require.NoError(t, s.AddMember("l1", mailchimptest.MemberSeed{Email: "ann@example.com", MergeFields: map[string]string{"FNAME": "Ann", "LNAME": "Lee"}}))
	c := newClient(t, s, 0)
	page, err := c.ChangedMembers(t.Context(), connectors.ChangesRequest{Audience: "l1", Status: connectors.StatusSubscribed})
	require.NoError(t, err)
	require.Len(t, page.Members, 1)
	require.Nil(t, page.Members[0].Fields, "not asked: not read")
	page, err = c.ChangedMembers(t.Context(), connectors.ChangesRequest{Audience: "l1", Status: connectors.StatusSubscribed, MergeFields: true})
	require.NoError(t, err)
	require.Equal(t, "Ann", page.Members[0].Fields["FNAME"])
	require.Equal(t, "Lee", page.Members[0].Fields["LNAME"])
}

// TestUpdateMembersNeverCreates: an existing member's fields are written
// and its status kept; an address not in the audience is a final
// failure, and it is not added.
func TestUpdateMembersNeverCreates(t *testing.T) {
	s := mailchimptest.NewServer(mailchimptest.Options{})
	defer s.Close()
	s.AddList("l1", "List", "FNAME")
	require.NoError(t, s.AddMember("l1", mailchimptest.MemberSeed{Email: "ann@example.com", Status: "pending"}))
	c := newClient(t, s, 0)
	res, err := c.UpdateMembers(t.Context(), "l1", []connectors.MemberFields{
		{Email: "ann@example.com", Fields: map[string]string{"FNAME": "Ann"}},
		{Email: "gone@example.com", Fields: map[string]string{"FNAME": "Gus"}},
	})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.Len(t, res.Failed, 1)
	require.Equal(t, "gone@example.com", res.Failed[0].Email)
	require.Equal(t, "not_found", res.Failed[0].Code)
	require.False(t, res.Failed[0].Retryable || res.Failed[0].Compliance, "final")
	m, ok := s.Member("l1", "ann@example.com")
	require.True(t, ok)
	require.Equal(t, "pending", m.Status, "the status is never touched")
	require.Equal(t, "Ann", m.MergeFields["FNAME"])
	_, ok = s.Member("l1", "gone@example.com")
	require.False(t, ok, "not created")
}

// TestAddMembersLeavesExistingMembersAlone: one batch call adds the new
// addresses with the status and fields asked; members already in the
// audience, unsubscribed or not, come back in Existing with their status
// and fields untouched; a forgotten address and a bogus one are failures.
func TestAddMembersLeavesExistingMembersAlone(t *testing.T) {
	s, _, c := newEnv(t, mailchimptest.Options{})
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "unsub@example.com", Status: "unsubscribed", MergeFields: map[string]string{"FNAME": "Una"}, LastChanged: t0.Add(-time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "sub@example.com", MergeFields: map[string]string{"FNAME": "Old"}, LastChanged: t0.Add(-time.Hour)}))
	require.NoError(t, s.AddMember("L1", mailchimptest.MemberSeed{Email: "gone@example.com", Forgotten: true}))
	s.ResetCounts()

	res, err := c.AddMembers(t.Context(), "L1", []connectors.MemberFields{
		{Email: "new1@example.com", Fields: map[string]string{"FNAME": "N1"}},
		{Email: "New2@example.com"},
		{Email: "sub@example.com", Fields: map[string]string{"FNAME": "New"}},
		{Email: "unsub@example.com", Fields: map[string]string{"FNAME": "Changed"}},
		{Email: "gone@example.com", Fields: map[string]string{"FNAME": "G"}},
		{Email: "bogus"},
	}, connectors.StatusSubscribed)
	require.NoError(t, err)
	require.Equal(t, 1, s.Counts()["POST /lists/{list_id}"], "one batch call: %v", s.Counts())
	require.Equal(t, 2, res.Written)
	require.Equal(t, 2, res.Added)
	require.ElementsMatch(t, []string{"sub@example.com", "unsub@example.com"}, res.Existing)
	require.Len(t, res.Failed, 2)
	for _, f := range res.Failed {
		switch f.Email {
		case "gone@example.com":
			require.True(t, f.Compliance)
		case "bogus":
			require.Equal(t, "invalid_email", f.Code)
		default:
			t.Fatalf("unexpected failure %+v", f)
		}
	}
	for e, want := range map[string][2]string{
		"new1@example.com": {"subscribed", "N1"}, "new2@example.com": {"subscribed", ""},
		"sub@example.com": {"subscribed", "Old"}, "unsub@example.com": {"unsubscribed", "Una"},
	} {
		m, ok := s.Member("L1", e)
		require.True(t, ok, e)
		require.Equal(t, want[0], m.Status, e)
		require.Equal(t, want[1], m.MergeFields["FNAME"], e)
	}

	_, err = c.AddMembers(t.Context(), "L1", nil, connectors.StatusCleaned)
	require.ErrorContains(t, err, "status")
	_, err = c.AddMembers(t.Context(), "NOPE", []connectors.MemberFields{{Email: "a@example.com"}}, connectors.StatusSubscribed)
	require.ErrorIs(t, err, connectors.ErrNotFound)
}
