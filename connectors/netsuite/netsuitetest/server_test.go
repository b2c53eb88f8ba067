package netsuitetest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
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

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

var nonceSeq struct {
	sync.Mutex
	n int
}

func nonce() string {
	nonceSeq.Lock()
	defer nonceSeq.Unlock()
	nonceSeq.n++
	return "nonce" + strconv.Itoa(nonceSeq.n)
}

// call sends one request signed with TBA; tamper may change the request
// after signing.
func call(t *testing.T, s *netsuitetest.Server, method, path string, body any, header map[string]string, tamper func(*http.Request)) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.URL+path, rd)
	require.NoError(t, err)
	creds := netsuite.TBA{ConsumerKey: s.ConsumerKey, ConsumerSecret: s.ConsumerSecret, TokenID: s.TokenID, TokenSecret: s.TokenSecret}
	req.Header.Set("Authorization", netsuite.AuthorizationHeader(method, req.URL, s.AccountID, creds, nonce(), strconv.FormatInt(time.Now().Unix(), 10)))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if tamper != nil {
		tamper(req)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if len(data) > 0 {
		require.NoError(t, json.Unmarshal(data, &a.body), string(data))
	}
	return a
}

func suiteql(t *testing.T, s *netsuitetest.Server, q, query string) answer {
	return call(t, s, "POST", "/services/rest/query/v1/suiteql"+query, map[string]any{"q": q}, map[string]string{"Prefer": "transient"}, nil)
}

func errorCode(a answer) string {
	d := a.body["o:errorDetails"].([]any)[0].(map[string]any)
	return d["o:errorCode"].(string)
}

func TestBadSignatureIsInvalidLogin(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()

	a := call(t, s, "POST", "/services/rest/query/v1/suiteql?limit=5", map[string]any{"q": "SELECT id FROM customer"}, map[string]string{"Prefer": "transient"},
		func(r *http.Request) { r.URL.RawQuery = "limit=6" }) // signed over limit=5
	require.Equal(t, 401, a.status)
	require.Equal(t, "INVALID_LOGIN", errorCode(a))
	require.Equal(t, "Unauthorized", a.body["title"])
	require.Contains(t, a.header.Get("WWW-Authenticate"), `error="token_rejected"`)

	// The same request signed correctly passes; replaying its header does not.
	var replay string
	a = call(t, s, "POST", "/services/rest/query/v1/suiteql?limit=5", map[string]any{"q": "SELECT id FROM customer"}, map[string]string{"Prefer": "transient"},
		func(r *http.Request) { replay = r.Header.Get("Authorization") })
	require.Equal(t, 200, a.status)
	a = call(t, s, "POST", "/services/rest/query/v1/suiteql?limit=5", map[string]any{"q": "SELECT id FROM customer"}, map[string]string{"Prefer": "transient"},
		func(r *http.Request) { r.Header.Set("Authorization", replay) })
	require.Equal(t, 401, a.status, "a reused nonce is refused")

	// No credentials at all.
	a = call(t, s, "GET", "/services/rest/record/v1/customer/1", nil, nil, func(r *http.Request) { r.Header.Del("Authorization") })
	require.Equal(t, 401, a.status)
	require.Equal(t, 3, s.AuthFailures())
}

