// Package netsuite is the connectors.CRM for Oracle NetSuite over SuiteTalk
// REST web services: SuiteQL to read customers and contacts, saved searches
// (REST query API) to scope the sync to lists, and one record PATCH per
// opt-out write. It authenticates with OAuth 1.0a Token-Based Auth or OAuth
// 2.0 client credentials (M2M), and shares one concurrency cap per account
// with everything else in the process, because NetSuite counts concurrent
// requests per account across all integrations.
package netsuite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

// System is the name used in errors and logs.
const System = "netsuite"

// Options configures a Client. Set exactly one of TBA and M2M.
type Options struct {
	// AccountID is the account as NetSuite spells it: "1234567" or a
	// sandbox "1234567_SB1". It is the OAuth realm, and the API host is
	// derived from it (lower case, "_" -> "-").
	AccountID string
	// BaseURL overrides "https://<account>.suitetalk.api.netsuite.com",
	// e.g. for the emulator.
	BaseURL string
	// TBA is OAuth 1.0a Token-Based Authentication.
	TBA TBA
	// M2M is OAuth 2.0 client credentials with a JWT assertion.
	M2M M2M
	// Concurrency caps requests in flight to the account, shared by every
	// Client of the same account in the process; 0 means 5 (the lowest
	// service tier's account limit).
	Concurrency int
	// TimeZone is the time zone of the integration user's preferences:
	// SuiteQL reads and writes dates in it. nil means UTC. A wrong zone
	// shifts the watermark by the zone's offset: set it. Near the autumn
	// change of clocks in it, watermark reads start up to an hour or two
	// early, so as to read the repeated hour whole.
	TimeZone *time.Location
	// ListCacheTTL is how long the members of the saved searches, read
	// afresh on the first page of every read, are reused by its later
	// pages; 0 means 5 minutes.
	ListCacheTTL time.Duration
	// Logger receives debug and warning lines; nil discards them.
	Logger *slog.Logger
	// RetryMax, RetryWaitMin, RetryWaitMax and Timeout are passed to httpx
	// (0 means its defaults).
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	Timeout                    time.Duration
	// Base is the underlying transport; nil means a pooled default.
	Base http.RoundTripper
	// Now is the clock for OAuth timestamps and token expiry; nil means time.Now.
	Now func() time.Time
}

// Client is a NetSuite account, as the sync needs it. It implements
// connectors.CRM and is safe for concurrent use.
type Client struct {
	account     string
	base        string
	http        *http.Client
	tokens      *tokenSource
	loc         *time.Location
	concurrency int
	log         *slog.Logger
	lists       *listCache
}

var _ connectors.CRM = (*Client)(nil)

// defaultConcurrency is the lowest service tier's account limit.
const defaultConcurrency = 5

var accountPattern = regexp.MustCompile(`^[A-Za-z0-9]+(_[A-Za-z0-9]+)?$`)

// New checks cfg and returns a Client. It makes no request; call Ping to
// check the credentials.
func New(cfg Options) (*Client, error) {
	if !accountPattern.MatchString(cfg.AccountID) {
		return nil, fmt.Errorf("netsuite: Options.AccountID %q is not a NetSuite account id such as 1234567 or 1234567_SB1", cfg.AccountID)
	}
	account := strings.ToUpper(cfg.AccountID)
	base := cfg.BaseURL
	if base == "" {
		base = "https://" + strings.ReplaceAll(strings.ToLower(account), "_", "-") + ".suitetalk.api.netsuite.com"
	}
	bu, err := url.Parse(base)
	if err != nil || (bu.Scheme != "http" && bu.Scheme != "https") || bu.Host == "" {
		return nil, fmt.Errorf("netsuite: Options.BaseURL %q is not an http(s) URL", cfg.BaseURL)
	}
	base = strings.TrimRight(base, "/")
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	conc := cfg.Concurrency
	if conc == 0 {
		conc = defaultConcurrency
	}
	if conc < 0 {
		return nil, fmt.Errorf("netsuite: Options.Concurrency %d is negative", cfg.Concurrency)
	}
	ttl := cfg.ListCacheTTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	loc := cfg.TimeZone
	if loc == nil {
		loc = time.UTC
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := httpx.Options{
		Name:         System,
		Limiter:      httpx.SharedLimiter(System+":"+account, conc),
		Base:         cfg.Base,
		Logger:       cfg.Logger,
		RetryMax:     cfg.RetryMax,
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		Timeout:      cfg.Timeout,
	}
	c := &Client{account: account, base: base, loc: loc, concurrency: conc, log: log.With("system", System), lists: newListCache(ttl, now)}

	hasTBA := cfg.TBA != (TBA{})
	hasM2M := cfg.M2M.ClientID != "" || cfg.M2M.CertificateID != "" || cfg.M2M.PrivateKey != ""
	switch {
	case hasTBA && hasM2M:
		return nil, errors.New("netsuite: set Options.TBA or Options.M2M, not both")
	case hasTBA:
		for name, v := range map[string]string{"ConsumerKey": cfg.TBA.ConsumerKey, "ConsumerSecret": cfg.TBA.ConsumerSecret, "TokenID": cfg.TBA.TokenID, "TokenSecret": cfg.TBA.TokenSecret} {
			if v == "" {
				return nil, fmt.Errorf("netsuite: Options.TBA.%s is empty", name)
			}
		}
		opts.Sign = tbaSigner(account, cfg.TBA, now)
	case hasM2M:
		if cfg.M2M.ClientID == "" {
			return nil, errors.New("netsuite: Options.M2M.ClientID is empty")
		}
		if cfg.M2M.CertificateID == "" {
			return nil, errors.New("netsuite: Options.M2M.CertificateID is empty")
		}
		key, method, err := parsePrivateKey(cfg.M2M.PrivateKey)
		if err != nil {
			// The parse error never quotes key material.
			return nil, fmt.Errorf("netsuite: Options.M2M.PrivateKey: %w", err)
		}
		// The token request shares the account's limiter (it is a request
		// to the account) but is not signed: the assertion is its credential.
		tokOpts := opts
		c.tokens = &tokenSource{cfg: cfg.M2M, key: key, method: method, tokenURL: base + tokenPath, http: httpx.New(tokOpts), now: now}
		opts.Sign = func(req *http.Request) error {
			tok, err := c.tokens.Token(req.Context())
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			return nil
		}
	default:
		return nil, errors.New("netsuite: Options.TBA or Options.M2M must be set")
	}
	c.http = httpx.New(opts)
	return c, nil
}

// Ping runs the cheapest authenticated query there is, to check the
// credentials and the role's SuiteQL permission at start.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.suiteQL(ctx, "SELECT id FROM customer", 1, 0)
	return err
}

