package dynamics_test

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/dynamics"
	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

func newEnv(t *testing.T, opts dynamicstest.Options) *dynamicstest.Server {
	t.Helper()
	srv := dynamicstest.NewServer(opts)
	t.Cleanup(srv.Close)
	return srv
}

func clientFor(t *testing.T, srv *dynamicstest.Server, edit ...func(*dynamics.Options)) *dynamics.Client {
	t.Helper()
	o := dynamics.Options{
		OrgURL: srv.URL, AuthorityURL: srv.URL, TenantID: srv.TenantID,
		ClientID: srv.ClientID, ClientSecret: srv.ClientSecret,
		RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
	}
	for _, e := range edit {
		e(&o)
	}
	c, err := dynamics.New(o)
	require.NoError(t, err)
	return c
}

var standard = connectors.OptOutField{Kind: connectors.OptOutStandard}

func readAll(t *testing.T, c *dynamics.Client, q connectors.OptOutQuery) []connectors.Record {
	t.Helper()
	var out []connectors.Record
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "paging does not end")
		page, err := c.OptedOut(t.Context(), q)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Records), cmp.Or(q.PageSize, connectors.MaxPageSize))
		out = append(out, page.Records...)
		if page.Next == "" {
			return out
		}
		q.Cursor = page.Next
	}
}

func byID(recs []connectors.Record) map[string]connectors.Record {
	out := map[string]connectors.Record{}
	for _, r := range recs {
		out[r.Ref.ID] = r
	}
	return out
}

func TestClientSecretPingCachesTheToken(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	c := clientFor(t, srv)
	for range 3 {
		require.NoError(t, c.Ping(t.Context()))
	}
	require.Equal(t, 1, srv.TokensIssued(), "one token for every call while it is valid")
}

func TestCertificateClientAssertion(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	c := clientFor(t, srv, func(o *dynamics.Options) { o.ClientSecret, o.CertificatePEM = "", srv.CertificatePEM })
	require.NoError(t, c.Ping(t.Context()))
	require.Equal(t, 1, srv.TokensIssued())

	_, err := dynamics.New(dynamics.Options{OrgURL: srv.URL, TenantID: srv.TenantID, ClientID: srv.ClientID, CertificatePEM: []byte("not a pem")})
	require.ErrorContains(t, err, "no RSA private key")
	require.NotContains(t, err.Error(), "not a pem", "the credential is not echoed")
}

func TestWrongSecretIsAFinalCredentialsError(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	c := clientFor(t, srv, func(o *dynamics.Options) { o.ClientSecret = "wrong" })
	err := c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.True(t, connectors.Permanent(err))
	require.Contains(t, err.Error(), srv.ClientID, "names the application")
	require.Contains(t, err.Error(), "AADSTS7000215")
	require.NotContains(t, err.Error(), "wrong")
}

func TestExpiredTokenIsRenewedOnce(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	c := clientFor(t, srv)
	require.NoError(t, c.Ping(t.Context()))
	srv.ExpireTokens()
	require.NoError(t, c.Ping(t.Context()))
	require.Equal(t, 2, srv.TokensIssued())
}

func TestShortLivedTokenIsRenewedBeforeItExpires(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{TokenTTL: 2 * time.Second})
	c := clientFor(t, srv)
	require.NoError(t, c.Ping(t.Context()))
	time.Sleep(1100 * time.Millisecond) // past half the lifetime: renewed before use
	require.NoError(t, c.Ping(t.Context()))
	require.Equal(t, 2, srv.TokensIssued())
	require.Zero(t, srv.Middleware.Faulted()["401"])
}

// badBearer replaces the token on Web API calls, as a revoked application
// user's calls are refused whatever token they carry.
type badBearer struct{ base http.RoundTripper }

func (b badBearer) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "/api/data/") {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer revoked")
	}
	return b.base.RoundTrip(r)
}

func TestSecond401IsANonRetryableCredentialsError(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	c := clientFor(t, srv, func(o *dynamics.Options) { o.Transport = badBearer{http.DefaultTransport} })
	err := c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.True(t, connectors.Permanent(err))
	require.Contains(t, err.Error(), srv.ClientID)
	require.Contains(t, err.Error(), "application user")
	require.Equal(t, 2, srv.TokensIssued(), "renewed once, not more")
	require.Equal(t, 2, srv.Middleware.Counts()["GET /api/data/v9.2/WhoAmI"])
}

