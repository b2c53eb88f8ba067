package salesforcetest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/salesforce/salesforcetest"
)

type rawClient struct {
	t     *testing.T
	srv   *salesforcetest.Server
	token string
}

func connect(t *testing.T, opts salesforcetest.Options) *rawClient {
	t.Helper()
	srv := salesforcetest.NewServer(opts)
	t.Cleanup(srv.Close)
	resp, err := http.PostForm(srv.URL+"/services/oauth2/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {srv.ClientID}, "client_secret": {srv.ClientSecret},
	})
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tok map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
	require.Equal(t, srv.URL, tok["instance_url"])
	require.Equal(t, "Bearer", tok["token_type"])
	return &rawClient{t: t, srv: srv, token: tok["access_token"]}
}

func (c *rawClient) call(method, path string, header http.Header, body any) (int, http.Header, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(c.t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.srv.URL+path, rd)
	require.NoError(c.t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp.StatusCode, resp.Header, b
}

func (c *rawClient) query(soql string) (int, []byte) {
	status, _, body := c.call(http.MethodGet, "/services/data/v62.0/query?q="+url.QueryEscape(soql), nil, nil)
	return status, body
}

func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var errs []struct{ Message, ErrorCode string }
	require.NoError(t, json.Unmarshal(body, &errs), string(body))
	require.Len(t, errs, 1)
	require.NotEmpty(t, errs[0].Message)
	return errs[0].ErrorCode
}

func TestQueryErrors(t *testing.T) {
	c := connect(t, salesforcetest.Options{})
	c.srv.AddContact(salesforcetest.Person{LastName: "A", Email: "a@example.com"})
	for soql, code := range map[string]string{
		"SELEKT Id FROM Contact":                                                                   "MALFORMED_QUERY",
		"SELECT Id FROM Contact WHERE":                                                             "MALFORMED_QUERY",
		"SELECT Id FROM Contact WHERE Email = 'unterminated":                                       "MALFORMED_QUERY",
		"SELECT Id FROM Contact GROUP BY Email":                                                    "MALFORMED_QUERY",
		"SELECT Id, Nope__c FROM Contact":                                                          "INVALID_FIELD",
		"SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'":                     "INVALID_FIELD",
		"SELECT Id FROM Contact WHERE HasOptedOutOfEmail = 'true'":                                 "INVALID_FIELD",
		"SELECT Id FROM Widget__c":                                                                 "INVALID_TYPE",
		"SELECT Id FROM Contact WHERE Email = 'x' OR Id IN (SELECT ContactId FROM CampaignMember)": "MALFORMED_QUERY",
		"SELECT Id FROM Contact WHERE Id IN (SELECT Status FROM CampaignMember)":                   "MALFORMED_QUERY",
	} {
		status, body := c.query(soql)
		require.Equal(t, http.StatusBadRequest, status, soql)
		require.Equal(t, code, errorCode(t, body), soql)
	}
	status, body := c.query(`SELECT Id, Email FROM Contact WHERE Email = 'a@example.com' AND SystemModstamp > 2000-01-01T00:00:00Z AND HasOptedOutOfEmail = false AND (Email != null OR Email = 'x\'y')`)
	require.Equal(t, http.StatusOK, status, string(body))
	require.Contains(t, string(body), `"totalSize":1`)
}

func TestQueryBatchesAndLocator(t *testing.T) {
	c := connect(t, salesforcetest.Options{})
	for i := range 450 {
		c.srv.AddLead(salesforcetest.Person{LastName: fmt.Sprint(i), Email: fmt.Sprintf("l%d@example.com", i)})
	}
	type result struct {
		TotalSize      int
		Done           bool
		NextRecordsURL string `json:"nextRecordsUrl"`
		Records        []map[string]any
	}
	status, _, body := c.call(http.MethodGet, "/services/data/v62.0/query?q="+url.QueryEscape("SELECT Id, Email FROM Lead ORDER BY Id"),
		http.Header{"Sforce-Query-Options": {"batchSize=10"}}, nil) // below the minimum: 200
	require.Equal(t, http.StatusOK, status)
	var r result
	require.NoError(t, json.Unmarshal(body, &r))
	require.Equal(t, 450, r.TotalSize)
	require.False(t, r.Done)
	require.Len(t, r.Records, 200)
	require.Regexp(t, `^/services/data/v62\.0/query/01g[0-9A-Za-z]{15}-200$`, r.NextRecordsURL)
	attrs := r.Records[0]["attributes"].(map[string]any)
	require.Equal(t, "Lead", attrs["type"])
	require.Regexp(t, `^00Q[0-9A-Za-z]{15}$`, r.Records[0]["Id"])
	require.Equal(t, "/services/data/v62.0/sobjects/Lead/"+r.Records[0]["Id"].(string), attrs["url"])

	next := r.NextRecordsURL
	status, _, body = c.call(http.MethodGet, next, nil, nil)
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, json.Unmarshal(body, &r))
	require.Len(t, r.Records, 200)
	status, _, body = c.call(http.MethodGet, r.NextRecordsURL, nil, nil)
	require.Equal(t, http.StatusOK, status)
	r = result{}
	require.NoError(t, json.Unmarshal(body, &r))
	require.True(t, r.Done)
	require.Empty(t, r.NextRecordsURL)
	require.Len(t, r.Records, 50)

	// A finished locator is gone.
	status, _, body = c.call(http.MethodGet, next, nil, nil)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "INVALID_QUERY_LOCATOR", errorCode(t, body))
}

