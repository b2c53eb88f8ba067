package salesforce_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
	"github.com/optoutsync/optoutsync/connectors/salesforce"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
)

func newClock() *emulator.Clock {
	return emulator.NewClock(time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC))
}

func newOrg(t *testing.T, opts salesforcetest.Options) *salesforcetest.Server {
	t.Helper()
	srv := salesforcetest.NewServer(opts)
	t.Cleanup(srv.Close)
	return srv
}

func clientFor(t *testing.T, srv *salesforcetest.Server, edit ...func(*salesforce.Options)) *salesforce.Client {
	t.Helper()
	cfg := salesforce.Options{
		LoginURL:     srv.URL,
		ClientID:     srv.ClientID,
		ClientSecret: srv.ClientSecret,
		RetryMax:     2,
		RetryWaitMin: time.Millisecond,
		RetryWaitMax: 5 * time.Millisecond,
	}
	for _, e := range edit {
		e(&cfg)
	}
	c, err := salesforce.New(cfg)
	require.NoError(t, err)
	return c
}

var standard = connectors.OptOutField{Kind: connectors.OptOutStandard}

// readAll pages OptedOut to the end.
func readAll(t *testing.T, c *salesforce.Client, q connectors.OptOutQuery) []connectors.Record {
	t.Helper()
	var out []connectors.Record
	for i := 0; ; i++ {
		require.Less(t, i, 1000, "paging does not end")
		page, err := c.OptedOut(t.Context(), q)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page.Records), max(q.PageSize, 1))
		out = append(out, page.Records...)
		if page.Next == "" {
			return out
		}
		require.NotEmpty(t, page.Records, "an empty page that is not the last")
		q.Cursor = page.Next
	}
}

func ids(recs []connectors.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Ref.ID
	}
	return out
}

func TestClientCredentialsPingAndUsage(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	c := clientFor(t, srv)
	_, _, ok := c.APIUsage()
	require.False(t, ok)
	require.NoError(t, c.Ping(t.Context()))
	used, max, ok := c.APIUsage()
	require.True(t, ok)
	require.Equal(t, 1, used)
	require.Equal(t, 15000, max)
}

func TestJWTBearer(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	jwtClient := func(edit func(*salesforce.Options)) *salesforce.Client {
		return clientFor(t, srv, func(c *salesforce.Options) {
			c.ClientSecret = ""
			c.Username = srv.Username
			c.PrivateKeyPEM = srv.PrivateKeyPEM
			if edit != nil {
				edit(c)
			}
		})
	}
	require.NoError(t, jwtClient(nil).Ping(t.Context()))

	for name, tc := range map[string]struct {
		edit func(*salesforce.Options)
		code string
	}{
		"unknown user":   {func(c *salesforce.Options) { c.Username = "someone@example.com" }, "invalid_grant"},
		"wrong aud":      {func(c *salesforce.Options) { c.Audience = "https://example.com" }, "invalid_grant"},
		"wrong issuer":   {func(c *salesforce.Options) { c.ClientID = "3MVG9unknown" }, "invalid_client_id"},
		"sandbox aud ok": {func(c *salesforce.Options) { c.Audience = "https://test.salesforce.com" }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			err := jwtClient(tc.edit).Ping(t.Context())
			if tc.code == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, connectors.ErrUnauthorized)
			var apiErr *connectors.APIError
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tc.code, apiErr.Code)
		})
	}
}

func TestBadSecretIsUnauthorizedAndNotEchoed(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	c := clientFor(t, srv, func(c *salesforce.Options) { c.ClientSecret = "WRONG-SECRET-VALUE" })
	err := c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.True(t, connectors.Permanent(err))
	require.NotContains(t, err.Error(), "WRONG-SECRET-VALUE")
	require.Contains(t, err.Error(), "invalid_client")
}