func TestSuiteQLPagingRules(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{CustomFields: []string{"custentity_optout"}})
	defer s.Close()
	for i := range 25 {
		e := netsuitetest.Entity{Email: "p" + strconv.Itoa(i) + "@example.com", SubscriptionStatus: "2"}
		if i == 0 {
			e.Custom = map[string]any{"custentity_optout": true}
		}
		s.AddCustomer(e)
	}

	a := suiteql(t, s, "SELECT id, email, custentity_optout, firstname FROM customer ORDER BY id", "?limit=10&offset=10")
	require.Equal(t, 200, a.status)
	require.Equal(t, float64(10), a.body["count"])
	require.Equal(t, float64(10), a.body["offset"])
	require.Equal(t, true, a.body["hasMore"])
	require.Equal(t, float64(25), a.body["totalResults"])
	item := a.body["items"].([]any)[0].(map[string]any)
	require.Equal(t, "11", item["id"], "values are strings")
	require.Equal(t, "F", item["custentity_optout"], "booleans are T/F")
	require.NotContains(t, item, "firstname", "NULL columns are left out")
	require.Contains(t, item, "links")

	a = suiteql(t, s, "SELECT id FROM customer ORDER BY id", "?limit=10&offset=20")
	require.Equal(t, false, a.body["hasMore"])
	require.Equal(t, float64(5), a.body["count"])
	for _, l := range a.body["links"].([]any) {
		require.NotEqual(t, "next", l.(map[string]any)["rel"])
	}
	// Past the end: no items, and the whole result still counted.
	a = suiteql(t, s, "SELECT id FROM customer WHERE id > 3 ORDER BY id", "?limit=10&offset=30")
	require.Equal(t, 200, a.status)
	require.Equal(t, float64(0), a.body["count"])
	require.Equal(t, []any{}, a.body["items"])
	require.Equal(t, float64(22), a.body["totalResults"])

	for _, q := range []string{"?limit=1001", "?limit=10&offset=15", "?limit=0"} {
		a = suiteql(t, s, "SELECT id FROM customer", q)
		require.Equal(t, 400, a.status, q)
		require.Equal(t, "INVALID_PARAMETER", errorCode(a), q)
	}
	a = call(t, s, "POST", "/services/rest/query/v1/suiteql", map[string]any{"q": "SELECT id FROM customer"}, nil, nil)
	require.Equal(t, 400, a.status, "Prefer: transient is required")

	for _, q := range []string{"DELETE FROM customer", "SELECT nosuchfield FROM customer", "SELECT id FROM nosuchtable", "SELECT id FROM customer WHERE"} {
		a = suiteql(t, s, q, "")
		require.Equal(t, 400, a.status, q)
		require.Equal(t, "INVALID_PARAMETER", errorCode(a), q)
		require.Contains(t, a.body["o:errorDetails"].([]any)[0].(map[string]any)["detail"], "Invalid search query", q)
	}

	// Bound parameters, LOWER, IN, IS NULL, TO_CHAR/TO_DATE.
	a = call(t, s, "POST", "/services/rest/query/v1/suiteql", map[string]any{
		"q":      "SELECT id, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lm FROM customer WHERE LOWER(email) IN (?, 'P2@EXAMPLE.COM') AND firstname IS NULL AND lastmodifieddate >= TO_DATE('2000-01-01 00:00:00', 'YYYY-MM-DD HH24:MI:SS') ORDER BY id",
		"params": []string{"p1@example.com"},
	}, map[string]string{"Prefer": "transient"}, nil)
	require.Equal(t, 200, a.status, a.body)
	require.Equal(t, float64(1), a.body["count"], "P2@EXAMPLE.COM is not lower case, so only p1 matches")
	require.Regexp(t, `^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`, a.body["items"].([]any)[0].(map[string]any)["lm"])
}

func TestOverTheConcurrencyLimitIs429(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{Concurrency: 2, Faults: emulator.Faults{Latency: 100 * time.Millisecond}})
	defer s.Close()
	var wg sync.WaitGroup
	answers := make(chan answer, 6)
	for range 6 {
		wg.Go(func() { answers <- suiteql(t, s, "SELECT id FROM customer", "") })
	}
	wg.Wait()
	close(answers)
	limited := 0
	for a := range answers {
		if a.status == 429 {
			limited++
			require.Equal(t, "Bad Request", a.body["title"])
			require.Equal(t, float64(429), a.body["status"])
			require.Equal(t, "USER_ERROR", a.body["o:errorCode"])
			require.Equal(t, "CONCURRENCY_LIMIT_EXCEEDED", errorCode(a))
			require.Equal(t, "Concurrent request limit exceeded. Request blocked.", a.body["o:errorDetails"].([]any)[0].(map[string]any)["detail"])
		}
	}
	require.Positive(t, limited)
	require.LessOrEqual(t, s.Middleware.PeakInFlight(), 2)
}

