// Package netsuitetest is an emulator of the parts of NetSuite's SuiteTalk
// REST web services the netsuite connector uses, in the manner of
// net/http/httptest: OAuth 1.0a TBA and OAuth 2.0 M2M authentication with
// real signature checks, SuiteQL over customers and contacts, record GET and
// PATCH, saved-search results, the account concurrency limit with
// NetSuite's own 429 body, and seedable, inspectable state. Tests,
// benchmarks and the dev mode use it alike.
package netsuitetest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/emulator"
)

// Options configures a Server. Every zero value has a usable default.
type Options struct {
	// Addr is the loopback address to listen on; "" picks a free port.
	Addr string
	// AccountID is the account ("1234567_SB1"), also the OAuth realm; ""
	// generates one unique to the server, so that two servers never share
	// a client-side concurrency limiter.
	AccountID string
	// ConsumerKey, ConsumerSecret, TokenID and TokenSecret are the TBA
	// credentials accepted; empty ones are generated.
	ConsumerKey, ConsumerSecret, TokenID, TokenSecret string
	// ClientID and CertificateID identify the M2M integration; empty ones
	// are generated.
	ClientID, CertificateID string
	// PublicKey verifies M2M client assertions (*ecdsa.PublicKey or
	// *rsa.PublicKey). nil generates an EC P-256 key pair whose private
	// half is in Server.M2MPrivateKeyPEM.
	PublicKey crypto.PublicKey
	// Concurrency is the account's concurrent request limit; 0 means 5,
	// negative means none.
	Concurrency int
	// AllowConfirmedStatus lets a PATCH write globalSubscriptionStatus 3
	// or 4, which the default refuses.
	AllowConfirmedStatus bool
	// CustomFields declares entity custom checkbox fields
	// ("custentity_optout") that no seeded record sets yet.
	CustomFields []string
	// TimeZone is the integration user's time zone for SuiteQL dates; nil
	// means UTC.
	TimeZone *time.Location
	// Dates is how SuiteQL compares dates with TO_DATE literals around a
	// daylight-saving change in TimeZone; the zero value is WallClock.
	Dates DateSemantics
	// Now is the clock; nil means time.Now. SetNow changes it later.
	Now func() time.Time
	// Faults are injected from the start; Middleware.SetFaults changes them.
	Faults emulator.Faults
}

// Server is a running emulator.
type Server struct {
	// URL is the base URL to give the client as BaseURL.
	URL string
	// AccountID is the account and OAuth realm.
	AccountID string
	// The TBA credentials the server accepts.
	ConsumerKey, ConsumerSecret, TokenID, TokenSecret string
	// The M2M integration the server accepts.
	ClientID, CertificateID string
	// M2MPrivateKeyPEM is the generated private key when Options.PublicKey
	// was nil ("" otherwise).
	M2MPrivateKeyPEM string
	// Middleware holds the faults, the in-flight cap and the counters.
	// Endpoint names: "POST /services/rest/query/v1/suiteql",
	// "GET /services/rest/query/v1/savedsearch/{id}/result",
	// "GET|PATCH /services/rest/record/v1/{type}/{id}",
	// "POST /services/rest/auth/oauth2/v1/token".
	Middleware *emulator.Middleware

	srv       *httptest.Server
	publicKey crypto.PublicKey
	allowConf bool
	// failing are records whose PATCH answers a server error (FailWrites).
	failing map[connectors.RecordRef]bool
	loc     *time.Location
	dates   DateSemantics

	mu       sync.Mutex
	clock    func() time.Time
	tables   map[string]*table
	searches map[string][]connectors.RecordRef
	nextID   int64
	nonces   map[string]time.Time
	tokens   map[string]time.Time
	badAuth  int
}

