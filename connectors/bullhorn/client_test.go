package bullhorn_test

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

func newClient(t *testing.T, s *bullhorntest.Server, tweak ...func(*bullhorn.Options)) *bullhorn.Client {
	t.Helper()
	o := bullhorn.Options{LoginInfoURL: s.LoginInfoURL(), ClientID: s.ClientID, ClientSecret: s.ClientSecret,
		Username: s.Username, Password: s.Password, Integration: "acme", RetryWaitMin: 5 * time.Millisecond,
		RetryWaitMax: 20 * time.Millisecond, RequestsPerMinute: -1}
	for _, f := range tweak {
		f(&o)
	}
	c, err := bullhorn.New(o)
	require.NoError(t, err)
	return c
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

func ref(t string, n int64) connectors.RecordRef { return connectors.RecordRef{Type: t, ID: id(n)} }

var std = connectors.OptOutField{Kind: connectors.OptOutStandard}

// readAll pages a read to its end.
func readAll(t *testing.T, page func(cursor string) (connectors.RecordPage, error)) []connectors.Record {
	t.Helper()
	var out []connectors.Record
	cursor := ""
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "the read does not end")
		p, err := page(cursor)
		require.NoError(t, err)
		out = append(out, p.Records...)
		if p.Next == "" {
			return out
		}
		cursor = p.Next
	}
}

func refsOf(recs []connectors.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.Ref.String()+" "+r.Email+" in="+strconv.FormatBool(r.InLists)+" out="+strconv.FormatBool(r.OptedOut))
	}
	slices.Sort(out)
	return out
}

func TestSignInThroughDiscoveryAndPing(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{})
	t.Cleanup(s.Close)
	store := bullhorn.NewMemoryTokenStore()
	c := newClient(t, s, func(o *bullhorn.Options) { o.Tokens = store })
	require.NoError(t, c.Ping(t.Context()))
	require.NoError(t, c.Ping(t.Context()))
	st := s.Stats()
	require.Equal(t, 1, st.Authorizations)
	require.Equal(t, 1, st.Logins, "one session for both calls")
	rt, err := store.RefreshToken(t.Context(), "acme")
	require.NoError(t, err)
	require.NotEmpty(t, rt, "the refresh token is kept under the integration")
	counts := s.Middleware.Counts()
	require.Equal(t, 1, counts["GET /rest-services/loginInfo"], "the data-centre redirect")
	require.Equal(t, 1, counts["GET /dc2/rest-services/loginInfo"], "followed")
	require.Equal(t, 2, counts["GET ping"])
}

func TestRejectedCredentialsAreFinalAndNameTheIntegration(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{})
	t.Cleanup(s.Close)
	c := newClient(t, s, func(o *bullhorn.Options) { o.Password = "wrong" })
	err := c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.True(t, connectors.Permanent(err))
	require.Contains(t, err.Error(), `integration "acme"`)
	require.NotContains(t, err.Error(), "wrong", "no password in the error")
	require.NotContains(t, err.Error(), s.ClientSecret)

	c = newClient(t, s, func(o *bullhorn.Options) { o.ClientSecret = "nope" })
	err = c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.Contains(t, err.Error(), "invalid_client")

	terms := bullhorntest.NewServer(bullhorntest.Options{TermsPending: true})
	t.Cleanup(terms.Close)
	err = newClient(t, terms).Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.Contains(t, err.Error(), "terms of service")
}