func TestOptedOutPagesChangedRecordsInOrder(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC))
	srv := newEnv(t, dynamicstest.Options{Clock: clock.Now})
	old := srv.AddContact(dynamicstest.Person{Email: "old@example.com", OptedOut: true})
	clock.Advance(time.Hour)
	since := clock.Now()
	var want []string
	for i := range 7 {
		want = append(want, srv.AddContact(dynamicstest.Person{Email: "c" + string(rune('a'+i)) + "@example.com", OptedOut: true}))
		srv.AddContact(dynamicstest.Person{Email: "in" + string(rune('a'+i)) + "@example.com"})
		if i%3 == 0 {
			clock.Advance(time.Second)
		}
	}
	lead := srv.AddLead(dynamicstest.Person{Email: "lead@example.com", OptedOut: true})
	c := clientFor(t, srv)
	recs := readAll(t, c, connectors.OptOutQuery{Types: []string{"contact", "lead"}, Field: standard, Since: since, PageSize: 3})
	var got []string
	for _, r := range recs {
		require.True(t, r.OptedOut)
		require.True(t, r.InLists, "no lists asked for")
		got = append(got, r.Ref.ID)
	}
	require.ElementsMatch(t, append(want, lead), got)
	require.Equal(t, lead, got[len(got)-1], "contacts, then leads")
	for i := 1; i < len(want); i++ {
		prev, _ := srv.Record(got[i-1])
		cur, _ := srv.Record(got[i])
		p, c := prev["modifiedon"].(time.Time), cur["modifiedon"].(time.Time)
		require.True(t, p.Before(c) || p.Equal(c) && got[i-1] < got[i], "ordered by modifiedon, then id")
	}
	require.NotContains(t, got, old)
	require.Positive(t, srv.Middleware.Counts()["GET /api/data/v9.2/contacts"], "%v", srv.Middleware.Counts())
}

func TestOptedOutCustomAndInvertedFields(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	out := srv.AddContact(dynamicstest.Person{Email: "a@example.com", Custom: map[string]any{"new_optout": true, "new_optin": false}})
	in := srv.AddContact(dynamicstest.Person{Email: "b@example.com", OptedOut: true, Custom: map[string]any{"new_optout": false, "new_optin": true}})
	c := clientFor(t, srv)
	recs := readAll(t, c, connectors.OptOutQuery{Types: []string{"contact"}, Field: connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "new_optout"}})
	require.Equal(t, []string{out}, slices.Collect(func(yield func(string) bool) {
		for _, r := range recs {
			yield(r.Ref.ID)
		}
	}))
	recs = readAll(t, c, connectors.OptOutQuery{Types: []string{"contact"}, Field: connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "new_optin"}})
	require.Len(t, recs, 1)
	require.Equal(t, out, recs[0].Ref.ID)
	require.NotEqual(t, in, recs[0].Ref.ID)

	_, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"contact"}, Field: connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "optout"}})
	require.ErrorContains(t, err, "publisher prefix")
}

func TestOptedOutScopedToAStaticList(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC))
	srv := newEnv(t, dynamicstest.Options{Clock: clock.Now})
	list := srv.AddStaticList("News", "contact")
	oldMember := srv.AddContact(dynamicstest.Person{Email: "old@example.com", OptedOut: true})
	srv.AddListMember(list, oldMember)
	later := srv.AddContact(dynamicstest.Person{Email: "later@example.com", OptedOut: true})
	clock.Advance(time.Hour)
	since := clock.Now()
	member := srv.AddContact(dynamicstest.Person{Email: "member@example.com", OptedOut: true})
	subscribed := srv.AddContact(dynamicstest.Person{Email: "sub@example.com"})
	srv.AddListMember(list, member, subscribed)
	outside := srv.AddContact(dynamicstest.Person{Email: "outside@example.com", OptedOut: true})
	lead := srv.AddLead(dynamicstest.Person{Email: "lead@example.com", OptedOut: true})

	c := clientFor(t, srv)
	q := connectors.OptOutQuery{Types: []string{"contact", "lead"}, Field: standard, Since: since, Lists: []string{list}, PageSize: 2}
	got := byID(readAll(t, c, q))
	require.Len(t, got, 4)
	require.True(t, got[oldMember].InLists, "a member opted out before the watermark is still read")
	require.True(t, got[member].InLists)
	require.False(t, got[outside].InLists, "outside every list")
	require.False(t, got[lead].InLists, "the list holds contacts only")
	require.NotContains(t, got, later, "old and outside")
	require.NotContains(t, got, subscribed)

	// A record added to the list is picked up by the next read, though
	// joining does not touch its modifiedon.
	srv.AddListMember(list, later)
	got = byID(readAll(t, c, q))
	require.True(t, got[later].InLists)
}

