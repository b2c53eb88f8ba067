// Package bullhorn implements connectors.CRM for Bullhorn, the staffing
// CRM: Candidates, ClientContacts and Leads read through /search and
// written one entity update each, Tearsheets as the lists that scope a
// sync. It signs in as an API user (data-centre discovery through
// loginInfo, the OAuth authorization-code flow run headless, the REST
// login that gives a BhRestToken), keeps each rotated refresh token in a
// TokenStore, and stays under the corporation's calls at once and calls
// per minute.
package bullhorn

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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

const system = "bullhorn"

// DefaultLoginInfoURL is where data-centre discovery starts; a user on
// another data centre is redirected (307) to the right one.
const DefaultLoginInfoURL = "https://rest.bullhornstaffing.com/rest-services"

// Options configures a Client.
type Options struct {
	// LoginInfoURL is the REST services root loginInfo is read from; ""
	// means DefaultLoginInfoURL.
	LoginInfoURL string
	// ClientID and ClientSecret are the OAuth client's (from Bullhorn
	// support); Username and Password the API user's.
	ClientID, ClientSecret, Username, Password string
	// Integration names the integration in errors ("" leaves it out).
	Integration string
	// Tokens keeps refresh tokens across restarts and workers; nil means
	// a MemoryTokenStore. TokenKey is the key they are kept under; ""
	// means Integration, or the username when that is empty too.
	Tokens   TokenStore
	TokenKey string
	// EmailFields are the address fields matched and read, in order;
	// nil means just "email". Allowed: email, email2, email3.
	EmailFields []string
	// TrueText and FalseText are what a custom text field holds for yes
	// and no ("Yes", "No" when empty). Reading accepts yes/y/true/1 too.
	TrueText, FalseText string
	// SessionTTL is the BhRestToken's life asked at login, in minutes; 0
	// means 60 (at most 2880).
	SessionTTL int
	// MaxInFlight caps calls in flight to the corporation, shared by every
	// client of the same API user in the process; 0 means 10.
	MaxInFlight int
	// RequestsPerMinute paces the calls, shared like MaxInFlight; 0 means
	// 1,500 (the newer editions' limit), negative no pacing.
	RequestsPerMinute int
	// ListTTL is how long a tearsheet membership read is reused by later
	// pages of one read; 0 means 5 minutes.
	ListTTL time.Duration
	// Logger receives retry and failure lines; nil discards them.
	Logger *slog.Logger
	// RetryMax, RetryWaitMin, RetryWaitMax and Timeout tune the HTTP
	// retries (see httpx.Options); RetryWaitMin defaults to one second,
	// the wait Bullhorn asks after a 429.
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	Timeout                    time.Duration
	// Transport is the underlying RoundTripper; nil means a pooled default.
	Transport http.RoundTripper
	// Now is the clock for token lifetimes; nil means time.Now.
	Now func() time.Time
}

// Client is a Bullhorn corporation as the sync sees it. It is safe for
// concurrent use.
type Client struct {
	cfg      Options
	loginURL string
	http     *http.Client // follows loginInfo's redirects
	noFollow *http.Client // reads authorize's 302 without following it
	inFlight int
	lists    *listCache
	tokenKey string

	mu         sync.Mutex // serialises logins
	discovered *endpoints
	access     string
	accessExp  time.Time
	sess       atomic.Pointer[session]
	// compactDates is set once the search refused a date range written
	// in epoch milliseconds: ranges are then written yyyyMMddHHmmss.
	compactDates atomic.Bool
}

type endpoints struct{ oauth, rest string }

type session struct {
	token string
	rest  string // restUrl, with its trailing slash
}

var _ connectors.CRM = (*Client)(nil)