func TestConfigValidation(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	for field, cfg := range map[string]salesforce.Options{
		"LoginURL":      {ClientID: "x", ClientSecret: "y"},
		"LoginURL ":     {LoginURL: "http://acme.my.salesforce.com", ClientID: "x", ClientSecret: "y"},
		"ClientID":      {LoginURL: srv.URL, ClientSecret: "y"},
		"ClientSecret":  {LoginURL: srv.URL, ClientID: "x"},
		"APIVersion":    {LoginURL: srv.URL, ClientID: "x", ClientSecret: "y", APIVersion: "62"},
		"PrivateKeyPEM": {LoginURL: srv.URL, ClientID: "x", Username: "u@example.com", PrivateKeyPEM: []byte("not a key")},
		"Username":      {LoginURL: srv.URL, ClientID: "x", PrivateKeyPEM: srv.PrivateKeyPEM},
	} {
		_, err := salesforce.New(cfg)
		require.ErrorContains(t, err, strings.TrimSpace(field), field)
	}
	_, err := salesforce.New(salesforce.Options{LoginURL: srv.URL, ClientID: "x", PrivateKeyPEM: []byte("not a key"), Username: "u"})
	require.NotContains(t, err.Error(), "not a key", "the key must not be echoed")
}

func TestRefreshAfterExpireSessionsRepeatsTheCallOnce(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	c := clientFor(t, srv)
	require.NoError(t, c.Ping(t.Context()))
	srv.ExpireSessions()
	srv.Middleware.ResetCounts()
	require.NoError(t, c.Ping(t.Context()))
	require.Equal(t, 2, srv.TokensIssued())
	require.Equal(t, map[string]int{
		"GET /services/data/{v}/limits": 2, // the 401 and the repeat
		"POST /services/oauth2/token":   1,
	}, srv.Middleware.Counts())
}

func TestInvalidSessionAfterRefreshIsUnauthorized(t *testing.T) {
	// Sessions that die at once: the refreshed token is refused as well, and
	// the client gives up after one refresh instead of looping.
	srv := newOrg(t, salesforcetest.Options{SessionTTL: -time.Second})
	c := clientFor(t, srv)
	err := c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrUnauthorized)
	require.Equal(t, 2, srv.TokensIssued())
	require.Equal(t, 2, srv.Middleware.Counts()["GET /services/data/{v}/limits"])
}

func seedContacts(srv *salesforcetest.Server, n int, optedOut bool) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = srv.AddContact(salesforcetest.Person{LastName: fmt.Sprint("P", i), Email: fmt.Sprintf("p%d@example.com", i), OptedOut: optedOut})
	}
	return out
}

func TestPagingFollowsNextRecordsUrl(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	want := seedContacts(srv, 2300, true)
	seedContacts(srv, 50, false)
	c := clientFor(t, srv)

	got := readAll(t, c, connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 1000})
	require.Equal(t, want, ids(got))
	counts := srv.Middleware.Counts()
	// Batches of 2,000: the second page is the rest of the first batch,
	// kept from the first call; the third follows the locator.
	require.Equal(t, 1, counts["GET /services/data/{v}/query"])
	require.Equal(t, 1, counts["GET /services/data/{v}/query/{locator}"])
	for _, r := range got {
		require.True(t, r.OptedOut)
		require.True(t, r.InLists)
		require.Equal(t, "Contact", r.Ref.Type)
	}
}

func TestPagesSmallerThanTheMinimumBatch(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	want := seedContacts(srv, 450, true)
	c := clientFor(t, srv)
	got := readAll(t, c, connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 150})
	require.Equal(t, want, ids(got))
}

func TestLocatorOfAnExpiredSessionResumesFromKeyset(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	want := seedContacts(srv, 2300, true)
	c := clientFor(t, srv)
	q := connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 1000}
	page, err := c.OptedOut(t.Context(), q)
	require.NoError(t, err)
	got := page.Records
	// The session ends between pages (as after a Temporal retry hours
	// later); the locator belongs to the dead session.
	srv.ExpireSessions()
	q.Cursor = page.Next
	got = append(got, readAll(t, c, q)...)
	require.Equal(t, want, ids(got))
	require.Equal(t, 2, srv.TokensIssued())
}

func TestCursorFromAnotherQueryIsRejected(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	seedContacts(srv, 300, true)
	c := clientFor(t, srv)
	page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 100})
	require.NoError(t, err)
	_, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Lead"}, Field: standard, PageSize: 100, Cursor: page.Next})
	require.ErrorIs(t, err, connectors.ErrInvalid)
	_, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, Cursor: "garbage!"})
	require.ErrorIs(t, err, connectors.ErrInvalid)
}

