// Package dynamicstest is an in-process emulator of the parts of Microsoft
// Dynamics 365 (the Dataverse Web API v9.2) and of Microsoft Entra ID the
// opt-out sync uses, in the manner of net/http/httptest: the client
// credentials token endpoint (client secret, or a certificate's signed
// client assertion checked with RS256), bearer checks with Dataverse's 401
// challenge, the contacts, leads and accounts collections with their OData
// JSON, $select / $filter / $orderby / $top / odata.maxpagesize with
// skiptoken paging, marketing lists (static through their members, dynamic
// through their FetchXML query), PATCH with If-Match, $batch (multipart/mixed,
// changesets, continue-on-error) and the service-protection limits.
// Faults, latency and request counters come from the shared emulator
// middleware.
//
// Wire shapes follow ../shared/reference/dynamics-bullhorn-wire-facts.md
// part A; each choice the reference leaves open is marked UNCONFIRMED where
// it is made, and the ones a client could notice are Options.
package dynamicstest

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// APIPath is where the Web API lives on the org's host.
const APIPath = "/api/data/v9.2"

// The service-protection error codes (reference A7).
const (
	CodeRequests    = "0x80072322" // 6000 requests in 300 s
	CodeTime        = "0x80072321" // 1,200,000 ms of execution time in 300 s
	CodeConcurrency = "0x80072326" // 52 concurrent requests
)

// limitMessages are the messages of the limit codes, verbatim (reference A7).
var limitMessages = map[string]string{
	CodeRequests:    "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
	CodeTime:        "Combined execution time of incoming requests exceeded limit of 1,200,000  milliseconds over time window of 300 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
	CodeConcurrency: "Number of concurrent requests exceeded the limit of 52.",
}

// Options configures an emulated environment.
type Options struct {
	// Addr is the loopback address to listen on; "" picks a free port.
	Addr string
	// TenantID, ClientID and ClientSecret are the app registration's; empty
	// means generated ones.
	TenantID, ClientID, ClientSecret string
	// TokenTTL is how long an access token lives; 0 means 3599 s, as
	// Entra answers. ExpireTokens ends them all at once.
	TokenTTL time.Duration
	// Clock stamps modifiedon; nil means time.Now. Tokens and the
	// service-protection window use the wall clock.
	Clock func() time.Time
	// FractionalSeconds writes modifiedon with milliseconds
	// ("2026-05-29T09:00:00.123Z") and keeps them for $filter. UNCONFIRMED
	// (reference A3): whether Dataverse writes a fraction; the default
	// writes whole seconds with Z.
	FractionalSeconds bool
	// RequestLimit is the service-protection limit on requests per 300 s
	// sliding window; 0 means 6000, negative means none.
	RequestLimit int
	// ConcurrencyLimit is the limit on requests in flight; 0 means 52,
	// negative means none.
	ConcurrencyLimit int
	// MaxPageSize is the largest page a query answers; 0 means 5000.
	MaxPageSize int
	// SkipTokenWithoutTracking writes the older nextLink cookie without
	// istracking (seen in DynamicsWebApi's stubs); the default writes the
	// current docs' form.
	SkipTokenWithoutTracking bool
}

// Server is a running emulated Dataverse environment with its Entra tenant.
type Server struct {
	// URL is the org URL (https://<org>.crm.dynamics.com in real life) and
	// also the Entra authority (https://login.microsoftonline.com).
	URL string
	// TenantID, ClientID and ClientSecret are the app registration's.
	TenantID, ClientID, ClientSecret string
	// CertificatePEM holds the private key and the self-signed certificate
	// uploaded to the app registration: the client signs its client
	// assertion with it.
	CertificatePEM []byte
	// Middleware injects faults and latency and counts requests by
	// endpoint ("GET /api/data/v9.2/contacts").
	Middleware *emulator.Middleware

	srv  *httptest.Server
	cert *x509.Certificate
	opts Options

	mu       sync.Mutex
	entities map[string]*entity // by entity set name
	byID     map[string]*record
	lists    map[string]*list
	tokens   map[string]time.Time // token -> expiry
	issued   int
	// batchWrites counts the requests other than GET run inside batches.
	batchWrites int
	version     int64
	window      []time.Time // API requests in the last 300 s
	forced      []forced
}

