package bullhorntest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/optoutsync/optoutsync/connectors/bullhorn/bullhorntest"
)

// noFollow reads redirects instead of following them.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func do(t *testing.T, c *http.Client, method, u string, header http.Header, body any) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, rd)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, b
}

type bhErr struct {
	ErrorMessage    string `json:"errorMessage"`
	ErrorMessageKey string `json:"errorMessageKey"`
	ErrorCode       int    `json:"errorCode"`
}

func decodeErr(t *testing.T, b []byte) bhErr {
	t.Helper()
	var e bhErr
	require.NoError(t, json.Unmarshal(b, &e), string(b))
	return e
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// signIn runs the whole flow as a raw client would and returns the
// session token, restUrl and the refresh token.
func signIn(t *testing.T, s *bullhorntest.Server) (bhRest, restURL, refresh string) {
	t.Helper()
	// Discovery: the root answers 307 to the user's data centre.
	status, h, _ := do(t, noFollow, http.MethodGet, s.LoginInfoURL()+"/loginInfo?username="+s.Username, nil, nil)
	require.Equal(t, http.StatusTemporaryRedirect, status)
	status, _, b := do(t, http.DefaultClient, http.MethodGet, h.Get("Location"), nil, nil)
	require.Equal(t, http.StatusOK, status)
	var info map[string]any
	require.NoError(t, json.Unmarshal(b, &info))
	oauth, rest := info["oauthUrl"].(string), info["restUrl"].(string)
	require.NotEmpty(t, oauth)
	// Headless authorize: 302 with the code in Location.
	v := url.Values{"client_id": {s.ClientID}, "response_type": {"code"}, "action": {"Login"}, "username": {s.Username}, "password": {s.Password}}
	status, h, _ = do(t, noFollow, http.MethodGet, oauth+"/authorize?"+v.Encode(), nil, nil)
	require.Equal(t, http.StatusFound, status)
	loc, err := url.Parse(h.Get("Location"))
	require.NoError(t, err)
	require.Contains(t, loc.RawQuery, "code=22%3A", "the code is URL-encoded")
	code := loc.Query().Get("code")
	// Token exchange, parameters in the query, empty body.
	v = url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {s.ClientID}, "client_secret": {s.ClientSecret}}
	status, _, b = do(t, http.DefaultClient, http.MethodPost, oauth+"/token?"+v.Encode(), nil, nil)
	require.Equal(t, http.StatusOK, status, string(b))
	var tok tokens
	require.NoError(t, json.Unmarshal(b, &tok))
	require.Equal(t, "Bearer", tok.TokenType)
	require.Equal(t, 600, tok.ExpiresIn)
	// The code is single use.
	status, _, b = do(t, http.DefaultClient, http.MethodPost, oauth+"/token?"+v.Encode(), nil, nil)
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, string(b), "invalid_grant")
	// REST login.
	status, h, b = do(t, http.DefaultClient, http.MethodPost, rest+"/login?version=*&access_token="+url.QueryEscape(tok.AccessToken), nil, nil)
	require.Equal(t, http.StatusOK, status, string(b))
	var login map[string]string
	require.NoError(t, json.Unmarshal(b, &login))
	require.True(t, strings.HasSuffix(login["restUrl"], "/"), "restUrl ends with a slash")
	require.Contains(t, h.Get("Set-Cookie"), "BhRestToken=")
	return login["BhRestToken"], login["restUrl"], tok.RefreshToken
}

