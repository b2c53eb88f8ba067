package netsuite_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

func tbaClient(t testing.TB, s *netsuitetest.Server, mod ...func(*netsuite.Options)) *netsuite.Client {
	t.Helper()
	cfg := netsuite.Options{
		AccountID:    s.AccountID,
		BaseURL:      s.URL,
		TBA:          netsuite.TBA{ConsumerKey: s.ConsumerKey, ConsumerSecret: s.ConsumerSecret, TokenID: s.TokenID, TokenSecret: s.TokenSecret},
		RetryWaitMin: time.Millisecond,
		RetryWaitMax: 5 * time.Millisecond,
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := netsuite.New(cfg)
	require.NoError(t, err)
	return c
}

var (
	standard = connectors.OptOutField{Kind: connectors.OptOutStandard}
	custom   = connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "custentity_optout"}
	inverted = connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "custentity_optin"}
	both     = []string{"customer", "contact"}
)

// readAll pages through OptedOut and returns the records by ref.
func readAll(t *testing.T, c *netsuite.Client, q connectors.OptOutQuery) map[connectors.RecordRef]connectors.Record {
	t.Helper()
	out := map[connectors.RecordRef]connectors.Record{}
	for range 1000 {
		page, err := c.OptedOut(t.Context(), q)
		require.NoError(t, err)
		bound := q.PageSize
		if bound == 0 {
			bound = connectors.MaxPageSize
		}
		require.LessOrEqual(t, len(page.Records), bound)
		for _, r := range page.Records {
			_, dup := out[r.Ref]
			require.False(t, dup, "returned twice: %s", r.Ref)
			out[r.Ref] = r
		}
		if page.Next == "" {
			return out
		}
		q.Cursor = page.Next
	}
	t.Fatal("OptedOut never ended")
	return nil
}

func ref(typ, id string) connectors.RecordRef { return connectors.RecordRef{Type: typ, ID: id} }

func TestOptedOutSinceWatermark(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	c := tbaClient(t, s)
	since := time.Now().Add(-time.Hour).Truncate(time.Second)
	old := since.Add(-time.Hour)
	want := map[connectors.RecordRef]bool{}
	// Many records in the same second, so keyset paging has to page inside it.
	for i := range 12 {
		st := []string{"1", "2", "3", "4"}[i%4]
		lm := since.Add(time.Duration(i/5) * time.Second)
		id := s.AddCustomer(netsuitetest.Entity{Email: fmt.Sprintf("c%d@example.com", i), SubscriptionStatus: st, LastModified: lm})
		if st == "2" || st == "4" {
			want[ref("customer", id)] = true
		}
		id = s.AddContact(netsuitetest.Entity{Email: fmt.Sprintf("k%d@example.com", i), SubscriptionStatus: st, LastModified: lm.Add(500 * time.Millisecond)})
		if st == "2" || st == "4" {
			want[ref("contact", id)] = true
		}
	}
	s.AddCustomer(netsuitetest.Entity{Email: "old@example.com", SubscriptionStatus: "2", LastModified: old})

	for _, size := range []int{1, 2, 5, 1000} {
		got := readAll(t, c, connectors.OptOutQuery{Types: both, Field: standard, Since: since, PageSize: size})
		require.Len(t, got, len(want), "page size %d", size)
		for r, rec := range got {
			require.True(t, want[r], r)
			require.True(t, rec.OptedOut)
			require.True(t, rec.InLists, "no lists asked for")
		}
	}
	got := readAll(t, c, connectors.OptOutQuery{Types: []string{"customer"}, Field: standard})
	require.Len(t, got, 7, "no watermark reads every opted-out customer")

	_, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Cursor: "garbage"})
	require.Error(t, err)
	page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, PageSize: 1})
	require.NoError(t, err)
	_, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"contact"}, Field: standard, PageSize: 1, Cursor: page.Next})
	require.ErrorContains(t, err, "another query")
}

