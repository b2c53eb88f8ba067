// Package bullhorntest is an in-process emulator of the parts of the
// Bullhorn REST API the opt-out sync uses, in the manner of
// net/http/httptest: data-centre discovery (loginInfo, with its 307 to the
// right data centre), the OAuth authorization-code flow as API users run it
// headless (authorize answering 302 with the code in Location), the token
// and refresh grants (refresh tokens rotating or not), the REST login that
// hands out BhRestToken and restUrl, the session token in the query, a
// header or a cookie, Candidate, ClientContact and Lead records, Tearsheets
// with their candidates and client contacts, /search (Lucene) and /query
// (JPQL) with the {total, start, count, data} envelope, entity GET and
// update, and Bullhorn's limits (requests per minute, calls at once).
// Faults, latency and request counters come from the shared emulator
// middleware.
//
// Wire shapes follow ../shared/reference/dynamics-bullhorn-wire-facts.md
// part B; each choice the reference leaves open is marked UNCONFIRMED where
// it is made, and the ones a client must tolerate both ways are Options.
package bullhorntest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// RefreshMode is what a refresh grant does to the refresh token it used.
type RefreshMode int

const (
	// RefreshRotates: each refresh answers a new refresh token and the one
	// used stops working (single use). Third parties say so; UNCONFIRMED in
	// Bullhorn's own text (reference B1).
	RefreshRotates RefreshMode = iota
	// RefreshReusable: the refresh token stays valid and is answered again.
	RefreshReusable
)

// DateFormat is how a /search range over a timestamp is written.
type DateFormat int

const (
	// DatesEpochMillis: dateLastModified:[1700000000000 TO *].
	DatesEpochMillis DateFormat = iota
	// DatesCompact: dateLastModified:[20231114221320 TO *] (yyyyMMddHHmmss,
	// or yyyyMMdd), read as UTC; a value in milliseconds is refused with 400.
	DatesCompact
)

// EmailIndexing is how /search matches an email field. UNCONFIRMED which
// one Bullhorn's index does (reference B3).
type EmailIndexing int

const (
	// EmailKeyword matches the whole address, case-insensitively.
	EmailKeyword EmailIndexing = iota
	// EmailTokenized matches a phrase of the address's tokens (letters and
	// digits): email:"ann@example.com" also matches jo.ann@example.com.
	EmailTokenized
)

// Options configures an emulated Bullhorn corporation.
type Options struct {
	// Addr is the loopback address to listen on; "" picks a free port.
	Addr string
	// ClientID and ClientSecret are the OAuth client's; Username and
	// Password the API user's. Empty means generated ones.
	ClientID, ClientSecret, Username, Password string
	// CorpToken is the corporation's path segment in restUrl; "" means "e999".
	CorpToken string
	// TermsPending makes authorize answer the terms-of-service consent
	// page (200, HTML) instead of a code, as for a new API user who has
	// not accepted them in a browser yet. AcceptTerms clears it.
	TermsPending bool
	// Refresh is what a refresh grant does to its refresh token.
	Refresh RefreshMode
	// AccessTokenTTL is an access token's life; 0 means 10 minutes (B1).
	AccessTokenTTL time.Duration
	// SessionTTL is a BhRestToken's life when login gives no ttl; 0 means
	// 60 minutes. ExpireSessions ends them all at once.
	SessionTTL time.Duration
	// NoDataCentreRedirect answers loginInfo directly instead of with a
	// 307 to the data centre that holds the user.
	NoDataCentreRedirect bool
	// QueryRejectsAll refuses /query for ClientContact and Lead as it is
	// refused for Candidate (errors.queryIndexedEntity). UNCONFIRMED
	// (reference B3): by default only Candidate is refused, which is live-confirmed.
	QueryRejectsAll bool
	// SearchDates is the timestamp format /search ranges take.
	SearchDates DateFormat
	// EmailIndex is how /search matches email fields.
	EmailIndex EmailIndexing
	// MaxCount is the largest count a page may ask; 0 means 500. A larger
	// one is cut to it, or refused with 400 when RejectOverMaxCount is
	// set. UNCONFIRMED which (reference B3).
	MaxCount           int
	RejectOverMaxCount bool
	// RequestsPerMinute is the corporation's limit; 0 means 1,500 (B6),
	// negative none. Window is the span it counts over; 0 means a minute
	// (tests shorten it). Requests over it get 429.
	RequestsPerMinute int
	Window            time.Duration
	// MaxConcurrent caps calls in flight; 0 means none. Over it: 429.
	MaxConcurrent int
	// RetryAfter adds "Retry-After: 1" to 429 answers. UNCONFIRMED whether
	// Bullhorn sends it; its docs say to wait a second (B6).
	RetryAfter bool
	// Clock stamps records and ages tokens; nil means time.Now.
	Clock func() time.Time
}