func TestOptedOutScopedToADynamicList(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	list := srv.AddDynamicList("Acme leads", "lead", `<fetch version="1.0"><entity name="lead"><attribute name="fullname"/><filter type="or"><condition attribute="companyname" operator="eq" value="Acme"/><condition attribute="companyname" operator="like" value="Acme %"/></filter></entity></fetch>`)
	in := srv.AddLead(dynamicstest.Person{Email: "in@example.com", Company: "ACME", OptedOut: true})
	in2 := srv.AddLead(dynamicstest.Person{Email: "in2@example.com", Company: "Acme Corp", OptedOut: true})
	srv.AddLead(dynamicstest.Person{Email: "sub@example.com", Company: "Acme"})
	out := srv.AddLead(dynamicstest.Person{Email: "out@example.com", Company: "Other", OptedOut: true})
	c := clientFor(t, srv)
	got := byID(readAll(t, c, connectors.OptOutQuery{Types: []string{"lead"}, Field: standard, Lists: []string{list}}))
	require.Len(t, got, 3)
	require.True(t, got[in].InLists, "case-insensitive condition")
	require.True(t, got[in2].InLists)
	require.False(t, got[out].InLists)
	require.Positive(t, srv.Middleware.Counts()["GET /api/data/v9.2/leads"])
}

func TestListsAreReadOncePerRun(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	list := srv.AddStaticList("News", "contact")
	for i := range 5 {
		srv.AddListMember(list, srv.AddContact(dynamicstest.Person{Email: string(rune('a'+i)) + "@example.com", OptedOut: true}))
	}
	c := clientFor(t, srv)
	asOf := time.Now()
	q := connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, Lists: []string{list}, PageSize: 2, ListsAsOf: asOf}
	require.Len(t, readAll(t, c, q), 5)
	require.Len(t, readAll(t, c, q), 5)
	require.Equal(t, 1, srv.Middleware.Counts()["GET /api/data/v9.2/lists({id})/listcontact_association"], "%v", srv.Middleware.Counts())
}

func TestFindByEmailMatchesCaseInsensitivelyAcrossTypesAndColumns(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	contact := srv.AddContact(dynamicstest.Person{Email: "Ann@Example.com"})
	lead := srv.AddLead(dynamicstest.Person{Email: "ann@example.com", OptedOut: true})
	second := srv.AddContact(dynamicstest.Person{Email: "work@example.com", Email2: "ann@example.com"})
	quote := srv.AddContact(dynamicstest.Person{Email: "o'brien@example.com"})
	c := clientFor(t, srv)
	recs, err := c.FindByEmail(t.Context(), []string{"contact", "lead"}, standard, []string{"ANN@example.com", "o'brien@example.com", "nobody@example.com"})
	require.NoError(t, err)
	got := byID(recs)
	require.Len(t, recs, 3)
	require.Equal(t, "ANN@example.com", got[contact].Email, "the address as asked")
	require.True(t, got[lead].OptedOut)
	require.Equal(t, "o'brien@example.com", got[quote].Email, "a quote is doubled, not a syntax error")
	require.NotContains(t, got, second, "emailaddress2 is not matched unless configured")

	c2 := clientFor(t, srv, func(o *dynamics.Options) { o.EmailColumns = []string{"emailaddress1", "emailaddress2"} })
	recs, err = c2.FindByEmail(t.Context(), []string{"contact"}, standard, []string{"ann@example.com"})
	require.NoError(t, err)
	require.Contains(t, byID(recs), second)
}

