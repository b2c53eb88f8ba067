// Package salesforce implements connectors.CRM for Salesforce: Contacts,
// Leads and person Accounts read with SOQL over the REST API, opt-outs
// written with sObject Collections, Campaigns as the lists that scope a
// sync. It logs in with the OAuth 2.0 client credentials or JWT bearer flow
// and watches the org's daily API budget.
package salesforce

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

// DefaultAPIVersion is the REST API version used when Options leaves it empty.
const DefaultAPIVersion = "v62.0"

// DefaultAudience is the JWT "aud" for production orgs; sandboxes use
// https://test.salesforce.com.
const DefaultAudience = "https://login.salesforce.com"

const system = "salesforce"

// Options configures a Client. Give ClientSecret for the client credentials
// flow, or Username and PrivateKeyPEM for the JWT bearer flow.
type Options struct {
	// LoginURL is where tokens come from: the org's My Domain URL
	// (https://acme.my.salesforce.com), which the client credentials flow
	// requires; the JWT bearer flow may also use https://login.salesforce.com.
	// The API itself is called on the instance_url the token answer gives.
	LoginURL string
	// APIVersion is the REST version, "v62.0" form; "" means DefaultAPIVersion.
	APIVersion string
	// ClientID is the connected app's consumer key (both flows).
	ClientID string
	// ClientSecret is the consumer secret (client credentials flow).
	ClientSecret string
	// Username is the pre-approved user the JWT bearer flow logs in as.
	Username string
	// PrivateKeyPEM is the RSA key (PKCS#1 or PKCS#8 PEM) whose certificate
	// the connected app holds (JWT bearer flow).
	PrivateKeyPEM []byte
	// Audience is the JWT "aud"; "" means DefaultAudience.
	Audience string
	// Logger receives retry and failure lines; nil discards them.
	Logger *slog.Logger
	// RetryMax, RetryWaitMin, RetryWaitMax and Timeout tune the HTTP
	// retries (see httpx.Options); zero values take httpx's defaults.
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	Timeout                    time.Duration
	// Transport is the underlying RoundTripper; nil means a pooled default.
	Transport http.RoundTripper
	// MaxInFlight caps requests in flight to the org, shared by every client
	// of the same org in the process; 0 means 10. Salesforce allows 25
	// concurrent long-running requests per production org.
	MaxInFlight int
	// OrgKey names the org for that shared cap; "" means the LoginURL host
	// (and the Username, when the host is the shared login.salesforce.com).
	OrgKey string
}

// Client is a Salesforce org as the sync sees it. It is safe for
// concurrent use.
type Client struct {
	cfg     Options
	login   string // token endpoint
	version string
	key     *rsa.PrivateKey
	http    *http.Client

	mu       sync.Mutex // serialises logins
	sess     atomic.Pointer[session]
	usedAPI  atomic.Int64
	maxAPI   atomic.Int64
	usageSet atomic.Bool

	rest connectors.Leftovers[leftover] // the unread rest of query batches, by cursor
}

type session struct {
	token    string
	instance string // instance_url, no trailing slash
}

var _ connectors.CRM = (*Client)(nil)

var versionPattern = regexp.MustCompile(`^v\d{2,3}\.\d$`)

// New validates cfg and returns a client. It does not call Salesforce;
// Ping checks the credentials.
func New(cfg Options) (*Client, error) {
	if cfg.APIVersion == "" {
		cfg.APIVersion = DefaultAPIVersion
	}
	if !versionPattern.MatchString(cfg.APIVersion) {
		return nil, fmt.Errorf("salesforce: Options.APIVersion %q is not of the form v62.0", cfg.APIVersion)
	}
	login, err := httpx.BaseURL(cfg.LoginURL)
	if err != nil {
		return nil, fmt.Errorf("salesforce: Options.LoginURL: %w", err)
	}
	if strings.TrimSpace(cfg.ClientID) == "" {
		return nil, errors.New("salesforce: Options.ClientID is required")
	}
	c := &Client{cfg: cfg, login: login.String() + "/services/oauth2/token", version: cfg.APIVersion}
	jwtFlow := cfg.Username != "" || len(cfg.PrivateKeyPEM) > 0
	switch {
	case jwtFlow && cfg.ClientSecret != "":
		return nil, errors.New("salesforce: Options: give ClientSecret (client credentials) or Username and PrivateKeyPEM (JWT bearer), not both")
	case jwtFlow:
		if cfg.Username == "" {
			return nil, errors.New("salesforce: Options.Username is required for the JWT bearer flow")
		}
		if len(cfg.PrivateKeyPEM) == 0 {
			return nil, errors.New("salesforce: Options.PrivateKeyPEM is required for the JWT bearer flow")
		}
		// The key is parsed without echoing it: an error must not leak it.
		if c.key, err = jwt.ParseRSAPrivateKeyFromPEM(cfg.PrivateKeyPEM); err != nil {
			return nil, errors.New("salesforce: Options.PrivateKeyPEM is not a PEM-encoded RSA private key")
		}
		if c.cfg.Audience == "" {
			c.cfg.Audience = DefaultAudience
		}
	case cfg.ClientSecret == "":
		return nil, errors.New("salesforce: Options.ClientSecret is required (or Username and PrivateKeyPEM for the JWT bearer flow)")
	}
	orgKey := cfg.OrgKey
	if orgKey == "" {
		orgKey = login.Host
		if h := login.Hostname(); h == "login.salesforce.com" || h == "test.salesforce.com" {
			orgKey += "|" + cfg.Username
		}
	}
	inFlight := cfg.MaxInFlight
	if inFlight <= 0 {
		inFlight = 10
	}
	c.http = httpx.New(httpx.Options{
		Name:         system,
		Limiter:      httpx.SharedLimiter("salesforce:"+orgKey, inFlight),
		Base:         cfg.Transport,
		Logger:       cfg.Logger,
		RetryMax:     cfg.RetryMax,
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		Timeout:      cfg.Timeout,
	})
	return c, nil
}

