// Package dynamics implements connectors.CRM for Microsoft Dynamics 365
// (the Dataverse Web API v9.2): contacts, leads and accounts read with
// OData queries, opt-outs written with PATCH inside $batch requests,
// marketing lists (static and dynamic) as the lists that scope a sync. It
// signs in to Microsoft Entra ID with the client credentials grant of an
// application user, with a client secret or a certificate.
//
// Wire facts: ../shared/reference/dynamics-bullhorn-wire-facts.md part A.
package dynamics

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"crypto/rand"

	"github.com/golang-jwt/jwt/v5"

	"github.com/optoutsync/optoutsync/connectors"
	"github.com/optoutsync/optoutsync/connectors/httpx"
)

const system = "dynamics"

// DefaultAuthorityURL is Microsoft Entra ID's public cloud authority.
const DefaultAuthorityURL = "https://login.microsoftonline.com"

// apiPath is the Web API root on the org's host (reference A2).
const apiPath = "/api/data/v9.2"

// DefaultMaxInFlight is the requests in flight to one environment a
// worker allows by default: well under the service protection's 52
// concurrent requests per user, which every worker of the same
// application user shares.
const DefaultMaxInFlight = 8

// MaxInFlightLimit is the service-protection concurrency limit.
const MaxInFlightLimit = 52

// Options configures a Client. Give ClientSecret, or CertificatePEM for a
// signed client assertion.
type Options struct {
	// OrgURL is the environment's URL, https://<org>.crm.dynamics.com.
	OrgURL string
	// AuthorityURL is where tokens come from; "" means DefaultAuthorityURL.
	AuthorityURL string
	// TenantID is the Entra tenant (directory) id.
	TenantID string
	// ClientID is the app registration's application (client) id.
	ClientID string
	// ClientSecret is one of its client secrets.
	ClientSecret string
	// CertificatePEM holds the RSA private key (PKCS#1 or PKCS#8) and the
	// certificate uploaded to the app registration, in one PEM bundle.
	CertificatePEM []byte
	// EmailColumns are the address columns matched and read, in order;
	// nil means emailaddress1 only.
	EmailColumns []string
	// Logger receives retry and failure lines; nil discards them.
	Logger *slog.Logger
	// RetryMax, RetryWaitMin, RetryWaitMax and Timeout tune the HTTP
	// retries (see httpx.Options); zero values take httpx's defaults.
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	Timeout                    time.Duration
	// Transport is the underlying RoundTripper; nil means a pooled default.
	Transport http.RoundTripper
	// MaxInFlight caps requests in flight to the environment, shared by
	// every client of the same environment and application in the process;
	// 0 means DefaultMaxInFlight.
	MaxInFlight int
	// ListCacheTTL is how long the opted-out members of the marketing
	// lists read for one paged read are reused by its later pages; 0
	// means 10 minutes.
	ListCacheTTL time.Duration
}

// Client is a Dataverse environment as the sync sees it. It is safe for
// concurrent use.
type Client struct {
	cfg      Options
	org      *url.URL // scheme and host
	api      string   // org + apiPath + "/"
	tokenURL string
	scope    string
	key      *rsa.PrivateKey
	x5t      string
	emails   []string
	http     *http.Client
	lists    *listCache
	rest     connectors.Leftovers[batch] // the unread rest of query batches, by cursor

	mu  sync.Mutex // serialises token requests
	tok *token
	tmu sync.RWMutex
}

type token struct {
	value   string
	expires time.Time
	renewAt time.Time
}

var _ connectors.CRM = (*Client)(nil)

