package salesforce_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/salesforce"
	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
)

// bodyRewriter answers every GET whose path matches with body (status
// 200) instead of what the emulator said.
func bodyRewriter(path *regexp.Regexp, body string) http.RoundTripper {
	return connectorstest.Rewriter{Match: func(r *http.Request) bool { return r.Method == http.MethodGet && path.MatchString(r.URL.Path) },
		Edit: connectorstest.Replace(body)}
}

var (
	anyQuery   = regexp.MustCompile(`/query(/|$)`)
	locatorGET = regexp.MustCompile(`/query/[^/]+$`)
)

// notQueryResults are 2xx answers that are not a SOQL query result.
var notQueryResults = map[string]string{
	"null":                 `null`,
	"empty object":         `{}`,
	"no records":           `{"totalSize":3,"done":true}`,
	"null records":         `{"totalSize":3,"done":true,"records":null}`,
	"no done":              `{"totalSize":3,"records":[]}`,
	"not done and no next": `{"totalSize":3,"done":false,"records":[]}`,
	"error object":         `{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}`,
}

// TestQueryAnswerThatIsNotAResultIsAnError: a 200 answer of the opted-out
// read that is not a query result fails the read, retryably, instead of
// ending it as if no record were left, which would move the watermark past
// the opt-outs it did not return. That holds for the first batch and for a
// later batch read from its locator.
func TestQueryAnswerThatIsNotAResultIsAnError(t *testing.T) {
	for name, body := range notQueryResults {
		for batch, path := range map[string]*regexp.Regexp{"first": anyQuery, "locator": locatorGET} {
			t.Run(name+"/"+batch, func(t *testing.T) {
				srv := newOrg(t, salesforcetest.Options{})
				seedContacts(srv, 2300, true)
				c := clientFor(t, srv, func(o *salesforce.Options) { o.Transport = bodyRewriter(path, body) })
				q := connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard, PageSize: 1000}
				var err error
				var read int
				for range 5 {
					var page connectors.RecordPage
					page, err = c.OptedOut(t.Context(), q)
					if err != nil || page.Next == "" {
						break
					}
					read += len(page.Records)
					q.Cursor = page.Next
				}
				require.Error(t, err, "read %d of 2300 and ended", read)
				require.False(t, connectors.Permanent(err))
				require.ErrorContains(t, err, "/query")
				require.NotContains(t, err.Error(), "@")
			})
		}
	}
}

// TestFindByEmailAnswerThatIsNotAResultIsAnError: a lookup whose 200
// answer is not a query result fails, retryably, instead of reporting that
// no record has the address (the opt-out would not be written).
func TestFindByEmailAnswerThatIsNotAResultIsAnError(t *testing.T) {
	for name, body := range notQueryResults {
		t.Run(name, func(t *testing.T) {
			srv := newOrg(t, salesforcetest.Options{})
			srv.AddContact(salesforcetest.Person{LastName: "A", Email: "a@example.com"})
			c := clientFor(t, srv, func(o *salesforce.Options) { o.Transport = bodyRewriter(anyQuery, body) })
			recs, err := c.FindByEmail(t.Context(), []string{"Contact"}, standard, []string{"a@example.com"})
			require.Error(t, err, "found %v", recs)
			require.False(t, connectors.Permanent(err))
			require.NotContains(t, err.Error(), "a@example.com")
		})
	}
}

// TestEmptyQueryResultIsNoRows: an empty result comes as "records": [],
// and is a read or a lookup that found nothing, not an error.
func TestEmptyQueryResultIsNoRows(t *testing.T) {
	srv := newOrg(t, salesforcetest.Options{})
	srv.AddContact(salesforcetest.Person{LastName: "A", Email: "a@example.com", OptedOut: true})
	c := clientFor(t, srv, func(o *salesforce.Options) {
		o.Transport = bodyRewriter(anyQuery, `{"totalSize":0,"done":true,"records":[]}`)
	})
	page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Contact"}, Field: standard})
	require.NoError(t, err)
	require.Empty(t, page.Records)
	require.Empty(t, page.Next)
	recs, err := c.FindByEmail(t.Context(), []string{"Contact"}, standard, []string{"a@example.com"})
	require.NoError(t, err)
	require.Empty(t, recs)
}

// compositeRewriter answers the composite update with body (status 200).
func compositeRewriter(body string) http.RoundTripper {
	return connectorstest.Rewriter{Match: func(r *http.Request) bool {
		return r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/composite/sobjects")
	}, Edit: connectorstest.Replace(body)}
}

// TestCompositeResultWithoutReasonIsRetried: a result item of the
// composite update that fails without naming why (null, {}, no errors) is
// a retryable failure of its record, so its opt-out is written by a later
// run, never recorded as refused for good.
func TestCompositeResultWithoutReasonIsRetried(t *testing.T) {
	for name, body := range map[string]string{
		"null item":   `[null]`,
		"empty item":  `[{}]`,
		"no errors":   `[{"success":false,"errors":[]}]`,
		"null errors": `[{"id":null,"success":false,"errors":null}]`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := newOrg(t, salesforcetest.Options{})
			id := srv.AddContact(salesforcetest.Person{LastName: "A", Email: "a@example.com"})
			c := clientFor(t, srv, func(o *salesforce.Options) { o.Transport = compositeRewriter(body) })
			ref := connectors.RecordRef{Type: "Contact", ID: id}
			res, err := c.SetOptOut(t.Context(), standard, []connectors.RecordRef{ref})
			require.NoError(t, err)
			require.Zero(t, res.Written)
			require.Len(t, res.Failed, 1)
			require.Equal(t, ref, res.Failed[0].Record)
			require.True(t, res.Failed[0].Retryable, "%+v", res.Failed[0])
		})
	}
}
