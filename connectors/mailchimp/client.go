// Package mailchimp is the Mailchimp Marketing API v3 connector: it
// implements connectors.Marketing over an audience (a Mailchimp list).
//
// It reads opt-outs with a change-safe cursor over GET /lists/{id}/members,
// writes opt-outs with the batch call POST /lists/{id}, and writes fields
// with one PUT per member that never carries a status, so that nothing this
// package sends can move an existing member's subscription status except an
// explicit unsubscribe. Every request of every Client for one account goes
// through one shared limiter, because Mailchimp counts its 10 simultaneous
// connections per user, not per client.
package mailchimp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

// System is the name used in errors and log lines.
const System = "mailchimp"

// maxBatch is Mailchimp's limit on members in one batch subscribe call; the
// per-member calls take the same bound so that one activity stays short.
const maxBatch = 500

// Options configures a Client. Give exactly one of APIKey and OAuthToken.
type Options struct {
	// APIKey is a Mailchimp API key, "<hex>-<dc>"; the data center comes
	// from the suffix. It is sent as the HTTP Basic password.
	APIKey string
	// OAuthToken is an OAuth 2 access token, sent as a Bearer token.
	// Tokens carry no data center, so DC is required with it (the login
	// service's /oauth2/metadata answer gives it).
	OAuthToken string
	// DC is the data center ("us6"); required with OAuthToken, and must
	// match the key's suffix when given with APIKey.
	DC string
	// BaseURL overrides https://<dc>.api.mailchimp.com/3.0 (the emulator).
	BaseURL string
	// Logger receives debug and warning lines; nil discards them.
	Logger *slog.Logger
	// MaxInFlight caps simultaneous requests to the account; 0 means 10,
	// Mailchimp's limit. The first Client for an account sets the cap that
	// all later ones share.
	MaxInFlight int
	// RetryMax, RetryWaitMin, RetryWaitMax and Timeout are passed to httpx.
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	Timeout                    time.Duration
	// Transport is the underlying transport; nil means a pooled default.
	Transport http.RoundTripper
	// Webhook, when set, makes the client receive its integration's
	// webhook deliveries (connectors.Webhooks).
	Webhook *WebhookOptions
}

// WebhookOptions are what receiving an integration's webhooks needs.
type WebhookOptions struct {
	// Audience is the only audience whose deliveries are accepted.
	Audience string
	// Token is the secret last path segment of the endpoint (32–128 of
	// A–Z a–z 0–9 - _).
	Token string
	// SigningSecret, when set, is required to have signed each delivery.
	SigningSecret string
}

// Client talks to one Mailchimp account. It is safe for concurrent use.
type Client struct {
	base    string
	http    *http.Client
	log     *slog.Logger
	workers int
	hook    *webhook
}

var _ connectors.Marketing = (*Client)(nil)

var dcPattern = regexp.MustCompile(`^[a-z]+[0-9]+$`)

// New validates cfg and returns a Client. It makes no request; call Ping to
// check the credentials.
func New(cfg Options) (*Client, error) {
	var cred, dc string
	switch {
	case cfg.APIKey != "" && cfg.OAuthToken != "":
		return nil, errors.New("mailchimp: set only one of Options.APIKey and Options.OAuthToken")
	case cfg.APIKey != "":
		cred = cfg.APIKey
		// The official SDKs split on "-" and take the second of exactly
		// two parts as the data center.
		parts := strings.Split(cfg.APIKey, "-")
		if len(parts) != 2 || parts[0] == "" || !dcPattern.MatchString(parts[1]) {
			return nil, errors.New(`mailchimp: Options.APIKey has no data center suffix (expected "<key>-<dc>", like "...-us6")`)
		}
		dc = parts[1]
		if cfg.DC != "" && cfg.DC != dc {
			return nil, fmt.Errorf("mailchimp: Options.DC %q does not match the data center of Options.APIKey (%q)", cfg.DC, dc)
		}
	case cfg.OAuthToken != "":
		cred = cfg.OAuthToken
		dc = cfg.DC
		if dc == "" && cfg.BaseURL == "" {
			return nil, errors.New("mailchimp: Options.DC is required with Options.OAuthToken (tokens carry no data center)")
		}
		if dc != "" && !dcPattern.MatchString(dc) {
			return nil, fmt.Errorf("mailchimp: Options.DC %q is not a data center name like \"us6\"", dc)
		}
	default:
		return nil, errors.New("mailchimp: Options.APIKey or Options.OAuthToken is required")
	}
	if cfg.MaxInFlight < 0 {
		return nil, errors.New("mailchimp: Options.MaxInFlight must not be negative")
	}
	base := "https://" + dc + ".api.mailchimp.com/3.0"
	if cfg.BaseURL != "" {
		u, err := url.Parse(cfg.BaseURL)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("mailchimp: Options.BaseURL %q is not an absolute URL", cfg.BaseURL)
		}
		base = strings.TrimSuffix(cfg.BaseURL, "/")
	}
	n := cfg.MaxInFlight
	if n == 0 {
		n = 10
	}
	// The limiter is per account: the data center plus a digest of the
	// credential names it without putting the secret in a map key.
	sum := sha256.Sum256([]byte(cred))
	key := "mailchimp:" + dc + ":" + hex.EncodeToString(sum[:8])
	limiter := httpx.SharedLimiter(key, n)

	var auth string
	if cfg.APIKey != "" {
		auth = "Basic " + base64.StdEncoding.EncodeToString([]byte("optoutsync:"+cfg.APIKey))
	} else {
		auth = "Bearer " + cfg.OAuthToken
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hc := httpx.New(httpx.Options{
		Name:    System,
		Limiter: limiter,
		Sign: func(r *http.Request) error {
			r.Header.Set("Authorization", auth)
			return nil
		},
		Base:         cfg.Transport,
		Logger:       cfg.Logger,
		RetryMax:     cfg.RetryMax,
		RetryWaitMin: cfg.RetryWaitMin,
		RetryWaitMax: cfg.RetryWaitMax,
		Timeout:      cfg.Timeout,
	})
	c := &Client{base: base, http: hc, log: logger.With("system", System), workers: limiter.Cap()}
	if w := cfg.Webhook; w != nil {
		if !tokenPattern.MatchString(w.Token) {
			return nil, errors.New("mailchimp: Options.Webhook.Token must be 32 to 128 of A-Z a-z 0-9 - _ (an unguessable secret)")
		}
		if !audiencePattern.MatchString(w.Audience) {
			return nil, errors.New("mailchimp: Options.Webhook.Audience is not an audience id")
		}
		c.hook = &webhook{audience: w.Audience, token: w.Token, secret: w.SigningSecret}
	}
	return c, nil
}