func TestSetOptOutWithFailingRecords(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	good := seedContacts(srv, 3, false)
	lead := srv.AddLead(salesforcetest.Person{LastName: "L", Email: "lead@example.com"})
	gone := srv.AddContact(salesforcetest.Person{LastName: "Gone", Email: "gone@example.com"})
	srv.Delete(gone)
	c := clientFor(t, srv)

	refs := []connectors.RecordRef{
		{Type: "Contact", ID: good[0]},
		{Type: "Contact", ID: gone},
		{Type: "Lead", ID: lead},
		{Type: "Contact", ID: good[1]},
		{Type: "Contact", ID: lead}, // a Lead id sent as a Contact
		{Type: "Opportunity", ID: good[2]},
		{Type: "Contact", ID: good[2]},
		{Type: "Contact", ID: good[2]}, // duplicate
	}
	res, err := c.SetOptOut(t.Context(), standard, refs)
	require.NoError(t, err)
	require.Equal(t, 4, res.Written)
	codes := map[string]string{}
	for _, f := range res.Failed {
		codes[f.Record.String()] = f.Code
		require.NotEmpty(t, f.Message)
	}
	require.Equal(t, map[string]string{
		"Contact/" + gone:        "ENTITY_IS_DELETED",
		"Contact/" + lead:        "MALFORMED_ID",
		"Opportunity/" + good[2]: "INVALID_TYPE",
	}, codes)
	for _, id := range append(slices.Clone(good), lead) {
		rec, ok := srv.Record(id)
		require.True(t, ok)
		require.Equal(t, true, rec["HasOptedOutOfEmail"], id)
	}
	require.Equal(t, 1, srv.Middleware.Counts()["PATCH /services/data/{v}/composite/sobjects"])

	// Idempotent: a second write succeeds and changes nothing.
	res, err = c.SetOptOut(t.Context(), standard, refs[:1])
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	require.Empty(t, res.Failed)

	_, err = c.SetOptOut(t.Context(), standard, make([]connectors.RecordRef, 201))
	require.ErrorContains(t, err, "refs")
}

// TestPageFromAnotherProcessReadsTheBatchAgain: a cursor inside a batch
// whose rest this client does not hold (another worker, a restart) reads
// the batch again and returns the same page.
func TestPageFromAnotherProcessReadsTheBatchAgain(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	want := seedContacts(srv, 2300, true)
	q := connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 1000}
	first, err := clientFor(t, srv).OptedOut(t.Context(), q)
	require.NoError(t, err)
	require.Equal(t, want[:1000], ids(first.Records))
	before := srv.Middleware.Counts()["GET /services/data/{v}/query"]
	q.Cursor = first.Next
	rest := readAll(t, clientFor(t, srv), q)
	require.Equal(t, want[1000:], ids(rest))
	require.Equal(t, before+1, srv.Middleware.Counts()["GET /services/data/{v}/query"],
		"the rest read again from the keyset, in one batch of up to 2,000")
}

func TestBudgetRunsOutMidRun(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{DailyLimit: 100})
	seedContacts(srv, 4500, true)
	c := clientFor(t, srv)
	srv.SetAPIUsage(98, 0)
	q := connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 200}
	var err error
	pages := 0
	for range 30 {
		var page connectors.RecordPage
		page, err = c.OptedOut(t.Context(), q)
		if err != nil {
			break
		}
		pages++
		q.Cursor = page.Next
	}
	require.Equal(t, 20, pages, "the two calls left: two batches of 2,000, ten pages each")
	require.ErrorIs(t, err, connectors.ErrQuotaExhausted)
	require.True(t, connectors.Permanent(err))
	require.Contains(t, err.Error(), "daily API request budget is spent")
	require.Contains(t, err.Error(), "100/100")
	used, max, ok := c.APIUsage()
	require.True(t, ok)
	require.Equal(t, 100, used)
	require.Equal(t, 100, max)
	// Not retried: one locator call beyond the two that succeeded.
	require.Equal(t, 2, srv.Middleware.Counts()["GET /services/data/{v}/query/{locator}"])
}