func TestOptedOutCustomAndInvertedFields(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{CustomFields: []string{"custentity_optout", "custentity_optin"}})
	defer s.Close()
	c := tbaClient(t, s)
	out := s.AddCustomer(netsuitetest.Entity{Email: "out@example.com", Custom: map[string]any{"custentity_optout": true, "custentity_optin": true}})
	in := s.AddContact(netsuitetest.Entity{Email: "in@example.com", Custom: map[string]any{"custentity_optin": true}})
	neither := s.AddContact(netsuitetest.Entity{Email: "n@example.com"})

	got := readAll(t, c, connectors.OptOutQuery{Types: both, Field: custom})
	require.Equal(t, []connectors.RecordRef{ref("customer", out)}, slices.Collect(mapsKeys(got)))
	got = readAll(t, c, connectors.OptOutQuery{Types: both, Field: inverted})
	require.Equal(t, []connectors.RecordRef{ref("contact", neither)}, slices.Collect(mapsKeys(got)), "an unticked opt-in is an opt-out")
	_ = in

	_, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "x; DROP"}})
	require.ErrorContains(t, err, "Field.Field")
	_, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"lead"}, Field: standard})
	require.ErrorContains(t, err, "Types")
	_, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "custentity_nosuch"}})
	require.ErrorIs(t, err, connectors.ErrInvalid, "SuiteQL refuses an unknown field")
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestOptedOutScopedBySavedSearch(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	c := tbaClient(t, s)
	lastRun := time.Now().Add(-time.Hour).Truncate(time.Second)
	longAgo := lastRun.Add(-24 * time.Hour)

	inOld := s.AddCustomer(netsuitetest.Entity{Email: "in-old@example.com", SubscriptionStatus: "4", LastModified: longAgo})
	inNew := s.AddContact(netsuitetest.Entity{Email: "in-new@example.com", SubscriptionStatus: "2", LastModified: lastRun.Add(time.Minute)})
	inSubscribed := s.AddCustomer(netsuitetest.Entity{Email: "in-sub@example.com", SubscriptionStatus: "1", LastModified: lastRun.Add(time.Minute)})
	outNew := s.AddCustomer(netsuitetest.Entity{Email: "out-new@example.com", SubscriptionStatus: "2", LastModified: lastRun.Add(time.Minute)})
	outOld := s.AddContact(netsuitetest.Entity{Email: "out-old@example.com", SubscriptionStatus: "2", LastModified: longAgo})
	s.AddSavedSearch("customsearch_a", ref("customer", inOld), ref("customer", inSubscribed))
	s.AddSavedSearch("customsearch_b", ref("contact", inNew), ref("customer", inOld))

	q := connectors.OptOutQuery{Types: both, Field: standard, Since: lastRun, Lists: []string{"customsearch_a", "customsearch_b"}, PageSize: 1}
	got := readAll(t, c, q)
	require.Len(t, got, 3)
	require.True(t, got[ref("customer", inOld)].InLists, "an opted-out member is returned whatever its modification date")
	require.True(t, got[ref("contact", inNew)].InLists)
	require.False(t, got[ref("customer", outNew)].InLists, "opted out since the watermark but in no list")
	require.NotContains(t, got, ref("contact", outOld), "outside the lists and not modified since")

	// The next run: outOld joins a saved search without being modified.
	s.AddToSavedSearch("customsearch_b", ref("contact", outOld))
	got = readAll(t, c, q)
	require.True(t, got[ref("contact", outOld)].InLists, "found through the list although not modified since the watermark")
	e, _ := s.Entity("contact", outOld)
	require.Equal(t, longAgo, e.LastModified)

	// A row without recordType would be ambiguous with two types.
	_, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Lists: []string{"customsearch_missing"}})
	require.ErrorIs(t, err, connectors.ErrNotFound)
}