// New validates cfg and returns a client. It does not call Bullhorn; Ping
// checks the credentials.
func New(cfg Options) (*Client, error) {
	if cfg.LoginInfoURL == "" {
		cfg.LoginInfoURL = DefaultLoginInfoURL
	}
	u, err := url.Parse(strings.TrimRight(cfg.LoginInfoURL, "/"))
	if err != nil || u.Host == "" || !httpx.Secure(u) {
		return nil, fmt.Errorf("bullhorn: Options.LoginInfoURL %q must be an https URL", cfg.LoginInfoURL)
	}
	for name, v := range map[string]string{"ClientID": cfg.ClientID, "ClientSecret": cfg.ClientSecret, "Username": cfg.Username, "Password": cfg.Password} {
		if strings.TrimSpace(v) == "" {
			return nil, fmt.Errorf("bullhorn: Options.%s is required", name)
		}
	}
	if len(cfg.EmailFields) == 0 {
		cfg.EmailFields = []string{"email"}
	}
	for _, f := range cfg.EmailFields {
		if f != "email" && f != "email2" && f != "email3" {
			return nil, fmt.Errorf("bullhorn: Options.EmailFields: %q is not email, email2 or email3", f)
		}
	}
	if cfg.TrueText == "" {
		cfg.TrueText = "Yes"
	}
	if cfg.FalseText == "" {
		cfg.FalseText = "No"
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 60
	}
	cfg.SessionTTL = min(cfg.SessionTTL, 2880)
	if cfg.Tokens == nil {
		cfg.Tokens = NewMemoryTokenStore()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryWaitMin == 0 {
		cfg.RetryWaitMin = time.Second
	}
	if cfg.RetryWaitMax < cfg.RetryWaitMin {
		cfg.RetryWaitMax = max(cfg.RetryWaitMin, 2*time.Second)
	}
	if cfg.ListTTL == 0 {
		cfg.ListTTL = 5 * time.Minute
	}
	c := &Client{cfg: cfg, loginURL: u.String(), inFlight: cfg.MaxInFlight}
	if c.inFlight <= 0 {
		c.inFlight = 10
	}
	c.tokenKey = cfg.TokenKey
	if c.tokenKey == "" {
		c.tokenKey = cfg.Integration
	}
	if c.tokenKey == "" {
		c.tokenKey = "bullhorn:" + cfg.Username
	}
	account := "bullhorn:" + u.Host + "|" + cfg.Username
	var pace *pacer
	if cfg.RequestsPerMinute >= 0 {
		rpm := cfg.RequestsPerMinute
		if rpm == 0 {
			rpm = 1500
		}
		pace = sharedPacer(account, rpm)
	}
	c.http = httpx.New(httpx.Options{
		Name:         system,
		Limiter:      httpx.SharedLimiter(account, c.inFlight),
		Sign:         func(r *http.Request) error { return pace.wait(r.Context()) },
		Base:         cfg.Transport,
		Logger:       cfg.Logger,
		RetryMax:     cfg.RetryMax,
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		Timeout:      cfg.Timeout,
	})
	// authorize's 302 must be read, not followed: a client of its own,
	// outside httpx (whose retrying transport would follow it). A failed
	// authorize is retried by the caller's retries.
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.noFollow = &http.Client{Transport: base, Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c.lists = newListCache(cfg.ListTTL, cfg.Now)
	return c, nil
}

func (c *Client) logger() *slog.Logger {
	if c.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.cfg.Logger.With("system", system)
}

// who names the integration and the API user in errors.
func (c *Client) who() string {
	if c.cfg.Integration != "" {
		return fmt.Sprintf("integration %q (Bullhorn API user %q)", c.cfg.Integration, c.cfg.Username)
	}
	return fmt.Sprintf("Bullhorn API user %q", c.cfg.Username)
}

// MaxBatch bounds FindByEmail and SetOptOut: one search finds 100
// addresses (each in up to three fields and four spellings, under
// Lucene's 1,024 clauses), and an update is one call per record.
func (c *Client) MaxBatch() int { return 100 }

// Ping logs in if needed and pings the session: it checks the credentials.
func (c *Client) Ping(ctx context.Context) error {
	var out struct {
		SessionExpires int64 `json:"sessionExpires"`
	}
	return c.call(ctx, http.MethodGet, "ping", nil, nil, &out)
}

// ---- pacing ----

// pacer spaces calls to stay under a per-minute limit: one slot every
// minute/rpm, with a burst of a second's worth.
type pacer struct {
	mu    sync.Mutex
	every time.Duration
	next  time.Time
	burst time.Duration
}

var (
	pacersMu sync.Mutex
	pacers   = map[string]*pacer{}
)

func sharedPacer(key string, rpm int) *pacer {
	pacersMu.Lock()
	defer pacersMu.Unlock()
	p := pacers[key]
	if p == nil {
		p = &pacer{every: time.Minute / time.Duration(rpm), burst: time.Second}
		pacers[key] = p
	}
	return p
}

func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now.Add(-p.burst)) {
		p.next = now.Add(-p.burst)
	}
	at := p.next
	p.next = p.next.Add(p.every)
	p.mu.Unlock()
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// ---- auth ----

// unauthorized is the final error of a refused sign-in: non-retryable,
// naming the integration.
func (c *Client) unauthorized(status int, code, detail string) error {
	return &connectors.APIError{System: system, Status: status, Kind: connectors.ErrUnauthorized, Code: code,
		Detail: c.who() + ": " + detail}
}

// authAnswer classifies a failed auth call that is not a refusal of the
// credentials: 429 and 5xx are retryable.
func (c *Client) transient(status int, h http.Header, step string) error {
	e := &connectors.APIError{System: system, Status: status, Code: http.StatusText(status), Detail: c.who() + ": " + step}
	if status == http.StatusTooManyRequests {
		e.Kind = connectors.ErrRateLimited
		e.RetryAfter, _ = httpx.RetryAfter(h)
	} else {
		e.Kind = connectors.ErrServer
	}
	return e
}

func (c *Client) authCall(ctx context.Context, hc *http.Client, method, u string) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		// The URL carries secrets: say only which step failed.
		return 0, nil, nil, fmt.Errorf("bullhorn: %s: %s", redactURL(u), httpx.Redact(redactErr(err)))
	}
	defer resp.Body.Close()
	b, err := httpx.ReadBody(resp.Body, 1<<20, "bullhorn: "+redactURL(u))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