func TestCampaignScoping(t *testing.T) {
	clk := newClock()
	srv := newOrg(t, salesforcetest.Options{Clock: clk.Now})
	camp := srv.AddCampaign("Spring newsletter")
	other := srv.AddCampaign("Other")

	// Opted out long before the watermark, joins the campaign after it.
	late := srv.AddContact(salesforcetest.Person{LastName: "Late", Email: "late@example.com", OptedOut: true})
	// Opted out long ago, in the campaign long ago: already handled.
	old := srv.AddContact(salesforcetest.Person{LastName: "Old", Email: "old@example.com", OptedOut: true})
	srv.AddCampaignMember(camp, old)
	clk.Advance(24 * time.Hour)
	since := clk.Now()
	clk.Advance(time.Hour)

	in := srv.AddContact(salesforcetest.Person{LastName: "In", Email: "in@example.com", OptedOut: true})
	srv.AddCampaignMember(camp, in)
	out := srv.AddContact(salesforcetest.Person{LastName: "Out", Email: "out@example.com", OptedOut: true})
	srv.AddCampaignMember(other, out)
	subscribed := srv.AddContact(salesforcetest.Person{LastName: "Sub", Email: "sub@example.com"})
	srv.AddCampaignMember(camp, subscribed)
	lead := srv.AddLead(salesforcetest.Person{LastName: "Lead", Email: "lead@example.com", OptedOut: true})
	srv.AddCampaignMember(camp, lead)
	srv.AddCampaignMember(camp, late)

	c := clientFor(t, srv)
	got := readAll(t, c, connectors.OptOutQuery{Types: []string{"Contact", "Lead"}, Field: standard, Since: since, Lists: []string{camp}, PageSize: 1000})
	inLists := map[string]bool{}
	for _, r := range got {
		inLists[r.Ref.String()] = r.InLists
		require.True(t, r.OptedOut)
	}
	require.Equal(t, map[string]bool{
		"Contact/" + in:   true,
		"Contact/" + late: true,
		"Contact/" + out:  false,
		"Lead/" + lead:    true,
	}, inLists)

	// The first run (no watermark) reads everything opted out.
	got = readAll(t, c, connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, Lists: []string{camp}, PageSize: 2})
	require.Len(t, got, 4)

	_, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, Lists: []string{"701' OR Id != '"}})
	require.ErrorContains(t, err, "Lists")
}

func TestPersonAccounts(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	camp := srv.AddCampaign("C")
	pa := srv.AddPersonAccount(salesforcetest.Person{FirstName: "Pat", LastName: "Person", Email: "pat@example.com", OptedOut: true})
	srv.AddCampaignMember(camp, pa)
	srv.AddBusinessAccount("Acme Inc")
	contact := srv.AddContact(salesforcetest.Person{LastName: "C", Email: "c@example.com", OptedOut: true})
	c := clientFor(t, srv)

	got := readAll(t, c, connectors.OptOutQuery{Types: []string{"Contact", "Account"}, Field: standard, Lists: []string{camp}, PageSize: 100})
	refs := map[string]bool{}
	for _, r := range got {
		refs[r.Ref.String()] = r.InLists
	}
	// The person is seen once, as the Account, in the campaign through its
	// person contact.
	require.Equal(t, map[string]bool{"Account/" + pa: true, "Contact/" + contact: false}, refs)

	recs, err := c.FindByEmail(t.Context(), []string{"Contact", "Account"}, standard, []string{"PAT@example.com"})
	require.NoError(t, err)
	require.Len(t, recs, 1)
	require.Equal(t, connectors.RecordRef{Type: "Account", ID: pa}, recs[0].Ref)
	require.Equal(t, "PAT@example.com", recs[0].Email, "the address as asked for")
	require.True(t, recs[0].OptedOut)

	require.NoError(t, srv.Update(pa, map[string]any{"PersonHasOptedOutOfEmail": false}))
	res, err := c.SetOptOut(t.Context(), standard, []connectors.RecordRef{recs[0].Ref})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	acct, _ := srv.Record(pa)
	require.Equal(t, true, acct["PersonHasOptedOutOfEmail"])
	person, _ := srv.Record(acct["PersonContactId"].(string))
	require.Equal(t, true, person["HasOptedOutOfEmail"], "mirrored onto the person contact")
}