// forced is a service-protection answer Throttle queued.
type forced struct {
	code       string
	retryAfter time.Duration
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewGUID returns a random GUID in Dataverse's lower-case form.
func NewGUID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

// NewServer starts an emulated environment on loopback. It panics if it
// cannot listen, as httptest.NewServer does.
func NewServer(opts Options) *Server {
	if opts.TokenTTL == 0 {
		opts.TokenTTL = 3599 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.RequestLimit == 0 {
		opts.RequestLimit = 6000
	}
	if opts.ConcurrencyLimit == 0 {
		opts.ConcurrencyLimit = 52
	}
	if opts.MaxPageSize == 0 {
		opts.MaxPageSize = 5000
	}
	if opts.TenantID == "" {
		opts.TenantID = NewGUID()
	}
	if opts.ClientID == "" {
		opts.ClientID = NewGUID()
	}
	if opts.ClientSecret == "" {
		opts.ClientSecret = "dyn~" + randomHex(18)
	}
	key, der := emulator.SigningKey()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	s := &Server{
		TenantID:     opts.TenantID,
		ClientID:     opts.ClientID,
		ClientSecret: opts.ClientSecret,
		CertificatePEM: append(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...),
		cert:     cert,
		opts:     opts,
		entities: newEntities(),
		byID:     map[string]*record{},
		lists:    map[string]*list{},
		tokens:   map[string]time.Time{},
	}
	s.Middleware = emulator.NewMiddleware(emulator.Vendor{
		TooMany:     func(w http.ResponseWriter, r *http.Request) { writeLimit(w, CodeRequests, 5*time.Second) },
		ServerError: s.writeServerError,
		OverLimit:   func(w http.ResponseWriter, r *http.Request) { writeLimit(w, CodeConcurrency, time.Second) },
		Endpoint:    endpointName,
	})
	if opts.ConcurrencyLimit > 0 {
		s.Middleware.SetLimit(opts.ConcurrencyLimit)
	}
	srv, err := emulator.Listen(opts.Addr, s.Middleware.Wrap(http.HandlerFunc(s.serve)))
	if err != nil {
		panic(fmt.Sprintf("dynamicstest: listen on %q: %v", opts.Addr, err))
	}
	s.srv = srv
	s.URL = srv.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// ExpireTokens ends every access token: the next API call gets 401.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]time.Time{}
}

// TokensIssued counts the access tokens the token endpoint has issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// BatchWrites counts the requests other than GET that batches have run
// (the Middleware counts a batch as one POST, whatever it holds).
func (s *Server) BatchWrites() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.batchWrites
}

// Throttle answers the next n API requests with the service-protection
// 429 of code (CodeRequests, CodeTime or CodeConcurrency) and its
// Retry-After, as an environment over its limits does.
func (s *Server) Throttle(code string, n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.forced = append(s.forced, forced{code: code, retryAfter: retryAfter})
	}
}

var idSegment = regexp.MustCompile(`\([0-9a-fA-F-]{36}\)`)

// endpointName groups requests by endpoint for the counters, with record
// ids replaced ("PATCH /api/data/v9.2/contacts({id})").
func endpointName(r *http.Request) string {
	return r.Method + " " + idSegment.ReplaceAllString(r.URL.Path, "({id})")
}

// ---- answers ----

// odataError is Dataverse's error envelope (reference A7).
type odataError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e odataError
	e.Error.Code, e.Error.Message = code, msg
	writeJSON(w, status, e)
}

// writeLimit writes a service-protection 429. UNCONFIRMED (reference A7):
// the body; it is the general envelope with the documented code and message.
func writeLimit(w http.ResponseWriter, code string, retryAfter time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(retryAfter.Round(time.Second)/time.Second))))
	writeError(w, http.StatusTooManyRequests, code, limitMessages[code])
}

func (s *Server) writeServerError(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusServiceUnavailable, "0x80040216", "An unexpected error occurred.")
}

// ---- routing ----

var tokenPath = regexp.MustCompile(`^/([^/]+)/oauth2/v2\.0/token$`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if m := tokenPath.FindStringSubmatch(r.URL.Path); m != nil {
		s.token(w, r, m[1])
		return
	}
	if r.URL.Path != APIPath && !strings.HasPrefix(r.URL.Path, APIPath+"/") {
		writeError(w, http.StatusNotFound, "", "Resource not found for the segment '"+strings.TrimPrefix(r.URL.Path, "/")+"'.")
		return
	}
	if !s.authorized(r) {
		// UNCONFIRMED (reference A1): the 401 body; empty, with the challenge.
		w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer authorization_uri=%s/%s/oauth2/authorize, resource_id=%s/", s.URL, s.TenantID, s.URL))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if code, after, ok := s.overLimit(); ok {
		writeLimit(w, code, after)
		return
	}
	s.api(w, r)
}

// api serves one Web API request (top-level or a $batch part).
func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, APIPath), "/")
	switch {
	case rest == "$batch" && r.Method == http.MethodPost:
		s.batch(w, r)
	case rest == "WhoAmI" || rest == "WhoAmI()":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "0x8006088a", "The requested resource does not support http method '"+r.Method+"'.")
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{
			"@odata.context": s.URL + APIPath + "/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
			"BusinessUnitId": "6f8a3c2e-0000-4000-a000-000000000001", "UserId": "6f8a3c2e-0000-4000-a000-000000000002",
			"OrganizationId": "6f8a3c2e-0000-4000-a000-000000000003",
		})
	default:
		s.resource(w, r, rest)
	}
}