// TestRefreshTokenRotationAcrossARestart: a second client built with the
// same store (a restarted worker) signs in with the kept refresh token,
// not the password, and keeps the rotated one; a spent token in the
// store falls back to the password instead of locking the integration out.
func TestRefreshTokenRotationAcrossARestart(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{Refresh: bullhorntest.RefreshRotates})
	t.Cleanup(s.Close)
	store := bullhorn.NewMemoryTokenStore()
	first := newClient(t, s, func(o *bullhorn.Options) { o.Tokens = store })
	require.NoError(t, first.Ping(t.Context()))
	r1, _ := store.RefreshToken(t.Context(), "acme")

	s.ExpireAccessTokens()
	s.ExpireSessions()
	second := newClient(t, s, func(o *bullhorn.Options) { o.Tokens = store })
	require.NoError(t, second.Ping(t.Context()))
	r2, _ := store.RefreshToken(t.Context(), "acme")
	require.NotEqual(t, r1, r2, "the rotated refresh token is kept")
	st := s.Stats()
	require.Equal(t, 1, st.Authorizations, "no second password sign-in")
	require.Equal(t, 1, st.Refreshes)

	// The first client (the other worker) now needs a session too: it
	// reads the store, not its own memory, so it uses r2, not the spent r1.
	s.ExpireAccessTokens()
	s.ExpireSessions()
	require.NoError(t, first.Ping(t.Context()))
	st = s.Stats()
	require.Equal(t, 0, st.RefusedRefreshes)
	require.Equal(t, 2, st.Refreshes)

	// A store holding a spent token: the password flow, and no lock-out.
	require.NoError(t, store.SaveRefreshToken(t.Context(), "acme", r1))
	s.ExpireAccessTokens()
	s.ExpireSessions()
	require.NoError(t, newClient(t, s, func(o *bullhorn.Options) { o.Tokens = store }).Ping(t.Context()))
	st = s.Stats()
	require.Equal(t, 1, st.RefusedRefreshes)
	require.Equal(t, 2, st.Authorizations)
	r3, _ := store.RefreshToken(t.Context(), "acme")
	require.NotEqual(t, r1, r3)
}

func seedPeople(s *bullhorntest.Server, clock *emulator.Clock, n int, optOutEvery int) []int64 {
	var ids []int64
	for i := range n {
		clock.Advance(time.Millisecond)
		ids = append(ids, s.AddCandidate(bullhorntest.Person{LastName: "P", Email: "p" + strconv.Itoa(i) + "@example.com", OptedOut: i%optOutEvery == 0}))
	}
	return ids
}

func TestOptedOutPagesWithAKeysetThroughEqualStamps(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	// The server cuts each call to 3 rows: a run of 8 records stamped in
	// the same millisecond is longer than a call.
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now, MaxCount: 3})
	t.Cleanup(s.Close)
	var want []string
	for i := range 8 {
		id := s.AddCandidate(bullhorntest.Person{LastName: "Same", Email: "same" + strconv.Itoa(i) + "@example.com", OptedOut: true})
		want = append(want, "Candidate/"+strconv.FormatInt(id, 10))
	}
	ids := seedPeople(s, clock, 20, 2)
	for i, id := range ids {
		if i%2 == 0 {
			want = append(want, "Candidate/"+strconv.FormatInt(id, 10))
		}
	}
	c := newClient(t, s)
	recs := readAll(t, func(cur string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, Cursor: cur, PageSize: 4})
	})
	var got []string
	for _, r := range recs {
		require.True(t, r.OptedOut)
		require.True(t, r.InLists)
		got = append(got, r.Ref.String())
	}
	require.Equal(t, want, got, "every opted-out record once, in modification order")

	// Since: only what changed at or after it.
	since := clock.Now()
	clock.Advance(time.Second)
	require.NoError(t, s.Update(ids[1], map[string]any{"massMailOptOut": true}))
	recs = readAll(t, func(cur string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate", "ClientContact", "Lead"}, Field: std, Since: since, Cursor: cur})
	})
	require.Equal(t, []string{"Candidate/" + id(ids[1]) + " p1@example.com in=true out=true"}, refsOf(recs))
}

// sessionKiller ends every session after the n-th search call it passes,
// so that a read meets an expired BhRestToken in the middle of a page.
type sessionKiller struct {
	s     *bullhorntest.Server
	n     int32
	seen  atomic.Int32
	fired atomic.Bool
}

func (k *sessionKiller) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/search/") && k.seen.Add(1) == k.n && k.fired.CompareAndSwap(false, true) {
		k.s.ExpireSessions()
	}
	return http.DefaultTransport.RoundTrip(r)
}