func TestCustomAndInvertedFields(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	optedOut := srv.AddContact(salesforcetest.Person{LastName: "A", Email: "a@example.com", Custom: map[string]any{"Email_Opt_Out__c": true, "Marketing_Opt_In__c": false}})
	optedIn := srv.AddContact(salesforcetest.Person{LastName: "B", Email: "b@example.com", Custom: map[string]any{"Email_Opt_Out__c": false, "Marketing_Opt_In__c": true}})
	pa := srv.AddPersonAccount(salesforcetest.Person{LastName: "P", Email: "p@example.com", Custom: map[string]any{"Email_Opt_Out__c": true, "Marketing_Opt_In__c": false}})
	lead := srv.AddLead(salesforcetest.Person{LastName: "L", Email: "l@example.com", Custom: map[string]any{"Email_Opt_Out__c": false, "Marketing_Opt_In__c": true}})
	c := clientFor(t, srv)
	custom := connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "Email_Opt_Out__c"}
	inverted := connectors.OptOutField{Kind: connectors.OptOutInverted, Field: "Marketing_Opt_In__c"}
	types := []string{"Contact", "Lead", "Account"}

	for _, f := range []connectors.OptOutField{custom, inverted} {
		got := readAll(t, c, connectors.OptOutQuery{Types: types, Field: f, PageSize: 10})
		require.ElementsMatch(t, []string{optedOut, pa}, ids(got), f.Kind)
	}
	recs, err := c.FindByEmail(t.Context(), types, inverted, []string{"b@example.com", "l@example.com", "p@example.com"})
	require.NoError(t, err)
	state := map[string]bool{}
	for _, r := range recs {
		state[r.Ref.ID] = r.OptedOut
	}
	require.Equal(t, map[string]bool{optedIn: false, lead: false, pa: true}, state)

	res, err := c.SetOptOut(t.Context(), inverted, []connectors.RecordRef{{Type: "Contact", ID: optedIn}, {Type: "Lead", ID: lead}})
	require.NoError(t, err)
	require.Equal(t, 2, res.Written)
	rec, _ := srv.Record(optedIn)
	require.Equal(t, false, rec["Marketing_Opt_In__c"])
	require.Equal(t, false, rec["HasOptedOutOfEmail"], "the standard field is left alone")

	res, err = c.SetOptOut(t.Context(), custom, []connectors.RecordRef{{Type: "Lead", ID: lead}})
	require.NoError(t, err)
	require.Equal(t, 1, res.Written)
	rec, _ = srv.Record(lead)
	require.Equal(t, true, rec["Email_Opt_Out__c"])
}

func TestFindByEmail(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	a1 := srv.AddContact(salesforcetest.Person{LastName: "A1", Email: "Shared@Example.com"})
	a2 := srv.AddContact(salesforcetest.Person{LastName: "A2", Email: "shared@example.com", OptedOut: true})
	l := srv.AddLead(salesforcetest.Person{LastName: "L", Email: "shared@example.com"})
	q := srv.AddContact(salesforcetest.Person{LastName: "O'Brien", Email: "o'brien@example.com"})
	srv.AddContact(salesforcetest.Person{LastName: "Other", Email: "other@example.com"})
	c := clientFor(t, srv)

	recs, err := c.FindByEmail(t.Context(), []string{"Contact", "Lead"}, standard, []string{"shared@example.com", "o'brien@example.com", "nobody@example.com", "SHARED@example.com"})
	require.NoError(t, err)
	got := map[string]bool{}
	for _, r := range recs {
		got[r.Ref.String()] = r.OptedOut
	}
	require.Equal(t, map[string]bool{"Contact/" + a1: false, "Contact/" + a2: true, "Lead/" + l: false, "Contact/" + q: false}, got)

	// A converted Lead is neither found nor writable.
	require.NoError(t, srv.Update(l, map[string]any{"IsConverted": true}))
	recs, err = c.FindByEmail(t.Context(), []string{"Lead"}, standard, []string{"shared@example.com"})
	require.NoError(t, err)
	require.Empty(t, recs)
	res, err := c.SetOptOut(t.Context(), standard, []connectors.RecordRef{{Type: "Lead", ID: l}})
	require.NoError(t, err)
	require.Equal(t, "CANNOT_UPDATE_CONVERTED_LEAD", res.Failed[0].Code)

	_, err = c.FindByEmail(t.Context(), []string{"Contact"}, standard, make([]string, 201))
	require.ErrorContains(t, err, "emails")
	_, err = c.FindByEmail(t.Context(), []string{"Opportunity"}, standard, []string{"x@example.com"})
	require.ErrorContains(t, err, "Opportunity")
}