// New validates o and returns a client. It does not call Dataverse; Ping
// checks the credentials.
func New(o Options) (*Client, error) {
	org, err := httpx.BaseURL(o.OrgURL)
	if err != nil {
		return nil, fmt.Errorf("dynamics: Options.OrgURL: %w", err)
	}
	if o.AuthorityURL == "" {
		o.AuthorityURL = DefaultAuthorityURL
	}
	auth, err := httpx.BaseURL(o.AuthorityURL)
	if err != nil {
		return nil, fmt.Errorf("dynamics: Options.AuthorityURL: %w", err)
	}
	if !tenantPattern.MatchString(o.TenantID) {
		return nil, fmt.Errorf("dynamics: Options.TenantID %q is not a tenant id (a GUID) or domain", o.TenantID)
	}
	if strings.TrimSpace(o.ClientID) == "" {
		return nil, errors.New("dynamics: Options.ClientID is required")
	}
	c := &Client{
		cfg: o, org: org, api: org.String() + apiPath + "/",
		tokenURL: auth.String() + "/" + url.PathEscape(o.TenantID) + "/oauth2/v2.0/token",
		// The scope is the resource with /.default (reference A1).
		scope: org.String() + "/.default",
	}
	switch {
	case o.ClientSecret != "" && len(o.CertificatePEM) > 0:
		return nil, errors.New("dynamics: Options: give ClientSecret or CertificatePEM, not both")
	case len(o.CertificatePEM) > 0:
		if c.key, c.x5t, err = parseCertificate(o.CertificatePEM); err != nil {
			return nil, err
		}
	case o.ClientSecret == "":
		return nil, errors.New("dynamics: Options.ClientSecret or Options.CertificatePEM is required")
	}
	c.emails = o.EmailColumns
	if len(c.emails) == 0 {
		c.emails = []string{"emailaddress1"}
	}
	for _, e := range c.emails {
		if !emailColumn(e) {
			return nil, fmt.Errorf("dynamics: Options.EmailColumns: %q is not emailaddress1, emailaddress2 or emailaddress3", e)
		}
	}
	inFlight := o.MaxInFlight
	if inFlight <= 0 {
		inFlight = DefaultMaxInFlight
	}
	ttl := o.ListCacheTTL
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	c.lists = &listCache{ttl: ttl, entries: map[string]*listEntry{}}
	c.http = httpx.New(httpx.Options{
		Name: system,
		// Service protection counts per user and environment: one cap per
		// environment and application user in the process.
		Limiter:      httpx.SharedLimiter("dynamics:"+org.Host+"|"+o.ClientID, inFlight),
		Base:         o.Transport,
		Logger:       o.Logger,
		RetryMax:     o.RetryMax,
		RetryWaitMin: o.RetryWaitMin,
		RetryWaitMax: o.RetryWaitMax,
		Timeout:      o.Timeout,
	})
	return c, nil
}

func emailColumn(s string) bool {
	return s == "emailaddress1" || s == "emailaddress2" || s == "emailaddress3"
}

// parseCertificate reads the private key and the certificate from one PEM
// bundle, without echoing either in an error, and computes the
// certificate's x5t (base64url SHA-1 thumbprint) for the assertion header.
func parseCertificate(bundle []byte) (*rsa.PrivateKey, string, error) {
	var key *rsa.PrivateKey
	var cert []byte
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			if cert == nil {
				cert = b.Bytes
			}
		case "RSA PRIVATE KEY":
			if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
				key = k
			}
		case "PRIVATE KEY":
			if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
				key, _ = k.(*rsa.PrivateKey)
			}
		}
	}
	switch {
	case key == nil:
		return nil, "", errors.New("dynamics: Options.CertificatePEM holds no RSA private key (PEM, PKCS#1 or PKCS#8)")
	case cert == nil:
		return nil, "", errors.New("dynamics: Options.CertificatePEM holds no certificate: give the key and the certificate uploaded to the app registration in one PEM file")
	}
	if _, err := x509.ParseCertificate(cert); err != nil {
		return nil, "", errors.New("dynamics: Options.CertificatePEM: the certificate cannot be parsed")
	}
	sum := sha1.Sum(cert)
	return key, base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// baseURL accepts an https URL, or plain http on a loopback host (an
// emulator), and keeps its scheme and host.

func (c *Client) logger() *slog.Logger {
	if c.cfg.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.cfg.Logger.With("system", system)
}