func TestCollectionsUpdateRules(t *testing.T) {
	c := connect(t, salesforcetest.Options{})
	a := c.srv.AddContact(salesforcetest.Person{LastName: "A", Email: "a@example.com"})
	b := c.srv.AddContact(salesforcetest.Person{LastName: "B", Email: "b@example.com"})
	before, _ := c.srv.Record(a)
	rec := func(id string) map[string]any {
		return map[string]any{"attributes": map[string]string{"type": "Contact"}, "id": id, "HasOptedOutOfEmail": true}
	}
	type saveResult struct {
		ID      string
		Success bool
		Errors  []struct {
			StatusCode string
			Message    string
			Fields     []string
		}
	}

	// allOrNone: one bad record rolls back the good one.
	status, _, body := c.call(http.MethodPatch, "/services/data/v62.0/composite/sobjects", nil, map[string]any{
		"allOrNone": true, "records": []any{rec(a), rec("003RO0000000000XYZ")},
	})
	require.Equal(t, http.StatusOK, status)
	var res []saveResult
	require.NoError(t, json.Unmarshal(body, &res))
	require.Len(t, res, 2)
	require.False(t, res[0].Success)
	require.Equal(t, "ALL_OR_NONE_OPERATION_ROLLED_BACK", res[0].Errors[0].StatusCode)
	require.False(t, res[1].Success)
	require.Equal(t, "MALFORMED_ID", res[1].Errors[0].StatusCode)
	after, _ := c.srv.Record(a)
	require.Equal(t, false, after["HasOptedOutOfEmail"])
	require.Equal(t, before["SystemModstamp"], after["SystemModstamp"])

	// allOrNone false: the good ones stand, results in request order.
	bad := rec(b)
	bad["IsPersonAccount"] = true
	status, _, body = c.call(http.MethodPatch, "/services/data/v62.0/composite/sobjects", nil, map[string]any{
		"allOrNone": false, "records": []any{bad, rec(a), map[string]any{"attributes": map[string]string{"type": "Contact"}, "HasOptedOutOfEmail": true}},
	})
	require.Equal(t, http.StatusOK, status)
	res = nil
	require.NoError(t, json.Unmarshal(body, &res))
	require.Equal(t, "INVALID_FIELD_FOR_INSERT_UPDATE", res[0].Errors[0].StatusCode)
	require.True(t, res[1].Success)
	require.Equal(t, a, res[1].ID)
	require.Equal(t, "MISSING_ARGUMENT", res[2].Errors[0].StatusCode)
	after, _ = c.srv.Record(a)
	require.Equal(t, true, after["HasOptedOutOfEmail"])

	// More than 200 records: the whole call is refused.
	many := make([]any, 201)
	for i := range many {
		many[i] = rec(a)
	}
	status, _, body = c.call(http.MethodPatch, "/services/data/v62.0/composite/sobjects", nil, map[string]any{"records": many})
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "EXCEEDED_ID_LIMIT", errorCode(t, body))

	// Single-record update.
	status, _, _ = c.call(http.MethodPatch, "/services/data/v62.0/sobjects/Contact/"+b, nil, map[string]any{"HasOptedOutOfEmail": true})
	require.Equal(t, http.StatusNoContent, status)
	status, _, body = c.call(http.MethodPatch, "/services/data/v62.0/sobjects/Contact/003RO0000000zzzYAA", nil, map[string]any{"HasOptedOutOfEmail": true})
	require.Equal(t, http.StatusNotFound, status)
	require.Equal(t, "NOT_FOUND", errorCode(t, body))
}