func TestSetOptOutBatchWithFailingParts(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	a := srv.AddContact(dynamicstest.Person{Email: "a@example.com"})
	b := srv.AddLead(dynamicstest.Person{Email: "b@example.com", OptedOut: true})
	gone := srv.AddContact(dynamicstest.Person{Email: "gone@example.com"})
	srv.Delete(gone)
	c := clientFor(t, srv)
	refs := []connectors.RecordRef{{Type: "contact", ID: a}, {Type: "lead", ID: b}, {Type: "contact", ID: gone}, {Type: "contact", ID: "not-a-guid"}, {Type: "contact", ID: a}}
	res, err := c.SetOptOut(t.Context(), standard, refs)
	require.NoError(t, err)
	require.Equal(t, 2, res.Written, "the others are written, an opt-out already set included")
	require.Len(t, res.Failed, 2)
	fails := map[string]connectors.Failure{}
	for _, f := range res.Failed {
		fails[f.Record.ID] = f
	}
	require.Equal(t, "0x80040217", fails[gone].Code)
	require.False(t, fails[gone].Retryable)
	require.Contains(t, fails[gone].Message, "Does Not Exist")
	require.Equal(t, "InvalidId", fails["not-a-guid"].Code)
	ra, _ := srv.Record(a)
	require.Equal(t, true, ra["donotbulkemail"])
	_, exists := srv.Record(gone)
	require.False(t, exists, "If-Match: * never re-creates a deleted record")
	require.Equal(t, 1, srv.Middleware.Counts()["POST /api/data/v9.2/$batch"], "one $batch")

	// A column that only contacts have fails the lead's part alone.
	srv.AddColumn("contact", "new_bounced", true)
	res, err = c.SetFlag(t.Context(), "new_bounced", []connectors.RecordRef{{Type: "contact", ID: a}, {Type: "lead", ID: b}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.Len(t, res.Failed, 1)
	require.Equal(t, b, res.Failed[0].Record.ID)
	require.Equal(t, "0x80060888", res.Failed[0].Code)
	require.False(t, res.Failed[0].Retryable)
}

func TestSetOptOutInvertedClearsTheOptIn(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	a := srv.AddContact(dynamicstest.Person{Email: "a@example.com", Custom: map[string]any{"new_optin": true}})
	c := clientFor(t, srv)
	res, err := c.SetOptOut(t.Context(), connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "new_optin"}, []connectors.RecordRef{{Type: "contact", ID: a}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written, "%+v", res.Failed)
	rec, _ := srv.Record(a)
	require.Equal(t, false, rec["new_optin"])
	require.Equal(t, false, rec["donotbulkemail"], "only the configured field is written")
}

func TestTooManyRequestsStormIsRetriedThenReported(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	a := srv.AddContact(dynamicstest.Person{Email: "a@example.com"})
	c := clientFor(t, srv)
	require.NoError(t, c.Ping(t.Context()))

	// Two limit answers: the retries (two) absorb them.
	srv.Throttle(dynamicstest.CodeRequests, 1, time.Second)
	srv.Throttle(dynamicstest.CodeConcurrency, 1, time.Second)
	res, err := c.SetOptOut(t.Context(), standard, []connectors.RecordRef{{Type: "contact", ID: a}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)

	// A storm longer than the retries: a retryable rate-limit error with
	// the wait Dataverse asked for, and nothing lost.
	srv.Throttle(dynamicstest.CodeTime, 10, 7*time.Second)
	_, err = c.FindByEmail(t.Context(), []string{"contact"}, standard, []string{"a@example.com"})
	require.ErrorIs(t, err, connectors.ErrRateLimited)
	require.False(t, connectors.Permanent(err))
	var apiErr *connectors.APIError
	require.True(t, errors.As(err, &apiErr))
	require.Equal(t, "0x80072321", apiErr.Code)
	require.Equal(t, 7*time.Second, apiErr.RetryAfter)
	require.Contains(t, apiErr.Detail, "execution time")
}

func TestRequestLimitWindowAndConcurrencyCap(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{RequestLimit: 5})
	c := clientFor(t, srv, func(o *dynamics.Options) { o.RetryMax = -1 })
	for range 5 {
		require.NoError(t, c.Ping(t.Context()))
	}
	err := c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrRateLimited)
	var apiErr *connectors.APIError
	require.True(t, errors.As(err, &apiErr))
	require.Equal(t, "0x80072322", apiErr.Code)
	require.Greater(t, apiErr.RetryAfter, 200*time.Second, "the sliding window's wait")
}

func TestListMembersReadsFieldsOfListMembers(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	list := srv.AddStaticList("News", "contact")
	a := srv.AddContact(dynamicstest.Person{FirstName: "Ann", LastName: "Ames", Email: "ann@example.com"})
	b := srv.AddContact(dynamicstest.Person{FirstName: "Bob", Email: "bob@example.com", OptedOut: true})
	srv.AddContact(dynamicstest.Person{FirstName: "Cid", Email: "cid@example.com"})
	srv.AddListMember(list, a, b)
	c := clientFor(t, srv)
	q := connectors.ListMembersQuery{Types: []string{"contact"}, Lists: []string{list}, Fields: []string{"firstname", "lastname"}, PageSize: 1}
	var recs []connectors.Record
	for i := 0; ; i++ {
		require.Less(t, i, 10)
		page, err := c.ListMembers(t.Context(), q)
		require.NoError(t, err)
		recs = append(recs, page.Records...)
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	got := byID(recs)
	require.Len(t, got, 2)
	require.Equal(t, map[string]string{"firstname": "Ann", "lastname": "Ames"}, got[a].Fields)
	require.Equal(t, "", got[b].Fields["lastname"], "null is empty")
	require.True(t, got[b].OptedOut, "an opted-out member is marked")
	require.False(t, got[a].OptedOut)
}

func TestCursorOfAnotherQueryIsRefused(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	for i := range 3 {
		srv.AddContact(dynamicstest.Person{Email: string(rune('a'+i)) + "@example.com", OptedOut: true})
	}
	c := clientFor(t, srv)
	page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, PageSize: 1})
	require.NoError(t, err)
	require.NotEmpty(t, page.Next)
	_, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"lead"}, Field: standard, PageSize: 1, Cursor: page.Next})
	require.ErrorIs(t, err, connectors.ErrInvalid)
}