// Ping gets a token if needed and calls WhoAmI: it checks the
// credentials, the application user and its access in one call.
func (c *Client) Ping(ctx context.Context) error {
	var out struct {
		UserID string `json:"UserId"`
	}
	_, err := c.getJSON(ctx, c.api+"WhoAmI", nil, &out)
	return err
}

// ---- auth ----

type tokenAnswer struct {
	AccessToken      string `json:"access_token"`
	ExpiresIn        int    `json:"expires_in"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// currentToken returns a token that is not about to expire, getting one
// when needed: tokens are renewed before they expire, not after a 401.
func (c *Client) currentToken(ctx context.Context) (*token, error) {
	c.tmu.RLock()
	t := c.tok
	c.tmu.RUnlock()
	if t != nil && time.Now().Before(t.renewAt) {
		return t, nil
	}
	return c.renew(ctx, t)
}

// renew gets a new token unless another caller already replaced stale:
// one expired token costs one token request however many calls saw it.
func (c *Client) renew(ctx context.Context, stale *token) (*token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tmu.RLock()
	cur := c.tok
	c.tmu.RUnlock()
	if cur != nil && cur != stale && time.Now().Before(cur.renewAt) {
		return cur, nil
	}
	t, err := c.requestToken(ctx)
	if err != nil {
		return nil, err
	}
	c.tmu.Lock()
	c.tok = t
	c.tmu.Unlock()
	return t, nil
}

func (c *Client) requestToken(ctx context.Context) (*token, error) {
	form := url.Values{"client_id": {c.cfg.ClientID}, "scope": {c.scope}, "grant_type": {"client_credentials"}}
	if c.key != nil {
		now := time.Now()
		jti := make([]byte, 16)
		_, _ = rand.Read(jti)
		t := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
			"aud": c.tokenURL, "iss": c.cfg.ClientID, "sub": c.cfg.ClientID, "jti": hex.EncodeToString(jti),
			"nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
		})
		t.Header["x5t"] = c.x5t
		assertion, err := t.SignedString(c.key)
		if err != nil {
			return nil, fmt.Errorf("dynamics: sign client assertion: %w", err)
		}
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", assertion)
	} else {
		form.Set("client_secret", c.cfg.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("dynamics: token request: %s", httpx.Redact(err.Error()))
	}
	defer resp.Body.Close()
	body, err := httpx.ReadBody(resp.Body, 1<<20, "dynamics: token request")
	if err != nil {
		return nil, err
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
		e := &connectors.APIError{System: system, Status: resp.StatusCode, Kind: kind, Code: code,
			Detail: fmt.Sprintf("Entra ID refused a token for the application %s in tenant %s (scope %s): %s", c.cfg.ClientID, c.cfg.TenantID, c.scope, httpx.Redact(firstLine(ans.ErrorDescription)))}
		e.RetryAfter, _ = httpx.RetryAfter(resp.Header)
		return nil, e
	}
	life := time.Duration(ans.ExpiresIn) * time.Second
	if life <= 0 {
		life = time.Hour
	}
	now := time.Now()
	// Renew five minutes before expiry, or at half the lifetime of a short one.
	margin := min(5*time.Minute, life/2)
	return &token{value: ans.AccessToken, expires: now.Add(life), renewAt: now.Add(life - margin)}, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\r\n")
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// ---- calls ----

// call is one Web API request: an absolute URL on the org.
type call struct {
	method string
	url    string
	header http.Header
	body   []byte
}

// answer is a Web API answer of any status.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// send makes the call with a bearer token. A 401 renews the token once
// and repeats the call; a second 401 is a final credentials error naming
// the environment and the application.
func (c *Client) send(ctx context.Context, cl call) (answer, error) {
	tok, err := c.currentToken(ctx)
	if err != nil {
		return answer{}, err
	}
	for attempt := 0; ; attempt++ {
		a, err := c.sendOnce(ctx, tok, cl)
		if err != nil || a.status != http.StatusUnauthorized {
			return a, err
		}
		if attempt > 0 {
			e := c.classify(a)
			e.Detail = fmt.Sprintf("the application user of %s (application %s, tenant %s) was refused with a new token: check that the application user exists, is enabled and has a security role: %s",
				c.org, c.cfg.ClientID, c.cfg.TenantID, e.Detail)
			return a, e
		}
		if tok, err = c.renew(ctx, tok); err != nil {
			return answer{}, err
		}
	}
}

func (c *Client) sendOnce(ctx context.Context, tok *token, cl call) (answer, error) {
	var rd io.Reader
	if cl.body != nil {
		rd = bytes.NewReader(cl.body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, cl.url, rd)
	if err != nil {
		return answer{}, fmt.Errorf("dynamics: %s %s: %w", cl.method, redactURL(cl.url), err)
	}
	for k, v := range cl.header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+tok.value)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-MaxVersion", "4.0")
	req.Header.Set("OData-Version", "4.0")
	if cl.body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("dynamics: %s %s: %s", cl.method, redactURL(cl.url), httpx.Redact(err.Error()))
	}
	defer resp.Body.Close()
	b, err := httpx.ReadBody(resp.Body, httpx.MaxBody, "dynamics: "+cl.method+" "+redactURL(cl.url))
	if err != nil {
		if errors.Is(err, httpx.ErrBodyTooLarge) {
			return answer{}, err
		}
		return answer{}, fmt.Errorf("dynamics: %s %s: read answer: %w", cl.method, redactURL(cl.url), err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// getJSON GETs url and decodes a 2xx answer into out.
func (c *Client) getJSON(ctx context.Context, u string, header http.Header, out any) (answer, error) {
	h := http.Header{}
	for k, v := range header {
		h[k] = v
	}
	// Recommended on reads, so that a cached answer is never served (reference A2).
	h.Set("If-None-Match", "null")
	a, err := c.send(ctx, call{method: http.MethodGet, url: u, header: h})
	if err != nil {
		return a, err
	}
	if a.status < 200 || a.status > 299 {
		return a, c.classify(a)
	}
	if err := json.Unmarshal(a.body, out); err != nil {
		return a, fmt.Errorf("dynamics: GET %s: decode answer: %w", redactURL(u), err)
	}
	return a, nil
}

// redactURL keeps the query (which holds addresses) out of errors.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?…"
	}
	return u
}

// odataError is Dataverse's error envelope (reference A7).
type odataError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// serviceProtection are the three limit codes (reference A7): each clears
// after the Retry-After the answer gives.
var serviceProtection = map[string]string{
	"0x80072322": "requests per 5 minutes",
	"0x80072321": "execution time per 5 minutes",
	"0x80072326": "concurrent requests",
}

// classify maps an error answer onto the connectors error kinds.
func (c *Client) classify(a answer) *connectors.APIError {
	e := &connectors.APIError{System: system, Status: a.status}
	var oe odataError
	if json.Unmarshal(a.body, &oe) == nil && (oe.Error.Code != "" || oe.Error.Message != "") {
		e.Code, e.Detail = oe.Error.Code, oe.Error.Message
	} else if len(a.body) > 0 {
		e.Detail = string(a.body)
	}
	if e.Code == "" {
		e.Code = http.StatusText(a.status)
	}
	// Messages can echo a filter, and so the addresses in it.
	e.Detail = httpx.Redact(strings.TrimSpace(e.Detail))
	if len(e.Detail) > 500 {
		e.Detail = e.Detail[:500] + "…"
	}
	switch {
	case a.status == http.StatusUnauthorized:
		e.Kind = connectors.ErrUnauthorized
	case a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable:
		e.Kind = connectors.ErrRateLimited
		e.RetryAfter, _ = httpx.RetryAfter(a.header)
		if what, ok := serviceProtection[e.Code]; ok {
			e.Detail = "service protection limit on " + what + ": " + e.Detail
		}
	case a.status == http.StatusForbidden:
		e.Kind = connectors.ErrForbidden
	case a.status == http.StatusNotFound:
		e.Kind = connectors.ErrNotFound
	case a.status >= 500:
		e.Kind = connectors.ErrServer
	default:
		e.Kind = connectors.ErrInvalid
	}
	return e
}