func TestLimitHeaderAndBudget(t *testing.T) {
	c := connect(t, salesforcetest.Options{DailyLimit: 3})
	for i := 1; i <= 3; i++ {
		status, h, _ := c.call(http.MethodGet, "/services/data/v62.0/limits", nil, nil)
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, fmt.Sprintf("api-usage=%d/3", i), h.Get("Sforce-Limit-Info"))
	}
	status, h, body := c.call(http.MethodGet, "/services/data/v62.0/query?q=SELECT+Id+FROM+Contact", nil, nil)
	require.Equal(t, http.StatusForbidden, status)
	require.Equal(t, "api-usage=3/3", h.Get("Sforce-Limit-Info"))
	require.Equal(t, "REQUEST_LIMIT_EXCEEDED", errorCode(t, body))
	require.Contains(t, string(body), "TotalRequests Limit exceeded.")
}

func TestSessions(t *testing.T) {
	c := connect(t, salesforcetest.Options{})
	status, _, _ := c.call(http.MethodGet, "/services/data/v62.0/limits", nil, nil)
	require.Equal(t, http.StatusOK, status)
	c.srv.ExpireSessions()
	status, h, body := c.call(http.MethodGet, "/services/data/v62.0/limits", nil, nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, "INVALID_SESSION_ID", errorCode(t, body))
	require.Empty(t, h.Get("Sforce-Limit-Info"))

	resp, err := http.PostForm(c.srv.URL+"/services/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {c.srv.ClientID}, "client_secret": {"nope"}})
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	var e map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
	require.Equal(t, "invalid_client", e["error"])

	resp2, err := http.PostForm(c.srv.URL+"/services/oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {"e30.e30.sig"}})
	require.NoError(t, err)
	defer resp2.Body.Close()
	require.NoError(t, json.NewDecoder(resp2.Body).Decode(&e))
	require.Equal(t, map[string]string{"error": "invalid_grant", "error_description": "invalid assertion"}, e)
}

func TestIDs(t *testing.T) {
	srv := salesforcetest.NewServer(salesforcetest.Options{})
	defer srv.Close()
	camp := srv.AddCampaign("C")
	contact := srv.AddContact(salesforcetest.Person{LastName: "A"})
	member := srv.AddCampaignMember(camp, contact)
	for prefix, id := range map[string]string{
		"701": camp, "003": contact, "00v": member,
		"00Q": srv.AddLead(salesforcetest.Person{LastName: "L"}),
		"001": srv.AddPersonAccount(salesforcetest.Person{LastName: "P"}),
	} {
		require.Len(t, id, 18)
		require.True(t, strings.HasPrefix(id, prefix), id)
	}
	// The 18-character suffix encodes the case of the first 15: "003RO"
	// has upper-case letters at positions 3 and 4, hence "Y" (as in the
	// real 003RO0000035WQgYAM).
	require.Equal(t, "003RO0000000001YAA", contact)
	rec, ok := srv.Record(member)
	require.True(t, ok)
	require.Equal(t, contact, rec["ContactId"])
}

// A literal IN list matches text case-insensitively and ids exactly, as
// any SOQL comparison does, NOT IN being its complement.
func TestQueryInLists(t *testing.T) {
	c := connect(t, salesforcetest.Options{})
	ann := c.srv.AddContact(salesforcetest.Person{LastName: "A", Email: "Ann@Example.com"})
	c.srv.AddContact(salesforcetest.Person{LastName: "B", Email: "bob@example.com"})
	c.srv.AddContact(salesforcetest.Person{LastName: "C", Email: "cat@example.com"})
	ids := func(soql string) []string {
		t.Helper()
		status, body := c.query(soql)
		require.Equal(t, http.StatusOK, status, string(body))
		var r struct{ Records []map[string]any }
		require.NoError(t, json.Unmarshal(body, &r))
		var out []string
		for _, rec := range r.Records {
			out = append(out, rec["Email"].(string))
		}
		return out
	}
	require.ElementsMatch(t, []string{"Ann@Example.com", "bob@example.com"},
		ids("SELECT Email FROM Contact WHERE Email IN ('ann@example.COM', 'BOB@example.com', 'dan@example.com')"))
	require.Equal(t, []string{"cat@example.com"},
		ids("SELECT Email FROM Contact WHERE Email NOT IN ('ann@example.com', 'bob@example.com')"))
	require.Equal(t, []string{"Ann@Example.com"}, ids("SELECT Email FROM Contact WHERE Id IN ('"+ann+"')"))
	require.Empty(t, ids("SELECT Email FROM Contact WHERE Id IN ('"+strings.ToLower(ann)+"')"), "an id matches exactly")
}