func TestAuthFlowAndSessionToken(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{})
	t.Cleanup(s.Close)
	tok, rest, _ := signIn(t, s)
	// The session token in the query, a header of either spelling, or the cookie.
	for _, h := range []http.Header{{"Bhresttoken": {tok}}, {"BHRestToken": {tok}}, {"Cookie": {"BhRestToken=" + tok}}} {
		status, _, b := do(t, http.DefaultClient, http.MethodGet, rest+"ping", h, nil)
		require.Equal(t, http.StatusOK, status, string(b))
	}
	status, _, _ := do(t, http.DefaultClient, http.MethodGet, rest+"ping?BhRestToken="+tok, nil, nil)
	require.Equal(t, http.StatusOK, status)
	// None at all: 412. A bad one: 401 with the invalidRestToken body.
	status, _, _ = do(t, http.DefaultClient, http.MethodGet, rest+"ping", nil, nil)
	require.Equal(t, http.StatusPreconditionFailed, status)
	status, _, b := do(t, http.DefaultClient, http.MethodGet, rest+"ping?BhRestToken=nope", nil, nil)
	require.Equal(t, http.StatusUnauthorized, status)
	require.Equal(t, bhErr{"Bad 'BhRestToken' or timed-out.", "errors.authentication.invalidRestToken", 401}, decodeErr(t, b))
	s.ExpireSessions()
	status, _, _ = do(t, http.DefaultClient, http.MethodGet, rest+"ping?BhRestToken="+tok, nil, nil)
	require.Equal(t, http.StatusUnauthorized, status)
	// An expired access token at login.
	status, _, b = do(t, http.DefaultClient, http.MethodPost, s.URL+"/rest-services/login?version=*&access_token=5:x", nil, nil)
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "errors.authentication.invalidOAuthToken", decodeErr(t, b).ErrorMessageKey)
}

func TestAuthorizeRefusals(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{TermsPending: true})
	t.Cleanup(s.Close)
	authorize := func(password string) (int, string) {
		v := url.Values{"client_id": {s.ClientID}, "response_type": {"code"}, "action": {"Login"}, "username": {s.Username}, "password": {password}}
		status, _, b := do(t, noFollow, http.MethodPost, s.URL+"/oauth/authorize?"+v.Encode(), nil, nil)
		return status, string(b)
	}
	status, page := authorize(s.Password)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, page, "Terms of Service", "a new API user gets the consent page")
	s.AcceptTerms()
	status, _ = authorize(s.Password)
	require.Equal(t, http.StatusFound, status)
	status, page = authorize("wrong")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, page, "Invalid credentials")
}

func TestRefreshRotation(t *testing.T) {
	for _, mode := range []bullhorntest.RefreshMode{bullhorntest.RefreshRotates, bullhorntest.RefreshReusable} {
		s := bullhorntest.NewServer(bullhorntest.Options{Refresh: mode, NoDataCentreRedirect: true})
		t.Cleanup(s.Close)
		_, _, rt := signIn2(t, s)
		refresh := func(rt string) (int, tokens) {
			v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {s.ClientID}, "client_secret": {s.ClientSecret}}
			status, _, b := do(t, http.DefaultClient, http.MethodPost, s.URL+"/oauth/token?"+v.Encode(), nil, nil)
			var tok tokens
			_ = json.Unmarshal(b, &tok)
			return status, tok
		}
		status, next := refresh(rt)
		require.Equal(t, http.StatusOK, status)
		status, _ = refresh(rt)
		if mode == bullhorntest.RefreshRotates {
			require.NotEqual(t, rt, next.RefreshToken, "a new refresh token")
			require.Equal(t, http.StatusBadRequest, status, "the used one is spent")
		} else {
			require.Equal(t, rt, next.RefreshToken)
			require.Equal(t, http.StatusOK, status)
		}
		status, _ = refresh(next.RefreshToken)
		require.Equal(t, http.StatusOK, status)
	}
}

// signIn2 is signIn without the data-centre redirect.
func signIn2(t *testing.T, s *bullhorntest.Server) (string, string, string) {
	t.Helper()
	status, _, _ := do(t, noFollow, http.MethodGet, s.LoginInfoURL()+"/loginInfo?username=x", nil, nil)
	require.Equal(t, http.StatusOK, status)
	v := url.Values{"client_id": {s.ClientID}, "response_type": {"code"}, "action": {"Login"}, "username": {s.Username}, "password": {s.Password}}
	_, h, _ := do(t, noFollow, http.MethodGet, s.URL+"/oauth/authorize?"+v.Encode(), nil, nil)
	loc, _ := url.Parse(h.Get("Location"))
	v = url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "client_id": {s.ClientID}, "client_secret": {s.ClientSecret}}
	_, _, b := do(t, http.DefaultClient, http.MethodPost, s.URL+"/oauth/token?"+v.Encode(), nil, nil)
	var tok tokens
	require.NoError(t, json.Unmarshal(b, &tok))
	_, _, b = do(t, http.DefaultClient, http.MethodGet, s.URL+"/rest-services/login?version=*&access_token="+url.QueryEscape(tok.AccessToken), nil, nil)
	var login map[string]string
	require.NoError(t, json.Unmarshal(b, &login))
	return login["BhRestToken"], login["restUrl"], tok.RefreshToken
}

