package bullhorn_test

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/bullhorn"
	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
	"github.com/optoutsync/optoutsync/connectors/connectorstest"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// rewriting answers every call whose path matches with body (status 200)
// instead of what the emulator said.
func rewriting(path, body string) func(*bullhorn.Options) {
	re := regexp.MustCompile(path)
	return func(o *bullhorn.Options) {
		o.Transport = connectorstest.Rewriter{Match: func(r *http.Request) bool { return re.MatchString(r.URL.Path) }, Edit: connectorstest.Replace(body)}
	}
}

const (
	searchPath    = `/search/`
	tearsheetPath = `/entity/Tearsheet/`
	byIDPath      = `/entity/(Candidate|ClientContact|Lead)/`
)

// noData are 2xx answers without the data the connector reads.
var noData = map[string]string{
	"null":         `null`,
	"empty object": `{}`,
	"error":        `{"errorMessage":"An unexpected error has occurred.","errorMessageKey":"errors.internal","errorCode":500}`,
	"no data":      `{"total":3,"start":0,"count":0}`,
	"null data":    `{"total":3,"start":0,"count":0,"data":null}`,
}

// TestSearchAnswerWithoutDataIsAnError: a 200 search answer of the
// opted-out read without data fails the read, retryably, instead of ending
// it as if no record were left (the watermark would move past the opt-outs
// it did not return); and a lookup with such an answer fails instead of
// finding no record.
func TestSearchAnswerWithoutDataIsAnError(t *testing.T) {
	for name, body := range noData {
		t.Run(name, func(t *testing.T) {
			s := bullhorntest.NewServer(bullhorntest.Options{})
			t.Cleanup(s.Close)
			s.AddCandidate(bullhorntest.Person{Email: "a@example.com", OptedOut: true})
			c := newClient(t, s, rewriting(searchPath, body))

			page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: bullhorn.RecordTypes, Field: std})
			require.Error(t, err, "read %v", page.Records)
			require.False(t, connectors.Permanent(err))
			require.ErrorContains(t, err, "search/Candidate")

			recs, err := c.FindByEmail(t.Context(), bullhorn.RecordTypes, std, []string{"a@example.com"})
			require.Error(t, err, "found %v", recs)
			require.False(t, connectors.Permanent(err))
			require.NotContains(t, err.Error(), "a@example.com")
		})
	}
}

// TestTearsheetAnswerWithoutDataIsAnError: a 200 answer of a tearsheet's
// members, or of the members' records read by id, without data fails the
// read instead of reading as a tearsheet without those members (their
// opt-outs would not be returned).
func TestTearsheetAnswerWithoutDataIsAnError(t *testing.T) {
	for name, body := range noData {
		for part, path := range map[string]string{"members": tearsheetPath, "records": byIDPath} {
			t.Run(name+"/"+part, func(t *testing.T) {
				clock := emulator.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
				s := bullhorntest.NewServer(bullhorntest.Options{Clock: clock.Now})
				t.Cleanup(s.Close)
				ts := s.AddTearsheet("Newsletter")
				in := s.AddCandidate(bullhorntest.Person{Email: "in@example.com", OptedOut: true})
				s.AddToTearsheet(ts, in)
				clock.Advance(time.Hour)
				c := newClient(t, s, rewriting(path, body))

				page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: []string{"Candidate"}, Field: std, Since: clock.Now(), Lists: []string{id(ts)}})
				require.Error(t, err, "read %v", page.Records)
				require.False(t, connectors.Permanent(err))
				require.NotContains(t, err.Error(), "@")
			})
		}
	}
}

// TestEmptyDataIsNoRows: an empty answer comes as "data": [] and is a
// read or a lookup that found nothing, not an error.
func TestEmptyDataIsNoRows(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{})
	t.Cleanup(s.Close)
	s.AddCandidate(bullhorntest.Person{Email: "a@example.com", OptedOut: true})
	c := newClient(t, s, rewriting(searchPath, `{"total":0,"start":0,"count":0,"data":[]}`))
	page, err := c.OptedOut(t.Context(), connectors.OptOutQuery{Types: bullhorn.RecordTypes, Field: std})
	require.NoError(t, err)
	require.Empty(t, page.Records)
	require.Empty(t, page.Next)
	recs, err := c.FindByEmail(t.Context(), bullhorn.RecordTypes, std, []string{"a@example.com"})
	require.NoError(t, err)
	require.Empty(t, recs)
}

// TestUpdateAnswerThatDoesNotConfirmIsNotWritten: an opt-out is counted
// written only when the answer names the record as changed; an error
// document, an empty body or another record's id answered 2xx is a
// retryable failure of that record, never an opt-out written.
func TestUpdateAnswerThatDoesNotConfirmIsNotWritten(t *testing.T) {
	answers := map[string]string{
		"null":         `null`,
		"empty object": `{}`,
		"error":        `{"errorMessage":"An unexpected error has occurred.","errorMessageKey":"errors.internal","errorCode":500}`,
		"other record": `{"changedEntityType":"Candidate","changedEntityId":999999,"changeType":"UPDATE"}`,
	}
	for name, body := range answers {
		t.Run(name, func(t *testing.T) {
			s := bullhorntest.NewServer(bullhorntest.Options{})
			t.Cleanup(s.Close)
			id := s.AddCandidate(bullhorntest.Person{Email: "a@example.com"})
			c := newClient(t, s, rewriting(byIDPath, body))
			ref := connectors.RecordRef{Type: "Candidate", ID: strconv.FormatInt(id, 10)}
			res, err := c.SetOptOut(t.Context(), std, []connectors.RecordRef{ref})
			require.NoError(t, err)
			require.Zero(t, res.Written)
			require.Len(t, res.Failed, 1)
			require.Equal(t, ref, res.Failed[0].Record)
			require.True(t, res.Failed[0].Retryable)
		})
	}
}
