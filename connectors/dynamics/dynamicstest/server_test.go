package dynamicstest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/dynamics/dynamicstest"
)

type raw struct {
	t   *testing.T
	srv *dynamicstest.Server
	tok string
}

func newRaw(t *testing.T, opts dynamicstest.Options) *raw {
	t.Helper()
	srv := dynamicstest.NewServer(opts)
	t.Cleanup(srv.Close)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {srv.ClientID}, "client_secret": {srv.ClientSecret}, "scope": {srv.URL + "/.default"}}
	resp, err := http.PostForm(srv.URL+"/"+srv.TenantID+"/oauth2/v2.0/token", form)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tok struct {
		TokenType string `json:"token_type"`
		ExpiresIn int    `json:"expires_in"`
		Ext       int    `json:"ext_expires_in"`
		Access    string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
	require.Equal(t, "Bearer", tok.TokenType)
	require.Equal(t, 3599, tok.ExpiresIn)
	require.Equal(t, 3599, tok.Ext)
	return &raw{t: t, srv: srv, tok: tok.Access}
}

func (r *raw) do(method, path string, header http.Header, body string) (*http.Response, string) {
	r.t.Helper()
	req, err := http.NewRequest(method, r.srv.URL+dynamicstest.APIPath+path, strings.NewReader(body))
	require.NoError(r.t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+r.tok)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(r.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(r.t, err)
	return resp, string(b)
}

func TestTokenErrorsAndBearerChallenge(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {r.srv.ClientID}, "client_secret": {r.srv.ClientSecret}, "scope": {"https://other.crm.dynamics.com/.default"}}
	resp, err := http.PostForm(r.srv.URL+"/"+r.srv.TenantID+"/oauth2/v2.0/token", form)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(b), `"error":"invalid_scope"`)
	require.Contains(t, string(b), "AADSTS70011")
	require.Contains(t, string(b), `"error_codes":[70011]`)

	req, _ := http.NewRequest(http.MethodGet, r.srv.URL+dynamicstest.APIPath+"/contacts", nil)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Empty(t, b)
	require.Equal(t, fmt.Sprintf("Bearer authorization_uri=%s/%s/oauth2/authorize, resource_id=%s/", r.srv.URL, r.srv.TenantID, r.srv.URL), resp.Header.Get("WWW-Authenticate"))
}