func TestRecordPatchRules(t *testing.T) {
	clock := time.Now().Add(-time.Hour)
	s := netsuitetest.NewServer(netsuitetest.Options{CustomFields: []string{"custentity_optout"}})
	defer s.Close()
	id := s.AddCustomer(netsuitetest.Entity{Email: "a@example.com", SubscriptionStatus: "1", LastModified: clock})
	path := "/services/rest/record/v1/customer/" + id

	a := call(t, s, "PATCH", path, map[string]any{"globalSubscriptionStatus": map[string]string{"id": "2"}, "custentity_optout": true, "custentity_unknown": "x"}, nil, nil)
	require.Equal(t, 204, a.status)
	require.Equal(t, s.URL+path, a.header.Get("Location"))
	e, ok := s.Entity("customer", id)
	require.True(t, ok)
	require.Equal(t, "2", e.SubscriptionStatus)
	require.Equal(t, true, e.Custom["custentity_optout"])
	require.NotContains(t, e.Custom, "custentity_unknown", "an unknown property is ignored by default (warning)")
	require.True(t, e.LastModified.After(clock), "lastModifiedDate moves")

	a = call(t, s, "PATCH", path, map[string]any{"custentity_unknown": true}, map[string]string{"X-NetSuite-PropertyNameValidation": "error"}, nil)
	require.Equal(t, 400, a.status)
	require.Equal(t, "INVALID_CONTENT", errorCode(a))

	for _, st := range []string{"3", "4", "9"} {
		a = call(t, s, "PATCH", path, map[string]any{"globalSubscriptionStatus": map[string]string{"id": st}}, nil, nil)
		require.Equal(t, 400, a.status, st)
		require.Equal(t, "INVALID_CONTENT", errorCode(a), st)
	}
	e, _ = s.Entity("customer", id)
	require.Equal(t, "2", e.SubscriptionStatus, "a refused PATCH changes nothing")

	a = call(t, s, "PATCH", "/services/rest/record/v1/customer/999999", map[string]any{"custentity_optout": true}, nil, nil)
	require.Equal(t, 404, a.status)
	require.Equal(t, "NONEXISTENT_ID", errorCode(a))
	require.Equal(t, "Not Found", a.body["title"])

	a = call(t, s, "GET", path, nil, nil, nil)
	require.Equal(t, 200, a.status)
	require.Equal(t, map[string]any{"id": "2", "refName": "Soft Opt-Out"}, a.body["globalSubscriptionStatus"])
	require.Equal(t, "a@example.com", a.body["email"])

	a = call(t, s, "GET", "/services/rest/nothing/here", nil, nil, nil)
	require.Equal(t, 404, a.status)
	require.NotEmpty(t, errorCode(a))
}

func TestSavedSearchResults(t *testing.T) {
	s := netsuitetest.NewServer(netsuitetest.Options{})
	defer s.Close()
	var refs []connectors.RecordRef
	for range 3 {
		refs = append(refs, connectors.RecordRef{Type: "contact", ID: s.AddContact(netsuitetest.Entity{Email: "c@example.com"})})
	}
	s.AddSavedSearch("customsearch_sync", refs[:2]...)
	a := call(t, s, "GET", "/services/rest/query/v1/savedsearch/customsearch_sync/result?limit=1&offset=1", nil, nil, nil)
	require.Equal(t, 200, a.status)
	require.Equal(t, float64(2), a.body["totalResults"])
	require.Equal(t, map[string]any{"links": []any{}, "id": refs[1].ID, "recordType": "contact", "email": "c@example.com"}, a.body["items"].([]any)[0])
	s.AddToSavedSearch("customsearch_sync", refs[2])
	a = call(t, s, "GET", "/services/rest/query/v1/savedsearch/customsearch_sync/result", nil, nil, nil)
	require.Equal(t, float64(3), a.body["totalResults"])
	a = call(t, s, "GET", "/services/rest/query/v1/savedsearch/nope/result", nil, nil, nil)
	require.Equal(t, 404, a.status)
	require.Equal(t, 2, s.Middleware.Counts()["GET /services/rest/query/v1/savedsearch/{id}/result"]-1)
}