// Server is a running emulated Bullhorn corporation.
type Server struct {
	// URL is the emulator's root: loginInfo is {URL}/rest-services/loginInfo.
	URL string
	// ClientID, ClientSecret, Username and Password sign in.
	ClientID, ClientSecret, Username, Password string
	// Middleware injects faults and latency and counts requests by
	// endpoint ("GET search/Candidate").
	Middleware *emulator.Middleware

	srv  *httptest.Server
	opts Options

	mu         sync.Mutex
	seq        int64
	tables     map[string]*table
	tearsheets map[int64]*tearsheet
	codes      map[string]time.Time // authorization code -> expiry
	access     map[string]time.Time // access token -> expiry
	refresh    map[string]bool      // refresh tokens that work
	sessions   map[string]time.Time // BhRestToken -> expiry
	window     time.Time
	inWindow   int
	stats      Stats
}

// Stats counts what the auth endpoints did.
type Stats struct {
	// Authorizations are codes issued by authorize (password logins).
	Authorizations int
	// Refreshes are successful refresh grants; RefusedRefreshes those
	// refused (a used or unknown refresh token).
	Refreshes, RefusedRefreshes int
	// Logins are REST logins (BhRestTokens issued).
	Logins int
	// Limited are requests answered 429 by the per-minute limit.
	Limited int
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// bhToken writes a token the way Bullhorn's look: "<n>:<uuid>".
func bhToken(n int) string {
	h := randomHex(16)
	return fmt.Sprintf("%d:%s-%s-%s-%s-%s", n, h[:8], h[8:12], h[12:16], h[16:20], h[20:])
}

// NewServer starts an emulated corporation on loopback. It panics if it
// cannot listen, as httptest.NewServer does.
func NewServer(opts Options) *Server {
	if opts.ClientID == "" {
		opts.ClientID = randomHex(16)
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = randomHex(24)
	}
	if opts.Username == "" {
		opts.Username = "optout.api"
	}
	if opts.Password == "" {
		opts.Password = randomHex(12)
	}
	if opts.CorpToken == "" {
		opts.CorpToken = "e999"
	}
	if opts.AccessTokenTTL == 0 {
		opts.AccessTokenTTL = 10 * time.Minute
	}
	if opts.SessionTTL == 0 {
		opts.SessionTTL = time.Hour
	}
	if opts.MaxCount == 0 {
		opts.MaxCount = 500
	}
	if opts.RequestsPerMinute == 0 {
		opts.RequestsPerMinute = 1500
	}
	if opts.Window == 0 {
		opts.Window = time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	s := &Server{
		ClientID: opts.ClientID, ClientSecret: opts.ClientSecret, Username: opts.Username, Password: opts.Password,
		opts:       opts,
		tables:     map[string]*table{},
		tearsheets: map[int64]*tearsheet{},
		codes:      map[string]time.Time{},
		access:     map[string]time.Time{},
		refresh:    map[string]bool{},
		sessions:   map[string]time.Time{},
	}
	for _, e := range Entities {
		s.tables[e] = &table{byID: map[int64]*record{}}
	}
	s.Middleware = emulator.NewMiddleware(emulator.Vendor{
		TooMany:     s.writeTooMany,
		ServerError: s.writeServerError,
		OverLimit:   s.writeTooMany,
		Endpoint:    s.endpointName,
	})
	s.Middleware.SetLimit(opts.MaxConcurrent)
	srv, err := emulator.Listen(opts.Addr, s.Middleware.Wrap(http.HandlerFunc(s.serve)))
	if err != nil {
		panic(fmt.Sprintf("bullhorntest: listen on %q: %v", opts.Addr, err))
	}
	s.srv = srv
	s.URL = srv.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// LoginInfoURL is where a client starts: the discovery endpoint.
func (s *Server) LoginInfoURL() string { return s.URL + "/rest-services" }

// RestURL is the corporation's REST root as login answers it (with its
// trailing slash).
func (s *Server) RestURL() string { return s.URL + "/rest-services/" + s.opts.CorpToken + "/" }

// ExpireSessions ends every BhRestToken: the next call gets 401
// errors.authentication.invalidRestToken.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions = map[string]time.Time{}
}

// ExpireAccessTokens ends every access token, as ten minutes do.
func (s *Server) ExpireAccessTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access = map[string]time.Time{}
}

// RevokeRefreshTokens makes every refresh token refused.
func (s *Server) RevokeRefreshTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh = map[string]bool{}
}