func TestFindByEmailFindsDuplicates(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{CustomFields: []string{"custentity_optout"}})
	defer s.Close()
	c := tbaClient(t, s)
	cu1 := s.AddCustomer(netsuitetest.Entity{Email: "Jane.Doe@Example.com", SubscriptionStatus: "4"})
	cu2 := s.AddCustomer(netsuitetest.Entity{Email: "jane.doe@example.com", SubscriptionStatus: "1"})
	co := s.AddContact(netsuitetest.Entity{Email: "JANE.DOE@example.com", SubscriptionStatus: "3", Custom: map[string]any{"custentity_optout": true}})
	ob := s.AddContact(netsuitetest.Entity{Email: "o'brien@example.com"})
	s.AddContact(netsuitetest.Entity{Email: "someone.else@example.com"})

	recs, err := c.FindByEmail(t.Context(), both, standard, []string{"jane.doe@EXAMPLE.com", "o'brien@example.com", "nobody@example.com"})
	require.NoError(t, err)
	byRef := map[connectors.RecordRef]connectors.Record{}
	for _, r := range recs {
		byRef[r.Ref] = r
	}
	require.Len(t, byRef, 4)
	require.True(t, byRef[ref("customer", cu1)].OptedOut)
	require.False(t, byRef[ref("customer", cu2)].OptedOut)
	require.False(t, byRef[ref("contact", co)].OptedOut, "Confirmed Opt-In")
	require.Equal(t, "o'brien@example.com", byRef[ref("contact", ob)].Email)

	recs, err = c.FindByEmail(t.Context(), []string{"contact"}, custom, []string{"jane.doe@example.com"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.True(t, recs[0].OptedOut)

	_, err = c.FindByEmail(t.Context(), both, standard, make([]string, c.MaxBatch()+1))
	require.Error(t, err)
}

func TestSetOptOut(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{CustomFields: []string{"custentity_optout", "custentity_optin"}})
	defer s.Close()
	c := tbaClient(t, s)
	softIn := s.AddCustomer(netsuitetest.Entity{Email: "a@example.com", SubscriptionStatus: "1"})
	confIn := s.AddContact(netsuitetest.Entity{Email: "b@example.com", SubscriptionStatus: "3"})
	confOut := s.AddCustomer(netsuitetest.Entity{Email: "c@example.com", SubscriptionStatus: "4"})
	before, _ := s.Entity("customer", confOut)

	res, err := c.SetOptOut(t.Context(), standard, []connectors.RecordRef{
		ref("customer", softIn), ref("contact", confIn), ref("customer", confOut), ref("customer", "999999"), ref("lead", "1"), ref("customer", softIn),
	})
	require.NoError(t, err)
	require.Equal(t, 3, res.Written)
	require.Len(t, res.Failed, 2)
	require.Equal(t, "customer/999999", res.Failed[0].Record.String())
	require.Equal(t, "NONEXISTENT_ID", res.Failed[0].Code)
	require.False(t, res.Failed[0].Retryable)
	require.Equal(t, "lead/1", res.Failed[1].Record.String())
	for typ, id := range map[string]string{"customer": softIn, "contact": confIn} {
		e, _ := s.Entity(typ, id)
		require.Equal(t, "2", e.SubscriptionStatus)
	}
	after, _ := s.Entity("customer", confOut)
	require.Equal(t, "4", after.SubscriptionStatus, "Confirmed Opt-Out is never downgraded")
	require.Equal(t, before.LastModified, after.LastModified, "and not even touched")
	require.Equal(t, 3, s.Middleware.Counts()["PATCH /services/rest/record/v1/{type}/{id}"], "one PATCH per record to change (and the missing one), none for the Confirmed Opt-Out")

	res, err = c.SetOptOut(t.Context(), custom, []connectors.RecordRef{ref("customer", softIn), ref("contact", confIn)})
	require.NoError(t, err)
	require.Equal(t, 2, res.Written)
	require.Empty(t, res.Failed)
	e, _ := s.Entity("contact", confIn)
	require.Equal(t, true, e.Custom["custentity_optout"])

	s.Update("customer", softIn, func(e *netsuitetest.Entity) { e.Custom = map[string]any{"custentity_optin": true} })
	res, err = c.SetOptOut(t.Context(), inverted, []connectors.RecordRef{ref("customer", softIn)})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	e, _ = s.Entity("customer", softIn)
	require.Equal(t, false, e.Custom["custentity_optin"])

	// A misspelt custom field fails the batch loudly instead of being ignored.
	_, err = c.SetOptOut(t.Context(), connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "custentity_typo"}, []connectors.RecordRef{ref("customer", softIn)})
	require.ErrorIs(t, err, connectors.ErrInvalid)
}