// MaxBatch is the largest batch Unsubscribe, UpsertMembers and
// Members take: Mailchimp's batch subscribe limit of 500.
func (c *Client) MaxBatch() int { return maxBatch }

// Ping checks the credentials and the data center with GET /ping.
func (c *Client) Ping(ctx context.Context) error {
	var out struct {
		HealthStatus string `json:"health_status"`
	}
	_, err := c.do(ctx, http.MethodGet, "/ping", nil, nil, &out)
	if err != nil {
		return err
	}
	if out.HealthStatus == "" {
		return errors.New("mailchimp: ping answered without health_status")
	}
	return nil
}

// do sends one request and decodes a 2xx JSON answer into out (when not
// nil). Any other answer becomes a *connectors.APIError. It returns the
// answer's headers.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) (http.Header, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("mailchimp: encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("mailchimp: %s %s: %w", method, redactPath(path), err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// url.Error carries the full URL, which may hold an address.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("mailchimp: %s %s: %w", method, redactPath(path), err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, classify(resp)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		body := httpx.BoundedBody(resp.Body, httpx.MaxBody, "mailchimp: "+method+" "+redactPath(path))
		if err := json.NewDecoder(body).Decode(out); err != nil {
			if errors.Is(err, httpx.ErrBodyTooLarge) {
				return resp.Header, err
			}
			return resp.Header, fmt.Errorf("mailchimp: decode %s %s: %w", method, redactPath(path), err)
		}
	}
	return resp.Header, nil
}

// redactPath hides an address used as a path segment.
func redactPath(p string) string { return httpx.Redact(p) }

// problemDoc is Mailchimp's application/problem+json error body.
type problemDoc struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail"`
	Instance string `json:"instance"`
	Errors   []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"errors"`
}

// The titles of the 400 answers that are compliance refusals.
const (
	titleCompliance = "Member In Compliance State"
	titleForgotten  = "Forgotten Email Not Subscribed"
)

// classify turns an error answer into a *connectors.APIError.
func classify(resp *http.Response) error {
	e := &connectors.APIError{System: System, Status: resp.StatusCode}
	var doc problemDoc
	hasDoc := false
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); strings.HasSuffix(mt, "json") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		hasDoc = json.Unmarshal(b, &doc) == nil && doc.Title != ""
	}
	e.Code = http.StatusText(resp.StatusCode)
	if hasDoc {
		e.Code = doc.Title
		e.Detail = doc.Detail
		for _, fe := range doc.Errors {
			e.Detail += fmt.Sprintf(" [%s: %s]", fe.Field, fe.Message)
		}
		// Details name the member ("x@y is in a compliance state ...").
		e.Detail = httpx.Redact(e.Detail)
	}
	switch s := resp.StatusCode; {
	case s == http.StatusUnauthorized:
		e.Kind = connectors.ErrUnauthorized
	case s == http.StatusForbidden && !hasDoc:
		// "At exceptionally high volumes, you may receive an HTTP 429 or
		// 403 without a JSON body": a bare 403 is throttling, not a
		// missing permission, so it must stay retryable.
		e.Kind = connectors.ErrRateLimited
		e.Code = "TooManyRequests"
	case s == http.StatusForbidden:
		e.Kind = connectors.ErrForbidden
	case s == http.StatusNotFound:
		e.Kind = connectors.ErrNotFound
	case s == http.StatusTooManyRequests:
		e.Kind = connectors.ErrRateLimited
		if d, ok := httpx.RetryAfter(resp.Header); ok {
			e.RetryAfter = d
		}
	case s >= 500:
		e.Kind = connectors.ErrServer
	case s == http.StatusBadRequest && (e.Code == titleCompliance || e.Code == titleForgotten):
		e.Kind = connectors.ErrCompliance
	default:
		e.Kind = connectors.ErrInvalid
	}
	return e
}