// AcceptTerms records that the API user accepted the terms of service.
func (s *Server) AcceptTerms() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.TermsPending = false
}

// SetPassword changes the API user's password (old credentials then fail).
func (s *Server) SetPassword(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Password, s.Password = p, p
}

// Stats returns the auth counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// ---- errors ----

// bhError is Bullhorn's error body (B6): errorMessageKey is left out by
// some answers.
type bhError struct {
	ErrorMessage    string `json:"errorMessage"`
	ErrorMessageKey string `json:"errorMessageKey,omitempty"`
	ErrorCode       int    `json:"errorCode"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, key, msg string) {
	writeJSON(w, status, bhError{ErrorMessage: msg, ErrorMessageKey: key, ErrorCode: status})
}

// writeTooMany is the 429 answer. UNCONFIRMED: its body (B6); we chose the
// standard error body, and Retry-After only with Options.RetryAfter.
func (s *Server) writeTooMany(w http.ResponseWriter, _ *http.Request) {
	if s.opts.RetryAfter {
		w.Header().Set("Retry-After", "1")
	}
	writeError(w, http.StatusTooManyRequests, "errors.rateLimitExceeded", "Rate Limited -- Wait 1 second then retry request.")
}

func (s *Server) writeServerError(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusInternalServerError, "", "An unexpected error has occurred.")
}

// endpointName names the endpoint for the counters: the path below the
// corporation with ids as placeholders ("GET search/Candidate",
// "POST entity/Candidate/{id}").
func (s *Server) endpointName(r *http.Request) string {
	p := r.URL.Path
	prefix := "/rest-services/" + s.opts.CorpToken + "/"
	if !strings.HasPrefix(p, prefix) {
		return r.Method + " " + p
	}
	parts := strings.Split(strings.TrimPrefix(p, prefix), "/")
	if len(parts) >= 3 && parts[0] == "entity" {
		parts[2] = "{id}"
	}
	return r.Method + " " + strings.Join(parts, "/")
}

// overRate counts the request against the per-minute limit.
func (s *Server) overRate() bool {
	if s.opts.RequestsPerMinute < 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now() // the limit is the service's, on the wall clock
	if now.Sub(s.window) >= s.opts.Window {
		s.window, s.inWindow = now, 0
	}
	s.inWindow++
	if s.inWindow > s.opts.RequestsPerMinute {
		s.stats.Limited++
		return true
	}
	return false
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if s.overRate() {
		s.writeTooMany(w, r)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/rest-services/loginInfo":
		s.serveLoginInfo(w, r, !s.opts.NoDataCentreRedirect)
	case p == "/dc2/rest-services/loginInfo":
		s.serveLoginInfo(w, r, false)
	case p == "/oauth/authorize":
		s.serveAuthorize(w, r)
	case p == "/oauth/token":
		s.serveToken(w, r)
	case p == "/rest-services/login":
		s.serveLogin(w, r)
	case strings.HasPrefix(p, "/rest-services/"+s.opts.CorpToken+"/"):
		if status, key, msg := s.session(r); status != 0 {
			writeError(w, status, key, msg)
			return
		}
		s.serveREST(w, r, strings.TrimPrefix(p, "/rest-services/"+s.opts.CorpToken+"/"))
	default:
		writeError(w, http.StatusNotFound, "errors.notFound", "Not found: "+p)
	}
}

// ---- auth ----

// serveLoginInfo answers the discovery call. The root answers with a 307
// to the data centre that holds the user, as the wrong data centre does
// (B1); the client must follow it.
func (s *Server) serveLoginInfo(w http.ResponseWriter, r *http.Request, redirect bool) {
	if r.Method != http.MethodGet {
		writeError(w, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	if r.URL.Query().Get("username") == "" {
		writeError(w, http.StatusBadRequest, "errors.missingParameter", "username is required")
		return
	}
	if redirect {
		http.Redirect(w, r, s.URL+"/dc2/rest-services/loginInfo?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
		return
	}
	// The body keeps the shape of a live answer (B1); the clients read
	// oauthUrl and restUrl.
	writeJSON(w, http.StatusOK, map[string]any{
		"atsUrl": s.URL, "billingSyncUrl": s.URL + "/billingsync", "coreUrl": s.URL + "/core",
		"documentEditorUrl": s.URL + "/document", "mobileUrl": s.URL + "/mobile",
		"oauthUrl": s.URL + "/oauth", "restUrl": s.URL + "/rest-services",
		"samlUrl": s.URL + "/saml", "novoUrl": s.URL + "/novo", "dataCenterId": 2, "superClusterId": 22,
	})
}

func params(r *http.Request) url.Values {
	_ = r.ParseForm() // query and form body
	return r.Form
}

// serveAuthorize is the headless authorize of an API user (B1): with the
// right client, username and password it answers 302 with the code in
// Location (redirect_uri when given); it does not need to be followed.
func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := params(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if q.Get("client_id") != s.opts.ClientID {
		// UNCONFIRMED: the answer to an unknown client; an HTML error page.
		writeHTML(w, http.StatusBadRequest, "<html><body><h1>Invalid Client Id</h1></body></html>")
		return
	}
	if q.Get("response_type") != "code" {
		writeHTML(w, http.StatusBadRequest, "<html><body><h1>Invalid response_type</h1></body></html>")
		return
	}
	if q.Get("username") != s.opts.Username || q.Get("password") != s.opts.Password || q.Get("action") != "Login" {
		// UNCONFIRMED: a failed headless login answers the login page again.
		writeHTML(w, http.StatusOK, `<html><body><form id="loginForm"><p class="error">Invalid credentials. Please try again.</p><input name="username"/><input name="password" type="password"/></form></body></html>`)
		return
	}
	if s.opts.TermsPending {
		writeHTML(w, http.StatusOK, `<html><body><h1>Terms of Service</h1><p>Please review and accept the Bullhorn API Terms of Service to continue.</p><form><button name="consent" value="agree">Agree</button></form></body></html>`)
		return
	}
	code := bhToken(22)
	s.codes[code] = s.opts.Clock().Add(5 * time.Minute)
	s.stats.Authorizations++
	target := q.Get("redirect_uri")
	if target == "" {
		target = s.URL + "/oauth/code"
	}
	v := url.Values{"code": {code}, "client_id": {s.opts.ClientID}}
	if st := q.Get("state"); st != "" {
		v.Set("state", st)
	}
	w.Header().Set("Location", target+"?"+v.Encode()) // the code is URL-encoded ("22%3A…")
	w.WriteHeader(http.StatusFound)
}

func writeHTML(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/html;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

type tokenAnswer struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// oauthError writes an OAuth error. UNCONFIRMED: Bullhorn's body for a
// refused grant (B1, C4); we chose RFC 6749's.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// serveToken is the token endpoint: parameters in the query string and an
// empty body, as the SDKs send them (B1); a form body works too.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "POST required")
		return
	}
	q := params(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if q.Get("client_id") != s.opts.ClientID || q.Get("client_secret") != s.opts.ClientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "Invalid client credentials")
		return
	}
	now := s.opts.Clock()
	switch q.Get("grant_type") {
	case "authorization_code":
		code := q.Get("code")
		exp, ok := s.codes[code]
		if !ok || now.After(exp) {
			oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid, expired, or revoked authorization code.")
			return
		}
		delete(s.codes, code) // single use
	case "refresh_token":
		rt := q.Get("refresh_token")
		if !s.refresh[rt] {
			s.stats.RefusedRefreshes++
			oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid, expired, or revoked refresh token.")
			return
		}
		s.stats.Refreshes++
		if s.opts.Refresh == RefreshReusable {
			s.issue(w, now, rt)
			return
		}
		delete(s.refresh, rt)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Unsupported grant type: "+q.Get("grant_type"))
		return
	}
	s.issue(w, now, "")
}

// issue answers a new access token, and refresh (or a new one when "").
func (s *Server) issue(w http.ResponseWriter, now time.Time, refresh string) {
	at := bhToken(5)
	s.access[at] = now.Add(s.opts.AccessTokenTTL)
	if refresh == "" {
		refresh = bhToken(5)
		s.refresh[refresh] = true
	}
	writeJSON(w, http.StatusOK, tokenAnswer{AccessToken: at, TokenType: "Bearer", ExpiresIn: int(s.opts.AccessTokenTTL / time.Second), RefreshToken: refresh})
}

// serveLogin is the REST login (B1): an access token for a BhRestToken and
// the corporation's restUrl, with the trailing slash a live tenant gives.
func (s *Server) serveLogin(w http.ResponseWriter, r *http.Request) {
	q := params(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Clock()
	exp, ok := s.access[q.Get("access_token")]
	if !ok || now.After(exp) {
		// UNCONFIRMED: the status; the body says 400 (B1).
		writeError(w, http.StatusBadRequest, "errors.authentication.invalidOAuthToken", "Invalid or expired OAuth access token.")
		return
	}
	if q.Get("version") == "" {
		writeError(w, http.StatusBadRequest, "errors.missingParameter", "version is required")
		return
	}
	ttl := s.opts.SessionTTL
	if v := q.Get("ttl"); v != "" {
		var minutes int
		if _, err := fmt.Sscanf(v, "%d", &minutes); err != nil || minutes < 1 {
			writeError(w, http.StatusBadRequest, "errors.badParameter", "ttl must be a number of minutes")
			return
		}
		ttl = time.Duration(min(minutes, 2880)) * time.Minute
	}
	tok := randomHex(4) + "-" + randomHex(2) + "-" + randomHex(2) + "-" + randomHex(2) + "-" + randomHex(6)
	s.sessions[tok] = now.Add(ttl)
	s.stats.Logins++
	http.SetCookie(w, &http.Cookie{Name: "BhRestToken", Value: tok, Path: "/"})
	writeJSON(w, http.StatusOK, map[string]string{"BhRestToken": tok, "restUrl": s.RestURL()})
}

// session finds the BhRestToken in the query, a header (BhRestToken or
// BHRestToken: header names are case-insensitive) or the cookie (B1).
// None at all is 412; an unknown or expired one is 401.
func (s *Server) session(r *http.Request) (status int, key, msg string) {
	tok := r.URL.Query().Get("BhRestToken")
	if tok == "" {
		tok = r.Header.Get("BhRestToken")
	}
	if tok == "" {
		if c, err := r.Cookie("BhRestToken"); err == nil {
			tok = c.Value
		}
	}
	if tok == "" {
		// UNCONFIRMED: the 412 body (C5).
		return http.StatusPreconditionFailed, "errors.authentication.missingRestToken", "Missing BhRestToken."
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.sessions[tok]
	if !ok || s.opts.Clock().After(exp) {
		return http.StatusUnauthorized, "errors.authentication.invalidRestToken", "Bad 'BhRestToken' or timed-out."
	}
	return 0, "", ""
}