// redactURL keeps the query (client secret, password, tokens) out of errors.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// discover reads loginInfo (following its redirects to the user's data
// centre) for the OAuth and REST roots; the caller holds c.mu.
func (c *Client) discover(ctx context.Context) (*endpoints, error) {
	if c.discovered != nil {
		return c.discovered, nil
	}
	status, h, body, err := c.authCall(ctx, c.http, http.MethodGet, c.loginURL+"/loginInfo?"+url.Values{"username": {c.cfg.Username}}.Encode())
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		if status == http.StatusTooManyRequests || status >= 500 {
			return nil, c.transient(status, h, "loginInfo")
		}
		return nil, c.unauthorized(status, "loginInfo", "data-centre discovery refused: "+bhMessage(body))
	}
	var info struct {
		OAuthURL string `json:"oauthUrl"`
		RestURL  string `json:"restUrl"`
	}
	if err := json.Unmarshal(body, &info); err != nil || info.OAuthURL == "" || info.RestURL == "" {
		return nil, fmt.Errorf("bullhorn: loginInfo answered without oauthUrl and restUrl")
	}
	c.discovered = &endpoints{oauth: strings.TrimRight(info.OAuthURL, "/"), rest: strings.TrimRight(info.RestURL, "/")}
	return c.discovered, nil
}

