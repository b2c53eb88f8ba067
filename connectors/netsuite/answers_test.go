package netsuite_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/netsuite"
	"github.com/optoutsync/optoutsync/connectors/netsuite/netsuitetest"
)

// rewriting answers every call whose path contains part with body
// (status 200) instead of what the emulator said.
func rewriting(part, body string) func(*netsuite.Options) {
	return func(o *netsuite.Options) {
		o.Base = connectorstest.Rewriter{Match: func(r *http.Request) bool { return strings.Contains(r.URL.Path, part) }, Edit: connectorstest.Replace(body)}
	}
}

// notCollections are 2xx answers that are not a SuiteQL or saved-search
// collection.
var notCollections = map[string]string{
	"null":         `null`,
	"empty object": `{}`,
	"no items":     `{"links":[],"count":0,"offset":0,"hasMore":false,"totalResults":3}`,
	"null items":   `{"links":[],"count":0,"offset":0,"hasMore":false,"totalResults":3,"items":null}`,
	"no hasMore":   `{"links":[],"count":0,"offset":0,"totalResults":3,"items":[]}`,
	"error document": `{"type":"https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.1","title":"Internal Server Error","status":500,` +
		`"o:errorDetails":[{"detail":"An unexpected error occurred.","o:errorCode":"UNEXPECTED_ERROR"}]}`,
}

const emptyCollection = `{"links":[],"count":0,"offset":0,"hasMore":false,"totalResults":0,"items":[]}`

// TestSuiteQLAnswerThatIsNotACollectionIsAnError: a 200 SuiteQL answer of
// the opted-out read that is not a collection fails the read, retryably,
// instead of ending it as if no record were left (the watermark would move
// past the opt-outs it did not return); and a lookup with such an answer
// fails instead of finding no record.
func TestSuiteQLAnswerThatIsNotACollectionIsAnError(t *testing.T) {
	for name, body := range notCollections {
		t.Run(name, func(t *testing.T) {
			s := netsuitetest.NewServer(netsuitetest.Options{})
			defer s.Close()
			since := time.Now().Add(-time.Hour).Truncate(time.Second)
			s.AddCustomer(netsuitetest.Entity{Email: "a@example.com", SubscriptionStatus: "2", LastModified: since.Add(time.Minute)})
			c := tbaClient(t, s, rewriting("/query/v1/suiteql", body))

			page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Since: since})
			require.Error(t, err, "read %v", page.Records)
			require.False(t, connectors.Permanent(err))
			require.ErrorContains(t, err, "/services/rest/query/v1/suiteql")

			recs, err := c.FindByEmail(t.Context(), both, standard, []string{"a@example.com"})
			require.Error(t, err, "found %v", recs)
			require.False(t, connectors.Permanent(err))
			require.NotContains(t, err.Error(), "a@example.com")
		})
	}
}

// TestSavedSearchAnswerThatIsNotACollectionIsAnError: a 200 saved-search
// result that is not a collection fails the read instead of reading as a
// list without members (its opted-out members would not be returned, and
// those modified since the watermark would be returned as outside it).
func TestSavedSearchAnswerThatIsNotACollectionIsAnError(t *testing.T) {
	for name, body := range notCollections {
		t.Run(name, func(t *testing.T) {
			s := netsuitetest.NewServer(netsuitetest.Options{})
			defer s.Close()
			since := time.Now().Add(-time.Hour).Truncate(time.Second)
			in := s.AddCustomer(netsuitetest.Entity{Email: "in@example.com", SubscriptionStatus: "4", LastModified: since.Add(-24 * time.Hour)})
			s.AddSavedSearch("customsearch_a", ref("customer", in))
			c := tbaClient(t, s, rewriting("/query/v1/savedsearch/", body))

			page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Since: since, Lists: []string{"customsearch_a"}})
			require.Error(t, err, "read %v", page.Records)
			require.False(t, connectors.Permanent(err))
			require.ErrorContains(t, err, "customsearch_a")
		})
	}
}

// TestEmptyCollectionIsNoRows: an empty result comes as "items": [] and is
// a read or a lookup that found nothing, not an error.
func TestEmptyCollectionIsNoRows(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	s.AddCustomer(netsuitetest.Entity{Email: "a@example.com", SubscriptionStatus: "2"})
	c := tbaClient(t, s, rewriting("/query/v1/", emptyCollection))
	page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard})
	require.NoError(t, err)
	require.Empty(t, page.Records)
	require.Empty(t, page.Next)
	recs, err := c.FindByEmail(t.Context(), both, standard, []string{"a@example.com"})
	require.NoError(t, err)
	require.Empty(t, recs)
	page, err = c.OptedOut(t.Context(), connectors.OptOutQuery{Types: both, Field: standard, Lists: []string{"customsearch_a"}})
	require.NoError(t, err)
	require.Empty(t, page.Records)
}