func TestListMembers(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	c := tbaClient(t, s)
	var members []connectors.RecordRef
	for i := range 7 {
		id := s.AddContact(netsuitetest.Entity{Email: fmt.Sprintf("m%d@example.com", i), FirstName: "F" + strconv.Itoa(i), SubscriptionStatus: []string{"1", "2"}[i%2]})
		if i != 3 {
			members = append(members, ref("contact", id))
		}
	}
	s.AddSavedSearch("42", members...)
	var got []connectors.Record
	q := connectors.ListMembersQuery{Types: both, Lists: []string{"42"}, Fields: []string{"firstName", "lastname"}, PageSize: 2}
	for {
		page, err := c.ListMembers(t.Context(), q)
		require.NoError(t, err)
		got = append(got, page.Records...)
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	require.Len(t, got, 6)
	require.Equal(t, "F0", got[0].Fields["firstName"])
	require.NotContains(t, got[0].Fields, "lastname", "NULL columns are absent")
	require.True(t, got[1].OptedOut)

	q = connectors.ListMembersQuery{Types: []string{"contact"}, PageSize: 3}
	n := 0
	for {
		page, err := c.ListMembers(t.Context(), q)
		require.NoError(t, err)
		n += len(page.Records)
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	require.Equal(t, 7, n)
}

func TestListMembersReadsTheMappedOptOutField(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{CustomFields: []string{"custentity_mc_optout"}})
	defer s.Close()
	c := tbaClient(t, s)
	s.AddCustomer(netsuitetest.Entity{Email: "in@example.com", SubscriptionStatus: "1"})
	s.AddCustomer(netsuitetest.Entity{Email: "out@example.com", SubscriptionStatus: "1", Custom: map[string]any{"custentity_mc_optout": true}})
	page, err := c.ListMembers(t.Context(), connectors.ListMembersQuery{
		Types: []string{"customer"}, Field: connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "custentity_mc_optout"},
	})
	require.NoError(t, err)
	require.Len(t, page.Records, 2)
	byEmail := map[string]bool{}
	for _, r := range page.Records {
		byEmail[r.Email] = r.OptedOut
	}
	require.Equal(t, map[string]bool{"in@example.com": false, "out@example.com": true}, byEmail)
}

func rsaPEM(t *testing.T) (*rsa.PrivateKey, string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}

func TestM2M(t *testing.T) {
	rsaKey, rsaPem := rsaPEM(t)
	for name, setup := range map[string]func() (*netsuitetest.Server, string){
		"ES256": func() (*netsuitetest.Server, string) {
			s := netsuitetest.NewServer(netsuitetest.Options{})
			return s, s.M2MPrivateKeyPEM
		},
		"PS256": func() (*netsuitetest.Server, string) {
			return netsuitetest.NewServer(netsuitetest.Options{PublicKey: &rsaKey.PublicKey}), rsaPem
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, keyPEM := setup()
			defer s.Close()
			c, err := netsuite.New(netsuite.Options{AccountID: s.AccountID, BaseURL: s.URL,
				M2M: netsuite.M2M{ClientID: s.ClientID, CertificateID: s.CertificateID, PrivateKey: keyPEM}})
			require.NoError(t, err)
			require.NoError(t, c.Ping(t.Context()))
			require.NoError(t, c.Ping(t.Context()))
			require.Equal(t, 1, s.Middleware.Counts()["POST /services/rest/auth/oauth2/v1/token"], "the token is cached")

			s.ExpireTokens()
			require.NoError(t, c.Ping(t.Context()), "a rejected token is replaced once")
			require.Equal(t, 2, s.Middleware.Counts()["POST /services/rest/auth/oauth2/v1/token"])

			bad, err := netsuite.New(netsuite.Options{AccountID: s.AccountID, BaseURL: s.URL,
				M2M: netsuite.M2M{ClientID: "someone-else", CertificateID: s.CertificateID, PrivateKey: keyPEM}})
			require.NoError(t, err)
			require.ErrorIs(t, bad.Ping(t.Context()), connectors.ErrUnauthorized)
		})
	}
}

func TestRetries(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	c := tbaClient(t, s, func(cfg *netsuite.Options) { cfg.RetryMax = 10 })
	s.Middleware.SetFaults(emulator.Faults{Rate429: 0.4, Rate5xx: 0.2})
	for range 20 {
		require.NoError(t, c.Ping(t.Context()))
	}
	require.Positive(t, s.Middleware.Faulted()["429"])
	require.Positive(t, s.Middleware.Faulted()["5xx"])

	s.Middleware.SetFaults(emulator.Faults{Rate429: 1})
	err := tbaClient(t, s, func(cfg *netsuite.Options) { cfg.RetryMax = 2 }).Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrRateLimited)
	var apiErr *connectors.APIError
	require.True(t, errors.As(err, &apiErr))
	require.Equal(t, "CONCURRENCY_LIMIT_EXCEEDED", apiErr.Code)
	require.False(t, connectors.Permanent(err))

	s.Middleware.SetFaults(emulator.Faults{Rate5xx: 1})
	err = c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrServer)

	s.Middleware.SetFaults(emulator.Faults{})
	s.Middleware.ResetCounts()
	wrong := tbaClient(t, s, func(cfg *netsuite.Options) { cfg.TBA.TokenSecret = "wrong" })
	err = wrong.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.True(t, errors.As(err, &apiErr))
	require.Equal(t, "INVALID_LOGIN", apiErr.Code)
	require.NotContains(t, err.Error(), "wrong")
	require.Equal(t, 1, s.Middleware.Total(), "a 401 is not retried")
}