type tokenAnswer struct {
	AccessToken      string `json:"access_token"`
	ExpiresIn        int    `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// errRefreshRefused marks a refresh token the server no longer takes.
var errRefreshRefused = errors.New("refresh token refused")

// grant calls the token endpoint with parameters in the query string and
// an empty body, as Bullhorn's clients do (B1).
func (c *Client) grant(ctx context.Context, ep *endpoints, v url.Values) (tokenAnswer, error) {
	v.Set("client_id", c.cfg.ClientID)
	v.Set("client_secret", c.cfg.ClientSecret)
	status, h, body, err := c.authCall(ctx, c.http, http.MethodPost, ep.oauth+"/token?"+v.Encode())
	if err != nil {
		return tokenAnswer{}, err
	}
	var ans tokenAnswer
	_ = json.Unmarshal(body, &ans)
	switch {
	case status == http.StatusOK && ans.AccessToken != "":
		return ans, nil
	case status == http.StatusTooManyRequests || status >= 500:
		return ans, c.transient(status, h, "token request")
	case v.Get("grant_type") == "refresh_token" && ans.Error != "invalid_client":
		// UNCONFIRMED: the body of a refused refresh (C4); any refusal
		// that is not about the client means the token is spent.
		return ans, errRefreshRefused
	}
	code := ans.Error
	if code == "" {
		code = http.StatusText(status)
	}
	return ans, c.unauthorized(status, code, "token request refused: "+httpx.Redact(ans.ErrorDescription))
}

// authorize runs the API user's headless authorization: the answer is a
// 302 whose Location carries the code, read without following it. A page
// instead means the password was refused or, for a new API user, that the
// terms of service were never accepted.
func (c *Client) authorize(ctx context.Context, ep *endpoints) (string, error) {
	v := url.Values{"client_id": {c.cfg.ClientID}, "response_type": {"code"}, "action": {"Login"},
		"username": {c.cfg.Username}, "password": {c.cfg.Password}}
	status, h, body, err := c.authCall(ctx, c.noFollow, http.MethodPost, ep.oauth+"/authorize?"+v.Encode())
	if err != nil {
		return "", err
	}
	switch {
	case status == http.StatusFound || status == http.StatusSeeOther || status == http.StatusMovedPermanently || status == http.StatusTemporaryRedirect:
		loc, err := url.Parse(h.Get("Location"))
		if err != nil {
			return "", fmt.Errorf("bullhorn: authorize answered an unreadable Location")
		}
		if code := loc.Query().Get("code"); code != "" {
			return code, nil // Query() has URL-decoded it ("22:…")
		}
		return "", c.unauthorized(status, "authorize", "authorize redirected without a code: "+httpx.Redact(loc.Query().Get("error_description")))
	case status == http.StatusTooManyRequests || status >= 500:
		return "", c.transient(status, h, "authorize")
	}
	page := strings.ToLower(string(body))
	if strings.Contains(page, "terms of service") || strings.Contains(page, "consent") {
		return "", c.unauthorized(status, "TermsNotAccepted", "the API user has not accepted Bullhorn's terms of service: sign in once as this user in a browser at the authorize URL and accept them")
	}
	return "", c.unauthorized(status, "InvalidCredentials", "the API user's username or password, or the client id, was refused at authorize")
}

// accessToken returns a live access token: the current one, one from the
// stored refresh token (the new refresh token is saved at once), or one
// from the password flow; the caller holds c.mu.
func (c *Client) accessToken(ctx context.Context, ep *endpoints) (string, error) {
	now := c.cfg.Now()
	if c.access != "" && now.Add(30*time.Second).Before(c.accessExp) {
		return c.access, nil
	}
	var ans tokenAnswer
	tried := ""
	for range 2 {
		rt, err := c.cfg.Tokens.RefreshToken(ctx, c.tokenKey)
		if err != nil {
			return "", fmt.Errorf("bullhorn: %s: reading the stored refresh token: %w", c.who(), err)
		}
		if rt == "" || rt == tried {
			break
		}
		tried = rt
		ans, err = c.grant(ctx, ep, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if err == nil {
			break
		}
		if !errors.Is(err, errRefreshRefused) {
			return "", err
		}
		// Spent: another worker may have rotated it; read the store again.
		c.logger().Info("stored refresh token refused; reading the store again, then signing in with the password")
		ans = tokenAnswer{}
	}
	if ans.AccessToken == "" {
		code, err := c.authorize(ctx, ep)
		if err != nil {
			return "", err
		}
		if ans, err = c.grant(ctx, ep, url.Values{"grant_type": {"authorization_code"}, "code": {code}}); err != nil {
			return "", err
		}
	}
	if ans.RefreshToken != "" && ans.RefreshToken != tried {
		if err := c.cfg.Tokens.SaveRefreshToken(ctx, c.tokenKey, ans.RefreshToken); err != nil {
			// The next sign-in falls back to the password: no lock-out.
			c.logger().Warn("could not keep the new refresh token; the next sign-in will use the password", "error", err.Error())
		}
	}
	c.access = ans.AccessToken
	ttl := time.Duration(ans.ExpiresIn) * time.Second
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	c.accessExp = now.Add(ttl)
	return c.access, nil
}

// login signs in and opens a REST session unless another caller already
// replaced stale: one expired session costs one login however many calls
// saw it expire.
func (c *Client) login(ctx context.Context, stale *session) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.sess.Load(); s != nil && s != stale {
		return s, nil
	}
	ep, err := c.discover(ctx)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		at, err := c.accessToken(ctx, ep)
		if err != nil {
			return nil, err
		}
		v := url.Values{"version": {"*"}, "access_token": {at}, "ttl": {strconv.Itoa(c.cfg.SessionTTL)}}
		status, h, body, err := c.authCall(ctx, c.http, http.MethodPost, ep.rest+"/login?"+v.Encode())
		if err != nil {
			return nil, err
		}
		var ans struct {
			BhRestToken string `json:"BhRestToken"`
			RestURL     string `json:"restUrl"`
		}
		_ = json.Unmarshal(body, &ans)
		if status == http.StatusOK && ans.BhRestToken != "" {
			ru, err := url.Parse(ans.RestURL)
			if err != nil || ru.Host == "" || !httpx.Secure(ru) {
				return nil, fmt.Errorf("bullhorn: login answered an unusable restUrl")
			}
			s := &session{token: ans.BhRestToken, rest: strings.TrimRight(ans.RestURL, "/") + "/"}
			c.sess.Store(s)
			return s, nil
		}
		if status == http.StatusTooManyRequests || status >= 500 {
			return nil, c.transient(status, h, "REST login")
		}
		key := bhKey(body)
		if key == "errors.authentication.invalidOAuthToken" && attempt == 0 {
			c.access = "" // expired early: get a fresh one once
			continue
		}
		return nil, c.unauthorized(status, key, "REST login refused: "+bhMessage(body))
	}
}

// ---- calls ----

type bhError struct {
	ErrorMessage    string `json:"errorMessage"`
	ErrorMessageKey string `json:"errorMessageKey"`
	ErrorCode       int    `json:"errorCode"`
}

func bhKey(body []byte) string {
	var e bhError
	_ = json.Unmarshal(body, &e)
	return e.ErrorMessageKey
}

func bhMessage(body []byte) string {
	var e bhError
	if json.Unmarshal(body, &e) == nil && e.ErrorMessage != "" {
		return httpx.Redact(e.ErrorMessage)
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return httpx.Redact(s)
}

// rateRounds is how many times one call waits out a 429 that httpx's
// retries did not clear: Bullhorn's SDK retries 429s without counting
// them against its retries (B6).
const rateRounds = 5

// call sends one REST call (path relative to restUrl, q its parameters)
// and decodes a 2xx answer into out. An expired session
// (errors.authentication.invalidRestToken) logs in again once; a 429
// waits and is sent again a few times; every other failure is classified
// into a *connectors.APIError.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, body any, out any) error {
	sess := c.sess.Load()
	var err error
	if sess == nil {
		if sess, err = c.login(ctx, nil); err != nil {
			return err
		}
	}
	var raw []byte
	if body != nil {
		if raw, err = json.Marshal(body); err != nil {
			return err
		}
	}
	relogged, rounds := false, 0
	for {
		status, h, b, err := c.send(ctx, sess, method, path, q, raw)
		if err != nil {
			return err
		}
		if status >= 200 && status < 300 {
			if out == nil {
				return nil
			}
			if err := json.Unmarshal(b, out); err != nil {
				return fmt.Errorf("bullhorn: %s %s: decode answer: %w", method, path, err)
			}
			return nil
		}
		apiErr := c.classify(status, h, b)
		switch {
		case (status == http.StatusUnauthorized || status == http.StatusPreconditionFailed) && !relogged:
			relogged = true
			if sess, err = c.login(ctx, sess); err != nil {
				return err
			}
			continue
		case status == http.StatusTooManyRequests && rounds < rateRounds:
			rounds++
			wait := max(apiErr.RetryAfter, c.cfg.RetryWaitMin)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
			continue
		}
		if apiErr.Kind == connectors.ErrUnauthorized {
			apiErr.Detail = c.who() + ": " + apiErr.Detail
		}
		return apiErr
	}
}

func (c *Client) send(ctx context.Context, sess *session, method, path string, q url.Values, body []byte) (int, http.Header, []byte, error) {
	u := sess.rest + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("bullhorn: %s %s: %w", method, path, err)
	}
	req.Header.Set("BhRestToken", sess.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("bullhorn: %s %s: %s", method, path, httpx.Redact(redactErr(err)))
	}
	defer resp.Body.Close()
	b, err := httpx.ReadBody(resp.Body, httpx.MaxBody, "bullhorn: "+method+" "+path)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, b, nil
}

// redactErr drops the URL (and the queries with addresses in it) from a
// transport error.
func redactErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// classify maps an error answer onto the connectors error kinds.
func (c *Client) classify(status int, h http.Header, body []byte) *connectors.APIError {
	e := &connectors.APIError{System: system, Status: status, Code: bhKey(body), Detail: bhMessage(body)}
	if e.Code == "" {
		e.Code = http.StatusText(status)
	}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusPreconditionFailed:
		e.Kind = connectors.ErrUnauthorized
	case status == http.StatusForbidden:
		e.Kind = connectors.ErrForbidden
	case status == http.StatusNotFound:
		e.Kind = connectors.ErrNotFound
	case status == http.StatusTooManyRequests:
		e.Kind = connectors.ErrRateLimited
		// "Wait 1 second then retry request" (B6) when no header says.
		if e.RetryAfter, _ = httpx.RetryAfter(h); e.RetryAfter == 0 {
			e.RetryAfter = time.Second
		}
	case status >= 500:
		e.Kind = connectors.ErrServer
	default:
		e.Kind = connectors.ErrInvalid
	}
	return e
}