// request sends one call and returns the status, headers and body of a 2xx
// answer, or a classified *connectors.APIError.
func (c *Client) request(ctx context.Context, method, path string, query url.Values, body any, header http.Header) (*http.Response, []byte, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return nil, nil, err
		}
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	for attempt := 0; ; attempt++ {
		var rd io.Reader
		if payload != nil {
			rd = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return nil, nil, err
		}
		for k, vs := range header {
			req.Header[k] = vs
		}
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		if err != nil {
			return nil, nil, fmt.Errorf("netsuite: %s %s: %w", method, path, err)
		}
		data, err := httpx.ReadBody(resp.Body, httpx.MaxBody, "netsuite: "+method+" "+path)
		resp.Body.Close()
		if errors.Is(err, httpx.ErrBodyTooLarge) {
			return nil, nil, err
		}
		if err != nil {
			return nil, nil, fmt.Errorf("netsuite: %s %s: reading the answer: %w", method, path, err)
		}
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return resp, data, nil
		}
		// An M2M token can be revoked or lapse early; fetch a new one once.
		if resp.StatusCode == http.StatusUnauthorized && c.tokens != nil && attempt == 0 {
			c.tokens.invalidate()
			continue
		}
		return nil, nil, classify(resp, data)
	}
}

// errorBody is NetSuite's error document.
type errorBody struct {
	Title   string `json:"title"`
	Status  int    `json:"status"`
	Code    string `json:"o:errorCode"`
	Details []struct {
		Detail string `json:"detail"`
		Code   string `json:"o:errorCode"`
		Path   string `json:"o:errorPath"`
	} `json:"o:errorDetails"`
}

// classify turns a non-2xx answer into a *connectors.APIError. The kind
// follows the status; Code is the first detail's o:errorCode because the
// top-level one is generic (a 429 says USER_ERROR at the top and
// CONCURRENCY_LIMIT_EXCEEDED in the detail).
func classify(resp *http.Response, body []byte) *connectors.APIError {
	e := &connectors.APIError{System: System, Status: resp.StatusCode}
	var eb errorBody
	if json.Unmarshal(body, &eb) == nil {
		e.Code = eb.Code
		if e.Code == "" {
			e.Code = eb.Title
		}
		if len(eb.Details) > 0 {
			if eb.Details[0].Code != "" {
				e.Code = eb.Details[0].Code
			}
			e.Detail = httpx.Redact(eb.Details[0].Detail)
			if eb.Details[0].Path != "" {
				e.Detail += " (at " + eb.Details[0].Path + ")"
			}
		}
	}
	if e.Code == "" {
		e.Code = http.StatusText(resp.StatusCode)
	}
	switch s := resp.StatusCode; {
	case s == http.StatusUnauthorized:
		e.Kind = connectors.ErrUnauthorized
	case s == http.StatusForbidden:
		e.Kind = connectors.ErrForbidden
	case s == http.StatusNotFound:
		e.Kind = connectors.ErrNotFound
	case s == http.StatusTooManyRequests,
		// RESTlets answer 400 SSS_REQUEST_LIMIT_EXCEEDED over the limit.
		e.Code == "SSS_REQUEST_LIMIT_EXCEEDED", e.Code == "CONCURRENCY_LIMIT_EXCEEDED":
		e.Kind = connectors.ErrRateLimited
		if d, ok := httpx.RetryAfter(resp.Header); ok {
			e.RetryAfter = d
		}
	case s >= 500:
		e.Kind = connectors.ErrServer
	default:
		e.Kind = connectors.ErrInvalid
	}
	return e
}