func TestSessionExpiryInTheMiddleOfAPage(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now, MaxCount: 5})
	t.Cleanup(s.Close)
	ids := seedPeople(s, clock, 40, 1)
	c := newClient(t, s, func(o *bullhorn.Options) { o.Transport = &sessionKiller{s: s, n: 3} })
	page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, PageSize: 40})
	require.NoError(t, err)
	require.Len(t, page.Records, 40, "the page goes on after the session expired under it")
	for i, r := range page.Records {
		require.Equal(t, "Candidate/"+id(ids[i]), r.Ref.String())
	}
	st := s.Stats()
	require.Equal(t, 2, st.Logins, "one more REST login")
	require.Equal(t, 1, st.Authorizations, "with the access token still live: no new authorization")
	require.Zero(t, s.Middleware.Faulted()["429"], "no fault injected")
}

func TestRateLimitStorm(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now, MaxCount: 10, MaxConcurrent: 3, RequestsPerMinute: 40, Window: 100 * time.Millisecond})
	t.Cleanup(s.Close)
	ids := seedPeople(s, clock, 300, 3)
	for _, id := range ids[:60] {
		s.AddToTearsheet(s.AddTearsheet("T"+strconv.FormatInt(id, 10)), id)
	}
	// Each answer takes 20 ms, so the client's 8 requests in flight always
	// overlap past the account's 3, whatever the machine's speed.
	s.Middleware.SetFaults(emulator.Faults{Rate429: 0.3, Latency: 20 * time.Millisecond})
	c := newClient(t, s, func(o *bullhorn.Options) { o.MaxInFlight = 8 })
	recs := readAll(t, func(cur string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, Cursor: cur, PageSize: 50})
	})
	require.Len(t, recs, 100, "every opted-out record, none lost to the storm")
	// Writes through the storm: every record written, none failed.
	var refs []connectors.RecordRef
	for _, id := range ids[:100] {
		refs = append(refs, ref("Candidate", id))
	}
	res, err := c.SetOptOut(t.Context(), std, refs)
	require.NoError(t, err)
	require.Empty(t, res.Failed)
	require.Equal(t, 100, res.Written)
	for _, id := range ids[:100] {
		require.True(t, s.OptedOut(id))
	}
	require.Positive(t, s.Middleware.Faulted()["429"], "429s were injected")
	require.Positive(t, s.Stats().Limited+s.Middleware.Faulted()["over-limit"], "the limits answered 429 too")
	require.LessOrEqual(t, s.Middleware.PeakInFlight(), 3+1, "the over-limit answers are the limit's, not more in flight")
}

func TestTearsheetScope(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now})
	t.Cleanup(s.Close)
	ts := s.AddTearsheet("Newsletter")
	inOld := s.AddCandidate(bullhorntest.Person{Email: "old@example.com", OptedOut: true})
	inCC := s.AddClientContact(bullhorntest.Person{Email: "cc@example.com", OptedOut: true})
	inNot := s.AddCandidate(bullhorntest.Person{Email: "not@example.com"})
	s.AddToTearsheet(ts, inOld, inCC, inNot)
	clock.Advance(time.Hour)
	since := clock.Now()
	clock.Advance(time.Minute)
	outside := s.AddCandidate(bullhorntest.Person{Email: "out@example.com", OptedOut: true})
	lead := s.AddLead(bullhorntest.Person{Email: "lead@example.com", OptedOut: true})
	s.AddCandidate(bullhorntest.Person{Email: "gone@example.com", OptedOut: true, Deleted: true})
	c := newClient(t, s)
	read := func() []string {
		return refsOf(readAll(t, func(cur string) (connectors.RecordPage, error) {
			return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate", "ClientContact", "Lead"}, Field: std,
				Since: since, Lists: []string{id(ts)}, Cursor: cur, PageSize: 2})
		}))
	}
	require.Equal(t, []string{
		"Candidate/" + id(inOld) + " old@example.com in=true out=true",
		"Candidate/" + id(outside) + " out@example.com in=false out=true",
		"ClientContact/" + id(inCC) + " cc@example.com in=true out=true",
		"Lead/" + id(lead) + " lead@example.com in=false out=true",
	}, read(), "members whatever their date; others since the watermark, outside; soft-deleted never")
	// Added to the tearsheet without being modified: in, on the next read.
	s.AddToTearsheet(ts, outside)
	got := read()
	require.Contains(t, got, "Candidate/"+id(outside)+" out@example.com in=true out=true")

	// ListMembers: every member with its fields, opted out or not.
	require.NoError(t, s.Update(inNot, map[string]any{"firstName": "Nat"}))
	members := readAll(t, func(cur string) (connectors.RecordPage, error) {
		return c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"Candidate", "ClientContact"}, Lists: []string{id(ts)},
			Fields: []string{"firstName", "customText3"}, Since: clock.Now().Add(time.Hour), Cursor: cur})
	})
	require.Len(t, members, 4)
	for _, m := range members {
		if m.Ref == ref("Candidate", inNot) {
			require.False(t, m.OptedOut)
			require.Equal(t, map[string]string{"firstName": "Nat", "customText3": ""}, m.Fields)
		}
	}
}