// TestToleratesEitherAnswerWhereTheReferenceIsUnsure reads the same data
// from emulators that answer each way the reference leaves open:
// modifiedon with or without milliseconds, the paging cookie with or
// without istracking.
func TestToleratesEitherAnswerWhereTheReferenceIsUnsure(t *testing.T) {
	for _, opts := range []dynamicstest.Options{{}, {FractionalSeconds: true}, {SkipTokenWithoutTracking: true}} {
		clock := emulator.NewClock(time.Date(2026, 5, 1, 9, 0, 0, 123_000_000, time.UTC))
		opts.Clock = clock.Now
		srv := newEnv(t, opts)
		var want []string
		for i := range 5 {
			want = append(want, srv.AddContact(dynamicstest.Person{Email: fmt.Sprintf("p%d@example.com", i), OptedOut: true}))
			clock.Advance(300 * time.Millisecond)
		}
		c := clientFor(t, srv)
		recs := readAll(t, c, connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, Since: time.Date(2026, 5, 1, 9, 0, 0, 500_000_000, time.UTC), PageSize: 2})
		var got []string
		for _, r := range recs {
			got = append(got, r.Ref.ID)
		}
		// The watermark is truncated to the second: widened, never narrowed.
		require.ElementsMatch(t, want, got, "%+v", opts)
	}
}

func TestListMembersOfADynamicListAndWithoutLists(t *testing.T) {
	clock := emulator.NewClock(time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC))
	srv := newEnv(t, dynamicstest.Options{Clock: clock.Now})
	list := srv.AddDynamicList("Acme", "lead", `<fetch top="50"><entity name="lead"><filter><condition attribute="companyname" operator="eq" value="Acme"/></filter></entity></fetch>`)
	old := srv.AddLead(dynamicstest.Person{FirstName: "Old", Email: "old@example.com", Company: "Acme"})
	clock.Advance(time.Hour)
	since := clock.Now()
	acme := srv.AddLead(dynamicstest.Person{FirstName: "Ann", Email: "ann@example.com", Company: "Acme"})
	other := srv.AddLead(dynamicstest.Person{FirstName: "Bob", Email: "bob@example.com", Company: "Other"})
	srv.AddLead(dynamicstest.Person{FirstName: "NoAddress", Company: "Acme"})
	c := clientFor(t, srv)

	page, err := c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"lead"}, Lists: []string{list}, Fields: []string{"firstname"}, Since: since})
	require.NoError(t, err)
	require.Empty(t, page.Next)
	got := byID(page.Records)
	require.Len(t, got, 1, "modified since, in the list, with an address")
	require.Equal(t, "Ann", got[acme].Fields["firstname"])

	page, err = c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"lead"}, Fields: []string{"firstname"}})
	require.NoError(t, err)
	got = byID(page.Records)
	require.Len(t, got, 3)
	require.Contains(t, got, old)
	require.Contains(t, got, other)
}