// ---- auth ----

type tokenError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
	Timestamp   string `json:"timestamp"`
	TraceID     string `json:"trace_id"`
	Correlation string `json:"correlation_id"`
}

// token is Entra's v2.0 token endpoint for the client credentials grant
// (reference A1). The error codes other than AADSTS70011 are Entra's
// well-known ones, not quoted in the reference.
func (s *Server) token(w http.ResponseWriter, r *http.Request, tenant string) {
	fail := func(status int, code string, aadsts int, desc string) {
		writeJSONPlain(w, status, tokenError{Error: code, Description: fmt.Sprintf("AADSTS%d: %s", aadsts, desc), Codes: []int{aadsts},
			Timestamp: time.Now().UTC().Format("2006-01-02 15:04:05Z"), TraceID: NewGUID(), Correlation: NewGUID()})
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "invalid_request", 900561, "The endpoint only accepts POST requests.")
		return
	}
	if tenant != s.TenantID {
		fail(http.StatusBadRequest, "invalid_request", 90002, fmt.Sprintf("Tenant '%s' not found.", tenant))
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'grant_type'.")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "client_credentials" {
		fail(http.StatusBadRequest, "unsupported_grant_type", 70003, fmt.Sprintf("The app requested an unsupported grant type '%s'.", g))
		return
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p // RFC 6749 2.3.1
	}
	if id != s.ClientID {
		fail(http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory.", id))
		return
	}
	if want := s.URL + "/.default"; r.PostForm.Get("scope") != want {
		fail(http.StatusBadRequest, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid. The scope "+r.PostForm.Get("scope")+" is not valid.")
		return
	}
	switch assertion := r.PostForm.Get("client_assertion"); {
	case assertion != "":
		if t := r.PostForm.Get("client_assertion_type"); t != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
			fail(http.StatusBadRequest, "invalid_request", 50027, "Invalid client_assertion_type.")
			return
		}
		if err := s.checkAssertion(assertion, s.URL+r.URL.Path); err != nil {
			fail(http.StatusUnauthorized, "invalid_client", 700027, "Client assertion failed signature validation. "+err.Error())
			return
		}
	case secret == "":
		fail(http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	case secret != s.ClientSecret:
		fail(http.StatusUnauthorized, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.")
		return
	}
	tok := "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + randomHex(24)
	s.mu.Lock()
	s.tokens[tok] = time.Now().Add(s.opts.TokenTTL)
	s.issued++
	s.mu.Unlock()
	secs := int(s.opts.TokenTTL / time.Second)
	writeJSONPlain(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok})
}

// checkAssertion verifies a client assertion: RS256 over the registered
// certificate's key, the certificate named by its x5t thumbprint, aud the
// token endpoint, iss and sub the client id, and not expired.
func (s *Server) checkAssertion(raw, endpoint string) error {
	sum := sha1.Sum(s.cert.Raw)
	thumb := base64.RawURLEncoding.EncodeToString(sum[:])
	tok, err := jwt.Parse(raw, func(t *jwt.Token) (any, error) {
		if x5t, _ := t.Header["x5t"].(string); strings.TrimRight(x5t, "=") != thumb {
			return nil, fmt.Errorf("the x5t thumbprint does not name a certificate of the application")
		}
		return s.cert.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(endpoint), jwt.WithIssuer(s.ClientID), jwt.WithSubject(s.ClientID), jwt.WithExpirationRequired())
	if err != nil {
		return err
	}
	if !tok.Valid {
		return fmt.Errorf("invalid token")
	}
	return nil
}

func writeJSONPlain(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if !strings.HasPrefix(h, "Bearer ") {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[strings.TrimPrefix(h, "Bearer ")]
	return ok && time.Now().Before(exp)
}

// overLimit applies the service-protection limits to one API request: a
// queued Throttle answer first, then the requests in the sliding 300 s
// window. The concurrency limit is the middleware's.
func (s *Server) overLimit() (string, time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.forced) > 0 {
		f := s.forced[0]
		s.forced = s.forced[1:]
		return f.code, f.retryAfter, true
	}
	if s.opts.RequestLimit < 0 {
		return "", 0, false
	}
	now := time.Now()
	cut := 0
	for cut < len(s.window) && now.Sub(s.window[cut]) >= 300*time.Second {
		cut++
	}
	s.window = s.window[cut:]
	if len(s.window) >= s.opts.RequestLimit {
		return CodeRequests, 300*time.Second - now.Sub(s.window[0]), true
	}
	s.window = append(s.window, now)
	return "", 0, false
}