func TestCollectionJSONPagingAndCaseInsensitiveFilter(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	for i := range 5 {
		r.srv.AddContact(dynamicstest.Person{LastName: fmt.Sprint(i), Email: fmt.Sprintf("P%d@Example.com", i)})
	}
	r.srv.AddContact(dynamicstest.Person{Email: "other@example.com"})
	path := "/contacts?$select=emailaddress1&$filter=" + url.QueryEscape("endswith(emailaddress1,'@example.com') and emailaddress1 ne 'OTHER@example.com'") + "&$orderby=emailaddress1%20desc"
	var emails []string
	for page := 0; path != ""; page++ {
		require.Less(t, page, 5)
		resp, body := r.do(http.MethodGet, path, http.Header{"Prefer": {"odata.maxpagesize=2"}}, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		require.Equal(t, "application/json; odata.metadata=minimal", resp.Header.Get("Content-Type"))
		require.Equal(t, "odata.maxpagesize=2", resp.Header.Get("Preference-Applied"))
		var res struct {
			Context string           `json:"@odata.context"`
			Value   []map[string]any `json:"value"`
			Next    string           `json:"@odata.nextLink"`
		}
		require.NoError(t, json.Unmarshal([]byte(body), &res))
		require.Equal(t, r.srv.URL+dynamicstest.APIPath+"/$metadata#contacts(emailaddress1)", res.Context)
		for _, v := range res.Value {
			require.Regexp(t, `^W/"\d+"$`, v["@odata.etag"])
			require.NotEmpty(t, v["contactid"], "the primary key is always returned")
			require.NotContains(t, v, "lastname", "only what $select names")
			emails = append(emails, v["emailaddress1"].(string))
		}
		path = ""
		if res.Next != "" {
			require.True(t, strings.HasPrefix(res.Next, r.srv.URL+dynamicstest.APIPath+"/contacts?$select=emailaddress1&$filter="), "the query kept, then the skiptoken: %s", res.Next)
			require.Contains(t, res.Next, "$skiptoken=%3Ccookie%20pagenumber%3D%22")
			require.Contains(t, res.Next, "istracking%3D%22False%22")
			path = strings.TrimPrefix(res.Next, r.srv.URL+dynamicstest.APIPath)
		}
	}
	require.Equal(t, []string{"P4@Example.com", "P3@Example.com", "P2@Example.com", "P1@Example.com", "P0@Example.com"}, emails)
}

func TestUnsupportedQueriesAreClear400s(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	for path, want := range map[string]string{
		"/contacts?$skip=10":           "$skip is not supported",
		"/contacts?$select=campaignid": "Could not find a property named 'campaignid' on type 'Microsoft.Dynamics.CRM.contact'.",
		"/contacts?$filter=" + url.QueryEscape("lastname eq 'O'Bryan'"):   "unterminated literal",
		"/contacts?$filter=" + url.QueryEscape("donotbulkemail eq 'yes'"): "incompatible types",
		"/contacts?$expand=parentcustomerid":                              "not supported",
	} {
		resp, body := r.do(http.MethodGet, path, nil, "")
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, path)
		require.Contains(t, body, want, path)
		require.Contains(t, body, `"code":"0x80060888"`, path)
	}
	resp, body := r.do(http.MethodGet, "/contacts?$filter="+url.QueryEscape("lastname eq 'O''Bryan'"), nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
}

func TestPatchIfMatchNeverCreates(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	id := r.srv.AddContact(dynamicstest.Person{Email: "a@example.com"})
	json := http.Header{"Content-Type": {"application/json"}, "If-Match": {"*"}}
	resp, _ := r.do(http.MethodPatch, "/contacts("+id+")", json, `{"donotbulkemail":true}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Equal(t, r.srv.URL+dynamicstest.APIPath+"/contacts("+id+")", resp.Header.Get("OData-EntityId"))
	rec, _ := r.srv.Record(id)
	require.Equal(t, true, rec["donotbulkemail"])

	missing := dynamicstest.NewGUID()
	resp, body := r.do(http.MethodPatch, "/contacts("+missing+")", json, `{"donotbulkemail":true}`)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.JSONEq(t, `{"error":{"code":"0x80040217","message":"contact With Id = `+missing+` Does Not Exist"}}`, body)
	_, ok := r.srv.Record(missing)
	require.False(t, ok)

	resp, body = r.do(http.MethodPatch, "/contacts("+id+")", http.Header{"Content-Type": {"application/json"}, "If-Match": {`W/"1"`}}, `{"donotbulkemail":true}`)
	require.Equal(t, http.StatusPreconditionFailed, resp.StatusCode)
	require.Contains(t, body, "doesn't match the RowVersion")

	// Without If-Match, a PATCH is an upsert: this is why the connector always sends it.
	resp, _ = r.do(http.MethodPatch, "/contacts("+missing+")", http.Header{"Content-Type": {"application/json"}}, `{"donotbulkemail":true}`)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	_, ok = r.srv.Record(missing)
	require.True(t, ok)
}

func batchBody(boundary string, parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		fmt.Fprintf(&b, "--%s\r\n%s\r\n", boundary, p)
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.String()
}

func patchPart(id, body string) string {
	return "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPATCH " + dynamicstest.APIPath + "/contacts(" + id + ") HTTP/1.1\r\nContent-Type: application/json; type=entry\r\nIf-Match: *\r\n\r\n" + body
}

func statuses(t *testing.T, resp *http.Response, body string) []string {
	t.Helper()
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(params["boundary"], "batchresponse_"))
	var out []string
	var walk func(r io.Reader, boundary string)
	walk = func(r io.Reader, boundary string) {
		mr := multipart.NewReader(r, boundary)
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return
			}
			require.NoError(t, err)
			mt, params, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			if mt == "multipart/mixed" {
				require.True(t, strings.HasPrefix(params["boundary"], "changesetresponse_"))
				walk(p, params["boundary"])
				continue
			}
			b, _ := io.ReadAll(p)
			line, _, _ := strings.Cut(string(b), "\r\n")
			out = append(out, line)
		}
	}
	walk(strings.NewReader(body), params["boundary"])
	return out
}

func TestBatchContinueOnErrorAndChangesets(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	a := r.srv.AddContact(dynamicstest.Person{Email: "a@example.com"})
	b := r.srv.AddContact(dynamicstest.Person{Email: "b@example.com"})
	missing := dynamicstest.NewGUID()
	body := batchBody("batch_1", patchPart(missing, `{"donotbulkemail":true}`), patchPart(a, `{"donotbulkemail":true}`))
	h := http.Header{"Content-Type": {`multipart/mixed; boundary="batch_1"`}}

	// Without continue-on-error: 400 and it stops at the first failure.
	resp, out := r.do(http.MethodPost, "/$batch", h, body)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, []string{"HTTP/1.1 404 Not Found"}, statuses(t, resp, out))
	rec, _ := r.srv.Record(a)
	require.Equal(t, false, rec["donotbulkemail"], "the part after the failure never ran")

	h.Set("Prefer", "odata.continue-on-error")
	resp, out = r.do(http.MethodPost, "/$batch", h, body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []string{"HTTP/1.1 404 Not Found", "HTTP/1.1 204 No Content"}, statuses(t, resp, out))
	require.Contains(t, out, "REQ_ID: ")
	rec, _ = r.srv.Record(a)
	require.Equal(t, true, rec["donotbulkemail"])

	// A changeset is atomic: its failure rolls back its other requests.
	cs := batchBody("changeset_9", "Content-ID: 1\r\n"+patchPart(b, `{"donotbulkemail":true}`), "Content-ID: 2\r\n"+patchPart(missing, `{"donotbulkemail":true}`))
	body = batchBody("batch_2", "Content-Type: multipart/mixed; boundary=changeset_9\r\n\r\n"+cs)
	resp, out = r.do(http.MethodPost, "/$batch", http.Header{"Content-Type": {"multipart/mixed; boundary=batch_2"}, "Prefer": {"odata.continue-on-error"}}, body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []string{"HTTP/1.1 404 Not Found"}, statuses(t, resp, out))
	rec, _ = r.srv.Record(b)
	require.Equal(t, false, rec["donotbulkemail"], "rolled back")
}

func TestServiceProtectionAnswers(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{RequestLimit: 2})
	r.srv.Throttle(dynamicstest.CodeConcurrency, 1, 3*time.Second)
	resp, body := r.do(http.MethodGet, "/WhoAmI", nil, "")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "3", resp.Header.Get("Retry-After"))
	require.JSONEq(t, `{"error":{"code":"0x80072326","message":"Number of concurrent requests exceeded the limit of 52."}}`, body)
	for range 2 {
		resp, _ = r.do(http.MethodGet, "/WhoAmI", nil, "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	resp, body = r.do(http.MethodGet, "/WhoAmI", nil, "")
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Contains(t, body, "0x80072322")
	require.Contains(t, body, "Number of requests exceeded the limit of 6000 over time window of 300 seconds.")
}

func TestSeedAMillionRecords(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	ids := r.srv.Seed("contacts", 1_000_000, func(i int) dynamicstest.Person {
		return dynamicstest.Person{Email: fmt.Sprintf("p%d@example.com", i), OptedOut: i%100_000 == 0}
	})
	require.Len(t, ids, 1_000_000)
	resp, body := r.do(http.MethodGet, "/contacts?$select=contactid&$filter=donotbulkemail%20eq%20true", nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var res struct {
		Value []map[string]any `json:"value"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	require.Len(t, res.Value, 10)
}

// TestBatchGetPartsAndTheirURLLimit: a GET part is answered with its rows;
// one whose URL passes 64 KB is refused with a 400 of its own.
func TestBatchGetPartsAndTheirURLLimit(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	r.srv.AddContact(dynamicstest.Person{Email: "a@example.com"})
	getPart := func(query string) string {
		return "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET " + dynamicstest.APIPath + "/contacts?" + query + " HTTP/1.1\r\nAccept: application/json\r\n\r\n"
	}
	ok := "$select=contactid&$filter=" + url.QueryEscape("emailaddress1 eq 'a@example.com'")
	long := "$select=contactid&$filter=" + url.QueryEscape("emailaddress1 eq '"+strings.Repeat("x", dynamicstest.MaxBatchURL)+"@example.com'")
	h := http.Header{"Content-Type": {"multipart/mixed; boundary=batch_3"}, "Prefer": {"odata.continue-on-error"}}
	resp, out := r.do(http.MethodPost, "/$batch", h, batchBody("batch_3", getPart(ok), getPart(long)))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, []string{"HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"}, statuses(t, resp, out))
	require.Contains(t, out, `"value":[{`)
}

// An or of string eq comparisons over several columns (a lookup's filter)
// matches case-insensitively in any of them, alone or beside other
// conditions, and not, its complement.
func TestOrOfEqualitiesMatchesAnyColumnInAnyCase(t *testing.T) {
	r := newRaw(t, dynamicstest.Options{})
	r.srv.AddContact(dynamicstest.Person{LastName: "a", Email: "Ann@Example.com"})
	r.srv.AddContact(dynamicstest.Person{LastName: "b", Email2: "bob@example.com"})
	r.srv.AddContact(dynamicstest.Person{LastName: "c", Email: "cat@example.com", OptedOut: true})
	r.srv.AddContact(dynamicstest.Person{LastName: "d", Email: "dan@example.com"})
	names := func(filter string) []string {
		t.Helper()
		resp, body := r.do(http.MethodGet, "/contacts?$select=lastname&$filter="+url.QueryEscape(filter)+"&$orderby=lastname", nil, "")
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		var res struct{ Value []map[string]any }
		require.NoError(t, json.Unmarshal([]byte(body), &res))
		var out []string
		for _, v := range res.Value {
			out = append(out, v["lastname"].(string))
		}
		return out
	}
	either := "emailaddress1 eq 'ann@example.COM' or emailaddress1 eq 'BOB@example.com' or emailaddress2 eq 'Bob@Example.com' or emailaddress1 eq 'cat@example.com'"
	require.Equal(t, []string{"a", "b", "c"}, names(either))
	require.Equal(t, []string{"c"}, names("("+either+") and donotbulkemail eq true"))
	require.Equal(t, []string{"d"}, names("not ("+either+")"))
	require.Equal(t, []string{"a", "c"}, names("emailaddress1 eq 'ANN@example.com' or donotbulkemail eq true"))
}