func TestListMembers(t *testing.T) {
	clk := newClock()
	srv := newOrg(t, salesforcetest.Options{Clock: clk.Now})
	camp := srv.AddCampaign("C")
	member := srv.AddContact(salesforcetest.Person{FirstName: "Ann", LastName: "Lee", Email: "ann@example.com", Custom: map[string]any{"Score__c": 12.5}})
	srv.AddCampaignMember(camp, member)
	srv.AddContact(salesforcetest.Person{FirstName: "Not", LastName: "Member", Email: "not@example.com"})
	lead := srv.AddLead(salesforcetest.Person{LastName: "Lead", Email: "lead@example.com", OptedOut: true})
	srv.AddCampaignMember(camp, lead)
	c := clientFor(t, srv)

	page, err := c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"Contact", "Lead"}, Lists: []string{camp}, Fields: []string{"FirstName", "LastName"}})
	require.NoError(t, err)
	require.NotEmpty(t, page.Next, "the page ends with the Contact phase")
	require.Len(t, page.Records, 1)
	require.Equal(t, map[string]string{"FirstName": "Ann", "LastName": "Lee"}, page.Records[0].Fields)
	page, err = c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"Contact", "Lead"}, Lists: []string{camp}, Fields: []string{"FirstName", "LastName"}, Cursor: page.Next})
	require.NoError(t, err)
	require.Len(t, page.Records, 1)
	require.Equal(t, lead, page.Records[0].Ref.ID)
	require.True(t, page.Records[0].OptedOut)
	require.Equal(t, map[string]string{"FirstName": "", "LastName": "Lead"}, page.Records[0].Fields)

	_, err = c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"Contact"}, Fields: []string{"Name FROM User --"}})
	require.ErrorContains(t, err, "Fields")
}

func TestListMembersReadsTheQuerysOptOutField(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	out := srv.AddContact(salesforcetest.Person{LastName: "Out", Email: "out@example.com", Custom: map[string]any{"Email_Opt_Out__c": true}})
	srv.AddContact(salesforcetest.Person{LastName: "In", Email: "in@example.com", Custom: map[string]any{"Email_Opt_Out__c": false}})
	c := clientFor(t, srv)
	page, err := c.ListMembers(t.Context(), connectors.ListMembersQuery{Types: []string{"Contact"},
		Field: connectors.OptOutField{Kind: connectors.OptOutCustom, Field: "Email_Opt_Out__c"}})
	require.NoError(t, err)
	require.Len(t, page.Records, 2)
	for _, r := range page.Records {
		require.Equal(t, r.Ref.ID == out, r.OptedOut, r.Email)
	}
}

func TestFaultsAreClassified(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	c := clientFor(t, srv)
	require.NoError(t, c.Ping(t.Context()))

	srv.Middleware.SetFaults(emulator.Faults{Rate5xx: 1})
	err := c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrServer)
	require.False(t, connectors.Permanent(err))

	srv.Middleware.SetFaults(emulator.Faults{Rate429: 1})
	err = c.Ping(t.Context())
	require.ErrorIs(t, err, connectors.ErrRateLimited)

	// Over the concurrent-request limit: hold one request, then send another.
	srv.Middleware.SetFaults(emulator.Faults{RateHang: 1, HangFor: 10 * time.Second})
	srv.Middleware.SetLimit(1)
	srv.Middleware.ResetCounts()
	hung, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Ping(hung)
	}()
	require.Eventually(t, func() bool { return srv.Middleware.PeakInFlight() == 1 }, 5*time.Second, time.Millisecond)
	srv.Middleware.SetFaults(emulator.Faults{})
	err = c.Ping(t.Context())
	cancel()
	<-done
	require.ErrorIs(t, err, connectors.ErrRateLimited, "the concurrent limit is not the daily budget")
	require.False(t, connectors.Permanent(err))
}

// BenchmarkOptedOutPaging reads 10,000 opted-out Contacts in pages of
// 1,000 and reports records per second and API calls per page.
func BenchmarkOptedOutPaging(b *testing.B) {
	srv := salesforcetest.NewServer(salesforcetest.Options{DailyLimit: 1 << 30})
	defer srv.Close()
	for i := range 10000 {
		srv.AddContact(salesforcetest.Person{LastName: fmt.Sprint(i), Email: fmt.Sprintf("b%d@example.com", i), OptedOut: true})
	}
	c, err := salesforce.New(salesforce.Options{LoginURL: srv.URL, ClientID: srv.ClientID, ClientSecret: srv.ClientSecret})
	require.NoError(b, err)
	srv.Middleware.ResetCounts()
	records, pages := 0, 0
	for b.Loop() {
		q := connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 1000}
		for {
			page, err := c.OptedOut(b.Context(), q)
			require.NoError(b, err)
			records += len(page.Records)
			pages++
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(srv.Middleware.Total()-1)/float64(pages), "calls/page")
}