func TestFindByEmailAcrossEntitiesAndFields(t *testing.T) {
	for _, idx := range []bullhorntest.EmailIndexing{bullhorntest.EmailKeyword, bullhorntest.EmailTokenized} {
		s := bullhorntest.NewServer(bullhorntest.Options{EmailIndex: idx})
		t.Cleanup(s.Close)
		cand := s.AddCandidate(bullhorntest.Person{Email: "Ann@Example.com"})
		cc := s.AddClientContact(bullhorntest.Person{Email: "ann@example.com", OptedOut: true})
		second := s.AddCandidate(bullhorntest.Person{Email: "work@example.com", Email2: "ann@example.com"})
		s.AddCandidate(bullhorntest.Person{Email: "jo.ann@example.com"}) // a tokenised index's phrase match: not her
		s.AddLead(bullhorntest.Person{Email: "ann@example.com", Deleted: true})
		c := newClient(t, s, func(o *bullhorn.Options) { o.EmailFields = []string{"email", "email2"} })
		recs, err := c.FindByEmail(t.Context(), bullhorn.RecordTypes, std, []string{"ANN@example.com", "nobody@example.com"})
		require.NoError(t, err)
		require.Equal(t, []string{
			"Candidate/" + id(cand) + " ANN@example.com in=true out=false",
			"Candidate/" + id(second) + " ANN@example.com in=true out=false",
			"ClientContact/" + id(cc) + " ANN@example.com in=true out=true",
		}, refsOf(recs))
	}
}