func TestForgedCursorCannotSendTheTokenElsewhere(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{})
	for i := range 3 {
		srv.AddContact(dynamicstest.Person{Email: fmt.Sprintf("p%d@example.com", i), OptedOut: true})
	}
	c := clientFor(t, srv)
	q := connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, PageSize: 1}
	page, err := c.OptedOut(t.Context(), q)
	require.NoError(t, err)
	require.NotEmpty(t, page.Next)
	// The same cursor with its nextLink pointed at another host.
	raw, err := base64.RawURLEncoding.DecodeString(page.Next)
	require.NoError(t, err)
	var st map[string]any
	require.NoError(t, json.Unmarshal(raw, &st))
	// A page ending inside a batch names the batch (u), one ending with it
	// the next link (n).
	link := "u"
	if st[link] == nil {
		link = "n"
	}
	require.Contains(t, st[link], srv.URL)
	st[link] = strings.Replace(st[link].(string), srv.URL, "https://evil.example", 1)
	raw, _ = json.Marshal(st)
	calls := srv.Middleware.Total()
	q.Cursor = base64.RawURLEncoding.EncodeToString(raw)
	_, err = c.OptedOut(t.Context(), q)
	require.ErrorIs(t, err, connectors.ErrInvalid)
	require.ErrorContains(t, err, "nextLink points outside")
	require.Equal(t, calls, srv.Middleware.Total(), "no call made with the forged cursor")
}

// TestConcurrencyLimitIsAbsorbed: a client allowed more requests in flight
// than the environment takes meets 0x80072326 answers, slows down (the
// shared limiter halves on a 429) and every call still succeeds.
func TestConcurrencyLimitIsAbsorbed(t *testing.T) {
	srv := newEnv(t, dynamicstest.Options{ConcurrencyLimit: 3})
	srv.Middleware.SetFaults(emulator.Faults{Latency: 20 * time.Millisecond})
	c := clientFor(t, srv, func(o *dynamics.Options) {
		o.MaxInFlight, o.RetryMax, o.RetryWaitMax = 12, 20, 20*time.Millisecond
	})
	require.NoError(t, c.Ping(t.Context()))
	errs := make(chan error, 40)
	for range 40 {
		go func() { errs <- c.Ping(t.Context()) }()
	}
	for range 40 {
		require.NoError(t, <-errs)
	}
	require.Positive(t, srv.Middleware.Faulted()["over-limit"], "the limit was met")
}

// TestFindByEmailIsOneBatchCall: a lookup of 200 long addresses in three
// columns of two tables (several filters, each far past what one GET URL
// held before) is one $batch of GET parts, no other call; a query with
// more rows than an answer holds goes on from its nextLink in the next
// $batch; every record is found once per asked address.
func TestFindByEmailIsOneBatchCall(t *testing.T) {
	for _, maxPage := range []int{0, 7} {
		srv := newEnv(t, dynamicstest.Options{MaxPageSize: maxPage})
		var emails []string
		want := map[string]bool{}
		for i := range 200 {
			e := fmt.Sprintf("a.rather.long.local.part.number.%03d@subdomain.example-company.com", i)
			emails = append(emails, e)
			switch i % 3 {
			case 0:
				want[srv.AddContact(dynamicstest.Person{Email: e})] = true
			case 1:
				want[srv.AddContact(dynamicstest.Person{Email: "other@example.com", Email3: strings.ToUpper(e)})] = true
			case 2:
				want[srv.AddLead(dynamicstest.Person{Email: e, OptedOut: true})] = true
			}
		}
		c := clientFor(t, srv, func(o *dynamics.Options) {
			o.EmailColumns = []string{"emailaddress1", "emailaddress2", "emailaddress3"}
		})
		srv.Middleware.ResetCounts()
		recs, err := c.FindByEmail(t.Context(), []string{"contact", "lead"}, standard, emails)
		require.NoError(t, err)
		got := byID(recs)
		require.Len(t, recs, 200, "page size %d", maxPage)
		for id := range want {
			require.Contains(t, got, id)
		}
		api := map[string]int{} // the Web API's calls (the token's aside)
		for k, n := range srv.Middleware.Counts() {
			if strings.Contains(k, "/api/data/") {
				api[k] = n
			}
		}
		if maxPage == 0 {
			require.Equal(t, map[string]int{"POST /api/data/v9.2/$batch": 1}, api)
		} else {
			require.Greater(t, api["POST /api/data/v9.2/$batch"], 1, "nextLinks followed")
			require.Len(t, api, 1, "%v", api)
		}
	}
}