type envelope struct {
	Total *int             `json:"total"`
	Start int              `json:"start"`
	Count int              `json:"count"`
	Data  []map[string]any `json:"data"`
}

func TestSearchQueryAndEntities(t *testing.T) {
	clock := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	now := clock
	s := bullhorntest.NewServer(bullhorntest.Options{Clock: func() time.Time { return now }, NoDataCentreRedirect: true})
	t.Cleanup(s.Close)
	tok, rest, _ := signIn2(t, s)
	h := http.Header{"BhRestToken": {tok}}
	get := func(path string, v url.Values) (int, []byte) {
		status, _, b := do(t, http.DefaultClient, http.MethodGet, rest+path+"?"+v.Encode(), h, nil)
		return status, b
	}
	ann := s.AddCandidate(bullhorntest.Person{LastName: "Ann", Email: "Ann@Example.com"})
	now = now.Add(time.Second)
	bob := s.AddCandidate(bullhorntest.Person{LastName: "Bob", Email: "bob@example.com", OptedOut: true})
	cc := s.AddClientContact(bullhorntest.Person{LastName: "Ann", Email: "ann@example.com"})

	// Search: the envelope, _score, keyword email match, epoch-ms ranges, sort.
	status, b := get("search/Candidate", url.Values{"query": {`email:"ann@example.com"`}, "fields": {"id,email,massMailOptOut,dateLastModified"}})
	require.Equal(t, http.StatusOK, status, string(b))
	var env envelope
	require.NoError(t, json.Unmarshal(b, &env))
	require.Equal(t, 1, *env.Total)
	require.Equal(t, float64(ann), env.Data[0]["id"])
	require.Equal(t, 1.0, env.Data[0]["_score"])
	require.Equal(t, float64(clock.UnixMilli()), env.Data[0]["dateLastModified"], "epoch milliseconds")
	status, b = get("search/Candidate", url.Values{"query": {"dateLastModified:[" + strings.TrimSpace(jsonNum(now.UnixMilli())) + " TO *]"}, "fields": {"id"}, "sort": {"dateLastModified,id"}})
	require.Equal(t, http.StatusOK, status, string(b))
	require.NoError(t, json.Unmarshal(b, &env))
	require.Len(t, env.Data, 1)
	require.Equal(t, float64(bob), env.Data[0]["id"])
	// Without fields: ids only.
	status, b = get("search/Candidate", url.Values{"query": {"isDeleted:0"}})
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"total":2,"start":0,"count":2,"data":[`+jsonNum(ann)+`,`+jsonNum(bob)+`]}`, string(b))
	// Paging.
	status, b = get("search/Candidate", url.Values{"query": {"isDeleted:false"}, "fields": {"id"}, "start": {"1"}, "count": {"1"}})
	require.Equal(t, http.StatusOK, status)
	require.NoError(t, json.Unmarshal(b, &env))
	require.Equal(t, 1, env.Start)
	require.Equal(t, 1, env.Count)
	require.Equal(t, float64(bob), env.Data[0]["id"])

	for _, tc := range []struct {
		path  string
		v     url.Values
		key   string
		inMsg string
	}{
		{"search/Candidate", url.Values{"query": {"isDeleted:0"}, "fields": {"*"}}, "errors.allFieldsNotAllowed", "all fields"},
		{"search/Candidate", url.Values{"query": {"isDeleted:0"}, "fields": {"id,title"}}, "", "Invalid field 'title' at position 3."},
		{"search/Nope", url.Values{"query": {"isDeleted:0"}}, "errors.searchUnknownEntity", "Nope"},
		{"search/Candidate", url.Values{"query": {"isDeleted:0"}, "sort": {"smtpSendDate"}}, "", "Bad sort: unknown field smtpSendDate"},
		{"query/Candidate", url.Values{"where": {"id>0"}, "fields": {"id"}}, "errors.queryIndexedEntity", "please use /search"},
		{"search/Candidate", url.Values{"query": {"email:a+b"}}, "errors.invalidQuery", "special character"},
	} {
		status, b := get(tc.path, tc.v)
		require.Equal(t, http.StatusBadRequest, status, tc.path)
		e := decodeErr(t, b)
		require.Equal(t, tc.key, e.ErrorMessageKey, string(b))
		require.Contains(t, e.ErrorMessage, tc.inMsg)
		require.Equal(t, 400, e.ErrorCode)
	}

	// /query on ClientContact, with a doubled quote and showTotalMatched.
	status, b = get("query/ClientContact", url.Values{"where": {"email='ANN@example.com' OR lastName='O''Neil'"}, "fields": {"id,email"}, "showTotalMatched": {"true"}})
	require.Equal(t, http.StatusOK, status, string(b))
	require.NoError(t, json.Unmarshal(b, &env))
	require.Equal(t, 1, *env.Total)
	require.Equal(t, float64(cc), env.Data[0]["id"])

	// Entity GET: one wrapped in data, several as a list, 404 when none.
	status, b = get("entity/Candidate/"+jsonNum(ann), url.Values{"fields": {"id,email"}})
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"data":{"id":`+jsonNum(ann)+`,"email":"Ann@Example.com"}}`, string(b))
	status, b = get("entity/Candidate/"+jsonNum(ann)+","+jsonNum(bob)+",999999", url.Values{"fields": {"id"}})
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"data":[{"id":`+jsonNum(ann)+`},{"id":`+jsonNum(bob)+`}]}`, string(b))
	status, _ = get("entity/Candidate/999999", url.Values{"fields": {"id"}})
	require.Equal(t, http.StatusNotFound, status)

	// Update: moves dateLastModified; read-only and unknown fields refused.
	now = now.Add(time.Minute)
	status, _, b = do(t, http.DefaultClient, http.MethodPost, rest+"entity/Candidate/"+jsonNum(ann), h, map[string]any{"massMailOptOut": true})
	require.Equal(t, http.StatusOK, status, string(b))
	require.JSONEq(t, `{"changedEntityType":"Candidate","changedEntityId":`+jsonNum(ann)+`,"changeType":"UPDATE"}`, string(b))
	rec, _ := s.Record(ann)
	require.Equal(t, true, rec["massMailOptOut"])
	require.Equal(t, now.UnixMilli(), rec["dateLastModified"])
	for body, inMsg := range map[string]string{`{"dateLastModified":1}`: "read-only", `{"bogus":1}`: "Invalid field", `{"massMailOptOut":"yes"}`: "true or false"} {
		status, _, b = do(t, http.DefaultClient, http.MethodPost, rest+"entity/Candidate/"+jsonNum(ann), h, json.RawMessage(body))
		require.Equal(t, http.StatusBadRequest, status, body)
		require.Contains(t, decodeErr(t, b).ErrorMessage, inMsg)
	}
	status, _, _ = do(t, http.DefaultClient, http.MethodPost, rest+"entity/Candidate/999999", h, map[string]any{"massMailOptOut": true})
	require.Equal(t, http.StatusNotFound, status)

	// Tearsheets: candidates and clientContacts, paged, total on request.
	ts := s.AddTearsheet("T")
	s.AddToTearsheet(ts, ann, bob, cc)
	status, b = get("entity/Tearsheet/"+jsonNum(ts)+"/candidates", url.Values{"fields": {"id"}, "count": {"1"}, "start": {"1"}, "showTotalMatched": {"true"}})
	require.Equal(t, http.StatusOK, status, string(b))
	require.JSONEq(t, `{"total":2,"start":1,"count":1,"data":[{"id":`+jsonNum(bob)+`}]}`, string(b))
	status, b = get("entity/Tearsheet/"+jsonNum(ts)+"/clientContacts", url.Values{"fields": {"id"}})
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"start":0,"count":1,"data":[{"id":`+jsonNum(cc)+`}]}`, string(b))
	status, _ = get("entity/Tearsheet/"+jsonNum(ts)+"/jobOrders", url.Values{"fields": {"id"}})
	require.Equal(t, http.StatusBadRequest, status)
}