func TestNeverOverTheConcurrencyLimit(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{Faults: emulator.Faults{Latency: 2 * time.Millisecond}})
	defer s.Close()
	var refs []connectors.RecordRef
	for i := range 60 {
		refs = append(refs, ref("customer", s.AddCustomer(netsuitetest.Entity{Email: fmt.Sprintf("x%d@example.com", i)})))
	}
	// Two clients of the same account share one limiter.
	c1, c2 := tbaClient(t, s), tbaClient(t, s)
	var wg sync.WaitGroup
	for i := range 12 {
		c := []*netsuite.Client{c1, c2}[i%2]
		wg.Go(func() {
			res, err := c.SetOptOut(t.Context(), standard, refs[i*5:i*5+5])
			require.NoError(t, err)
			require.Empty(t, res.Failed)
			_, err = c.FindByEmail(t.Context(), both, standard, []string{fmt.Sprintf("x%d@example.com", i)})
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.LessOrEqual(t, s.Middleware.PeakInFlight(), 5)
	require.Zero(t, s.Middleware.Faulted()["over-limit"])
}

func TestConfigErrorsNameTheField(t *testing.T) {
	for field, cfg := range map[string]netsuite.Options{
		"AccountID":         {AccountID: "bad id"},
		"Options.TBA or":    {AccountID: "1234567"},
		"TBA.TokenSecret":   {AccountID: "1234567", TBA: netsuite.TBA{ConsumerKey: "a", ConsumerSecret: "b", TokenID: "c"}},
		"M2M.CertificateID": {AccountID: "1234567", M2M: netsuite.M2M{ClientID: "x"}},
		"M2M.PrivateKey":    {AccountID: "1234567", M2M: netsuite.M2M{ClientID: "x", CertificateID: "y", PrivateKey: "nope"}},
		"BaseURL":           {AccountID: "1234567", BaseURL: "ftp://x", TBA: netsuite.TBA{ConsumerKey: "a", ConsumerSecret: "b", TokenID: "c", TokenSecret: "d"}},
		"not both":          {AccountID: "1234567", TBA: netsuite.TBA{ConsumerKey: "a"}, M2M: netsuite.M2M{ClientID: "x"}},
	} {
		_, err := netsuite.New(cfg)
		require.ErrorContains(t, err, field)
	}
}

// TestListsReadOncePerRun: reads that say the run started before the
// cached membership was loaded share one read of the saved search; a
// read without ListsAsOf, or of a later run, reads it afresh.
func TestListsReadOncePerRun(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	id := s.AddCustomer(netsuitetest.Entity{Email: "ann@example.com", SubscriptionStatus: "2"})
	s.AddSavedSearch("customsearch_a", connectors.RecordRef{Type: "customer", ID: id})
	c := tbaClient(t, s)
	const search = "GET /services/rest/query/v1/savedsearch/{id}/result"
	runStart := time.Now().Add(-time.Second)
	read := func(asOf time.Time) {
		_, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Lists: []string{"customsearch_a"}, ListsAsOf: asOf})
		require.NoError(t, err)
		_, err = c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: both, Field: standard, Lists: []string{"customsearch_a"}, ListsAsOf: asOf})
		require.NoError(t, err)
	}
	read(runStart)
	require.Equal(t, 1, s.Middleware.Counts()[search], "one run's two steps read the search once")
	read(time.Time{})
	require.Equal(t, 3, s.Middleware.Counts()[search], "without ListsAsOf each read is fresh")
	time.Sleep(time.Millisecond)
	read(time.Now())
	require.Equal(t, 4, s.Middleware.Counts()[search], "a later run reads it again, once")
}