// baseURL accepts an https URL, or plain http on a loopback host (an
// emulator), and drops any path.

// MaxBatch is the sObject Collections limit: 200 records a call. Lookups
// share it so that a batch found is a batch written.
func (c *Client) MaxBatch() int { return 200 }

// APIUsage is the org's API budget as the last response's Sforce-Limit-Info
// header gave it: calls used in the rolling 24 hours and the maximum. ok is
// false until a response has carried the header.
func (c *Client) APIUsage() (used, max int, ok bool) {
	return int(c.usedAPI.Load()), int(c.maxAPI.Load()), c.usageSet.Load()
}

// Ping logs in if needed and reads the org's limits: it checks the
// credentials, the API version and the budget in one call.
func (c *Client) Ping(ctx context.Context) error {
	var out struct {
		DailyAPIRequests struct{ Max, Remaining int } `json:"DailyApiRequests"`
	}
	return c.do(ctx, http.MethodGet, c.dataPath("/limits"), nil, nil, &out)
}

func (c *Client) logger() *slog.Logger {
	if c.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.cfg.Logger.With("system", system)
}

func (c *Client) dataPath(p string) string { return "/services/data/" + c.version + p }

// ---- auth ----

// tokenAnswer is the token endpoint's answer, success or error.
type tokenAnswer struct {
	AccessToken      string `json:"access_token"`
	InstanceURL      string `json:"instance_url"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// currentSession returns the session, logging in the first time.
func (c *Client) currentSession(ctx context.Context) (*session, error) {
	if s := c.sess.Load(); s != nil {
		return s, nil
	}
	return c.refresh(ctx, nil)
}

// refresh logs in again unless another caller already replaced stale: one
// expired session costs one login however many calls saw it expire.
func (c *Client) refresh(ctx context.Context, stale *session) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.sess.Load(); s != nil && s != stale {
		return s, nil
	}
	s, err := c.loginOnce(ctx)
	if err != nil {
		return nil, err
	}
	c.sess.Store(s)
	return s, nil
}

func (c *Client) loginOnce(ctx context.Context) (*session, error) {
	form := url.Values{"client_id": {c.cfg.ClientID}}
	if c.key != nil {
		now := time.Now()
		assertion, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
			"iss": c.cfg.ClientID,
			"sub": c.cfg.Username,
			"aud": c.cfg.Audience,
			// Salesforce wants exp within 3 minutes.
			"exp": now.Add(3 * time.Minute).Unix(),
		}).SignedString(c.key)
		if err != nil {
			return nil, fmt.Errorf("salesforce: sign JWT assertion: %w", err)
		}
		form = url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {assertion}}
	} else {
		form.Set("grant_type", "client_credentials")
		form.Set("client_secret", c.cfg.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.login, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("salesforce: token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("salesforce: token answer: %w", err)
	}
	var ans tokenAnswer
	_ = json.Unmarshal(body, &ans)
	if resp.StatusCode != http.StatusOK || ans.AccessToken == "" {
		kind := connectors.ErrUnauthorized
		switch {
		case resp.StatusCode >= 500:
			kind = connectors.ErrServer
		case resp.StatusCode == http.StatusTooManyRequests:
			kind = connectors.ErrRateLimited
		}
		code := ans.Error
		if code == "" {
			code = http.StatusText(resp.StatusCode)
		}
		return nil, &connectors.APIError{System: system, Status: resp.StatusCode, Kind: kind, Code: code,
			Detail: "token request refused: " + httpx.Redact(ans.ErrorDescription)}
	}
	inst, err := httpx.BaseURL(ans.InstanceURL)
	if err != nil {
		return nil, fmt.Errorf("salesforce: token answer instance_url: %w", err)
	}
	return &session{token: ans.AccessToken, instance: inst.String()}, nil
}

// ---- calls ----

// sfError is one entry of Salesforce's error array.
type sfError struct {
	Message   string   `json:"message"`
	ErrorCode string   `json:"errorCode"`
	Fields    []string `json:"fields"`
}

// do calls path (relative to instance_url) and decodes a 2xx answer into
// out. A 401 INVALID_SESSION_ID logs in again and repeats the call once;
// every other failure is classified into a *connectors.APIError.
func (c *Client) do(ctx context.Context, method, path string, header http.Header, body []byte, out any) error {
	sess, err := c.currentSession(ctx)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		status, respHeader, respBody, err := c.send(ctx, sess, method, path, header, body)
		if err != nil {
			return err
		}
		if status >= 200 && status < 300 {
			if out == nil || status == http.StatusNoContent {
				return nil
			}
			if err := json.Unmarshal(respBody, out); err != nil {
				return fmt.Errorf("salesforce: %s %s: decode answer: %w", method, redactPath(path), err)
			}
			return nil
		}
		apiErr := c.classify(status, respHeader, respBody)
		if status == http.StatusUnauthorized && apiErr.Code == "INVALID_SESSION_ID" && attempt == 0 {
			if sess, err = c.refresh(ctx, sess); err != nil {
				return err
			}
			continue
		}
		return apiErr
	}
}

func (c *Client) send(ctx context.Context, sess *session, method, path string, header http.Header, body []byte) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, sess.instance+path, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("salesforce: %s %s: %w", method, redactPath(path), err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+sess.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("salesforce: %s %s: %s", method, redactPath(path), httpx.Redact(err.Error()))
	}
	defer resp.Body.Close()
	c.noteUsage(resp.Header)
	b, err := httpx.ReadBody(resp.Body, httpx.MaxBody, "salesforce: "+method+" "+redactPath(path))
	if errors.Is(err, httpx.ErrBodyTooLarge) {
		return 0, nil, nil, err
	}
	if err != nil {
		return 0, nil, nil, fmt.Errorf("salesforce: %s %s: read answer: %w", method, redactPath(path), err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// redactPath keeps a query string (which holds SOQL with addresses) out of
// error messages.
func redactPath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i] + "?…"
	}
	return p
}

var usagePattern = regexp.MustCompile(`api-usage=(\d+)/(\d+)`)

func (c *Client) noteUsage(h http.Header) {
	m := usagePattern.FindStringSubmatch(h.Get("Sforce-Limit-Info"))
	if m == nil {
		return
	}
	used, _ := strconv.Atoi(m[1])
	max, _ := strconv.Atoi(m[2])
	c.usedAPI.Store(int64(used))
	c.maxAPI.Store(int64(max))
	c.usageSet.Store(true)
}

// classify maps an error answer onto the connectors error kinds.
func (c *Client) classify(status int, h http.Header, body []byte) *connectors.APIError {
	e := &connectors.APIError{System: system, Status: status}
	var arr []sfError
	if json.Unmarshal(body, &arr) == nil && len(arr) > 0 {
		e.Code, e.Detail = arr[0].ErrorCode, arr[0].Message
	} else if len(body) > 0 {
		e.Detail = string(body)
	}
	if e.Code == "" {
		e.Code = http.StatusText(status)
	}
	// Messages echo the query, and so the addresses in it.
	e.Detail = httpx.Redact(strings.TrimSpace(e.Detail))
	if len(e.Detail) > 500 {
		e.Detail = e.Detail[:500] + "…"
	}
	switch {
	case status == http.StatusUnauthorized:
		e.Kind = connectors.ErrUnauthorized
	case e.Code == "REQUEST_LIMIT_EXCEEDED" && strings.Contains(e.Detail, "Concurrent"):
		// The concurrent-request limit clears in seconds: retryable.
		e.Kind = connectors.ErrRateLimited
	case e.Code == "REQUEST_LIMIT_EXCEEDED":
		e.Kind = connectors.ErrQuotaExhausted
		usage := "unknown"
		if used, max, ok := c.APIUsage(); ok {
			usage = fmt.Sprintf("%d/%d", used, max)
		}
		e.Detail = fmt.Sprintf("the org's daily API request budget is spent (api-usage %s); no call succeeds until the rolling 24-hour window frees some: %s", usage, e.Detail)
	case status == http.StatusForbidden:
		e.Kind = connectors.ErrForbidden
	case status == http.StatusNotFound:
		e.Kind = connectors.ErrNotFound
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		e.Kind = connectors.ErrRateLimited
		e.RetryAfter, _ = httpx.RetryAfter(h)
	case status >= 500:
		e.Kind = connectors.ErrServer
	default:
		e.Kind = connectors.ErrInvalid
	}
	return e
}