func jsonNum(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestSearchOptions(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{SearchDates: bullhorntest.DatesCompact, EmailIndex: bullhorntest.EmailTokenized,
		QueryRejectsAll: true, MaxCount: 2, RejectOverMaxCount: true, NoDataCentreRedirect: true})
	t.Cleanup(s.Close)
	tok, rest, _ := signIn2(t, s)
	h := http.Header{"BhRestToken": {tok}}
	get := func(path string, v url.Values) (int, []byte) {
		status, _, b := do(t, http.DefaultClient, http.MethodGet, rest+path+"?"+v.Encode(), h, nil)
		return status, b
	}
	s.AddCandidate(bullhorntest.Person{Email: "jo.ann@example.com"})
	status, b := get("search/Candidate", url.Values{"query": {`email:"ann@example.com"`}, "fields": {"id"}})
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(b), `"total":1`, "a tokenised index matches the phrase inside a longer address")
	status, b = get("search/Candidate", url.Values{"query": {"dateLastModified:[1700000000000 TO *]"}, "fields": {"id"}})
	require.Equal(t, http.StatusBadRequest, status, "compact dates refuse milliseconds")
	require.Contains(t, string(b), "yyyyMMddHHmmss")
	status, _ = get("search/Candidate", url.Values{"query": {"dateLastModified:[20200101000000 TO *]"}, "fields": {"id"}})
	require.Equal(t, http.StatusOK, status)
	status, b = get("query/ClientContact", url.Values{"where": {"id>0"}, "fields": {"id"}})
	require.Equal(t, http.StatusBadRequest, status)
	require.Equal(t, "errors.queryIndexedEntity", decodeErr(t, b).ErrorMessageKey)
	status, _ = get("search/Candidate", url.Values{"query": {"isDeleted:0"}, "count": {"3"}})
	require.Equal(t, http.StatusBadRequest, status, "count over the maximum refused")
}