var serverSeq atomic.Int64

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// NewServer starts an emulator. It panics if it cannot listen, as
// httptest.NewServer does.
func NewServer(opts Options) *Server {
	s := &Server{
		AccountID:      orDefault(opts.AccountID, fmt.Sprintf("TSTDRV%d%04d_SB1", serverSeq.Add(1), time.Now().UnixNano()%10000)),
		ConsumerKey:    orDefault(opts.ConsumerKey, randomHex(32)),
		ConsumerSecret: orDefault(opts.ConsumerSecret, randomHex(32)),
		TokenID:        orDefault(opts.TokenID, randomHex(32)),
		TokenSecret:    orDefault(opts.TokenSecret, randomHex(32)),
		ClientID:       orDefault(opts.ClientID, randomHex(32)),
		CertificateID:  orDefault(opts.CertificateID, randomHex(16)),
		publicKey:      opts.PublicKey,
		allowConf:      opts.AllowConfirmedStatus,
		loc:            opts.TimeZone,
		dates:          opts.Dates,
		clock:          opts.Now,
		searches:       map[string][]connectors.RecordRef{},
		nonces:         map[string]time.Time{},
		tokens:         map[string]time.Time{},
		tables:         map[string]*table{},
	}
	if s.loc == nil {
		s.loc = time.UTC
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	for _, name := range []string{"customer", "contact"} {
		t := &table{name: name, byID: map[int64]*entity{}, custom: map[string]bool{}}
		for _, f := range opts.CustomFields {
			t.custom[strings.ToLower(f)] = true
		}
		s.tables[name] = t
	}
	if s.publicKey == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			panic(err)
		}
		s.publicKey = key.Public()
		s.M2MPrivateKeyPEM = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	}
	s.Middleware = emulator.NewMiddleware(emulator.Vendor{
		TooMany:     writeConcurrencyLimit,
		OverLimit:   writeConcurrencyLimit,
		ServerError: writeUnexpected,
		Endpoint:    endpoint,
	})
	s.Middleware.SetFaults(opts.Faults)
	switch {
	case opts.Concurrency == 0:
		s.Middleware.SetLimit(5)
	case opts.Concurrency > 0:
		s.Middleware.SetLimit(opts.Concurrency)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+tokenPath, s.handleToken)
	mux.HandleFunc("POST /services/rest/query/v1/suiteql", s.authed(s.handleSuiteQL))
	mux.HandleFunc("GET /services/rest/query/v1/savedsearch/{id}/result", s.authed(s.handleSavedSearch))
	mux.HandleFunc("/services/rest/record/v1/{type}/{id}", s.authed(s.handleRecord))
	mux.HandleFunc("/", s.authed(func(w http.ResponseWriter, r *http.Request) {
		// UNCONFIRMED: what NetSuite answers for a path that is no
		// resource. We chose 404 NONEXISTENT_ID, the code it gives a
		// missing record, so a typo in a path reads as "not found".
		writeError(w, http.StatusNotFound, "NONEXISTENT_ID", "The requested resource "+r.URL.Path+" does not exist.", "")
	}))
	srv, err := emulator.Listen(opts.Addr, s.Middleware.Wrap(mux))
	if err != nil {
		panic(fmt.Sprintf("netsuitetest: listening on %q: %v", opts.Addr, err))
	}
	s.srv = srv
	s.URL = srv.URL
	return s
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// Handler is the emulator's handler, middleware included, for serving it
// elsewhere too (e.g. over TLS, which the worker requires outside -dev).
func (s *Server) Handler() http.Handler { return s.srv.Config.Handler }

// SetNow replaces the clock.
func (s *Server) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock = now
}

// now reads the clock. Caller holds s.mu.
func (s *Server) now() time.Time { return s.clock() }

// AuthFailures counts requests refused with 401.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.badAuth
}

// endpoint names a request for the counters, with ids folded.
func endpoint(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/services/rest/record/v1/"):
		if parts := strings.Split(strings.TrimPrefix(p, "/services/rest/record/v1/"), "/"); len(parts) == 2 {
			return r.Method + " /services/rest/record/v1/{type}/{id}"
		}
	case strings.HasPrefix(p, "/services/rest/query/v1/savedsearch/") && strings.HasSuffix(p, "/result"):
		return r.Method + " /services/rest/query/v1/savedsearch/{id}/result"
	}
	return r.Method + " " + p
}

// The error "type" NetSuite sends in older accounts; clients must not key
// on it.
const errorType = "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"

var titles = map[int]string{400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error"}

type errorDetail struct {
	Detail string `json:"detail"`
	Code   string `json:"o:errorCode"`
	Path   string `json:"o:errorPath,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes NetSuite's error document.
func writeError(w http.ResponseWriter, status int, code, detail, path string) {
	writeJSON(w, status, "application/vnd.oracle.resource+json; type=error", map[string]any{
		"type":           errorType,
		"title":          titles[status],
		"status":         status,
		"o:errorDetails": []errorDetail{{Detail: detail, Code: code, Path: path}},
	})
}

// writeConcurrencyLimit is NetSuite's answer over the account's concurrency
// limit, verbatim from the docs: status 429 with title "Bad Request" and a
// top-level USER_ERROR. It carries no Retry-After.
func writeConcurrencyLimit(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusTooManyRequests, "application/vnd.oracle.resource+json; type=error", map[string]any{
		"type":           errorType,
		"title":          "Bad Request",
		"status":         429,
		"o:errorCode":    "USER_ERROR",
		"o:errorDetails": []errorDetail{{Detail: "Concurrent request limit exceeded. Request blocked.", Code: "CONCURRENCY_LIMIT_EXCEEDED"}},
	})
}

func writeUnexpected(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusInternalServerError, "UNEXPECTED_ERROR", "An unexpected error occurred. Error ID: "+randomHex(10), "")
}