func TestWrites(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{})
	t.Cleanup(s.Close)
	a := s.AddCandidate(bullhorntest.Person{Email: "a@example.com"})
	b := s.AddClientContact(bullhorntest.Person{Email: "b@example.com", Custom: map[string]any{"customText2": "Yes", "customInt1": 1}})
	c := newClient(t, s)
	res, err := c.SetOptOut(t.Context(), std, []connectors.RecordRef{ref("Candidate", a), ref("Candidate", a), ref("Lead", 999999), {Type: "Nope", ID: "1"}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.True(t, s.OptedOut(a))
	require.Len(t, res.Failed, 2)
	require.Equal(t, ref("Lead", 999999), res.Failed[0].Record)
	require.Equal(t, "errors.entityNotFound", res.Failed[0].Code)
	require.False(t, res.Failed[0].Retryable, "a missing record is final")
	require.Equal(t, "INVALID_REFERENCE", res.Failed[1].Code)
	// Idempotent: again changes nothing and fails nothing.
	res, err = c.SetOptOut(t.Context(), std, []connectors.RecordRef{ref("Candidate", a)})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.True(t, s.OptedOut(a))

	// Custom: a customText opt-out reads "Yes"; inverted clears an opt-in.
	_, err = c.SetOptOut(t.Context(), connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "customText1"}, []connectors.RecordRef{ref("ClientContact", b)})
	require.NoError(t, err)
	_, err = c.SetOptOut(t.Context(), connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "customText2"}, []connectors.RecordRef{ref("ClientContact", b)})
	require.NoError(t, err)
	_, err = c.SetOptOut(t.Context(), connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "customInt1"}, []connectors.RecordRef{ref("ClientContact", b)})
	require.NoError(t, err)
	res, err = c.SetFlag(t.Context(), "customText5", []connectors.RecordRef{ref("ClientContact", b)})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	rec, _ := s.Record(b)
	require.Equal(t, "Yes", rec["customText1"])
	require.Equal(t, "No", rec["customText2"])
	require.Equal(t, int64(0), rec["customInt1"])
	require.Equal(t, "Yes", rec["customText5"])
	require.Equal(t, false, rec["massMailOptOut"], "a custom opt-out leaves the standard field alone")
	found, err := c.FindByEmail(t.Context(), []string{"ClientContact"}, connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "customText2"}, []string{"b@example.com"})
	require.NoError(t, err)
	require.True(t, found[0].OptedOut, "a cleared opt-in reads as opted out")

	_, err = c.SetOptOut(t.Context(), connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "massMailOptOut"}, nil)
	require.ErrorContains(t, err, "must be a custom field")
}

// TestCompactDatesFallBack: a search that refuses epoch milliseconds in a
// date range is asked again with yyyyMMddHHmmss, and the read is complete.
func TestCompactDatesFallBack(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now, SearchDates: bullhorntest.DatesCompact, MaxCount: 4})
	t.Cleanup(s.Close)
	seedPeople(s, clock, 30, 2)
	since := clock.Now()
	clock.Advance(2 * time.Second)
	late := s.AddCandidate(bullhorntest.Person{Email: "late@example.com", OptedOut: true})
	c := newClient(t, s)
	all := readAll(t, func(cur string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, Cursor: cur, PageSize: 5})
	})
	require.Len(t, all, 16)
	recent := readAll(t, func(cur string) (connectors.RecordPage, error) {
		return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, Since: since, Cursor: cur})
	})
	require.Equal(t, []string{"Candidate/" + id(late) + " late@example.com in=true out=true"}, refsOf(recent))
}

func TestCursorOfAnotherQueryIsRefused(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now})
	t.Cleanup(s.Close)
	seedPeople(s, clock, 10, 1)
	c := newClient(t, s)
	p, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, PageSize: 3})
	require.NoError(t, err)
	require.NotEmpty(t, p.Next)
	_, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Lead"}, Field: std, PageSize: 3, Cursor: p.Next})
	require.ErrorIs(t, err, connectors.ErrInvalid)
}

// strayRefusal answers the first search it passes with a 400, as a
// passing fault would, and passes every other request.
type strayRefusal struct{ fired atomic.Bool }

func (f *strayRefusal) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/search/") && f.fired.CompareAndSwap(false, true) {
		return &http.Response{StatusCode: http.StatusBadRequest, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"errorMessage":"stray","errorCode":400}`)), Request: r}, nil
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestAStrayRefusalDoesNotSwitchTheDateFormat: on a search that takes
// milliseconds, one 400 is not taken for a refusal of the format (a
// compact range read as milliseconds would match nothing, and every
// later read would come back empty): the read returns every opt-out.
func TestAStrayRefusalDoesNotSwitchTheDateFormat(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now})
	t.Cleanup(s.Close)
	since := clock.Now()
	seedPeople(s, clock, 30, 2)
	c := newClient(t, s, func(o *bullhorn.Options) { o.Transport = &strayRefusal{} })
	for range 2 {
		recs := readAll(t, func(cur string) (connectors.RecordPage, error) {
			return c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, Since: since, Cursor: cur, PageSize: 5})
		})
		require.Len(t, recs, 15, "every opted-out record, on this read and the next")
	}
}