func TestLimits(t *testing.T) {
	s := bullhorntest.NewServer(bullhorntest.Options{RequestsPerMinute: 3, Window: time.Hour, RetryAfter: true, NoDataCentreRedirect: true})
	t.Cleanup(s.Close)
	for range 3 {
		status, _, _ := do(t, http.DefaultClient, http.MethodGet, s.LoginInfoURL()+"/loginInfo?username=x", nil, nil)
		require.Equal(t, http.StatusOK, status)
	}
	status, h, b := do(t, http.DefaultClient, http.MethodGet, s.LoginInfoURL()+"/loginInfo?username=x", nil, nil)
	require.Equal(t, http.StatusTooManyRequests, status)
	require.Equal(t, "1", h.Get("Retry-After"))
	require.Equal(t, 429, decodeErr(t, b).ErrorCode)
	require.Equal(t, 1, s.Stats().Limited)
}

func TestSeedAMillion(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds a million records")
	}
	s := bullhorntest.NewServer(bullhorntest.Options{NoDataCentreRedirect: true})
	t.Cleanup(s.Close)
	s.Seed("Candidate", 1_000_000, func(i int) bullhorntest.Person {
		return bullhorntest.Person{LastName: "P", Email: "p" + jsonNum(int64(i)) + "@example.com", OptedOut: i%1000 == 0}
	})
	require.Equal(t, 1_000_000, s.Count("Candidate"))
	tok, rest, _ := signIn2(t, s)
	status, _, b := do(t, http.DefaultClient, http.MethodGet, rest+"search/Candidate?"+url.Values{"query": {`email:"p999999@example.com"`}, "fields": {"id,email"}}.Encode(), http.Header{"BhRestToken": {tok}}, nil)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(b), `"total":1`)
}
